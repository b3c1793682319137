"""``vanishing``: through depth, through time, by saturation, or in the
weight gradients."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from keras_gradwatch._findings import REMEDIES, Finding
from keras_gradwatch._rules._base import (
    Plan,
    Row,
    RuleDoc,
    Run,
    Tally,
    gains,
    joined,
    kernel_plan,
    labels_first,
    listed,
    outside_labels,
    outside_layer_labels,
)
from keras_gradwatch._rules.dead_units import DeadUnits

DOC = RuleDoc(
    summary="""
    Through depth: a layer's backward signal (``act_grad_norm``, ‖∂L/∂y‖ at
    its output) is below 1e-3 of a later layer's, persistently. Through
    time: a recurrent layer's ``time_grad_ratio`` (first over last step)
    below 1e-3. Saturation: at least 70% of a kernel's units get an exactly
    zero gradient under a saturating activation. Weight gradients: a
    kernel's gradient/weight ratio below 1e-2 of the output layer's, where
    its layer's signal does not grow toward the input. Where the backward
    signal is logged it decides the direction: while it explodes toward the
    input, nothing through depth is reported as vanishing. Layers at or
    before a layer with dead units are left to ``dead_units``. Where held-out
    labels lie outside what the output layer's activation can produce
    (``heldout_target_outside``), a saturated output, or a drop of the
    signal across the output layer, names them, and the remedy puts
    bringing them into range first.""",
    thresholds=(
        "signal_vanishing",
        "time_vanishing",
        "dead_fraction",
        "vanishing_ratio",
        "min_epochs",
    ),
    mechanism="""
    Backpropagation multiplies the signal by each layer's Jacobian, so a
    stack that shrinks it 1000-fold leaves the input side without a learning
    signal (Glorot & Bengio 2010; Pascanu, Mikolov & Bengio 2013); 1e-3 is
    AUTOTRAINER's first/last ratio for vanishing gradients. Through time,
    the long-range dependencies of Bengio, Simard & Frasconi (1994) cannot
    be learned when the first step gets a thousandth of the last's
    gradient. Saturated tanh/sigmoid units shrink the gradient at their
    input, which the signal at their output does not show; the weight
    gradients do: healthy kernels stayed above 0.08 of the output layer's
    gradient/weight ratio on the runs the 1e-2 was set on, failing ones
    reached 1e-2 to 1e-3. A net whose activations grow forward as fast as
    its signal grows backward has small weight ratios on the input side
    while its signal explodes, hence the signal's veto. A sigmoid output
    asked for a label of 255 is driven to its bound, where its derivative
    vanishes, whatever the weights: the labels, not the net, are to
    change.""",
    example="""
    Ten sigmoid layers of 16 units with Glorot init and SGD: the signal at
    the first layer is 1e-5 of the last's. "The backward signal vanishes
    toward the input: the loss gradient at the output of ... is down to
    1.2e-05 of that of a layer after it." """,
    healthy="""
    The same ten sigmoid layers with BatchNormalization before each
    sigmoid; a He-initialized ReLU net; an LSTM over 10 steps.""",
)


class Vanishing:
    """Small gradients toward the input, or early in a sequence."""

    kind = "vanishing"
    doc = DOC

    def __init__(self, run: Run, dead: DeadUnits) -> None:
        self.run = run
        self.dead = dead
        n, layers = run.kernels.size, len(run.layers)
        self.signal = run.tally(layers, np.fmin)
        self.time = run.tally(layers, np.fmin)
        self.ratio = run.tally(max(n - 1, 0), np.fmin)
        self.ratio_change = run.tally(max(n - 1, 0))

    def feed(self, row: Row) -> None:
        run, th = self.run, self.run.th
        if run.layers and row.act_grad_norm is not None:
            low, _ = gains(row.act_grad_norm, run.signal)
            self.signal.add(row.epoch, low < th.signal_vanishing, low)
        if run.layers and row.time_grad_ratio is not None:
            ratio = row.time_grad_ratio
            self.time.add(row.epoch, ratio < th.time_vanishing, ratio)
        relative = relative_to_output(row.grad_to_weight[run.kernels])
        if relative is None:
            return
        alive = row.grad_to_weight[run.kernels[:-1]] > 0
        low = alive & (relative < th.vanishing_ratio)
        if run.layers and row.act_grad_norm is not None:
            low &= ~self._signal_grows(row.act_grad_norm)
        self.ratio.add(row.epoch, low, relative)
        if row.weight_change is not None:
            change = row.weight_change[run.kernels[:-1]]
            self.ratio_change.add(row.epoch, low & np.isfinite(change), change)

    def _signal_grows(self, signal: np.ndarray) -> np.ndarray:
        """Per kernel but the last: whether its layer's backward signal is
        above the output layer's (False where either is unknown)."""
        run = self.run
        last = run.signal[-1] if run.signal.size else -1
        if last < 0 or not (math.isfinite(signal[last]) and signal[last] > 0):
            return np.zeros(run.kernels.size - 1, dtype=bool)
        with np.errstate(invalid="ignore"):
            return run.own_signal(signal)[:-1] > signal[last]  # NaN: False

    def plans(self, exploding_in_depth: bool) -> list[Plan]:
        """`exploding_in_depth`: the backward signal explodes toward the
        input now; then only vanishing through time is reported."""
        run = self.run
        needed = run.needed()
        blocked = self.dead.blocking()
        plans = []
        if not exploding_in_depth:
            if run.layers:
                flagged = self.signal.flagged(needed)
                if blocked >= 0:
                    flagged[: blocked + 1] = False  # a dead layer blocks it
                if flagged.any():
                    plans.append(self._signal_plan(flagged))
            flagged = self.ratio.flagged(needed)
            if blocked >= 0:
                limit = blocked if not run.layers else run.last_kernel_of(blocked)
                flagged[: limit + 1] = False
            if flagged.any():
                plans.append(self._ratio_plan(flagged))
            flagged = self.dead.saturated.flagged(needed)
            if flagged.any():
                plans.append(self._saturated_plan(flagged))
        flagged = self.time.flagged(needed)
        if flagged.any():
            plans.append(self._time_plan(flagged))
        if not plans:
            return []
        # Current findings first: the remedy is that of what holds now.
        plans.sort(key=lambda plan: not plan.current)
        return [joined(plans)]

    def _signal_plan(self, flagged: np.ndarray) -> Plan:
        run = self.run
        labels = None
        if run.signal.size >= 2 and flagged[run.signal[-2]]:
            # The drop spans the output layer: a saturated output gates the
            # signal (its derivative), and labels it cannot produce saturate it.
            labels = outside_layer_labels(run, int(run.signal[-1]))

        def describe(layers: str, worst: float) -> tuple[str, float, str]:
            message, remedy = labels_first(
                labels,
                "The backward signal vanishes toward the input: the loss "
                f"gradient at the output of {layers} is down to {worst:.1e} "
                "of that of a layer after it.",
                REMEDIES["vanishing"],
                {},
            )
            return message, run.th.signal_vanishing, remedy

        return layer_plan(
            self.run, self.kind, flagged, self.signal, "act_grad_gain", min, describe
        )

    def _time_plan(self, flagged: np.ndarray) -> Plan:
        def describe(layers: str, worst: float) -> tuple[str, float, str]:
            return (
                f"Gradients vanish through time in {layers}: the first time "
                f"step gets {worst:.1e} of the last's, so early inputs "
                "cannot be learned from.",
                self.run.th.time_vanishing,
                REMEDIES["vanishing_time"],
            )

        return layer_plan(
            self.run, self.kind, flagged, self.time, "time_grad_ratio", min, describe
        )

    def _ratio_plan(self, flagged: np.ndarray) -> Plan:
        run = self.run
        columns = run.kernels[:-1][flagged]

        def describe(
            weights: tuple[str, ...], evidence: dict[str, float]
        ) -> tuple[str, dict[str, float], str]:
            moved = {}
            for j, c in zip(np.flatnonzero(flagged), columns, strict=True):
                change = self.ratio_change.last[j]
                if math.isfinite(change):
                    moved[f"weight_change/{run.paths[c]}"] = float(change)
            still = ""
            if moved:
                least = min(moved.values())
                still = f"; their weights change {least:.1e} per logged {run.unit}"
            output = run.paths[run.kernels[-1]]
            return (
                f"Gradients vanish toward the input: {listed(weights)} get down to "
                f"{min(evidence.values()):.1e} of the gradient/weight ratio of "
                f"{output}{still}.",
                {**moved, "threshold": run.th.vanishing_ratio},
                REMEDIES["vanishing"],
            )

        return kernel_plan(
            run, self.kind, flagged, columns, self.ratio, "relative_grad_to_weight",
            describe,
        )  # fmt: skip

    def _saturated_plan(self, flagged: np.ndarray) -> Plan:
        run = self.run

        def describe(
            weights: tuple[str, ...], evidence: dict[str, float]
        ) -> tuple[str, dict[str, float], str]:
            names = sorted({run.activation[j] for j in np.flatnonzero(flagged)})
            extra = {"threshold": run.th.dead_fraction}
            message, remedy = labels_first(
                outside_labels(run, flagged),
                f"Up to {max(evidence.values()):.0%} of the units of "
                f"{listed(weights)} pass no gradient: their {'/'.join(names)} "
                "is saturated (its derivative rounds to zero).",
                REMEDIES["saturated"],
                extra,
            )
            return message, extra, remedy

        tally = self.dead.saturated
        columns = run.kernels[flagged]
        return kernel_plan(
            run, self.kind, flagged, columns, tally, "grad_dead_units", describe
        )


def layer_plan(
    run: Run,
    kind: str,
    flagged: np.ndarray,
    tally: Tally,
    name: str,
    pick: Callable[..., float],
    describe: Callable[[str, float], tuple[str, float, str]],
) -> Plan:
    """A finding over flagged layers; evidence ``<name>/<layer>``, the most
    extreme value per layer; `describe` gives the message (citing the
    `pick` of them), threshold and remedy."""
    weights = run.layer_weights(flagged)
    current = run.current(tally, flagged)

    def build() -> Finding:
        indices = np.flatnonzero(flagged)
        evidence = {f"{name}/{run.layers[i]}": float(tally.extreme[i]) for i in indices}
        layers = listed([run.layers[i] for i in indices])
        text, limit, remedy = describe(layers, pick(evidence.values()))
        return Finding(
            kind,
            weights,
            tally.epochs(flagged),
            {**evidence, "threshold": limit},
            text,
            remedy,
            current,
        )

    return Plan((kind, weights), current, build)


def relative_to_output(ratio: np.ndarray) -> np.ndarray | None:
    """Kernels but the last: their gradient/weight ratio over the last's."""
    if ratio.size < 2:
        return None
    reference = ratio[-1]
    if not (math.isfinite(reference) and reference > 0):
        return np.full(ratio.size - 1, np.nan)
    return ratio[:-1] / reference
