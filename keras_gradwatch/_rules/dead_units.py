"""``dead_units``: units that pass no gradient at all, and saturation."""

from __future__ import annotations

import numpy as np

from keras_gradwatch._findings import REMEDIES, Finding
from keras_gradwatch._rules._base import (
    RELU_LIKE,
    SATURATING,
    Plan,
    Row,
    RuleDoc,
    Run,
    kernel_plan,
    labels_first,
    listed,
    outside_labels,
)

DOC = RuleDoc(
    summary="""
    At least 70% of a kernel's units get an exactly zero gradient on the
    whole held-out batch, persistently, under an activation that does not
    saturate. Under a saturating one (tanh, sigmoid...) the same units are
    saturated: that is reported as ``vanishing``. When every kernel's
    gradient is zero, the network has collapsed. A layer whose output gets
    no backward signal at all (a head the loss ignores, or dead units after
    it) is not judged: its units are not the cause. A dead ReLU output
    whose held-out labels lie below 0 (``heldout_target_outside``) names
    them, and the remedy puts bringing them into range first.""",
    thresholds=("dead_fraction", "min_epochs"),
    mechanism="""
    AUTOTRAINER and DeepDiagnosis flag 70% dead units; SageMaker Debugger's
    ``DeadRelu`` flags more than 50% inactive ReLUs. A narrow healthy ReLU
    net shows 10-60% dead units in a layer: the 5-unit ReLU + He net of the
    two-circles example, which reaches 84% accuracy, has 3 of 5 dead in one
    layer, so 50% would flag it. A unit's gradient is exactly zero only when
    its activation's derivative is zero on every held-out sample (a ReLU
    below zero) or no signal reaches its output; the backward signal at the
    layer's output, where logged, tells the two apart.""",
    example="""
    Twelve ReLU layers of 8 units with biases at -1: the deeper layers'
    units never fire. "Up to 100% of the units of ... get no gradient at
    all (dying ReLU)." """,
    healthy="""
    The two-circles ReLU + He net (up to 60% of a layer's units dead), and
    a second output whose loss weight is 0 (no signal reaches it).""",
)


class DeadUnits:
    """Kernels whose units get no gradient; saturated ones apart."""

    kind = "dead_units"
    doc = DOC

    def __init__(self, run: Run) -> None:
        self.run = run
        n = run.kernels.size
        self.dead = run.tally(n)
        self.saturated = run.tally(n)
        self.collapsed = run.tally(1)

    def feed(self, row: Row) -> None:
        run = self.run
        norm = row.grad_norm[run.kernels]
        logged = np.isfinite(norm)
        if (
            logged.any()
            and np.all(~logged | (norm == 0))
            and not run.saturating.all()  # then it is saturation
        ):
            self.collapsed.add(row.epoch, np.ones(1, dtype=bool))
        dead = row.grad_dead_units[run.kernels]
        # No signal at the layer's output: the loss does not reach it.
        reached = run.own_signal(row.act_grad_norm) != 0
        holds = (dead >= run.th.dead_fraction) & reached
        # Under a saturating activation, units with no gradient are saturated,
        # unless units before them are dead: then they get no input at all.
        dying = holds & ~run.saturating
        dead_before = np.cumsum(dying) - dying
        saturated = holds & run.saturating & ((norm > 0) | (dead_before == 0))
        self.dead.add(row.epoch, holds & ~saturated, dead)
        self.saturated.add(row.epoch, saturated, dead)

    def has_collapsed(self) -> bool:
        return bool(self.collapsed.flagged(self.run.needed())[0])

    def collapsed_now(self) -> bool:
        return self.has_collapsed() and self.run.current(
            self.collapsed, np.ones(1, dtype=bool)
        )

    def blocking(self) -> int:
        """The output-most column (layer index with layers, kernel index
        without) at or before which dead units explain a missing signal;
        -1 if none does now."""
        run = self.run
        flagged = self.dead.flagged(run.needed()) & self.dead.recent(run.needed())
        if not flagged.any() and not self.collapsed_now():
            return -1
        columns = (
            np.flatnonzero(flagged) if flagged.any() else np.arange(run.kernels.size)
        )
        if not run.layers:
            return int(columns.max())
        owners = run.owner[columns]
        return int(owners.max()) if (owners >= 0).any() else len(run.layers) - 1

    def plans(self, growth: str = "") -> list[Plan]:
        """`growth`: how the gradients grew before a collapse, if they did."""
        run = self.run
        if run.kernels.size and self.has_collapsed():
            weights = run.names(run.kernels)
            current = self.collapsed_now()

            def build_collapsed() -> Finding:
                epochs = self.collapsed.epochs(np.ones(1, dtype=bool))
                return Finding(
                    self.kind,
                    weights,
                    epochs,
                    {"collapsed_epochs": float(len(epochs))},
                    f"Every kernel's gradient is zero{growth}: the network has "
                    f"collapsed ({self.cause(np.ones(run.kernels.size, bool))}, "
                    "or a constant output).",
                    REMEDIES["dead_units"],
                    current,
                )

            return [Plan((self.kind, weights), current, build_collapsed)]
        flagged = self.dead.flagged(run.needed())
        if not flagged.any():
            return []

        def describe(
            weights: tuple[str, ...], evidence: dict[str, float]
        ) -> tuple[str, dict[str, float], str]:
            extra = {"threshold": run.th.dead_fraction}
            message, remedy = labels_first(
                outside_labels(run, flagged),
                f"Up to {max(evidence.values()):.0%} of the units of "
                f"{listed(weights)} get no gradient at all "
                f"({self.cause(flagged)}).",
                REMEDIES["dead_units"],
                extra,
            )
            return message, extra, remedy

        columns = run.kernels[flagged]
        return [
            kernel_plan(
                run, self.kind, flagged, columns, self.dead, "grad_dead_units", describe
            )
        ]

    def cause(self, flagged: np.ndarray) -> str:
        names = {self.run.activation[j] for j in np.flatnonzero(flagged)}
        if names & RELU_LIKE:
            return "dying ReLU"
        if names and names <= SATURATING:
            return "saturated units, or dead units before them"
        return "dead ReLUs, or saturated units after this layer"
