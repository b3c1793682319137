"""``non_finite``: NaN or ±Inf in the gradients, the weights or the loss."""

from __future__ import annotations

import math

import numpy as np

from keras_gradwatch._findings import REMEDIES, Finding
from keras_gradwatch._rules._base import Plan, Row, RuleDoc, Run, listed

DOC = RuleDoc(
    summary="""
    Any NaN or ±Inf gradient element (``grad_nonfinite``), weight element
    (``weight_nonfinite``, or a non-finite WeightNorms norm) or logged loss,
    at any epoch; reported with the first such epoch. An epoch with a
    non-finite value is not judged by the other rules, and the finding
    comes first: it is what the run became.""",
    thresholds=("min_epochs",),
    mechanism="""
    There is no threshold to choose: a single NaN propagates through every
    later update. SageMaker Debugger's ``ExplodingTensor`` rule and the NaN
    checks of AUTOTRAINER (Zhang et al., ICSE 2021) and DeepDiagnosis
    (Wardat et al., ICSE 2022) do the same. The other rules skip such an
    epoch: with oneDNN's fused MatMul+BiasAdd+Relu, NaN weights give
    all-zero gradients that would read as dead units. ``min_epochs`` only
    decides when the finding counts as over (no NaN in that many epochs).""",
    example="""
    Three linear layers on the digits with SGD at rate 1: the weights
    overflow in the first epoch. "NaN/Inf from epoch 0 on, in gradients
    of ... and the training loss." """,
    healthy="""
    A loss scaled by 1e-6 trained with Adam (epsilon 1e-12): tiny but
    finite gradients.""",
)


class NonFinite:
    """Where gradients, weights or the loss were not finite."""

    kind = "non_finite"
    doc = DOC

    def __init__(self, run: Run) -> None:
        self.run = run
        size = len(run.paths)
        self.grads = run.tally(size)
        self.weights = run.tally(size)
        self.loss_epochs: list[int] = []
        self.loss_last = -1

    def feed(self, row: Row) -> bool:
        """Returns whether the row holds a non-finite value."""
        grads = np.nan_to_num(row.grad_nonfinite, nan=0.0)
        self.grads.add(row.epoch, grads > 0, grads)
        broken = bool((grads > 0).any())
        if row.weight_nonfinite is not None:
            count = np.nan_to_num(row.weight_nonfinite, nan=0.0)
            self.weights.add(row.epoch, count > 0, count)
            broken |= bool((count > 0).any())
        if row.loss_logged and not math.isfinite(row.loss):
            self.loss_epochs.append(row.epoch)
            self.loss_last = self.run.clock.tick
            broken = True
        return broken

    def plans(self) -> list[Plan]:
        run = self.run
        grads = self.grads.count > 0
        weights_bad = self.weights.count > 0
        columns = np.flatnonzero(grads | weights_bad)
        if not columns.size and not self.loss_epochs:
            return []
        window = max(1, run.th.min_epochs)
        current = (
            run.current(self.grads, grads)
            or run.current(self.weights, weights_bad)
            or self.loss_last > run.clock.tick - window
        )
        weights = run.names(columns)

        def build() -> Finding:
            epochs = sorted(
                {e for e, _ in self.grads.rows}
                | {e for e, _ in self.weights.rows}
                | set(self.loss_epochs)
            )
            first = epochs[0]
            evidence: dict[str, float] = {}
            where = []
            for name, tally, bad, what in (
                ("grad_nonfinite", self.grads, grads, "gradients of"),
                ("weight_nonfinite", self.weights, weights_bad, "the weights"),
            ):
                for c in np.flatnonzero(bad):
                    evidence[f"{name}/{run.paths[c]}"] = float(tally.extreme[c])
                if bad.any():
                    where.append(f"{what} {listed(run.names(np.flatnonzero(bad)))}")
            if self.loss_epochs:
                where.append(f"the {run.loss_name}")
                evidence["loss_nonfinite_epochs"] = float(len(self.loss_epochs))
            return Finding(
                self.kind,
                weights,
                tuple(epochs),
                {**evidence, "first_epoch": float(first)},
                f"NaN/Inf from {run.unit} {first} on, in {' and '.join(where)}.",
                REMEDIES["non_finite"],
                current,
            )

        return [Plan((self.kind, weights), current, build)]
