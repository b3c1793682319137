"""Event files -> per-run series and findings -> table, JSON or picture.

Reads with TensorBoard's own reader (the ``tensorboard`` package); never
imports Keras. Every directory under the log directory whose events hold
``grad_norm/<path>`` tags is a run. Its sibling directories add evidence: the
``weight_change/<path>`` scalars of WeightNorms (any sibling, ``weights`` by
default) and the ``epoch_loss`` of ``keras.callbacks.TensorBoard``'s ``train``
run.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

from keras_gradwatch import tags
from keras_gradwatch.diagnosis import Finding, Series, diagnose

_STATS = (
    "grad_norm",
    "grad_mean_abs",
    "grad_to_weight",
    "grad_dead_units",
    "grad_nonfinite",
)
"""The GradWatch scalars the rules read (see `keras_gradwatch.tags`)."""
_WEIGHT_CHANGE = "weight_change"
"""WeightNorms' relative change per logged epoch (see `keras_gradwatch.tags`)."""
_LOSS_RUN, _LOSS_TAG = "train", "epoch_loss"
"""Where ``keras.callbacks.TensorBoard`` puts the training loss."""

Values = dict[str, dict[int, float]]
"""Tag -> epoch -> value."""


@dataclass
class RunData:
    """One GradWatch run: its name (path under the log directory), series
    and findings."""

    name: str
    series: Series
    findings: list[Finding]


def load(logdir: str | os.PathLike[str]) -> list[RunData]:
    """Reads every GradWatch run under `logdir`, in path order, and diagnoses it.

    A run still being written, or whose last record is cut short, is read up
    to its last complete record.

    Raises:
        FileNotFoundError: `logdir` is not a directory.
    """
    root = os.fspath(logdir)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"not a directory: {root}")
    cache: dict[str, Values] = {}
    runs = []
    for directory, subdirs, files in os.walk(root):
        subdirs.sort()
        if not any("tfevents" in f for f in files):
            continue
        values = _read(directory, cache)
        paths = [
            t.split("/", 1)[1]
            for t in values
            if t.startswith("grad_norm/") and t != tags.GLOBAL_NORM_TAG
        ]
        if not paths:
            continue
        series = _series(directory, values, paths, cache)
        name = os.path.relpath(directory, root).replace(os.sep, "/")
        runs.append(RunData(name, series, diagnose(series)))
    return runs


def table(runs: list[RunData]) -> str:
    """A plain-text report: per run, one row per weight (input to output) with
    its last values, then the findings and what to try."""
    lines = []
    for run in runs:
        s = run.series
        lines.append(f"run {run.name}: {_epoch_summary(s)}")
        width = max(len("weight"), *(len(p) for p in s.paths))
        lines.append(
            f"  {'weight':<{width}}  {'grad norm':>9}  {'grad/weight':>11}  "
            f"{'dead units':>10}  {'weight change':>13}"
        )
        for row in _rows(s):
            lines.append(
                f"  {row['path']:<{width}}  {_fmt(row['grad_norm']):>9}  "
                f"{_fmt(row['grad_to_weight']):>11}  "
                f"{_fmt(row['dead_units'], '{:.0%}'):>10}  "
                f"{_fmt(row['weight_change']):>13}"
            )
        if run.findings:
            for finding in run.findings:
                lines.append(
                    f"  {finding.kind} (epochs {_ranges(finding.epochs)}): "
                    f"{finding.message}"
                )
                lines.append(f"    try: {finding.remedy}")
        else:
            lines.append("  no findings")
        lines.append("")
    return "\n".join(lines)


def to_json(runs: list[RunData]) -> dict[str, Any]:
    """The report as JSON-ready data; non-finite numbers become None (null)."""
    return {
        "runs": [
            {
                "run": run.name,
                "epochs": [int(e) for e in run.series.epochs],
                "weights": [
                    {k: _json(v) for k, v in row.items()} for row in _rows(run.series)
                ],
                "findings": [finding.to_dict() for finding in run.findings],
            }
            for run in runs
        ]
    }


def plot(runs: list[RunData], path: str | os.PathLike[str]) -> None:
    """Saves the gradient flow as a PNG: mean |g| per kernel, input to output,
    on a log scale, one line per selected epoch, one panel per run.

    Raises:
        ImportError: matplotlib is not installed.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "--plot needs matplotlib: pip install keras_gradwatch[plot]"
        ) from error
    figure = Figure(figsize=(8, 4.5 * len(runs)), layout="constrained")
    FigureCanvasAgg(figure)  # Agg: no display, no global pyplot state.
    panels = figure.subplots(len(runs), 1, squeeze=False)[:, 0]
    for axes, run in zip(panels, runs, strict=True):
        s = run.series
        kernels = s.kernel_columns()
        if not kernels.size:
            kernels = np.arange(len(s.paths))
        mean_abs = s.grad_mean_abs[:, kernels]
        mean_abs = np.where(mean_abs > 0, mean_abs, np.nan)  # log scale
        drawn = np.flatnonzero(np.isfinite(mean_abs).any(axis=1))
        if drawn.size:
            # The first and last epochs with data and three in between.
            spread = np.linspace(0, drawn.size - 1, 5).round().astype(int)
            for t in drawn[np.unique(spread)]:
                axes.plot(mean_abs[t], marker="o", label=f"epoch {s.epochs[t]}")
            axes.set_yscale("log")
            axes.legend(fontsize=8)
        axes.set_xticks(range(kernels.size))
        axes.set_xticklabels(
            [s.paths[k] for k in kernels], rotation=30, ha="right", fontsize=8
        )
        axes.set_title(f"{run.name}: gradient flow, input -> output")
        axes.set_ylabel("mean |gradient|")
        axes.grid(True, which="both", alpha=0.3)
    figure.savefig(os.fspath(path), format="png", dpi=100)


def _read(directory: str, cache: dict[str, Values]) -> Values:
    """Every scalar tensor summary of one run directory, tags in first-written
    order (TensorBoard's reservoirs keep insertion order)."""
    if directory not in cache:
        reader = event_accumulator.EventAccumulator(
            directory, size_guidance={event_accumulator.TENSORS: 0}
        )
        reader.Reload()
        values: Values = {}
        for tag in reader.Tags()[event_accumulator.TENSORS]:
            arrays = {
                e.step: tensor_util.make_ndarray(e.tensor_proto)
                for e in reader.Tensors(tag)
            }
            # Histograms, text and other non-scalars are none of our business.
            if all(a.shape == () and a.dtype.kind in "fiu" for a in arrays.values()):
                values[tag] = {step: float(a) for step, a in arrays.items()}
        cache[directory] = values
    return cache[directory]


def _series(
    directory: str, values: Values, paths: list[str], cache: dict[str, Values]
) -> Series:
    epochs = sorted({e for p in paths for e in values[f"grad_norm/{p}"]})
    loss = change = None
    for run in (directory, *_siblings(directory)):
        found = _read(run, cache)
        if os.path.basename(run) == _LOSS_RUN and _LOSS_TAG in found:
            loss = np.array([found[_LOSS_TAG].get(e, np.nan) for e in epochs])
        if change is None and any(f"{_WEIGHT_CHANGE}/{p}" in found for p in paths):
            change = _grid(found, _WEIGHT_CHANGE, paths, epochs)
    return Series(
        epochs=np.array(epochs, dtype=np.int64),
        paths=paths,
        **{prefix: _grid(values, prefix, paths, epochs) for prefix in _STATS},
        weight_change=change,
        loss=loss,
    )


def _grid(
    values: Values, prefix: str, paths: list[str], epochs: list[int]
) -> np.ndarray:
    return np.array(
        [
            [values.get(f"{prefix}/{p}", {}).get(e, np.nan) for p in paths]
            for e in epochs
        ],
        dtype=np.float64,
    ).reshape(len(epochs), len(paths))


def _siblings(directory: str) -> list[str]:
    """Other run directories next to `directory`; WeightNorms' default first."""
    parent = os.path.dirname(os.path.abspath(directory))
    me = os.path.basename(os.path.abspath(directory))
    names = sorted(
        n
        for n in os.listdir(parent)
        if n != me
        and os.path.isdir(os.path.join(parent, n))
        and any("tfevents" in f for f in os.listdir(os.path.join(parent, n)))
    )
    names.sort(key=lambda n: n != tags.WEIGHTS_RUN)
    return [os.path.join(parent, n) for n in names]


def _rows(s: Series) -> list[dict[str, Any]]:
    """Per weight, input to output: the last logged value of each column."""
    columns = {
        "grad_norm": s.grad_norm,
        "grad_to_weight": s.grad_to_weight,
        "dead_units": s.grad_dead_units,
        "weight_change": s.weight_change,
    }
    return [
        {"path": path, **{k: _last(v, j) for k, v in columns.items()}}
        for j, path in enumerate(s.paths)
    ]


def _last(values: np.ndarray | None, column: int) -> float:
    if values is None:
        return math.nan
    logged = values[:, column][np.isfinite(values[:, column])]
    return float(logged[-1]) if logged.size else math.nan


def _epoch_summary(s: Series) -> str:
    text = f"{s.epochs.size} logged epochs ({_ranges(tuple(s.epochs))})"
    if s.loss is not None and np.isfinite(s.loss).any():
        finite = s.loss[np.isfinite(s.loss)]
        text += f", loss {finite[0]:.4g} -> {finite[-1]:.4g}"
    return text


def _ranges(epochs: tuple[int, ...]) -> str:
    """``(0, 1, 2, 5)`` -> ``"0-2, 5"``."""
    parts: list[str] = []
    start = previous = None
    for e in (*epochs, None):
        if previous is not None and e == previous + 1:
            previous = e
            continue
        if start is not None:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
        start = previous = e
    return ", ".join(parts)


def _fmt(value: float, spec: str = "{:.2e}") -> str:
    return spec.format(value) if math.isfinite(value) else "-"


def _json(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
