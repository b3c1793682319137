"""How well the diagnosis rules judge models they were not tuned on.

Trains the labelled scenarios of `diagnosis_scenarios.py` (30 models in six
families: MLP, CNN, recurrent through time, residual + BatchNorm, text
embeddings, attention; data bundled with scikit-learn or synthetic, nothing
is downloaded) with `GradWatch`, `WeightNorms` and
`keras.callbacks.TensorBoard` into one log directory per run, reads each
back with the ``gradwatch report`` reader (`_report.load`) and scores its
findings, whatever rules `keras_gradwatch.diagnosis` holds.

Every label is checked by an independent measurement (`diagnosis_oracle.py`:
an eager tape on the model before and after training) printed next to the
verdict. Where a seed's measurement does not show the kinds the scenario is
built for, the row says "label not confirmed" and the run is scored against
what was measured.

Scoring is per kind, on the findings that are *current* at the end of the
run (`Finding.current`), since the measurement is of the trained model: a
finding of a measured kind is a true positive, of a kind neither measured
nor tolerated a false positive (any current finding on a healthy run is
one), a measured kind not found a false negative. Findings that held and
ended (history) are listed, not scored. A run whose current findings
contradict each other or the logged statistics counts in ``contradictions``
(`contradictions` says which). The same
logs are judged by AUTOTRAINER's published rules (`autotrainer.py`), whose
``unstable`` verdict counts as a false positive of no kind.

Usage::

    python benchmarks/diagnosis_eval.py [--half design|heldout|confirm|confirm2|all]
        [--seeds 0,1,2] [--only a,b] [--epochs N] [--logdir DIR]

The scenarios are split in two halves (`diagnosis_scenarios.HALVES`): the
rules are tuned on ``design`` (the default); ``heldout`` is run once with
the final rules and reported as it comes out. ``confirm``
(`diagnosis_confirm.py`) is a third set, written by someone who had seen
no result, for a rule changed after the held-out half was spent.
``confirm2`` (`diagnosis_confirm2.py`) is a fourth, likewise written without
seeing any result and run once; ``all`` stays design and heldout.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import autotrainer  # noqa: E402
import diagnosis_oracle as oracle  # noqa: E402
import diagnosis_scenarios  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from diagnosis_confirm import CONFIRM  # noqa: E402
from diagnosis_confirm2 import CONFIRM2  # noqa: E402
from diagnosis_scenarios import Scenario, two_circles  # noqa: E402

from keras_gradwatch import GradWatch, WeightNorms, _report  # noqa: E402
from keras_gradwatch.diagnosis import KINDS  # noqa: E402

SCENARIOS: dict[str, Scenario] = {
    **diagnosis_scenarios.SCENARIOS,
    **CONFIRM,
    **CONFIRM2,
}
HALVES = {
    **diagnosis_scenarios.HALVES,
    "confirm": tuple(CONFIRM),
    "confirm2": tuple(CONFIRM2),
}
"""``design`` and ``heldout`` split `diagnosis_scenarios.SCENARIOS`;
``confirm`` is `diagnosis_confirm.CONFIRM` and ``confirm2``
`diagnosis_confirm2.CONFIRM2`, fresh sets each run once."""

__all__ = ["HALVES", "SCENARIOS", "Scenario", "contradictions", "main", "two_circles"]


@dataclass
class Outcome:
    name: str
    seed: int
    label: frozenset[str]
    tolerated: frozenset[str]
    confirmed: bool
    measurement: oracle.Measurement
    found: set[str]
    history: set[str]
    contradictions: list[str]
    autotrainer: set[str]
    seconds: float


def run(name: str, seed: int, logdir: str, epochs: int | None) -> Outcome:
    """Trains one scenario into ``<logdir>/<seed>/<name>`` and judges it."""
    sc = SCENARIOS[name]
    epochs = epochs or sc.epochs
    keras.utils.set_random_seed(seed)
    x, y, xh, yh = sc.data(seed)
    model = sc.build()
    start = time.perf_counter()
    initial, _ = oracle.gains(model, sc.probes, sc.sequence, xh, yh)
    run_dir = os.path.join(logdir, str(seed), name)
    history = model.fit(
        x, y, epochs=epochs, batch_size=sc.batch_size, verbose=0,
        callbacks=[
            keras.callbacks.TensorBoard(run_dir, write_graph=False, profile_batch=0),
            GradWatch(run_dir, held_out=(xh, yh), diagnose=False),
            WeightNorms(run_dir),
        ],
    )  # fmt: skip
    m = oracle.measure(
        model, sc.probes, sc.sequence, initial, x, history.history, (xh, yh)
    )
    seconds = time.perf_counter() - start
    label, tolerated = oracle.label(m)
    (data,) = _report.load(run_dir).runs
    found = {f.kind for f in data.findings if f.current}
    history = {f.kind for f in data.findings if not f.current}
    accuracy = autotrainer.read_scalars(run_dir, "train", ["epoch_accuracy"])
    weights = autotrainer.read_scalars(run_dir, "weights", ["weight_l2/"])
    shapes = {w.path: tuple(w.shape) for w in model.trainable_weights}
    auto = autotrainer.detect(
        data.series, accuracy.get("epoch_accuracy", {}), weights, shapes, epochs
    )
    return Outcome(
        name, seed, label, tolerated, label == sc.intended, m, found, history,
        contradictions(data), set(auto), seconds,
    )  # fmt: skip


def contradictions(data: _report.RunData) -> list[str]:
    """What the current findings of one run say against each other or the
    logged statistics: vanishing and exploding at once (one direction per
    run), exploding where every gradient is exactly 0 at the last logged
    epoch (a collapse), non_finite next to a verdict on the statistics of
    non-finite weights."""
    found = {f.kind for f in data.findings if f.current}
    said = []
    if {"vanishing", "exploding"} <= found:
        said.append("vanishing and exploding")
    last = data.series.grad_norm[-1]
    if "exploding" in found and np.isfinite(last).all() and not last.any():
        said.append("exploding with every gradient 0")
    if "non_finite" in found and found & {"dead_units", "vanishing", "stalled"}:
        said.append("non_finite with " + _kinds(found - {"non_finite", "exploding"}))
    return said


def score(outcomes: Iterable[Outcome], detector: str) -> dict[str, dict]:
    """Precision and recall per kind and ``overall`` of `detector`
    (``"found"``: our rules, ``"autotrainer"``)."""
    counts = {k: {"tp": 0, "fp": 0, "fn": 0} for k in (*KINDS, "overall")}
    for o in outcomes:
        found = getattr(o, detector)
        for kind in found:
            key = "tp" if kind in o.label else None
            if key is None and kind in o.tolerated:
                continue
            key = key or "fp"
            if kind in counts:
                counts[kind][key] += 1
            counts["overall"][key] += 1
        for kind in o.label - found:
            counts[kind]["fn"] += 1
            counts["overall"]["fn"] += 1
    for c in counts.values():
        c["precision"] = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else 1.0
        c["recall"] = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else 1.0
    return counts


def _kinds(kinds: Iterable[str]) -> str:
    return ", ".join(sorted(kinds)) or "nothing"


def _pr(c: dict) -> str:
    return f"{c['precision']:.2f} / {c['recall']:.2f}"


def print_runs(outcomes: list[Outcome]) -> None:
    print("| seed | scenario | family | label (measured) | measurement | "
          "gradwatch | AUTOTRAINER | s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for o in outcomes:
        sc = SCENARIOS[o.name]
        label = _kinds(o.label)
        if o.tolerated:
            label += f" (tolerated: {_kinds(o.tolerated)})"
        if not o.confirmed:
            label += f"; label not confirmed (built for {_kinds(sc.intended)})"
        mark = "" if o.found <= o.label | o.tolerated and o.label <= o.found else " ✗"
        found = _kinds(o.found) + mark
        if o.history:
            found += f"; earlier: {_kinds(o.history)}"
        if o.contradictions:
            found += f"; contradicts: {'; '.join(o.contradictions)}"
        print(
            f"| {o.seed} | {o.name} | {sc.family} | {label} | "
            f"{o.measurement.summary()} | {found} | "
            f"{_kinds(o.autotrainer)} | {o.seconds:.1f} |"
        )


def print_scores(title: str, ours: dict, theirs: dict) -> None:
    print(f"\n{title}: precision / recall (tp, fp, fn)")
    print("| kind | gradwatch | AUTOTRAINER |")
    print("|---|---|---|")
    for kind in (*KINDS, "overall"):
        a, b = ours[kind], theirs[kind]
        print(
            f"| {kind} | {_pr(a)} ({a['tp']}, {a['fp']}, {a['fn']}) | "
            f"{_pr(b)} ({b['tp']}, {b['fp']}, {b['fn']}) |"
        )


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated")
    parser.add_argument(
        "--half",
        choices=[*HALVES, "all"],
        default="design",
        help="which scenarios; all: design and heldout",
    )
    parser.add_argument("--only", help="scenarios (instead of a half)")
    parser.add_argument("--epochs", type=int, help="instead of each scenario's")
    parser.add_argument("--logdir", help="keep the logs here (default: temporary)")
    args = parser.parse_args(argv)
    if args.only:
        names = args.only.split(",")
    else:
        both = HALVES["design"] + HALVES["heldout"]
        names = list(both if args.half == "all" else HALVES[args.half])
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenarios {unknown}; known: {', '.join(SCENARIOS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        logdir = args.logdir or tmp
        outcomes = [run(n, s, logdir, args.epochs) for s in seeds for n in names]
    seconds = time.perf_counter() - start
    print(f"Label rules: {oracle.RULES}")
    print_runs(outcomes)
    per_seed = {}
    for seed in seeds:
        mine = [o for o in outcomes if o.seed == seed]
        per_seed[seed] = {"gradwatch": score(mine, "found"),
                          "autotrainer": score(mine, "autotrainer")}  # fmt: skip
        print_scores(f"Seed {seed}", *per_seed[seed].values())
    pooled = {"gradwatch": score(outcomes, "found"),
              "autotrainer": score(outcomes, "autotrainer")}  # fmt: skip
    print_scores(f"Pooled over seeds {args.seeds}", *pooled.values())
    unconfirmed = [(o.name, o.seed) for o in outcomes if not o.confirmed]
    contradicting = [(o.name, o.seed) for o in outcomes if o.contradictions]
    print(f"\n{len(outcomes)} runs in {seconds:.0f} s; labels not confirmed: "
          f"{unconfirmed or 'none'}; runs with contradictory findings: "
          f"{contradicting or 'none'}")  # fmt: skip
    return {
        "outcomes": outcomes,
        "per_seed": per_seed,
        "pooled": pooled,
        "unconfirmed": unconfirmed,
        "contradictions": contradicting,
        "seconds": seconds,
        "precision": pooled["gradwatch"]["overall"]["precision"],
        "recall": pooled["gradwatch"]["overall"]["recall"],
    }


if __name__ == "__main__":
    main()
