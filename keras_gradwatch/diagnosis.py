"""Diagnosis rules: per-weight gradient series in, findings with remedies out.

Pure NumPy (no TensorFlow, no Keras), so the ``gradwatch report`` command, a
notebook or a live callback can share it. The input is a `Series`: what
GradWatch logged per epoch and per weight (``grad_norm``, ``grad_mean_abs``,
``grad_to_weight``, ``grad_dead_units``, ``grad_nonfinite``; see
`keras_gradwatch.tags`), optionally the relative weight change per logged
epoch of WeightNorms (``weight_change``) and the training loss. `diagnose`
returns one `Finding` per condition, listing the weights and the epochs where
it holds. A healthy run gives none.

Rules (defaults in `Thresholds`; "kernels" are the weights the layer-wise
rules look at, see `Series.kernels`; "persistent" means in at least
``min_epochs`` = 2 logged epochs, or in every one when fewer were logged)

``vanishing``
    A kernel's gradient/weight ratio ‖g‖₂/‖w‖₂ is below 1e-2 of the output
    layer's (the last kernel's), persistently. AUTOTRAINER flags the first
    layer's gradient norm below 1e-3 of the last layer's *and* below 1e-4 in
    absolute terms; SageMaker Debugger (``VanishingGradient``) and
    DeepDiagnosis flag mean |g| below 1e-7. We compare ratios only: an
    absolute floor misses a conv kernel with gradients of 1e-5 on weights of
    1e-1 under a healthy output layer, and depends on the loss's scale. The
    gradient/weight ratio rather than the raw norm keeps layers of different
    sizes and initial scales comparable. On the runs we calibrated on
    (tanh/uniform-init and sigmoid MLPs that do not learn vs ReLU, leaky ReLU
    and GRU+Conv nets that do) healthy kernels stay above 0.08 of the output
    layer, failing ones reach 1e-2 to 1e-3. An all-zero gradient is left to
    ``dead_units``.
``exploding``
    Layer-wise: a kernel's gradient/weight ratio is above 1e2 times the output
    layer's, persistently (AUTOTRAINER: first/last gradient norm above 70).
    Over time: a kernel's gradient norm has grown 1e3-fold over its smallest
    earlier value *and* its gradient/weight ratio is at least 1 *and* the loss
    (when known) is not at a new best, persistently. Growth alone is not
    enough: the held-out gradient of a net that fits its training data well
    can grow a thousandfold from a near-flat start while training is fine.
``non_finite``
    Any NaN or ±Inf gradient element (``grad_nonfinite`` > 0), in any weight,
    at any epoch; reported with the first such epoch. SageMaker Debugger's
    ``ExplodingTensor`` rule; AUTOTRAINER's and DeepDiagnosis' NaN checks.
``dead_units``
    At least 70% of a kernel's units get an exactly zero gradient on the
    whole held-out batch, persistently (AUTOTRAINER and DeepDiagnosis use
    70%; SageMaker Debugger's ``DeadRelu`` flags more than 50% inactive
    ReLUs). A narrow healthy ReLU net shows 10-60% dead units in a layer:
    the brief's 5-unit ReLU + He net, which reaches 84% accuracy, has 3 of
    5 dead in one layer, so 50% would flag it. When every kernel's gradient
    is zero, the finding says the network has collapsed.
``stalled``
    The best loss of the last 5 logged epochs improves on the best loss
    before them by less than 0.1% *and* a kernel barely changes: its
    ``weight_change`` (‖Δw‖₁/‖w‖₁ per logged epoch) is below 1e-3, or, where
    that was not logged, its gradient/weight ratio is below 1e-3; persistently.
    No loss, no finding. SageMaker Debugger pairs ``LossNotDecreasing`` with
    ``WeightUpdateRatio`` (update/weight below 1e-8 per step); DeepDiagnosis
    flags a loss that stops decreasing over 5 steps and a relative update
    below 1e-5. We judge per logged epoch, so the thresholds are larger. A
    run that has simply converged looks the same; the message says so.
    Reported only while it lasts (it holds at the last logged epoch: a
    plateau that training left is not reported) and only when no other rule
    fires: vanishing or dead gradients and
    explosions stall training too, and their finding names the cause.
    With adaptive optimizers (Adam, RMSprop) the step does not follow the
    gradient's size, so log ``weight_change`` (WeightNorms) to judge it.

References:
    Zhang, Xiao, Zhai, Dong, Li, Sun and Zhang, "AUTOTRAINER: An Automatic
    DNN Training Problem Detection and Repair System", ICSE 2021.
    Wardat, Cruz, Le and Rajan, "DeepDiagnosis: Automatically Diagnosing
    Faults and Recommending Actionable Fixes in Deep Learning Programs",
    ICSE 2022.
    Amazon SageMaker Debugger, "List of Debugger built-in rules"
    (VanishingGradient, ExplodingTensor, DeadRelu, WeightUpdateRatio,
    LossNotDecreasing).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["KINDS", "Finding", "Series", "Thresholds", "diagnose", "new_findings"]

KINDS = ("vanishing", "exploding", "non_finite", "dead_units", "stalled")
"""Every `Finding.kind`, in the order `diagnose` reports them."""

_REMEDIES = {
    "vanishing": (
        "Use ReLU or leaky ReLU instead of sigmoid/tanh, He init for ReLU "
        "(Glorot for tanh), batch normalization or skip connections."
    ),
    "exploding": (
        "Lower the learning rate, clip gradients by global norm "
        "(keras_gradwatch.AutoClip), use "
        "Glorot/He init instead of large weights, add batch normalization."
    ),
    "non_finite": (
        "Lower the learning rate and clip gradients (AutoClip skips NaN/Inf "
        "steps); check inputs and labels "
        "for NaN/Inf and the loss for log(0) or division by zero."
    ),
    "dead_units": (
        "Use leaky ReLU, He init and a lower learning rate; check for large "
        "negative biases."
    ),
    "stalled": (
        "If the loss is not yet low enough: raise the learning rate or switch "
        "to an adaptive optimizer (Adam), and fix any vanishing gradients."
    ),
}


@dataclass(frozen=True)
class Finding:
    """One diagnosed condition.

    Attributes:
        kind: One of `KINDS`.
        weights: The weight paths concerned, input side first.
        epochs: The logged epochs where the condition holds.
        evidence: The numbers behind the verdict, keyed like the tags they
            come from (``relative_grad_to_weight/<path>``, ``threshold``...).
            Per weight, the most extreme value over the epochs where the
            condition holds (the smallest ratio of a vanishing kernel, the
            largest of an exploding one), so the number the message cites
            is one of them.
        message: One line: what is wrong.
        remedy: One line: what to try.
    """

    kind: str
    weights: tuple[str, ...]
    epochs: tuple[int, ...]
    evidence: dict[str, float] = field(hash=False)
    message: str
    remedy: str

    @property
    def key(self) -> tuple[str, tuple[str, ...]]:
        """``(kind, weights)``: what `new_findings` compares."""
        return self.kind, self.weights

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict; non-finite evidence becomes None (JSON null)."""
        return {
            "kind": self.kind,
            "weights": list(self.weights),
            "epochs": list(self.epochs),
            "message": self.message,
            "remedy": self.remedy,
            "evidence": {k: _json_float(v) for k, v in self.evidence.items()},
        }


@dataclass(frozen=True)
class Thresholds:
    """The rules' thresholds; the module docstring says where each comes from.

    Args:
        vanishing_ratio: A kernel's gradient/weight ratio below this fraction
            of the output layer's is vanishing. Defaults to 1e-2.
        exploding_ratio: Above this multiple of the output layer's, it is
            exploding. Defaults to 1e2.
        exploding_growth: Growth of a kernel's gradient norm over its smallest
            earlier value that counts as exploding over time. Defaults to 1e3.
        exploding_grad_to_weight: ...provided its gradient/weight ratio is at
            least this. Defaults to 1.0.
        dead_fraction: Fraction of a kernel's units with zero gradient that
            counts as dead. Defaults to 0.7.
        stall_loss: Relative loss improvement below which the loss counts as
            flat. Defaults to 1e-3.
        stall_window: Number of logged epochs the improvement is measured
            over. Defaults to 5.
        stall_update: ``weight_change`` (per logged epoch) below which a kernel
            barely changes. Defaults to 1e-3.
        stall_grad_to_weight: The same on the gradient/weight ratio, where no
            ``weight_change`` was logged. Defaults to 1e-3.
        min_epochs: Logged epochs a condition must hold in to be reported
            (every logged epoch when fewer were logged). Defaults to 2.

    Raises:
        ValueError: a threshold is out of range.
    """

    vanishing_ratio: float = 1e-2
    exploding_ratio: float = 1e2
    exploding_growth: float = 1e3
    exploding_grad_to_weight: float = 1.0
    dead_fraction: float = 0.7
    stall_loss: float = 1e-3
    stall_window: int = 5
    stall_update: float = 1e-3
    stall_grad_to_weight: float = 1e-3
    min_epochs: int = 2

    def __post_init__(self) -> None:
        if not 0 < self.vanishing_ratio < 1 < self.exploding_ratio < math.inf:
            raise ValueError(
                "Thresholds need 0 < vanishing_ratio < 1 < exploding_ratio. "
                f"Received: vanishing_ratio={self.vanishing_ratio}, "
                f"exploding_ratio={self.exploding_ratio}"
            )
        if not 0 < self.dead_fraction <= 1:
            raise ValueError(
                "Thresholds need 0 < dead_fraction <= 1. "
                f"Received: dead_fraction={self.dead_fraction}"
            )
        for name in (
            "exploding_growth",
            "exploding_grad_to_weight",
            "stall_loss",
            "stall_update",
            "stall_grad_to_weight",
        ):
            value = getattr(self, name)
            if not 0 < value < math.inf:
                raise ValueError(
                    f"Thresholds need a positive finite {name}. "
                    f"Received: {name}={value}"
                )
        for name in ("stall_window", "min_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"Thresholds need a positive int {name}. Received: {name}={value!r}"
                )


@dataclass
class Series:
    """What was logged for one run: arrays over logged epochs and weights.

    NaN means "not logged". Weight arrays are ``[T, K]``: ``T`` logged epochs
    (`epochs`), ``K`` weights (`paths`, input to output, the order of
    ``model.trainable_weights``).

    Args:
        epochs: The logged epochs, ``[T]`` ints, increasing.
        paths: The weight paths, ``[K]``.
        grad_norm: ‖g‖₂.
        grad_mean_abs: mean |g|.
        grad_to_weight: ‖g‖₂ / ‖w‖₂.
        grad_dead_units: Fraction of units with an all-zero gradient.
        grad_nonfinite: Count of NaN and ±Inf gradient elements.
        weight_change: ‖w − w_prev‖₁ / ‖w‖₁ since the previous logged epoch
            (WeightNorms), or None.
        loss: The training loss at each logged epoch, ``[T]``, or None.
        kernels: ``[K]`` bools: which weights the layer-wise rules look at.
            Defaults to the paths whose last part ends in ``kernel`` (dense,
            conv, recurrent kernels) or is ``embeddings``: biases and
            normalization parameters have noisy, scale-free gradients. An
            embedding's gradient/weight ratio is diluted by the rows a batch
            does not touch.

    Raises:
        ValueError: the shapes do not fit together.
    """

    epochs: np.ndarray
    paths: list[str]
    grad_norm: np.ndarray
    grad_mean_abs: np.ndarray
    grad_to_weight: np.ndarray
    grad_dead_units: np.ndarray
    grad_nonfinite: np.ndarray
    weight_change: np.ndarray | None = None
    loss: np.ndarray | None = None
    kernels: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.epochs = np.asarray(self.epochs, dtype=np.int64).reshape(-1)
        self.paths = list(self.paths)
        shape = (self.epochs.size, len(self.paths))
        for name in (
            "grad_norm",
            "grad_mean_abs",
            "grad_to_weight",
            "grad_dead_units",
            "grad_nonfinite",
            "weight_change",
        ):
            value = getattr(self, name)
            if value is None:
                continue
            array = np.asarray(value, dtype=np.float64)
            if array.shape != shape:
                raise ValueError(
                    f"Series.{name} must have shape [epochs, weights] = {shape}. "
                    f"Received: shape {array.shape}"
                )
            setattr(self, name, array)
        if self.loss is not None:
            self.loss = np.asarray(self.loss, dtype=np.float64)
            if self.loss.shape != shape[:1]:
                raise ValueError(
                    f"Series.loss must have shape [epochs] = {shape[:1]}. "
                    f"Received: shape {self.loss.shape}"
                )
        if self.kernels is None:
            self.kernels = np.array([_is_kernel(p) for p in self.paths], dtype=bool)
        else:
            self.kernels = np.asarray(self.kernels, dtype=bool)
            if self.kernels.shape != shape[1:]:
                raise ValueError(
                    f"Series.kernels must have shape [weights] = {shape[1:]}. "
                    f"Received: shape {self.kernels.shape}"
                )

    def kernel_columns(self) -> np.ndarray:
        """Indices of the weights the layer-wise rules look at, input first."""
        assert self.kernels is not None  # set by __post_init__
        return np.flatnonzero(self.kernels)


def diagnose(series: Series, *, thresholds: Thresholds | None = None) -> list[Finding]:
    """Applies every rule to `series`; returns its findings in `KINDS` order.

    Example:

    ```python
    for finding in diagnose(series):
        print(f"{finding.kind}: {finding.message} Try: {finding.remedy}")
    ```

    Args:
        series: What was logged.
        thresholds: The rules' thresholds. Defaults to `Thresholds()`.
    """
    th = Thresholds() if thresholds is None else thresholds
    if series.epochs.size == 0 or not series.paths:
        return []
    causes = [
        *_vanishing(series, th),
        *_exploding(series, th),
        *_non_finite(series),
        *_dead_units(series, th),
    ]
    # A stall with a cause is reported as its cause.
    return causes or _stalled(series, th)


def new_findings(
    previous: Iterable[Finding], current: Iterable[Finding]
) -> list[Finding]:
    """The findings of `current` whose ``(kind, weights)`` is not in `previous`.

    A live callback can diagnose the growing series every epoch and log one
    line per new finding, not the same verdict every epoch.
    """
    seen = {finding.key for finding in previous}
    return [finding for finding in current if finding.key not in seen]


def _is_kernel(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return name.endswith("kernel") or name == "embeddings"


def _vanishing(s: Series, th: Thresholds) -> list[Finding]:
    columns, relative = _relative_to_output(s)
    if not columns.size:
        return []
    alive = s.grad_to_weight[:, columns] > 0
    holds = alive & (relative < th.vanishing_ratio)
    flagged, epochs = _persistent(s, holds, th)
    if not flagged.any():
        return []
    evidence = _evidence(
        s, "relative_grad_to_weight", relative, holds, columns, flagged, np.min
    )
    worst = min(evidence.values())
    _add_weight_change(s, evidence, holds, columns, flagged)
    output = s.paths[s.kernel_columns()[-1]]
    moved = [v for k, v in evidence.items() if k.startswith("weight_change/")]
    still = f"; their weights change {min(moved):.1e} per logged epoch" if moved else ""
    return [
        Finding(
            "vanishing",
            _names(s, columns[flagged]),
            epochs,
            {**evidence, "threshold": th.vanishing_ratio},
            f"Gradients vanish toward the input: {_list(s, columns[flagged])} "
            f"get down to {worst:.1e} of the gradient/weight ratio of {output}"
            f"{still}.",
            _REMEDIES["vanishing"],
        )
    ]


def _exploding(s: Series, th: Thresholds) -> list[Finding]:
    return [*_exploding_toward_input(s, th), *_exploding_over_time(s, th)]


def _exploding_toward_input(s: Series, th: Thresholds) -> list[Finding]:
    columns, relative = _relative_to_output(s)
    holds = np.isfinite(relative) & (relative > th.exploding_ratio)
    flagged, epochs = _persistent(s, holds, th)
    if not flagged.any():
        return []
    evidence = _evidence(
        s, "relative_grad_to_weight", relative, holds, columns, flagged, np.max
    )
    output = s.paths[s.kernel_columns()[-1]]
    worst = max(evidence.values())
    return [
        Finding(
            "exploding",
            _names(s, columns[flagged]),
            epochs,
            {**evidence, "threshold": th.exploding_ratio},
            f"Gradients explode toward the input: {_list(s, columns[flagged])} "
            f"reach {worst:.1e} times the gradient/weight ratio of {output}.",
            _REMEDIES["exploding"],
        )
    ]


def _exploding_over_time(s: Series, th: Thresholds) -> list[Finding]:
    columns = s.kernel_columns()
    norm = s.grad_norm[:, columns]
    growth = norm / _earlier_min(norm)
    holds = (
        np.isfinite(growth)
        & (growth >= th.exploding_growth)
        & (s.grad_to_weight[:, columns] >= th.exploding_grad_to_weight)
    )
    if s.loss is not None:
        best_before = _earlier_min(s.loss[:, None])[:, 0]
        holds &= ~(s.loss < best_before)[:, None]
    flagged, epochs = _persistent(s, holds, th)
    if not flagged.any():
        return []
    evidence = _evidence(s, "grad_norm_growth", growth, holds, columns, flagged, np.max)
    worst = max(evidence.values())
    loss = "" if s.loss is None else " while the loss stopped improving"
    return [
        Finding(
            "exploding",
            _names(s, columns[flagged]),
            epochs,
            {**evidence, "threshold": th.exploding_growth},
            f"Gradient norms of {_list(s, columns[flagged])} grew "
            f"{worst:.1e}-fold over the epochs{loss}.",
            _REMEDIES["exploding"],
        )
    ]


def _non_finite(s: Series) -> list[Finding]:
    holds = s.grad_nonfinite > 0
    columns = np.flatnonzero(holds.any(axis=0))
    if not columns.size:
        return []
    rows = holds.any(axis=1)
    first = int(s.epochs[rows][0])
    evidence = {
        f"grad_nonfinite/{s.paths[c]}": float(np.nanmax(s.grad_nonfinite[:, c]))
        for c in columns
    }
    return [
        Finding(
            "non_finite",
            _names(s, columns),
            tuple(int(e) for e in s.epochs[rows]),
            {**evidence, "first_epoch": float(first)},
            f"NaN/Inf gradients from epoch {first} on, in {_list(s, columns)}.",
            _REMEDIES["non_finite"],
        )
    ]


def _dead_units(s: Series, th: Thresholds) -> list[Finding]:
    columns = s.kernel_columns()
    if not columns.size:
        return []
    norm = s.grad_norm[:, columns]
    logged = np.isfinite(norm)
    collapsed = logged.any(axis=1) & np.all(~logged | (norm == 0), axis=1)
    if collapsed.sum() >= _needed(s.epochs.size, th):
        epochs = tuple(int(e) for e in s.epochs[collapsed])
        return [
            Finding(
                "dead_units",
                _names(s, columns),
                epochs,
                {"collapsed_epochs": float(len(epochs))},
                "Every kernel's gradient is zero: the network has collapsed "
                "(dead ReLUs or a constant output).",
                _REMEDIES["dead_units"],
            )
        ]
    dead = s.grad_dead_units[:, columns]
    holds = dead >= th.dead_fraction
    flagged, epochs = _persistent(s, holds, th)
    if not flagged.any():
        return []
    evidence = _evidence(s, "grad_dead_units", dead, holds, columns, flagged, np.max)
    worst = max(evidence.values())
    return [
        Finding(
            "dead_units",
            _names(s, columns[flagged]),
            epochs,
            {**evidence, "threshold": th.dead_fraction},
            f"Up to {worst:.0%} of the units of {_list(s, columns[flagged])} "
            "get no gradient at all (dying ReLU).",
            _REMEDIES["dead_units"],
        )
    ]


def _stalled(s: Series, th: Thresholds) -> list[Finding]:
    if s.loss is None:
        return []
    improvement = _loss_improvement(s.loss, th.stall_window)
    columns = s.kernel_columns()
    # The measured update where WeightNorms logged one, else the gradient's size.
    change = s.grad_to_weight[:, columns]
    measured = np.zeros(change.shape, dtype=bool)
    if s.weight_change is not None:
        measured = np.isfinite(s.weight_change[:, columns])
        change = np.where(measured, s.weight_change[:, columns], change)
    limit = np.where(measured, th.stall_update, th.stall_grad_to_weight)
    holds = (improvement < th.stall_loss)[:, None] & (change < limit)
    defined = int(np.isfinite(improvement).sum())
    flagged, epochs = _persistent(s, holds, th, available=defined)
    # Only a stall that lasts to the last logged epoch: a plateau that
    # training has left behind is history, not a verdict.
    flagged &= holds[-1]
    if not flagged.any():
        return []
    evidence = {}
    for j in np.flatnonzero(flagged):
        t = np.flatnonzero(holds[:, j])[-1]
        name = "weight_change" if measured[t, j] else "grad_to_weight"
        evidence[f"{name}/{s.paths[columns[j]]}"] = float(change[t, j])
    last = np.flatnonzero(holds[:, flagged].any(axis=1))[-1]
    return [
        Finding(
            "stalled",
            _names(s, columns[flagged]),
            epochs,
            {**evidence, "loss_improvement": float(improvement[last])},
            f"The loss improved by {max(improvement[last], 0.0):.2%} over the last "
            f"{th.stall_window} logged epochs while {_list(s, columns[flagged])} "
            "barely change: training has stalled (or converged).",
            _REMEDIES["stalled"],
        )
    ]


def _relative_to_output(s: Series) -> tuple[np.ndarray, np.ndarray]:
    """Kernels but the last, and their gradient/weight ratio over the last's."""
    kernels = s.kernel_columns()
    if kernels.size < 2:
        return kernels[:0], np.empty((s.epochs.size, 0))
    ratio = s.grad_to_weight[:, kernels]
    reference = ratio[:, -1:]
    usable = np.isfinite(reference) & (reference > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(usable, ratio[:, :-1] / reference, np.nan)
    return kernels[:-1], relative


def _earlier_min(values: np.ndarray) -> np.ndarray:
    """Per column, the smallest positive finite value of the earlier rows."""
    positive = np.where(np.isfinite(values) & (values > 0), values, np.inf)
    running = np.minimum.accumulate(positive, axis=0)
    return np.vstack([np.full((1, values.shape[1]), np.inf), running[:-1]])


def _loss_improvement(loss: np.ndarray, window: int) -> np.ndarray:
    """Relative improvement of the best loss of the last `window` logged epochs
    on the best before them; NaN where there is not enough history."""
    improvement = np.full(loss.shape, np.nan)
    for t in range(window, loss.size):
        before, recent = loss[: t - window + 1], loss[t - window + 1 : t + 1]
        if np.isfinite(before).any() and np.isfinite(recent).any():
            best = np.nanmin(before)
            improvement[t] = (best - np.nanmin(recent)) / max(abs(best), 1e-12)
    return improvement


def _needed(available: int, th: Thresholds) -> int:
    return max(1, min(th.min_epochs, available))


def _persistent(
    s: Series, holds: np.ndarray, th: Thresholds, available: int | None = None
) -> tuple[np.ndarray, tuple[int, ...]]:
    """Which columns hold often enough, and the epochs where any of them holds."""
    needed = _needed(s.epochs.size if available is None else available, th)
    flagged = holds.sum(axis=0) >= needed
    rows = holds[:, flagged].any(axis=1)
    return flagged, tuple(int(e) for e in s.epochs[rows])


def _evidence(
    s: Series,
    name: str,
    values: np.ndarray,
    holds: np.ndarray,
    columns: np.ndarray,
    flagged: np.ndarray,
    extreme: Callable[[np.ndarray], Any],
) -> dict[str, float]:
    """``<name>/<path>``: per flagged weight, the `extreme` (``np.min`` or
    ``np.max``) of its values over the epochs where the rule held, so the
    message, which cites the extreme over all of them, cites one of these."""
    evidence = {}
    for j in np.flatnonzero(flagged):
        evidence[f"{name}/{s.paths[columns[j]]}"] = float(
            extreme(values[holds[:, j], j])
        )
    return evidence


def _add_weight_change(
    s: Series,
    evidence: dict[str, float],
    holds: np.ndarray,
    columns: np.ndarray,
    flagged: np.ndarray,
) -> None:
    """Whether a flagged kernel still moves tells vanished from converged."""
    if s.weight_change is None:
        return
    for j in np.flatnonzero(flagged):
        last = np.flatnonzero(holds[:, j])[-1]
        change = s.weight_change[last, columns[j]]
        if np.isfinite(change):
            evidence[f"weight_change/{s.paths[columns[j]]}"] = float(change)


def _names(s: Series, columns: Sequence[int] | np.ndarray) -> tuple[str, ...]:
    return tuple(s.paths[c] for c in columns)


def _list(s: Series, columns: np.ndarray, shown: int = 3) -> str:
    names = _names(s, columns)
    if len(names) <= shown + 1:
        return ", ".join(names)
    return f"{', '.join(names[:shown])} and {len(names) - shown} more"


def _json_float(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
