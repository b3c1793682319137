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

Rules (defaults in `Thresholds`; "kernels" are the weights the layer-wise
rules look at, see `Series.kernels`; "persistent" means in at least
``min_epochs`` = 2 logged epochs, or in every one when fewer were logged;
"a later layer" is one after it in the forward order. ``vanishing`` and
``dead_units`` are reported while they last: they must also hold at the
last logged epoch, as training can leave them behind, e.g. BatchNorm
rescuing a deep sigmoid net after a few epochs)

``vanishing``
    Through depth: a layer's backward signal is below 1e-3 of a later
    layer's, persistently. Backpropagation multiplies the signal by each
    layer's Jacobian, so a stack that shrinks it 1000-fold leaves the input
    side without a learning signal (Glorot & Bengio 2010; Pascanu, Mikolov
    & Bengio 2013). 1e-3 is AUTOTRAINER's first/last ratio for vanishing
    gradients. Only layers owning a kernel are compared (a normalization
    layer's signal follows the scale it removes); a zero signal is left to
    ``dead_units``, and layers at or before a layer with dead units are not
    reported (the dead units are the cause). Through time: a recurrent
    layer's ``time_grad_ratio`` (first over last step) below 1e-3,
    persistently: the long-range dependencies of Bengio, Simard & Frasconi
    (1994) cannot be learned when the gradient of the first step is a
    thousandth of the last's. Saturation: at least 70% of a kernel's units
    get an exactly zero gradient (see ``dead_units``) under a saturating
    activation (tanh, sigmoid...): their derivative has rounded to zero.
    Weight gradients: a kernel's gradient/weight ratio ‖g‖₂/‖w‖₂ below
    1e-2 of the output layer's, persistently, also counts (healthy kernels
    stayed above 0.08 of the output layer on the runs it was calibrated on,
    failing ones reached 1e-2 to 1e-3): saturated tanh units shrink the
    gradient at their input, which the signal at their output does not
    show. Where the backward signal is logged, only kernels whose layer's
    signal is not above the output layer's count: a net whose activations
    grow forward as fast as its signal grows backward has small weight
    ratios on the input side while its signal explodes.
``exploding``
    Through depth: a layer's backward signal is above 1e3 times a later
    layer's, persistently. With Glorot or He initialization the signal's
    norm changes by at most √2 per Dense layer (‖∂L/∂x‖² ≈ fan_in·Var(w)·
    ‖∂L/∂y‖², and fan_in·Var(w) ≤ 2), so 1e3 takes 20 layers that all grow
    it as much as a healthy layer can; the chaotic tanh nets of Schoenholz
    et al. (2017) and N(0, 1) weights grow it by 1e4 and more. The weight
    gradients alone miss this when the activations grow forward as fast as
    the signal grows backward. Through time: ``time_grad_ratio`` above 1e3.
    Over time: a kernel's gradient norm has grown 1e3-fold over its smallest
    earlier value *and* its gradient/weight ratio is at least 1 *and* the
    loss (when known) is not at a new best, persistently. Without a logged
    backward signal, a kernel's gradient/weight ratio above 1e2 times the
    output layer's counts instead (AUTOTRAINER: 70), unless the units in
    front of the output layer are dead (which shrinks the reference).
``non_finite``
    Any NaN or ±Inf gradient element (``grad_nonfinite``), weight element
    (``weight_nonfinite``; or WeightNorms' norm) or logged training loss, at
    any epoch; reported with the first such epoch. SageMaker Debugger's
    ``ExplodingTensor`` rule; AUTOTRAINER's and DeepDiagnosis' NaN checks.
    An epoch with a non-finite value is not judged by the other rules: with
    oneDNN's fused MatMul+BiasAdd+Relu, NaN weights give all-zero gradients
    that would read as dead units.
``dead_units``
    At least 70% of a kernel's units get an exactly zero gradient on the
    whole held-out batch, persistently, under an activation that does not
    saturate (AUTOTRAINER and DeepDiagnosis use 70%; SageMaker Debugger's
    ``DeadRelu`` flags more than 50% inactive ReLUs). A narrow healthy ReLU
    net shows 10-60% dead units in a layer: the brief's 5-unit ReLU + He
    net, which reaches 84% accuracy, has 3 of 5 dead in one layer, so 50%
    would flag it. When every kernel's gradient is zero, the finding says
    the network has collapsed. The message names the cause for the
    activation in use (``activation/<layer>``, or the model in a live run).
``stalled``
    The best loss of the last 5 logged epochs improves on the best loss
    before them by less than 0.1% *and* a kernel barely changes: its
    ``weight_change`` (‖Δw‖₁/‖w‖₁ per logged epoch) is below 1e-3, or, where
    that was not logged, its gradient/weight ratio is below 1e-3; persistently.
    No loss, no finding. SageMaker Debugger pairs ``LossNotDecreasing`` with
    ``WeightUpdateRatio`` (update/weight below 1e-8 per step); DeepDiagnosis
    flags a loss that stops decreasing over 5 steps and a relative update
    below 1e-5. We judge per logged epoch, so the thresholds are larger. A
    kernel that is frozen, changing less than DeepDiagnosis' 1e-5 per
    logged epoch, stalls a loss that improves by less than 1% over the
    window too: a loss creeping down 0.02% per epoch on frozen weights is
    not going anywhere within a training budget. A
    run that has simply converged looks the same; the message says so.
    Reported only while it lasts (it holds at the last logged epoch: a
    plateau that training left is not reported) and only when no other rule
    fires: vanishing or dead gradients and
    explosions stall training too, and their finding names the cause.
    With adaptive optimizers (Adam, RMSprop) the step does not follow the
    gradient's size, so log ``weight_change`` (WeightNorms) to judge it.

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
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from keras_gradwatch import _rules

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
    "vanishing_time": (
        "Use LSTM or GRU instead of SimpleRNN, shorter sequences (truncated "
        "backpropagation through time), or attention over the sequence."
    ),
    "saturated": (
        "Scale the inputs, use Glorot init (not large uniform weights), batch "
        "normalization before the activation, or ReLU-family activations."
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
        signal_vanishing: A layer's backward signal (``act_grad_norm``) below
            this fraction of a later layer's is vanishing. Defaults to 1e-3.
        signal_exploding: Above this multiple of a later layer's, it is
            exploding. Defaults to 1e3.
        time_vanishing: A recurrent layer's ``time_grad_ratio`` (first over
            last time step) below this is vanishing through time. Defaults
            to 1e-3.
        time_exploding: Above this, exploding through time. Defaults to 1e3.
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
        stall_frozen_loss: A loss improving less than this over the window
            is stalled where a kernel is frozen. Defaults to 1e-2.
        stall_frozen: ...frozen: its ``weight_change`` (or gradient/weight
            ratio) below this. Defaults to 1e-5.
        min_epochs: Logged epochs a condition must hold in to be reported
            (every logged epoch when fewer were logged). Defaults to 2.

    Raises:
        ValueError: a threshold is out of range.
    """

    vanishing_ratio: float = 1e-2
    exploding_ratio: float = 1e2
    exploding_growth: float = 1e3
    exploding_grad_to_weight: float = 1.0
    signal_vanishing: float = 1e-3
    signal_exploding: float = 1e3
    time_vanishing: float = 1e-3
    time_exploding: float = 1e3
    dead_fraction: float = 0.7
    stall_loss: float = 1e-3
    stall_window: int = 5
    stall_update: float = 1e-3
    stall_grad_to_weight: float = 1e-3
    stall_frozen_loss: float = 1e-2
    stall_frozen: float = 1e-5
    min_epochs: int = 2

    def __post_init__(self) -> None:
        if not 0 < self.vanishing_ratio < 1 < self.exploding_ratio < math.inf:
            raise ValueError(
                "Thresholds need 0 < vanishing_ratio < 1 < exploding_ratio. "
                f"Received: vanishing_ratio={self.vanishing_ratio}, "
                f"exploding_ratio={self.exploding_ratio}"
            )
        for low, high in (
            ("signal_vanishing", "signal_exploding"),
            ("time_vanishing", "time_exploding"),
        ):
            if not 0 < getattr(self, low) < 1 < getattr(self, high) < math.inf:
                raise ValueError(
                    f"Thresholds need 0 < {low} < 1 < {high}. "
                    f"Received: {low}={getattr(self, low)}, "
                    f"{high}={getattr(self, high)}"
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
            "stall_frozen_loss",
            "stall_frozen",
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

    def __post_init__(self) -> None:
        if self.axis not in ("epoch", "step"):
            raise ValueError(
                f'Series.axis must be "epoch" or "step". Received: axis={self.axis!r}'
            )
        self.epochs = np.asarray(self.epochs, dtype=np.int64).reshape(-1)
        self.paths = list(self.paths)
        self.layers = list(self.layers)
        self.activations = dict(self.activations)
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

    def row(self, t: int) -> _rules.Row:
        """What was logged at the `t`-th logged epoch, for the rules."""
        from keras_gradwatch import _rules

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
    from keras_gradwatch import _rules  # the rules need the types above

    if series.epochs.size == 0 or not series.paths:
        return []
    diagnoser = _rules.Diagnoser(
        series.paths,
        series.kernels,
        series.layers,
        series.activations,
        thresholds,
        axis=series.axis,
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


def _is_kernel(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return name.endswith("kernel") or name == "embeddings"


def _json_float(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
