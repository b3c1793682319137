"""Event files -> per-run series and findings -> table, JSON or picture.

Reads with `keras_gradwatch._events` (no TensorFlow, no Keras; bounded
memory and time on any log directory). Every directory under the log
directory whose events hold ``grad_norm/<path>`` tags is a run. Its sibling
directories add evidence: the ``weight_change/<path>`` scalars of
WeightNorms (any sibling, ``weights`` by default) and the ``epoch_loss`` of
``keras.callbacks.TensorBoard``'s ``train`` run (the training loss).

A run written with ``GradWatch(every_n_steps=N)`` (it has the ``epoch``
tag) is on the optimizer-step axis: its rows are the steps ``epoch`` was
written at, its loss is its own ``heldout_loss``, and the per-epoch
evidence of the siblings is not joined to it.

Several event files in one run directory are joined by the sessions rule of
`keras_gradwatch._events` (the newest session wins where steps overlap).
Values outside their domain (a negative norm, a dead-unit fraction outside
[0, 1], a negative or fractional count) are left out as invalid data, so
they never become findings. Whatever was left out is said in `Report.notes`.

Every directory whose events hold AutoClip's per-step norms
(``autoclip/step_grad_norm``, written with ``every_n_steps``) is a clip run:
the report lists the steps where the norm spiked, by the rule of
`keras_gradwatch.spikes`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from keras_gradwatch import _events, spikes, tags
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
_WEIGHT_L2 = "weight_l2"
"""WeightNorms' ‖w‖₂: a non-finite one counts as non-finite weights."""
_WEIGHT_NONFINITE = tags.WEIGHT_NONFINITE
_LAYER_STATS = (tags.ACT_GRAD_NORM, tags.TIME_GRAD_RATIO)
"""GradWatch's per-layer scalars the rules read; the layers are those with
an ``act_grad_norm``, in the order they were written (forward order)."""
_LOSS_RUN, _LOSS_TAG = "train", "epoch_loss"
"""Where ``keras.callbacks.TensorBoard`` puts the training loss."""

_DOMAINS = {
    "grad_norm": "a norm, >= 0",
    "grad_mean_abs": "a mean of |g|, >= 0",
    "grad_to_weight": "a ratio of norms, >= 0",
    "grad_dead_units": "a fraction in [0, 1]",
    "grad_nonfinite": "a count, a whole number >= 0",
    "weight_change": "a ratio of norms, >= 0",
    "weight_l2": "a norm, >= 0",
    "weight_nonfinite": "a count, a whole number >= 0",
    "act_grad_norm": "a norm, >= 0",
    "time_grad_ratio": "a ratio of norms, >= 0",
    tags.AUTOCLIP_STEP_GRAD_NORM: "a norm, >= 0",
}
"""What each value must be; NaN is valid where a NaN gradient makes it NaN."""

MAX_VALUES = 1_000_000
"""Logged epochs times weights of one run, at most (a real run: 100 epochs of
a 48-block transformer's 600 weights is 60,000); a crafted directory with
thousands of weights each at its own step is left out with a note rather
than grown into gigabytes. About 8 MB per statistic."""

MAX_PANELS = 8
"""Runs drawn by `plot`, at most; the picture's size stays bounded."""
PLOT_FORMATS = ("png", "pdf", "svg")
"""File extensions `plot` writes (matplotlib's Agg, PDF and SVG backends)."""

Values = _events.Values


@dataclass
class RunData:
    """One GradWatch run: its name (path under the log directory), series
    and findings."""

    name: str
    series: Series
    findings: list[Finding]


@dataclass
class ClipRun:
    """AutoClip's per-step norms of one run directory, and their spikes."""

    name: str
    steps: np.ndarray
    """Optimizer steps with a logged norm, ascending."""
    spike_steps: np.ndarray
    spike_norms: np.ndarray
    spike_medians: np.ndarray
    """The median of the norms before each spike, which it was judged against."""


@dataclass
class Report:
    """Every run found, and one line per thing that was skipped or left out."""

    runs: list[RunData] = field(default_factory=list)
    clips: list[ClipRun] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def load(logdir: str | os.PathLike[str]) -> Report:
    """Reads every GradWatch run under `logdir`, in path order, and diagnoses
    it; and every AutoClip run with per-step norms, and finds its spikes.

    A run still being written, or whose last record is cut short, is read up
    to its last complete record (and a note says so).

    Raises:
        FileNotFoundError: `logdir` is not a directory.
    """
    root = os.fspath(logdir)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"not a directory: {root}")
    listing = _events.walk(root)
    reader = _Reader(root)
    report = Report(notes=list(listing.notes))
    for directory, files in listing.runs.items():
        values = reader.read(directory, files)
        if values.get(tags.AUTOCLIP_STEP_GRAD_NORM):
            report.clips.append(
                _clip_run(reader.name(directory), values[tags.AUTOCLIP_STEP_GRAD_NORM])
            )
        paths = [
            t.split("/", 1)[1]
            for t in values
            if t.startswith("grad_norm/") and t != tags.GLOBAL_NORM_TAG
        ]
        if not paths:
            continue
        epochs = sorted({e for p in paths for e in values[f"grad_norm/{p}"]})
        axis = "step" if values.get(tags.EPOCH_TAG) else "epoch"
        if axis == "step":
            marked = values[tags.EPOCH_TAG]
            unmarked = len(epochs)
            epochs = [e for e in epochs if e in marked]
            unmarked -= len(epochs)
            if unmarked:
                report.notes.append(
                    f"{reader.name(directory)}: left out: the passes at "
                    f"{unmarked} step(s) without an epoch mark (another fit "
                    "logged per epoch into this run); give each step axis a "
                    "run of its own"
                )
        if len(epochs) * len(paths) > MAX_VALUES:
            report.notes.append(
                f"{reader.name(directory)}: left out: {len(epochs)} logged {axis}s "
                f"x {len(paths)} weights is more than the {MAX_VALUES:,} values "
                "per statistic the report holds; give a LOGDIR with fewer runs "
                "mixed into one directory"
            )
            continue
        series = _series(directory, values, paths, epochs, reader, axis)
        report.runs.append(RunData(reader.name(directory), series, diagnose(series)))
    report.notes.extend(reader.notes)
    report.notes = list(dict.fromkeys(report.notes))  # each once, in order
    return report


def _clip_run(name: str, norms: dict[int, float]) -> ClipRun:
    steps = np.array(sorted(norms), dtype=np.int64)
    series = np.array([norms[int(t)] for t in steps], dtype=np.float64)
    finite = np.flatnonzero(np.isfinite(series))
    at, medians = spikes.spike_positions(
        series[finite], SPIKE_WINDOW, SPIKE_Z, SPIKE_FLOOR, SPIKE_MIN_POINTS
    )
    return ClipRun(name, steps, steps[finite][at], series[finite][at], medians)


SPIKE_WINDOW, SPIKE_Z, SPIKE_FLOOR, SPIKE_MIN_POINTS = 50, 6.0, 0.1, 5
"""`keras_gradwatch.spikes.find_spikes`' defaults: the rule the report uses."""
MAX_SPIKES_SHOWN = 10
"""Spikes listed per clip run in text; the JSON has them all."""


def printable(text: str) -> str:
    """`text` with control and format characters escaped as in `repr`, so
    names from a log directory cannot move the cursor or repaint a terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def table(runs: list[RunData], clips: Sequence[ClipRun] = ()) -> str:
    """A plain-text report: per run, one row per weight (input to output) with
    its last values, then the findings and what to try; per clip run, its
    spikes. Control characters in names are escaped."""
    lines = []
    for run in runs:
        s = run.series
        lines.append(f"run {run.name}: {_epoch_summary(s)}")
        width = max(len("weight"), *(len(printable(p)) for p in s.paths))
        lines.append(
            f"  {'weight':<{width}}  {'grad norm':>9}  {'grad/weight':>11}  "
            f"{'dead units':>10}  {'weight change':>13}"
        )
        for row in _rows(s):
            lines.append(
                f"  {printable(row['path']):<{width}}  {_fmt(row['grad_norm']):>9}  "
                f"{_fmt(row['grad_to_weight']):>11}  "
                f"{_fmt(row['dead_units'], '{:.0%}'):>10}  "
                f"{_fmt(row['weight_change']):>13}"
            )
        if run.findings:
            for finding in run.findings:
                lines.append(
                    f"  {finding.kind} ({s.axis}s {_ranges(finding.epochs)}): "
                    f"{finding.message}"
                )
                lines.append(f"    try: {finding.remedy}")
        else:
            lines.append("  no findings")
        lines.append("")
    for clip in clips:
        lines.extend(_clip_lines(clip))
        lines.append("")
    return "\n".join(printable(line) for line in lines)


def _clip_lines(clip: ClipRun) -> list[str]:
    count = clip.spike_steps.size
    head = (
        f"run {clip.name}: AutoClip's norm at {clip.steps.size} steps "
        f"({_ranges(tuple(int(t) for t in clip.steps))}), "
    )
    if not count:
        return [head + "no spikes"]
    lines = [
        head + f"{count} spike(s) above the median of the {SPIKE_WINDOW} "
        f"norms before them (+ {SPIKE_Z:g} robust standard deviations):"
    ]
    for step, norm, median in zip(
        clip.spike_steps[:MAX_SPIKES_SHOWN],
        clip.spike_norms[:MAX_SPIKES_SHOWN],
        clip.spike_medians[:MAX_SPIKES_SHOWN],
        strict=True,
    ):
        times = f"{norm / median:.3g}x the median" if median > 0 else "median 0"
        lines.append(f"  step {step}: norm {_fmt(norm)}, {times} {_fmt(median)}")
    if count > MAX_SPIKES_SHOWN:
        lines.append(f"  ... and {count - MAX_SPIKES_SHOWN} more (all in --json)")
    return lines


def to_json(report: Report) -> dict[str, Any]:
    """The report as JSON-ready data; non-finite numbers become None (null)."""
    return {
        "runs": [
            {
                "run": run.name,
                "axis": run.series.axis,
                "epochs": [int(e) for e in run.series.epochs],
                "weights": [
                    {k: _json(v) for k, v in row.items()} for row in _rows(run.series)
                ],
                "findings": [finding.to_dict() for finding in run.findings],
            }
            for run in report.runs
        ],
        "autoclip": [
            {
                "run": clip.name,
                "steps": int(clip.steps.size),
                "spikes": [
                    {"step": int(t), "norm": _json(n), "median_before": _json(m)}
                    for t, n, m in zip(
                        clip.spike_steps,
                        clip.spike_norms,
                        clip.spike_medians,
                        strict=True,
                    )
                ],
            }
            for clip in report.clips
        ],
        "notes": list(report.notes),
    }


def plot_format(path: str | os.PathLike[str]) -> str:
    """The format `plot` writes to `path`, from its extension.

    Raises:
        ValueError: the extension is not one of `PLOT_FORMATS`.
    """
    extension = os.path.splitext(os.fspath(path))[1].lower().lstrip(".")
    if extension not in PLOT_FORMATS:
        raise ValueError(
            f"cannot write a {extension or 'extension-less'} picture; name the "
            f"file .{', .'.join(PLOT_FORMATS[:-1])} or .{PLOT_FORMATS[-1]}"
        )
    return extension


def plot(runs: list[RunData], path: str | os.PathLike[str]) -> int:
    """Saves the gradient flow: mean |g| per kernel, input to output, on a log
    scale, one line per selected epoch, one panel per run, in the format of
    the file's extension (`PLOT_FORMATS`).

    At most `MAX_PANELS` runs are drawn (the first ones), two panels per row,
    so the picture stays legible and its size bounded however many runs a
    log directory holds.

    Returns:
        The number of runs drawn.

    Raises:
        ValueError: an extension `plot_format` refuses.
        ImportError: matplotlib is not installed.
        OSError: the file cannot be written.
    """
    image_format = plot_format(path)
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "--plot needs matplotlib: pip install keras_gradwatch[plot]"
        ) from error
    drawn_runs = runs[:MAX_PANELS]
    columns = 1 if len(drawn_runs) == 1 else 2
    rows = math.ceil(len(drawn_runs) / columns)
    figure = Figure(figsize=(8 * columns, 4.5 * rows), layout="constrained")
    FigureCanvasAgg(figure)  # Agg: no display, no global pyplot state.
    panels = figure.subplots(rows, columns, squeeze=False).reshape(-1)
    for axes in panels[len(drawn_runs) :]:
        axes.set_visible(False)
    for axes, run in zip(panels, drawn_runs, strict=False):
        _draw(axes, run)
    figure.savefig(os.fspath(path), format=image_format, dpi=100)
    return len(drawn_runs)


def _draw(axes: Any, run: RunData) -> None:
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
            axes.plot(mean_abs[t], marker="o", label=f"{s.axis} {s.epochs[t]}")
        axes.set_yscale("log")
        axes.legend(fontsize=8)
    # Past about 30 labels they overlap: label every k-th kernel.
    every = max(1, math.ceil(kernels.size / 30))
    shown = np.arange(0, kernels.size, every)
    axes.set_xticks(shown)
    axes.set_xticklabels(
        [_short(printable(s.paths[kernels[k]])) for k in shown],
        rotation=30,
        ha="right",
        fontsize=8,
    )
    axes.set_title(f"{_short(printable(run.name))}: gradient flow, input -> output")
    axes.set_ylabel("mean |gradient|")
    axes.grid(True, which="both", alpha=0.3)


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else f"...{text[-(limit - 3) :]}"


class _Reader:
    """Reads each run directory once, cleans its values, keeps its notes."""

    def __init__(self, root: str) -> None:
        self._root = root
        self._cache: dict[str, Values] = {}
        self.texts: dict[str, dict[str, str]] = {}
        """Directory -> its text tags (layers' activations) -> text."""
        self.notes: list[str] = []

    def name(self, directory: str) -> str:
        return os.path.relpath(directory, self._root).replace(os.sep, "/")

    def read(self, directory: str, files: list[str]) -> Values:
        key = os.path.abspath(directory)
        if key not in self._cache:
            run = _events.read_run(self.name(directory), files, _wanted)
            self.notes.extend(run.notes)
            self._cache[key] = self._clean(directory, run.values)
            self.texts[key] = run.texts
        return self._cache[key]

    def _clean(self, directory: str, values: Values) -> Values:
        """Drops values outside their domain, with one note per tag prefix."""
        invalid: dict[str, int] = {}
        for tag, steps in values.items():
            prefix = tag if tag in _DOMAINS else tag.split("/", 1)[0]
            if tag == tags.GLOBAL_NORM_TAG or prefix not in _DOMAINS:
                continue
            bad = [step for step, v in steps.items() if not _in_domain(prefix, v)]
            for step in bad:
                del steps[step]
            if bad:
                invalid[prefix] = invalid.get(prefix, 0) + len(bad)
        for prefix, count in invalid.items():
            self.notes.append(
                f"{self.name(directory)}: {count} {prefix} value(s) left out as "
                f"invalid data (each must be {_DOMAINS[prefix]})"
            )
        return values


def _wanted(tag: str) -> bool:
    return tag in (
        _LOSS_TAG,
        tags.AUTOCLIP_STEP_GRAD_NORM,
        tags.HELDOUT_LOSS,
        tags.EPOCH_TAG,
    ) or tag.split("/", 1)[0] in (
        *_STATS,
        *_LAYER_STATS,
        _WEIGHT_CHANGE,
        _WEIGHT_L2,
        _WEIGHT_NONFINITE,
        tags.ACTIVATION,
    )


def _in_domain(prefix: str, value: float) -> bool:
    if prefix == "grad_dead_units":
        return 0.0 <= value <= 1.0
    if prefix in ("grad_nonfinite", "weight_nonfinite"):
        return math.isfinite(value) and value >= 0 and value == int(value)
    return math.isnan(value) or value >= 0


def _series(
    directory: str,
    values: Values,
    paths: list[str],
    epochs: list[int],
    reader: _Reader,
    axis: str,
) -> Series:
    loss = logged = change = nonfinite = None
    if any(f"{_WEIGHT_NONFINITE}/{p}" in values for p in paths):
        nonfinite = _grid(values, _WEIGHT_NONFINITE, paths, epochs)
    siblings = _siblings(directory, reader.notes) if axis == "epoch" else []
    if axis == "step" and tags.HELDOUT_LOSS in values:
        found_loss = values[tags.HELDOUT_LOSS]
        logged = np.array([e in found_loss for e in epochs])
        loss = np.array([found_loss.get(e, np.nan) for e in epochs])
    for run, files in ((directory, None), *siblings):
        found = values if files is None else reader.read(run, files)
        if os.path.basename(run) == _LOSS_RUN and _LOSS_TAG in found:
            logged = np.array([e in found[_LOSS_TAG] for e in epochs])
            loss = np.array([found[_LOSS_TAG].get(e, np.nan) for e in epochs])
        if change is None and any(f"{_WEIGHT_CHANGE}/{p}" in found for p in paths):
            change = _grid(found, _WEIGHT_CHANGE, paths, epochs)
            if nonfinite is None:
                # WeightNorms' norm: 1 where it was logged non-finite, else 0.
                norm = _grid(found, _WEIGHT_L2, paths, epochs, missing=-1.0)
                nonfinite = np.where(norm == -1.0, np.nan, ~np.isfinite(norm))
    prefix = f"{_LAYER_STATS[0]}/"
    layers = [t[len(prefix) :] for t in values if t.startswith(prefix)]
    texts = reader.texts.get(os.path.abspath(directory), {})
    activations = {
        layer: texts[tags.tag(tags.ACTIVATION, layer)]
        for layer in layers
        if tags.tag(tags.ACTIVATION, layer) in texts
    }
    return Series(
        epochs=np.array(epochs, dtype=np.int64),
        paths=paths,
        grad_norm=_grid(values, "grad_norm", paths, epochs),
        grad_mean_abs=_grid(values, "grad_mean_abs", paths, epochs),
        grad_to_weight=_grid(values, "grad_to_weight", paths, epochs),
        grad_dead_units=_grid(values, "grad_dead_units", paths, epochs),
        grad_nonfinite=_grid(values, "grad_nonfinite", paths, epochs),
        weight_change=change,
        weight_nonfinite=nonfinite,
        loss=loss,
        loss_logged=logged,
        layers=layers,
        activations=activations,
        act_grad_norm=_grid(values, "act_grad_norm", layers, epochs)
        if layers
        else None,
        time_grad_ratio=(
            _grid(values, "time_grad_ratio", layers, epochs) if layers else None
        ),
        axis=axis,
    )


def _grid(
    values: Values,
    prefix: str,
    paths: list[str],
    epochs: list[int],
    missing: float = math.nan,
) -> np.ndarray:
    """``[epochs, paths]``, `missing` where nothing was logged; built per
    logged value, not per cell."""
    grid = np.full((len(epochs), len(paths)), missing)
    row = {e: i for i, e in enumerate(epochs)}
    for j, path in enumerate(paths):
        for epoch, value in values.get(f"{prefix}/{path}", {}).items():
            if epoch in row:
                grid[row[epoch], j] = value
    return grid


def _siblings(directory: str, notes: list[str]) -> list[tuple[str, list[str]]]:
    """Other run directories next to `directory`, with their event files;
    WeightNorms' default first."""
    parent = os.path.dirname(os.path.abspath(directory))
    me = os.path.basename(os.path.abspath(directory))
    _, subdirs = _events.event_files(parent, notes)
    found = []
    for sub in subdirs:
        if os.path.basename(sub) == me:
            continue
        files, _ = _events.event_files(sub, notes)
        if files:
            found.append((sub, files))
    found.sort(key=lambda item: os.path.basename(item[0]) != tags.WEIGHTS_RUN)
    return found


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
    text = f"{s.epochs.size} logged {s.axis}s ({_ranges(tuple(s.epochs))})"
    if s.loss is not None and np.isfinite(s.loss).any():
        finite = s.loss[np.isfinite(s.loss)]
        which = "held-out" if s.axis == "step" else "train"
        text += f", {which} loss {finite[0]:.4g} -> {finite[-1]:.4g}"
    return text


def _ranges(epochs: tuple[int, ...]) -> str:
    """``(0, 1, 2, 5)`` -> ``"0-2, 5"``; ``(50, 100, 150, 200, 230)`` ->
    ``"50-200 every 50, 230"``: runs of three or more at one stride."""
    parts: list[str] = []
    i, n = 0, len(epochs)
    while i < n:
        j = i + 1
        if j < n:
            stride = epochs[j] - epochs[i]
            while j + 1 < n and epochs[j + 1] - epochs[j] == stride:
                j += 1
        if j < n and (stride == 1 or j - i >= 2):
            every = "" if stride == 1 else f" every {stride}"
            parts.append(f"{epochs[i]}-{epochs[j]}{every}")
            i = j + 1
        else:
            parts.append(str(epochs[i]))
            i += 1
    return ", ".join(parts)


def _fmt(value: float, spec: str = "{:.2e}") -> str:
    return spec.format(value) if math.isfinite(value) else "-"


def _json(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
