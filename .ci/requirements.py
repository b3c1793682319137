"""Print this project's requirements with those of the extras named, one a line.

CI installs them into its other environments in the background while the
first environment's tests run, and installs the project itself afterwards
(``pip install --no-deps -e .``), so that no two editable builds share the
source tree at once.

    python3 .ci/requirements.py jax examples plot
"""

import re
import sys
from pathlib import Path

import tomllib

pyproject = Path(__file__).parents[1] / "pyproject.toml"
project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
# An extra may name others: "keras_gradwatch[tensorflow,examples,plot]".
nested = re.compile(re.escape(project["name"]) + r"\[(.+)\]")


def of_extras(names: list[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        for requirement in project["optional-dependencies"][name]:
            inner = nested.fullmatch(requirement)
            out += of_extras(inner.group(1).split(",")) if inner else [requirement]
    return out


print("\n".join(dict.fromkeys(project["dependencies"] + of_extras(sys.argv[1:]))))
