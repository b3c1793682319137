"""The README's example tells one story, live and in the report, and the
README and ``docs/`` show what it really prints.

``examples/two_circles.py`` is trained as the README says (100 epochs), with
the TensorBoard callback and WeightNorms, and with GradWatch alone.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers import load_script
from keras_gradwatch import _report
from keras_gradwatch._findings import REMEDIES

pytestmark = pytest.mark.numeric  # the docs' numbers, with oneDNN on and off

REPO = Path(__file__).resolve().parent.parent
MAKE = load_script(REPO / "docs" / "make_images.py")
EPOCHS = 100
"""As the README's command runs it, and as ``docs/`` shows it."""

NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?%?")
RTOL = 1e-2
"""How far a printed number may move between CPUs: with oneDNN's kernels on
and off (``TF_ENABLE_ONEDNN_OPTS``) this run prints the same text but for
one weight change, 6.94e-04 against 6.95e-04 (1.4e-3 relative, one unit in
the third significant digit). Any change of the model, data or rules moves
the story itself (a kind, a weight, an epoch range, a word)."""


@pytest.fixture(scope="module")
def stories(tmp_path_factory):
    root = tmp_path_factory.mktemp("story")
    return {
        "with TensorBoard": MAKE.story(root / "full", EPOCHS),
        "GradWatch alone": MAKE.story(root / "alone", EPOCHS, "--gradwatch-only"),
        "logs": {"with TensorBoard": root / "full", "GradWatch alone": root / "alone"},
    }


@pytest.mark.parametrize("how", ["with TensorBoard", "GradWatch alone"])
def test_tanh_run_is_told_vanishing_and_relu_nothing(stories, how):
    report = _report.load(stories["logs"][how])
    runs = {run.name: run.findings for run in report.runs}
    assert runs["relu_he/heldout"] == []
    tanh = runs["tanh_uniform/heldout"]
    # The vanishing gradients, with their remedy, to the last epoch: they
    # explain the flat loss at the chance level, which is then no finding
    # of its own (a stall "no other finding explains").
    assert [(f.kind, f.current) for f in tanh] == [("vanishing", True)]
    assert tanh[0].remedy == REMEDIES["vanishing"]
    # Live: the same kind, said for the tanh model only, and nothing said
    # to have ended, as in the report.
    live = stories[how]["live"].splitlines()
    assert live, "nothing said live"
    assert all("tanh_uniform/heldout" in line for line in live)
    assert all("Gradients vanish toward the input" in line for line in live)
    ended = {m[1] for line in live if (m := re.search(r": (\w+) no longer", line))}
    assert ended == {f.kind for f in tanh if not f.current}


def test_both_ways_tell_the_same_story(stories):
    """The training loss GradWatch logs itself makes the report the same
    with or without the TensorBoard callback."""
    full, alone = stories["with TensorBoard"], stories["GradWatch alone"]
    assert full["live"].replace("full", "alone") == alone["live"]
    told = [
        {
            run.name: [(f.kind, f.weights, f.epochs, f.current) for f in run.findings]
            for run in _report.load(stories["logs"][how]).runs
        }
        for how in ("with TensorBoard", "GradWatch alone")
    ]
    assert told[0] == told[1]


@pytest.mark.parametrize("name", ["live", "report"])
def test_docs_and_readme_show_what_the_example_prints(stories, name):
    shown = (REPO / "docs" / f"{name}.txt").read_text(encoding="utf-8")
    printed = stories["with TensorBoard"][name]
    # The log directory as make_images shows it.
    printed = re.sub(r"\S*/full/", f"{MAKE.SHOWN}/", printed)
    assert _same(printed, shown), (
        f"docs/{name}.txt drifted from the example; run python docs/make_images.py"
    )
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert f"<!-- make_images: {name} -->\n{MAKE.block(shown)}" in readme


def _same(a: str, b: str) -> bool:
    """Same text, numbers within `RTOL`."""
    if NUMBER.sub("#", a) != NUMBER.sub("#", b):
        return False
    for x, y in zip(NUMBER.findall(a), NUMBER.findall(b), strict=True):
        u, v = float(x.rstrip("%")), float(y.rstrip("%"))
        if abs(u - v) > RTOL * max(abs(u), abs(v)):
            return False
    return True
