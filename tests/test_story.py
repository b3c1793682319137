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

pytestmark = pytest.mark.numeric  # the story, with oneDNN on and off

REPO = Path(__file__).resolve().parent.parent
MAKE = load_script(REPO / "docs" / "make_images.py")
EPOCHS = 100
"""As the README's command runs it, and as ``docs/`` shows it."""

FLOAT = re.compile(r"[-+]?\d+(?:\.\d+(?:e[-+]?\d+)?|e[-+]?\d+)")
"""A measured value as the example prints it (``0.4714``, ``2.80e-01``).

These hold on one CPU, and the story is compared exactly without them:
every word, finding, weight, epoch range, count and percentage. They move
with the CPU's kernels: the last epoch's values of the ReLU net, which
learns for 1,600 SGD steps with momentum, differed by up to 26% between the
CPU that wrote ``docs/`` and an AMD EPYC with AVX-512 (the tanh net's, which
barely moves, were the same to four digits), while oneDNN on and off gave
the same text on each. A learning run amplifies a rounding difference in
any step into another trajectory, as much as a change of seed does
(Summers & Dinneen, "Nondeterminism and Instability in Neural Network
Optimization", ICML 2021), so no tolerance on them would hold on every
CPU."""


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
    """Same text, measured values aside (see `FLOAT`)."""
    return FLOAT.sub("#", a) == FLOAT.sub("#", b)
