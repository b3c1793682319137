"""Event files -> per-run series and findings -> table, JSON or picture.

Reads with `keras_gradwatch._events` (no TensorFlow, no Keras; bounded
memory and time on any log directory). Every directory under the log
directory whose events hold ``grad_norm/<path>`` tags is a run. Its sibling
directories add evidence: the ``weight_change/<path>`` scalars of
WeightNorms (any sibling, ``weights`` by default).

The rules' loss is the training loss GradWatch logged itself
(``train_loss``, Keras' ``logs["loss"]``: of this training by
construction); in logs without it, the ``epoch_loss`` of
``keras.callbacks.TensorBoard``'s ``train`` run; where no training loss of
this training is there, GradWatch's ``heldout_loss``.

A run is never spliced from two trainings (several ``fit`` calls or scripts
writing into one log directory): a sibling's values join a GradWatch
session's epochs only from an event file of the same training, one written
by the same process (TensorFlow's event file names say which) with wall
times overlapping that session's. Where that cannot be told (no wall
times, or overlapping several sessions), nothing is joined, and a note
says what was left out and why.

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
from keras_gradwatch._findings import ranges
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
    tags.CHANCE_LOSS: "a finite loss, >= 0",
    tags.TARGET_OUTSIDE: "a fraction in [0, 1]",
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
        held = reader.run(directory, files)
        values = held.values
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
        series = _series(directory, held, paths, epochs, reader, axis)
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
        if len(run.findings) > 1:
            lines.append(
                f"  fix first: {run.findings[0].kind} (findings in cause order, "
                "causes first)"
            )
        if run.findings:
            for finding in run.findings:
                lines.append(
                    f"  {finding.kind} ({finding.when(s.axis)}): {finding.message}"
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
        f"({ranges(tuple(int(t) for t in clip.steps))}), "
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
        self._runs: dict[str, _events.Run] = {}
        self.notes: list[str] = []

    def name(self, directory: str) -> str:
        return os.path.relpath(directory, self._root).replace(os.sep, "/")

    def read(self, directory: str, files: list[str]) -> Values:
        """The run's values, its sessions joined by the sessions rule."""
        return self.run(directory, files).values

    def run(self, directory: str, files: list[str]) -> _events.Run:
        """The run with its sessions, each cleaned of invalid values."""
        key = os.path.abspath(directory)
        if key not in self._runs:
            read = [_events.read_file(path, _wanted) for path in files]
            invalid: dict[str, int] = {}
            for session in read:
                _clean(session.values, invalid)
            run = _events.join(self.name(directory), read)
            self.notes.extend(run.notes)
            for prefix, count in invalid.items():
                self.notes.append(
                    f"{self.name(directory)}: {count} {prefix} value(s) left out "
                    f"as invalid data (each must be {_DOMAINS[prefix]})"
                )
            self._runs[key] = run
        return self._runs[key]


def _clean(values: Values, invalid: dict[str, int]) -> None:
    """Drops values outside their domain, counting them per tag prefix."""
    for tag, steps in values.items():
        prefix = tag if tag in _DOMAINS else tag.split("/", 1)[0]
        if tag == tags.GLOBAL_NORM_TAG or prefix not in _DOMAINS:
            continue
        bad = [step for step, v in steps.items() if not _in_domain(prefix, v)]
        for step in bad:
            del steps[step]
        if bad:
            invalid[prefix] = invalid.get(prefix, 0) + len(bad)


def _wanted(tag: str) -> bool:
    return tag in (
        _LOSS_TAG,
        tags.AUTOCLIP_STEP_GRAD_NORM,
        tags.HELDOUT_LOSS,
        tags.TRAIN_LOSS,
        tags.CHANCE_LOSS,
        tags.EPOCH_TAG,
    ) or tag.split("/", 1)[0] in (
        *_STATS,
        *_LAYER_STATS,
        _WEIGHT_CHANGE,
        _WEIGHT_L2,
        _WEIGHT_NONFINITE,
        tags.ACTIVATION,
        tags.TARGET_OUTSIDE,
    )


def _in_domain(prefix: str, value: float) -> bool:
    if prefix in ("grad_dead_units", tags.TARGET_OUTSIDE):
        return 0.0 <= value <= 1.0
    if prefix in ("grad_nonfinite", "weight_nonfinite"):
        return math.isfinite(value) and value >= 0 and value == int(value)
    if prefix == tags.CHANCE_LOSS:
        return math.isfinite(value) and value >= 0
    return math.isnan(value) or value >= 0


def _series(
    directory: str,
    held: _events.Run,
    paths: list[str],
    epochs: list[int],
    reader: _Reader,
    axis: str,
) -> Series:
    values = held.values
    loss = logged = change = nonfinite = None
    if any(f"{_WEIGHT_NONFINITE}/{p}" in values for p in paths):
        nonfinite = _grid(values, _WEIGHT_NONFINITE, paths, epochs)
    refused_loss: list[str] = []
    if axis == "epoch":
        join = _Join(reader.name(directory), held, epochs)
        candidates = [(directory, held), *_siblings(directory, reader)]
        own = values.get(tags.TRAIN_LOSS, {})
        if own:
            # GradWatch's own copy of Keras' training loss: this training's.
            logged = np.array([e in own for e in epochs])
            loss = np.array([own.get(e, np.nan) for e in epochs])
        for run, found in [] if own else candidates:
            if os.path.basename(run) != _LOSS_RUN or not _has(found, [_LOSS_TAG]):
                continue
            grid, joined, refused = join.grid(found, [_LOSS_TAG])
            refused_loss = join.notes("the training loss", reader.name(run), refused)
            if joined.any():
                logged, loss = joined[:, 0], grid[:, 0]
            break
        change_tags = [f"{_WEIGHT_CHANGE}/{p}" for p in paths]
        refused_change: list[str] = []
        for run, found in candidates:
            if not _has(found, change_tags):
                continue
            grid, joined, refused = join.grid(found, change_tags)
            if not joined.any():
                refused_change += join.notes("weight_change", reader.name(run), refused)
                continue
            refused_change = join.notes("weight_change", reader.name(run), refused)
            change = grid
            if nonfinite is None:
                # WeightNorms' norm: 1 where it was logged non-finite, else 0.
                l2_tags = [f"{_WEIGHT_L2}/{p}" for p in paths]
                norm, has_norm, _ = join.grid(found, l2_tags)
                nonfinite = np.where(has_norm, ~np.isfinite(norm), np.nan)
            break
        reader.notes.extend(refused_change)
    source = "training"
    if loss is None and tags.HELDOUT_LOSS in values:
        # No training loss of this training: the held-out loss GradWatch logged.
        found_loss = values[tags.HELDOUT_LOSS]
        logged = np.array([e in found_loss for e in epochs])
        loss = np.array([found_loss.get(e, np.nan) for e in epochs])
        source = "held-out"
        refused_loss = [
            f"{note}; the rules use its held-out loss" for note in refused_loss
        ]
    reader.notes.extend(refused_loss)
    prefix = f"{_LAYER_STATS[0]}/"
    layers = [t[len(prefix) :] for t in values if t.startswith(prefix)]
    texts = held.texts
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
        loss_source=source if loss is not None else None,
        chance_loss=_latest(values.get(tags.CHANCE_LOSS, {})),
        target_outside={
            name.partition("/")[2]: _latest(steps)
            for name, steps in values.items()
            if name.startswith(tags.TARGET_OUTSIDE + "/")
        },
    )


def _latest(steps: dict[int, float]) -> float:
    """The value at the largest step, NaN if none."""
    return float(steps[max(steps)]) if steps else math.nan


def _has(run: _events.Run, wanted: list[str]) -> bool:
    """Whether any session of `run` holds any of the `wanted` tags."""
    return any(tag in f.values for f in run.sessions for tag in wanted)


_OTHER, _UNSURE = "other", "unsure"
_WHY = {
    _OTHER: "another training wrote them (no event file of it was written by "
    "the same process, with overlapping wall times, as the event file of this "
    "run that logged those epochs)",
    _UNSURE: "cannot tell which training wrote them (their event file has no "
    "wall times, or overlaps in time several event files of this run)",
}


class _Join:
    """Which sessions of a sibling run may add values to which rows of a
    GradWatch run: those of the same training (see the module docstring)."""

    def __init__(self, name: str, held: _events.Run, epochs: list[int]) -> None:
        self.name = name
        self.epochs = epochs
        self.row = {e: i for i, e in enumerate(epochs)}
        # The run's GradWatch sessions, and the rows each kept one logged.
        self.watch = [
            f
            for f in held.sessions
            if any(t.startswith("grad_norm/") for t in f.values)
        ]
        self.owned: dict[int, np.ndarray] = {}
        for f in held.kept:
            if f not in self.watch:
                continue
            rows = np.zeros(len(epochs), dtype=bool)
            for tag, steps in f.values.items():
                if tag.startswith("grad_norm/"):
                    at = [self.row[e] for e in steps if e in self.row]
                    rows[at] = True
            self.owned[id(f)] = rows

    def verdict(self, f: _events.EventFile) -> tuple[str, np.ndarray | None]:
        """The rows `f`'s values may fill, or why none: `_OTHER`, `_UNSURE`."""
        if any(f is h for h in self.watch):
            rows = self.owned.get(id(f))
            return ("", rows) if rows is not None else (_OTHER, None)
        same = [_same_training(f, h) for h in self.watch]
        if None in same or same.count(True) > 1:
            return _UNSURE, None
        if True not in same:
            return _OTHER, None
        rows = self.owned.get(id(self.watch[same.index(True)]))
        # A session of a training whose held-out values were left out.
        return ("", rows) if rows is not None else (_OTHER, None)

    def grid(
        self, run: _events.Run, columns: list[str]
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """``[rows, columns]`` of the tags in `columns` from `run`'s sessions
        of this training (NaN where none), where each was joined, and per
        reason the rows left without a value that another session had."""
        grid = np.full((len(self.epochs), len(columns)), np.nan)
        joined = np.zeros(grid.shape, dtype=bool)
        refused = {_OTHER: np.zeros(len(self.epochs), dtype=bool)}
        refused[_UNSURE] = refused[_OTHER].copy()
        for f in sorted(run.sessions, key=_events.newness):  # newest last: wins
            if not any(tag in f.values for tag in columns):
                continue
            why, rows = self.verdict(f)
            for j, tag in enumerate(columns):
                for step, value in f.values.get(tag, {}).items():
                    i = self.row.get(step)
                    if i is None:
                        continue
                    if rows is not None and rows[i]:
                        grid[i, j] = value
                        joined[i, j] = True
                    else:
                        refused[why][i] = True
        for rows in refused.values():
            rows &= ~joined.any(axis=1)
        return grid, joined, refused

    def notes(
        self, what: str, sibling: str, refused: dict[str, np.ndarray]
    ) -> list[str]:
        """One line per reason some of `what` in `sibling` was not joined."""
        return [
            f"{self.name}: not joined: {what} in {sibling} at epochs "
            f"{ranges(tuple(self.epochs[i] for i in np.flatnonzero(rows)))}: "
            f"{_WHY[why]}"
            for why, rows in refused.items()
            if rows.any()
        ]


SAME_ROUND_S = 1.0
"""Seconds by which the spans of two sessions of one training may miss each
other: the callbacks of a training write each epoch in the same round of
``on_epoch_end`` calls, one after the other, so a one-epoch training's
sessions are points a callback's work apart. Two trainings closer than
this cannot be told apart, and nothing is joined (`_UNSURE`)."""


def _same_training(f: _events.EventFile, h: _events.EventFile) -> bool | None:
    """Whether session `f` was written during the training of session `h`:
    False when TensorFlow's file names say two processes or the wall-time
    spans of their summaries do not meet (within `SAME_ROUND_S`); None when
    either has no wall times."""
    process, other = _events.process(f.path), _events.process(h.path)
    if process is not None and other is not None and process != other:
        return False
    if not (f.timed() and h.timed()):
        return None
    pad = SAME_ROUND_S
    return f.earliest - pad <= h.latest and h.earliest - pad <= f.latest


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


def _siblings(directory: str, reader: _Reader) -> list[tuple[str, _events.Run]]:
    """Other run directories next to `directory`, read; WeightNorms' default
    first."""
    parent = os.path.dirname(os.path.abspath(directory))
    me = os.path.basename(os.path.abspath(directory))
    _, subdirs = _events.event_files(parent, reader.notes)
    found = []
    for sub in subdirs:
        if os.path.basename(sub) == me:
            continue
        files, _ = _events.event_files(sub, reader.notes)
        if files:
            found.append((sub, reader.run(sub, files)))
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
    text = f"{s.epochs.size} logged {s.axis}s ({ranges(tuple(s.epochs))})"
    if s.loss is not None and np.isfinite(s.loss).any():
        finite = s.loss[np.isfinite(s.loss)]
        which = "held-out" if s.axis == "step" else "train"
        text += f", {which} loss {finite[0]:.4g} -> {finite[-1]:.4g}"
    return text


def _fmt(value: float, spec: str = "{:.2e}") -> str:
    return spec.format(value) if math.isfinite(value) else "-"


def _json(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
