"""Diagnosis rules: logged gradient series in, findings with remedies out.

Pure NumPy (no TensorFlow, no Keras), so the ``gradwatch report`` command, a
notebook or a live callback can share it. The input is a `Series`: what
GradWatch logged per epoch, per weight (``grad_norm``, ``grad_to_weight``,
``grad_dead_units``, ``grad_nonfinite``, ``weight_nonfinite``) and per layer
(``act_grad_norm``, the backward signal ‖∂L/∂y‖₂ at the layer's output, and
``time_grad_ratio`` for recurrent layers; see `keras_gradwatch.tags`),
optionally WeightNorms' relative weight change and the training loss.
`diagnose` returns one `Finding` per condition, listing the weights and the
epochs where it holds. A healthy run gives none. The rules are fed one epoch
at a time (`keras_gradwatch._rules`), so a live callback pays the same per
epoch after 5,000 epochs as after 10.

Each finding kind is one rule in `keras_gradwatch._rules`, documented
there with its thresholds (defaults in `Thresholds`), the mechanism or
source that sets them, and a run it fires on; ``gradwatch report --explain
KIND`` prints it. In short ("persistently": in at least ``min_epochs`` = 2
logged epochs, or in every one when fewer were logged):

``non_finite``
    NaN or ±Inf in a gradient, a weight or the loss. Judged first: later
    epochs are not judged by the other rules.
``exploding``
    The backward signal grows over 1e3-fold toward the input or through
    time, or a kernel's gradient norm grows 1e3-fold while the loss does
    not improve.
``dead_units``
    At least 70% of a kernel's units get an exactly zero gradient under a
    non-saturating activation; or every gradient is zero (a collapse).
``vanishing``
    The backward signal shrinks below 1e-3 toward the input or through
    time, saturated units (70% with a zero gradient under tanh/sigmoid), or
    kernels whose gradient/weight ratio is below 1e-2 of the output
    layer's.
``stalled``
    A flat loss (under 0.1% better over 5 logged epochs) while kernels
    barely change, said to be at the chance level where it is; where that
    level is known and the loss is well below it, only frozen kernels.

One story per run: findings come causes first (`CAUSE_ORDER`: non-finite,
exploding, dead units, vanishing, stalled), so the first is the one to fix
first. Where the backward signal is logged, it decides the direction:
nothing through depth is vanishing while it explodes toward the input. A
layer no backward signal reaches (a head the loss ignores) is not judged
dead or saturated. A collapse after an explosion is one finding. A stall is
reported only while nothing else holds. A finding that held and ended is
kept, with its epochs, as history (`Finding.current` False): it starts
after ``min_epochs`` epochs and ends after as many without it.

References:
    Bengio, Simard and Frasconi, "Learning long-term dependencies with
    gradient descent is difficult", IEEE TNN 1994.
    Glorot and Bengio, "Understanding the difficulty of training deep
    feedforward neural networks", AISTATS 2010.
    Pascanu, Mikolov and Bengio, "On the difficulty of training recurrent
    neural networks", ICML 2013.
    Schoenholz, Gilmer, Ganguli and Sohl-Dickstein, "Deep Information
    Propagation", ICLR 2017.
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
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from keras_gradwatch import _rules
from keras_gradwatch._findings import CAUSE_ORDER, KINDS, Finding, Thresholds, is_kernel

__all__ = [
    "CAUSE_ORDER",
    "KINDS",
    "Finding",
    "Series",
    "Thresholds",
    "diagnose",
    "new_findings",
]


@dataclass
class Series:
    """What was logged for one run: arrays over logged epochs, weights, layers.

    NaN means "not logged". Weight arrays are ``[T, K]``: ``T`` logged epochs
    (`epochs`), ``K`` weights (`paths`, input to output, the order of
    ``model.trainable_weights``). Layer arrays are ``[T, L]`` over `layers`.

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
        weight_nonfinite: Count of NaN and ±Inf weight elements (GradWatch),
            or 1 where WeightNorms logged a non-finite norm; or None.
        loss: The training loss at each logged epoch, ``[T]``, or None.
        loss_logged: ``[T]`` bools: where `loss` was logged, so that a logged
            NaN tells itself from a missing value. Defaults to where `loss`
            is not NaN.
        kernels: ``[K]`` bools: which weights the layer-wise rules look at.
            Defaults to the paths whose last part ends in ``kernel`` (dense,
            conv, recurrent kernels) or is ``embeddings``: biases and
            normalization parameters have noisy, scale-free gradients. An
            embedding's gradient/weight ratio is diluted by the rows a batch
            does not touch.
        layers: Paths of the layers whose backward signal was logged, in
            forward order, ``[L]``. Defaults to none.
        act_grad_norm: ‖∂L/∂y‖₂ of each layer's output, ``[T, L]``, or None.
        time_grad_ratio: Per recurrent layer, first over last time step's
            input gradient norm, ``[T, L]`` (NaN for other layers), or None.
        activations: Layer path -> name of its activation, where known.
        axis: What `epochs` counts: ``"epoch"`` (0-based epochs; `loss` is
            the training loss) or ``"step"`` (optimizer steps, from
            ``GradWatch(every_n_steps=N)``; `loss` is the held-out loss).
            Defaults to ``"epoch"``.
        loss_source: Which loss `loss` is: ``"training"`` (Keras'
            ``epoch_loss``) or ``"held-out"`` (GradWatch's ``heldout_loss``
            on its held-out batch). Defaults to ``"held-out"`` on the step
            axis, ``"training"`` otherwise.
        chance_loss: The loss of the best constant prediction of the labels
            (GradWatch's ``heldout_chance_loss``), or NaN where not known: a
            stalled loss at it is said to be at the chance level.
        target_outside: Output layer path -> the share of the labels its
            activation cannot produce (GradWatch's
            ``heldout_target_outside``), where known: a saturated output
            chasing such labels is said to.

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
    weight_nonfinite: np.ndarray | None = None
    loss: np.ndarray | None = None
    loss_logged: np.ndarray | None = None
    kernels: np.ndarray | None = None
    layers: list[str] = field(default_factory=list)
    act_grad_norm: np.ndarray | None = None
    time_grad_ratio: np.ndarray | None = None
    activations: dict[str, str] = field(default_factory=dict)
    axis: str = "epoch"
    loss_source: str | None = None
    chance_loss: float = math.nan
    target_outside: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.axis not in ("epoch", "step"):
            raise ValueError(
                f'Series.axis must be "epoch" or "step". Received: axis={self.axis!r}'
            )
        if self.loss_source is None:
            self.loss_source = "held-out" if self.axis == "step" else "training"
        if self.loss_source not in ("training", "held-out"):
            raise ValueError(
                'Series.loss_source must be "training" or "held-out". '
                f"Received: loss_source={self.loss_source!r}"
            )
        self.epochs = np.asarray(self.epochs, dtype=np.int64).reshape(-1)
        self.paths = list(self.paths)
        self.layers = list(self.layers)
        self.activations = dict(self.activations)
        self.target_outside = {
            layer: float(share)
            for layer, share in dict(self.target_outside).items()
            if not math.isnan(share)
        }
        if any(not 0 <= share <= 1 for share in self.target_outside.values()):
            raise ValueError(
                "Series.target_outside holds shares, in [0, 1]. Received: "
                f"target_outside={self.target_outside!r}"
            )
        shape = (self.epochs.size, len(self.paths))
        by_layer = (self.epochs.size, len(self.layers))
        for name, expected, what in (
            ("grad_norm", shape, "weights"),
            ("grad_mean_abs", shape, "weights"),
            ("grad_to_weight", shape, "weights"),
            ("grad_dead_units", shape, "weights"),
            ("grad_nonfinite", shape, "weights"),
            ("weight_change", shape, "weights"),
            ("weight_nonfinite", shape, "weights"),
            ("act_grad_norm", by_layer, "layers"),
            ("time_grad_ratio", by_layer, "layers"),
        ):
            value = getattr(self, name)
            if value is None:
                continue
            array = np.asarray(value, dtype=np.float64)
            if array.shape != expected:
                raise ValueError(
                    f"Series.{name} must have shape [epochs, {what}] = {expected}. "
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
        if self.loss_logged is not None:
            self.loss_logged = np.asarray(self.loss_logged, dtype=bool)
            if self.loss is None or self.loss_logged.shape != shape[:1]:
                raise ValueError(
                    f"Series.loss_logged must have shape [epochs] = {shape[:1]}, "
                    "with a loss."
                )
        if self.kernels is None:
            self.kernels = np.array([is_kernel(p) for p in self.paths], dtype=bool)
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

    def row(self, t: int) -> _rules.Row:
        """What was logged at the `t`-th logged epoch, for the rules."""

        def at(values: np.ndarray | None) -> np.ndarray | None:
            return None if values is None else values[t]

        loss = math.nan if self.loss is None else float(self.loss[t])
        logged = not math.isnan(loss)
        if self.loss is not None and self.loss_logged is not None:
            logged = bool(self.loss_logged[t])
        return _rules.Row(
            epoch=int(self.epochs[t]),
            grad_norm=self.grad_norm[t],
            grad_to_weight=self.grad_to_weight[t],
            grad_dead_units=self.grad_dead_units[t],
            grad_nonfinite=self.grad_nonfinite[t],
            loss=loss,
            loss_logged=logged,
            weight_change=at(self.weight_change),
            weight_nonfinite=at(self.weight_nonfinite),
            act_grad_norm=at(self.act_grad_norm),
            time_grad_ratio=at(self.time_grad_ratio),
        )


def diagnose(series: Series, *, thresholds: Thresholds | None = None) -> list[Finding]:
    """Applies every rule to `series`; returns its findings, causes first.

    Example:

    ```python
    for finding in diagnose(series):
        print(f"{finding.kind}: {finding.message} Try: {finding.remedy}")
    ```

    Args:
        series: What was logged.
        thresholds: The rules' thresholds. Defaults to `Thresholds()`.
    """
    if series.epochs.size == 0 or not series.paths:
        return []
    diagnoser = _rules.Diagnoser(
        series.paths,
        series.kernels,
        series.layers,
        series.activations,
        thresholds,
        axis=series.axis,
        loss_source=series.loss_source,
        chance_loss=series.chance_loss,
        target_outside=series.target_outside,
    )
    for t in range(series.epochs.size):
        diagnoser.feed(series.row(t))
    return diagnoser.findings()


def new_findings(
    previous: Iterable[Finding], current: Iterable[Finding]
) -> list[Finding]:
    """The findings of `current` whose ``(kind, weights)`` is not in `previous`.

    A live callback can diagnose the growing series every epoch and log one
    line per new finding, not the same verdict every epoch.
    """
    seen = {finding.key for finding in previous}
    return [finding for finding in current if finding.key not in seen]
