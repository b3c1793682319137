"""``exploding``: through depth, through time, or over the epochs."""

from __future__ import annotations

import numpy as np

from keras_gradwatch._findings import REMEDIES
from keras_gradwatch._rules._base import (
    Plan,
    Row,
    RuleDoc,
    Run,
    Tally,
    gains,
    kernel_plan,
    listed,
)
from keras_gradwatch._rules.dead_units import DeadUnits
from keras_gradwatch._rules.vanishing import layer_plan, relative_to_output

DOC = RuleDoc(
    summary="""
    Through depth: a layer's backward signal is above 1e3 times a later
    layer's, persistently. Through time: ``time_grad_ratio`` above 1e3.
    Over the epochs: a kernel's gradient norm has grown 1e3-fold over its
    smallest earlier value *and* its gradient/weight ratio is at least 1
    *and* the loss (when known) is not at a new best, persistently; when
    the gradients then all become zero, that is reported as a collapse
    (``dead_units``) that names the growth. Without a logged backward
    signal, a kernel's gradient/weight ratio above 1e2 times the output
    layer's counts instead of the signal, unless the units in front of the
    output layer are dead (which shrinks the reference).""",
    thresholds=(
        "signal_exploding",
        "time_exploding",
        "exploding_growth",
        "exploding_grad_to_weight",
        "exploding_ratio",
        "min_epochs",
    ),
    mechanism="""
    With Glorot or He initialization the signal's norm changes by at most
    √2 per Dense layer (‖∂L/∂x‖² ≈ fan_in·Var(w)·‖∂L/∂y‖², and
    fan_in·Var(w) ≤ 2), so 1e3 takes 20 layers that all grow it as much as
    a healthy layer can; the chaotic tanh nets of Schoenholz et al. (2017)
    and N(0, 1) weights grow it by 1e4 and more. A gradient as large as its
    weight (ratio 1) moves the weight by its own size at any learning rate
    near 1, and a 1e3-fold growth is beyond the loss-driven change of a
    fitting run, hence the three conditions over the epochs. AUTOTRAINER
    uses 70 for the weight-gradient ratio; 1e2 is its order of
    magnitude.""",
    example="""
    Thirty tanh layers of 32 units with N(0, 9/fan_in) weights (the chaotic
    phase): "The backward signal explodes toward the input: the loss
    gradient at the output of ... is up to 3.1e+05 times that of a layer
    after it." """,
    healthy="""
    A residual net with BatchNormalization; a transformer block with
    LayerNormalization; a run whose gradient norm grows while its loss
    keeps improving.""",
)


class Exploding:
    """Large gradients toward the input, early in a sequence, or over time."""

    kind = "exploding"
    doc = DOC

    def __init__(self, run: Run, dead: DeadUnits) -> None:
        self.run = run
        self.dead = dead
        n, layers = run.kernels.size, len(run.layers)
        self.signal = run.tally(layers)
        self.time = run.tally(layers)
        self.ratio = run.tally(max(n - 1, 0))
        self.growth = run.tally(n)
        self.smallest = np.full(n, np.inf)

    def feed(self, row: Row) -> None:
        run, th = self.run, self.run.th
        if run.layers and row.act_grad_norm is not None:
            _, high = gains(row.act_grad_norm, run.signal)
            self.signal.add(row.epoch, high > th.signal_exploding, high)
        if run.layers and row.time_grad_ratio is not None:
            ratio = row.time_grad_ratio
            self.time.add(row.epoch, ratio > th.time_exploding, ratio)
        relative = relative_to_output(row.grad_to_weight[run.kernels])
        if relative is not None:
            high = np.isfinite(relative) & (relative > th.exploding_ratio)
            self.ratio.add(row.epoch, high, relative)
        norm = row.grad_norm[run.kernels]
        with np.errstate(divide="ignore", invalid="ignore"):
            growth = norm / self.smallest
        holds = (
            np.isfinite(growth)
            & (growth >= th.exploding_growth)
            & (row.grad_to_weight[run.kernels] >= th.exploding_grad_to_weight)
        )
        if row.loss < run.best_loss:  # a new best: fitting, not exploding
            holds[:] = False
        self.growth.add(row.epoch, holds, growth)

    def remember(self, row: Row) -> None:
        """The running minimum the next epoch is compared with (every
        epoch, non-finite ones included)."""
        norm = row.grad_norm[self.run.kernels]
        positive = np.isfinite(norm) & (norm > 0)
        self.smallest = np.where(
            positive, np.minimum(self.smallest, norm), self.smallest
        )

    def in_depth_now(self) -> bool:
        """Whether the backward signal explodes toward the input now."""
        flagged = self.signal.flagged(self.run.needed())
        return bool(flagged.any()) and self.run.current(self.signal, flagged)

    def growth_before_collapse(self) -> str:
        """How the gradients grew, for a collapse's message; or ""."""
        flagged = self.growth.flagged(self.run.needed())
        if not flagged.any():
            return ""
        epochs = self.growth.epochs(flagged)
        return (
            f" after growing up to {np.nanmax(self.growth.extreme[flagged]):.1e}-fold "
            f"by {self.run.unit} {epochs[-1]}"
        )

    def plans(self, collapsed: bool) -> list[Plan]:
        """`collapsed`: every gradient is zero now; the growth is then told
        in that finding."""
        run = self.run
        needed = run.needed()
        plans = []
        if run.layers:
            flagged = self.signal.flagged(needed)
            if flagged.any():
                plans.append(self._layers(flagged, self.signal, "act_grad_gain"))
        else:
            flagged = self.ratio.flagged(needed)
            # Dead units in front of the output layer shrink its ratio, the
            # reference: every other kernel would look large next to it.
            if self.dead.dead.flagged(needed)[-2:].any():
                flagged[:] = False
            if flagged.any():
                plans.append(self._ratio(flagged))
        flagged = self.time.flagged(needed)
        if flagged.any():
            plans.append(self._layers(flagged, self.time, "time_grad_ratio"))
        flagged = self.growth.flagged(needed)
        if flagged.any() and not collapsed:
            plans.append(self._growth(flagged))
        return plans

    def _layers(self, flagged: np.ndarray, tally: Tally, name: str) -> Plan:
        th = self.run.th

        def describe(layers: str, worst: float) -> tuple[str, float, str]:
            if name == "time_grad_ratio":
                return (
                    f"Gradients explode through time in {layers}: the first time "
                    f"step gets {worst:.1e} times the last's.",
                    th.time_exploding,
                    REMEDIES["exploding"],
                )
            return (
                "The backward signal explodes toward the input: the loss "
                f"gradient at the output of {layers} is up to {worst:.1e} "
                "times that of a layer after it.",
                th.signal_exploding,
                REMEDIES["exploding"],
            )

        return layer_plan(self.run, self.kind, flagged, tally, name, max, describe)

    def _ratio(self, flagged: np.ndarray) -> Plan:
        run = self.run

        def describe(
            weights: tuple[str, ...], evidence: dict[str, float]
        ) -> tuple[str, dict[str, float], str]:
            output = run.paths[run.kernels[-1]]
            return (
                f"Gradients explode toward the input: {listed(weights)} reach "
                f"{max(evidence.values()):.1e} times the gradient/weight ratio "
                f"of {output}.",
                {"threshold": run.th.exploding_ratio},
                REMEDIES["exploding"],
            )

        columns = run.kernels[:-1][flagged]
        return kernel_plan(
            run, self.kind, flagged, columns, self.ratio, "relative_grad_to_weight",
            describe,
        )  # fmt: skip

    def _growth(self, flagged: np.ndarray) -> Plan:
        run = self.run

        def describe(
            weights: tuple[str, ...], evidence: dict[str, float]
        ) -> tuple[str, dict[str, float], str]:
            loss = " while the loss stopped improving" if run.loss_seen else ""
            return (
                f"Gradient norms of {listed(weights)} grew "
                f"{max(evidence.values()):.1e}-fold over the {run.unit}s{loss}.",
                {"threshold": run.th.exploding_growth},
                REMEDIES["exploding"],
            )

        columns = run.kernels[flagged]
        return kernel_plan(
            run, self.kind, flagged, columns, self.growth, "grad_norm_growth", describe
        )
