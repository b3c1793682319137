"""``stalled``: a flat loss while the kernels barely change."""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from keras_gradwatch._findings import REMEDIES, Finding
from keras_gradwatch._rules._base import (
    Plan,
    Row,
    RuleDoc,
    Run,
    labels_first,
    listed,
    outside_labels,
)

DOC = RuleDoc(
    summary="""
    The best loss of the last 5 logged epochs improves on the best loss
    before them by less than 0.1% *and* a kernel barely changes: its
    ``weight_change`` (‖Δw‖₁/‖w‖₁ per logged epoch) is below 1e-3, or,
    where that was not logged, its gradient/weight ratio is below 1e-3;
    persistently. A kernel that is frozen (below 1e-5) stalls a loss
    that improves by less than 1% too. The loss is the training loss, or
    GradWatch's held-out loss where no training loss was logged; no
    loss, no finding. Where GradWatch knows the chance level of the task
    (the loss of predicting the label frequencies: ln 2 for balanced
    binary labels; the labels' variance for MSE) and the loss is below
    95% of it (``stall_chance``), only a frozen kernel counts; at it,
    the message says so. While another finding holds, it names the cause
    and this one is not reported. A loss flat at the chance level is
    stalled even while the weights move. Where held-out labels lie outside
    what the output activation can produce (``heldout_target_outside``),
    the message says so and the remedy puts fixing them first.""",
    thresholds=(
        "stall_loss",
        "stall_window",
        "stall_update",
        "stall_grad_to_weight",
        "stall_frozen_loss",
        "stall_frozen",
        "stall_chance",
        "min_epochs",
    ),
    mechanism="""
    SageMaker Debugger pairs ``LossNotDecreasing`` with
    ``WeightUpdateRatio`` (update/weight below 1e-8 per step);
    DeepDiagnosis flags a loss that stops decreasing over 5 steps and a
    relative update below 1e-5. We judge per logged epoch, so the
    thresholds are larger. A loss creeping down 0.02% per epoch on
    frozen weights is not going anywhere within a training budget. A run
    that has converged looks the same; the message says so. A loss is at
    the chance level when it is within 5% of the loss of the best
    constant prediction: the model explains less than 5% of what there
    is to learn. Where that level is known, a plateau well below it on
    weights that barely move is what convergence looks like too, and
    nothing here tells the two apart, but a converged net's weights keep
    moving under the noise of minibatch gradients (SGD's stationary
    spread grows with the learning rate): below it, only a frozen kernel
    is a stall, the learning rate too small for anything to happen. A
    loss that never left the chance level has learned nothing, whatever
    the cause. With adaptive optimizers (Adam, RMSprop) the step does
    not follow the gradient's size: log ``weight_change`` (WeightNorms).
    A loss flat at the chance level is stalled whether or not the
    weights move: Adam's steps are about its learning rate per weight
    whatever the gradient, so on targets or inputs far from the scale of
    the model's outputs every weight moves while the loss does not; the
    remedy is then to rescale them.""",
    example="""
    Two ReLU layers on the digits with SGD at rate 1e-6: "The training
    loss improved by 0.01% over 5 logged epochs while ... barely change:
    training has stalled, with the loss (2.31) at the chance level of
    the task (2.30, the loss of predicting the label frequencies) ...".
    Without a known chance level (another loss): "... training has
    stalled (or converged)." Adam at 1e-3 on house prices in dollars
    (~2e5): "The training loss improved by 0.05% over 5 logged epochs
    and sits (4.2e+10) at the chance level of the task ..., while the
    weights still move: the steps go nowhere".""",
    healthy="""
    A run whose loss still falls by more than 0.1% per 5 epochs; a
    classifier that converged well below the chance level (the README's
    ReLU run: loss 0.40 against ln 2); a plateau that training leaves
    (reported as history, not as current).""",
)


class Stalled:
    """A loss that stopped improving on kernels that stopped moving."""

    kind = "stalled"
    doc = DOC

    def __init__(self, run: Run, chance_loss: float = math.nan) -> None:
        self.run = run
        self.chance = chance_loss
        n = run.kernels.size
        self.losses: deque[float] = deque(maxlen=run.th.stall_window + 1)
        self.best_before = math.inf
        self.improvement = math.nan
        self.recent_best = math.nan
        self.held = (math.nan, math.nan)
        """The improvement and recent best loss at the last stalled epoch."""
        self.stall = run.tally(n)
        self.measured = np.zeros(n, dtype=bool)
        self.moving = False
        """Whether, at the last stalled epoch, the loss sat at the chance
        level while every kernel still moved."""
        self.defined = 0

    def feed_loss(self, loss: float) -> None:
        """Every logged epoch's loss, non-finite epochs included."""
        window = self.run.th.stall_window
        self.losses.append(loss)  # the last window + 1 only
        full = len(self.losses) > window
        if full and math.isfinite(self.losses[0]):
            self.best_before = min(self.best_before, self.losses[0])
        recent = [v for v in list(self.losses)[-window:] if math.isfinite(v)]
        self.recent_best = min(recent) if recent else math.nan
        self.improvement = math.nan
        if full and math.isfinite(self.best_before) and recent:
            best = self.best_before
            self.improvement = (best - min(recent)) / max(abs(best), 1e-12)

    def feed(self, row: Row) -> None:
        th = self.run.th
        kernels = self.run.kernels
        defined = math.isfinite(self.improvement)
        self.defined += defined
        if not defined or self.improvement >= th.stall_frozen_loss:
            return
        known = math.isfinite(self.chance)
        learned = known and not self.at_chance(self.recent_best)
        nothing = known and not learned and self.improvement < th.stall_loss
        change = row.grad_to_weight[kernels]
        measured = np.zeros(change.shape, dtype=bool)
        if row.weight_change is not None:
            measured = np.isfinite(row.weight_change[kernels])
            change = np.where(measured, row.weight_change[kernels], change)
        limit = np.where(measured, th.stall_update, th.stall_grad_to_weight)
        if self.improvement >= th.stall_loss or learned:
            # A loss that still creeps down, or one below the chance level
            # (a plateau there may be convergence): stalled only if frozen.
            limit = np.full(limit.shape, th.stall_frozen)
        holds = change < limit
        moving = nothing and not holds.any()
        if moving:
            # Nothing learned and nothing improving while every kernel
            # moves: the steps go nowhere.
            holds = np.ones(holds.shape, dtype=bool)
        if holds.any():
            self.held = (self.improvement, self.recent_best)
            self.moving = moving
        self.stall.add(row.epoch, holds, change)
        self.measured = np.where(holds, measured, self.measured)

    def at(self, loss: float) -> str:
        """``"at"``, or ``"above"`` for a loss more than `stall_chance` over
        the chance level."""
        return "above" if loss > (1 + self.run.th.stall_chance) * self.chance else "at"

    def at_chance(self, loss: float) -> bool:
        """Whether `loss` is at the chance level."""
        share = self.run.th.stall_chance
        return bool(self.chance > 0 and loss >= (1 - share) * self.chance)

    def plans(self) -> list[Plan]:
        run = self.run
        if not run.loss_seen:
            return []
        flagged = self.stall.flagged(run.needed(self.defined))
        if not flagged.any():
            return []
        columns = run.kernels[flagged]
        weights = run.names(columns)
        current = run.current(self.stall, flagged)
        (improvement, loss), chance = self.held, self.chance

        def build() -> Finding:
            evidence = {}
            for j, c in zip(np.flatnonzero(flagged), columns, strict=True):
                name = "weight_change" if self.measured[j] else "grad_to_weight"
                evidence[f"{name}/{run.paths[c]}"] = float(self.stall.last[j])
            evidence["loss_improvement"] = float(improvement)
            flat = (
                f"The {run.loss_name} improved by {max(improvement, 0.0):.2%} over "
                f"{run.th.stall_window} logged {run.unit}s"
            )
            chance_level = (
                f"the chance level of the task ({chance:.4g}, the loss of the "
                "best constant prediction)"
            )
            remedy = REMEDIES["stalled"]
            if self.moving:
                evidence["chance_loss"] = float(chance)
                text = (
                    f"{flat} and sits ({loss:.4g}) {self.at(loss)} {chance_level}, "
                    "while the weights still move: the steps go nowhere, the "
                    "model has learned next to nothing."
                )
                remedy = REMEDIES["stalled_at_chance"]
            else:
                text = f"{flat} while {listed(weights)} barely change: "
                text += "training has stalled"
                if self.at_chance(loss):
                    evidence["chance_loss"] = float(chance)
                    text += (
                        f", with the loss ({loss:.4g}) {self.at(loss)} "
                        f"{chance_level}: the model has learned next to nothing."
                    )
                else:
                    text += " (or converged)."
            text, remedy = labels_first(outside_labels(run), text, remedy, evidence)
            return Finding(
                self.kind,
                weights,
                self.stall.epochs(flagged),
                evidence,
                text,
                remedy,
                current,
            )

        return [Plan((self.kind, weights), current, build)]
