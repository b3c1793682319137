"""What the rules produce and read their limits from: `Finding`, `Thresholds`.

Shared by `keras_gradwatch.diagnosis` (the public API, which re-exports
them) and the rules in `keras_gradwatch._rules`; imports neither.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

KINDS = ("vanishing", "exploding", "non_finite", "dead_units", "stalled")
"""Every `Finding.kind`."""
CAUSE_ORDER = ("non_finite", "exploding", "dead_units", "vanishing", "stalled")
"""The order `diagnose` reports findings in: causes before their effects. A
run that went non-finite is that first; an explosion kills units and
saturates them; dead or saturated units starve the layers before them
(vanishing); any of these stall the loss."""

REMEDIES = {
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
    "target_outside": (
        "Bring the labels into the range of the output activation (rescale "
        "or shift them: e.g. divide pixel targets by 255), or use an output "
        "activation that covers them (linear for regression targets)."
    ),
    "stalled_at_chance": (
        "Standardize the inputs and the targets (the model's outputs start far "
        "from their scale), check that the output activation can reach the "
        "targets, then tune the learning rate."
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
        current: Whether it still holds at the end of what was logged (in
            one of the last ``min_epochs`` logged epochs); False for history:
            a condition that held and then ended.
    """

    kind: str
    weights: tuple[str, ...]
    epochs: tuple[int, ...]
    evidence: dict[str, float] = field(hash=False)
    message: str
    remedy: str
    current: bool = True

    @property
    def key(self) -> tuple[str, tuple[str, ...]]:
        """``(kind, weights)``: what `new_findings` compares."""
        return self.kind, self.weights

    def when(self, axis: str = "epoch") -> str:
        """Its epochs and whether it still holds: ``"epochs 0-8, not since"``
        or ``"epochs 40-99, current"``."""
        state = "current" if self.current else "not since"
        return f"{axis}s {ranges(self.epochs)}, {state}"

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict; non-finite evidence becomes None (JSON null)."""
        return {
            "kind": self.kind,
            "weights": list(self.weights),
            "epochs": list(self.epochs),
            "message": self.message,
            "remedy": self.remedy,
            "current": self.current,
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
        stall_chance: Where the chance level of the task is known, a stall
            counts only with the loss above ``1 - stall_chance`` times it.
            Defaults to 0.05.
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
    stall_chance: float = 0.05
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
        if not 0 < self.stall_chance < 1:
            raise ValueError(
                "Thresholds need 0 < stall_chance < 1. "
                f"Received: stall_chance={self.stall_chance}"
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


def ranges(epochs: tuple[int, ...]) -> str:
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


def is_kernel(path: str) -> bool:
    """Whether the layer-wise rules look at a weight by default: its last
    path part ends in ``kernel`` or is ``embeddings``."""
    name = path.rsplit("/", 1)[-1]
    return name.endswith("kernel") or name == "embeddings"


def _json_float(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
