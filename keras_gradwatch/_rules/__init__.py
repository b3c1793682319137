"""The diagnosis rules, fed one logged epoch at a time.

One module per finding kind (`non_finite`, `exploding`, `dead_units`,
`vanishing`, `stalled`), each holding its thresholds' names, the mechanism
or source that sets them and an example (its ``DOC``, printed by
``gradwatch report --explain KIND``). Each rule keeps what its verdict
needs from the epochs seen so far (how often each weight or layer held,
the most extreme value, running minima), so an epoch costs the same after
10 logged epochs as after 5,000. `Diagnoser` feeds them and makes one story
of their findings: causes before effects, the backward signal deciding the
direction, a collapse or a NaN told as that.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from keras_gradwatch._findings import CAUSE_ORDER, Finding, Thresholds
from keras_gradwatch._rules._base import Plan, Row, RuleDoc, Run
from keras_gradwatch._rules.dead_units import DeadUnits
from keras_gradwatch._rules.exploding import Exploding
from keras_gradwatch._rules.non_finite import NonFinite
from keras_gradwatch._rules.stalled import Stalled
from keras_gradwatch._rules.vanishing import Vanishing

__all__ = ["DOCS", "Diagnoser", "Row", "explain"]

DOCS: dict[str, RuleDoc] = {
    rule.kind: rule.doc
    for rule in (Vanishing, Exploding, NonFinite, DeadUnits, Stalled)
}
"""Each finding kind's documentation."""


def explain(kind: str, thresholds: Thresholds | None = None) -> str:
    """What a finding kind means: when it fires, its thresholds and their
    values, why, and a run it fires on.

    Raises:
        ValueError: `kind` is not a finding kind.
    """
    if kind not in DOCS:
        raise ValueError(
            f"Unknown finding kind {kind!r}; expected one of {', '.join(DOCS)}."
        )
    return DOCS[kind].text(kind, thresholds)


class Diagnoser:
    """The rules' state over the epochs of one run.

    Args:
        paths: Weight paths, ``[K]``, in ``model.trainable_weights`` order.
        kernels: ``[K]`` bools: the weights the layer-wise rules look at.
            Defaults to `Series`' default.
        layers: Paths of the layers whose backward signal was measured,
            forward order, ``[L]``.
        activations: Layer path -> activation name, where known.
        thresholds: The rules' thresholds.
        axis: What a row's ``epoch`` counts, ``"epoch"`` or ``"step"``.
        loss_source: Which loss the rows carry, ``"training"`` or
            ``"held-out"``; defaults to ``"held-out"`` on the step axis.
        chance_loss: The loss of the best constant prediction (the label
            entropy for cross-entropy), where known; NaN otherwise.
        target_outside: Output layer path -> the share of the labels its
            activation cannot produce, where known.
    """

    def __init__(
        self,
        paths: Sequence[str],
        kernels: np.ndarray | None = None,
        layers: Sequence[str] = (),
        activations: dict[str, str] | None = None,
        thresholds: Thresholds | None = None,
        axis: str = "epoch",
        loss_source: str | None = None,
        chance_loss: float = math.nan,
        target_outside: dict[str, float] | None = None,
    ) -> None:
        if loss_source is None:
            loss_source = "held-out" if axis == "step" else "training"
        self.run = Run(
            paths,
            kernels,
            layers,
            activations or {},
            Thresholds() if thresholds is None else thresholds,
            axis,
            loss_source,
            target_outside or {},
        )
        self.layers = self.run.layers
        self.non_finite = NonFinite(self.run)
        self.dead = DeadUnits(self.run)
        self.exploding = Exploding(self.run, self.dead)
        self.vanishing = Vanishing(self.run, self.dead)
        self.stalled = Stalled(self.run, chance_loss)
        self.seen: set[tuple[str, tuple[str, ...]]] = set()
        self.holding: set[tuple[str, tuple[str, ...]]] = set()
        self.ended: list[Finding] = []
        """The findings that held at the previous `update` and no longer do."""

    def update(self, row: Row) -> list[Finding]:
        """Feeds one logged epoch; returns the findings new with it (by
        ``(kind, weights)``), built only when something is new, and sets
        `ended`."""
        self.feed(row)
        plans = self._plans()
        holding = {plan.key for plan in plans if plan.current}
        self.ended = [
            plan.build()
            for plan in plans
            if plan.key in self.holding and plan.key not in holding
        ]
        self.holding = holding
        keys = {plan.key for plan in plans}
        if keys <= self.seen:
            return []
        new = [plan.build() for plan in plans if plan.key not in self.seen]
        self.seen |= keys
        return new

    def feed(self, row: Row) -> None:
        run = self.run
        run.clock.tick += 1
        broken = self.non_finite.feed(row)
        self.stalled.feed_loss(row.loss)
        run.loss_seen |= not math.isnan(row.loss)
        if not broken:
            # Past a NaN, the other statistics describe NaN weights (a fused
            # MatMul+BiasAdd+Relu maps NaN to 0: "dead" units), not a cause.
            run.fed += 1
            self.vanishing.feed(row)
            self.exploding.feed(row)
            self.dead.feed(row)
            self.stalled.feed(row)
        self.exploding.remember(row)
        if math.isfinite(row.loss):
            run.best_loss = min(run.best_loss, row.loss)

    def keys(self) -> set[tuple[str, tuple[str, ...]]]:
        return {plan.key for plan in self._plans()}

    def findings(self) -> list[Finding]:
        """Every finding so far, causes first (`CAUSE_ORDER`)."""
        return [plan.build() for plan in self._plans()]

    def _plans(self) -> list[Plan]:
        """What would be reported, with its key, before building messages."""
        collapsed = self.dead.collapsed_now()
        plans = [
            *self.non_finite.plans(),
            *self.exploding.plans(collapsed),
            *self.dead.plans(self.exploding.growth_before_collapse()),
            *self.vanishing.plans(self.exploding.in_depth_now()),
        ]
        if not any(plan.current for plan in plans):
            # While another finding holds, it names the cause of the stall.
            plans.extend(self.stalled.plans())
        return sorted(plans, key=lambda plan: CAUSE_ORDER.index(plan.key[0]))
