"""The diagnosis rules, fed one logged epoch at a time.

Each rule keeps what its verdict needs from the epochs seen so far (how often
each weight or layer held, the most extreme value, running minima), so an
epoch costs the same after 10 logged epochs as after 5,000. `Diagnoser.update`
returns the findings that are new with an epoch (GradWatch's live warnings);
`Diagnoser.findings` builds them all (`keras_gradwatch.diagnosis.diagnose`
feeds a whole `Series` through one). The rules and the sources of their
thresholds are described in `keras_gradwatch.diagnosis`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from keras_gradwatch.diagnosis import _REMEDIES as REMEDIES
from keras_gradwatch.diagnosis import Finding, Thresholds, _is_kernel

SATURATING = frozenset(
    {
        "tanh",
        "sigmoid",
        "hard_sigmoid",
        "hard_tanh",
        "softsign",
        "softmax",
        "log_sigmoid",
    }
)
"""Activations whose derivative goes to zero for large inputs: a unit with no
gradient there is saturated, not dead."""
RELU_LIKE = frozenset({"relu", "relu6", "elu", "selu", "hard_silu", "hard_swish"})
"""Activations that output a constant (zero gradient) below a threshold."""


@dataclass(frozen=True)
class Row:
    """What was logged at one epoch. ``[K]`` arrays over the weights, ``[L]``
    over the measured layers; None where it was not logged."""

    epoch: int
    grad_norm: np.ndarray
    grad_to_weight: np.ndarray
    grad_dead_units: np.ndarray
    grad_nonfinite: np.ndarray
    loss: float = math.nan
    loss_logged: bool = False
    weight_change: np.ndarray | None = None
    weight_nonfinite: np.ndarray | None = None
    act_grad_norm: np.ndarray | None = None
    time_grad_ratio: np.ndarray | None = None


class _Tally:
    """Where one condition held, per column, over the epochs fed to it."""

    def __init__(self, size: int, pick: Callable[..., np.ndarray] = np.fmax) -> None:
        self.count = np.zeros(size, dtype=np.int64)
        self.extreme = np.full(size, np.nan)
        self.last = np.full(size, np.nan)
        self.rows: list[tuple[int, np.ndarray]] = []
        self.now = np.zeros(size, dtype=bool)
        """Where it held at the last epoch fed to it."""
        self._pick = pick

    def add(
        self, epoch: int, holds: np.ndarray, values: np.ndarray | None = None
    ) -> None:
        self.now = holds
        if not holds.any():
            return
        self.count += holds
        if values is not None:
            self.extreme = self._pick(self.extreme, np.where(holds, values, np.nan))
            self.last = np.where(holds, values, self.last)
        self.rows.append((epoch, holds.copy()))

    def flagged(self, needed: int) -> np.ndarray:
        return self.count >= needed

    def epochs(self, flagged: np.ndarray) -> tuple[int, ...]:
        """The epochs where any `flagged` column held."""
        return tuple(epoch for epoch, holds in self.rows if (holds & flagged).any())


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
        axis: What a row's ``epoch`` counts: ``"epoch"`` (the training loss
            comes with it) or ``"step"`` (optimizer steps, GradWatch's
            ``every_n_steps``; the loss is the held-out one). For the
            messages.
    """

    def __init__(
        self,
        paths: Sequence[str],
        kernels: np.ndarray | None = None,
        layers: Sequence[str] = (),
        activations: dict[str, str] | None = None,
        thresholds: Thresholds | None = None,
        axis: str = "epoch",
    ) -> None:
        self.th = Thresholds() if thresholds is None else thresholds
        self.unit = axis
        self.loss_name = "held-out loss" if axis == "step" else "training loss"
        self.paths = list(paths)
        self.layers = list(layers)
        if kernels is None:
            kernels = np.array([_is_kernel(p) for p in self.paths], dtype=bool)
        self.kernels = np.flatnonzero(np.asarray(kernels, dtype=bool))
        k, n = len(self.paths), self.kernels.size
        owner = [_owner(self.paths[c], self.layers) for c in self.kernels]
        self.owner = np.array([-1 if o is None else o for o in owner], np.int64)
        # Layers compared by backward signal: those owning a kernel (not
        # normalization layers, whose signal follows the scale they remove).
        self.signal = np.array(
            [i for i in range(len(self.layers)) if i in set(owner)], dtype=np.int64
        )
        self.layer_kernels = {
            i: [int(c) for c, o in zip(self.kernels, owner, strict=True) if o == i]
            for i in range(len(self.layers))
        }
        activations = activations or {}
        self.activation = [
            activations.get(self.layers[o], "") if o is not None else "" for o in owner
        ]
        self.saturating = np.array([a in SATURATING for a in self.activation], bool)
        self.fed = 0  # epochs fed to the rules other than non_finite
        self.epochs: list[int] = []
        self.seen: set[tuple[str, tuple[str, ...]]] = set()
        # non_finite
        self.nonfinite = _Tally(k)
        self.weights_nonfinite = _Tally(k)
        self.loss_nonfinite: list[int] = []
        # vanishing, exploding: backward signal through depth and time
        self.signal_low = _Tally(len(self.layers), np.fmin)
        self.signal_high = _Tally(len(self.layers))
        self.time_low = _Tally(len(self.layers), np.fmin)
        self.time_high = _Tally(len(self.layers))
        # ...or, without it, the gradient/weight ratio against the output layer
        self.ratio_low = _Tally(max(n - 1, 0), np.fmin)
        self.ratio_low_change = _Tally(max(n - 1, 0))
        self.ratio_high = _Tally(max(n - 1, 0))
        # exploding over time
        self.growth = _Tally(n)
        self.smallest = np.full(n, np.inf)
        self.best_loss = math.inf
        # dead units and saturation
        self.dead = _Tally(n)
        self.saturated = _Tally(n)
        self.collapsed: list[int] = []
        # stalled
        self.losses: deque[float] = deque(maxlen=self.th.stall_window + 1)
        self.loss_seen = False
        self.best_before = math.inf
        self.stall = _Tally(n)
        self.stall_measured = np.zeros(n, dtype=bool)
        self.defined = 0
        self.improvement = math.nan
        self.stall_now = np.zeros(n, dtype=bool)

    # --- feeding ---------------------------------------------------------

    def update(self, row: Row) -> list[Finding]:
        """Feeds one logged epoch; returns the findings new with it (by
        ``(kind, weights)``), built only when something is new."""
        self.feed(row)
        keys = self.keys()
        if keys <= self.seen:
            return []
        new = [f for f in self.findings() if f.key not in self.seen]
        self.seen |= keys
        return new

    def feed(self, row: Row) -> None:
        self.epochs.append(row.epoch)
        broken = self._feed_non_finite(row)
        self._feed_loss(row.loss)
        if not broken:
            # Past a NaN, the other statistics describe NaN weights (a fused
            # MatMul+BiasAdd+Relu maps NaN to 0: "dead" units), not a cause.
            self.fed += 1
            self._feed_signal(row)
            self._feed_ratio(row)
            self._feed_dead(row)
            self._feed_growth(row)
            self._feed_stall(row)
        self._remember(row)

    def _feed_non_finite(self, row: Row) -> bool:
        grads = np.nan_to_num(row.grad_nonfinite, nan=0.0)
        self.nonfinite.add(row.epoch, grads > 0, grads)
        broken = bool((grads > 0).any())
        if row.weight_nonfinite is not None:
            count = np.nan_to_num(row.weight_nonfinite, nan=0.0)
            self.weights_nonfinite.add(row.epoch, count > 0, count)
            broken |= bool((count > 0).any())
        if row.loss_logged and not math.isfinite(row.loss):
            self.loss_nonfinite.append(row.epoch)
            broken = True
        return broken

    def _feed_loss(self, loss: float) -> None:
        window = self.th.stall_window
        self.losses.append(loss)  # the last window + 1 only
        self.loss_seen |= not math.isnan(loss)
        full = len(self.losses) > window
        if full and math.isfinite(self.losses[0]):
            self.best_before = min(self.best_before, self.losses[0])
        recent = [v for v in list(self.losses)[-window:] if math.isfinite(v)]
        self.improvement = math.nan
        if full and math.isfinite(self.best_before) and recent:
            best = self.best_before
            self.improvement = (best - min(recent)) / max(abs(best), 1e-12)

    def _feed_signal(self, row: Row) -> None:
        if self.layers and row.act_grad_norm is not None:
            low, high = _gains(row.act_grad_norm, self.signal)
            self.signal_low.add(row.epoch, low < self.th.signal_vanishing, low)
            self.signal_high.add(row.epoch, high > self.th.signal_exploding, high)
        if self.layers and row.time_grad_ratio is not None:
            ratio = row.time_grad_ratio
            self.time_low.add(row.epoch, ratio < self.th.time_vanishing, ratio)
            self.time_high.add(row.epoch, ratio > self.th.time_exploding, ratio)

    def _feed_ratio(self, row: Row) -> None:
        relative = _relative_to_output(row.grad_to_weight[self.kernels])
        if relative is None:
            return
        alive = row.grad_to_weight[self.kernels[:-1]] > 0
        low = alive & (relative < self.th.vanishing_ratio)
        if self.layers and row.act_grad_norm is not None:
            # Small weight gradients are vanishing only where the backward
            # signal does not grow toward the input: a net whose activations
            # grow forward as fast as its signal grows backward has uniform
            # weight ratios that would read as vanishing.
            low &= ~self._signal_grows(row.act_grad_norm)
        self.ratio_low.add(row.epoch, low, relative)
        if row.weight_change is not None:
            change = row.weight_change[self.kernels[:-1]]
            self.ratio_low_change.add(row.epoch, low & np.isfinite(change), change)
        high = np.isfinite(relative) & (relative > self.th.exploding_ratio)
        self.ratio_high.add(row.epoch, high, relative)

    def _signal_grows(self, signal: np.ndarray) -> np.ndarray:
        """Per kernel but the last: whether its layer's backward signal is
        above the output layer's (False where either is unknown)."""
        owners = self.owner[:-1]
        last = self.signal[-1] if self.signal.size else -1
        if last < 0 or not (math.isfinite(signal[last]) and signal[last] > 0):
            return np.zeros(owners.size, dtype=bool)
        mine = np.where(owners >= 0, signal[np.maximum(owners, 0)], np.nan)
        with np.errstate(invalid="ignore"):
            return np.where(owners >= 0, mine > signal[last], False)

    def _feed_dead(self, row: Row) -> None:
        norm = row.grad_norm[self.kernels]
        logged = np.isfinite(norm)
        if (
            logged.any()
            and np.all(~logged | (norm == 0))
            and not self.saturating.all()  # then it is saturation
        ):
            self.collapsed.append(row.epoch)
        dead = row.grad_dead_units[self.kernels]
        holds = dead >= self.th.dead_fraction
        # Under a saturating activation, units with no gradient are saturated,
        # unless units before them are dead: then they get no input at all.
        dying = holds & ~self.saturating
        dead_before = np.cumsum(dying) - dying
        saturated = holds & self.saturating & ((norm > 0) | (dead_before == 0))
        self.dead.add(row.epoch, holds & ~saturated, dead)
        self.saturated.add(row.epoch, saturated, dead)

    def _feed_growth(self, row: Row) -> None:
        norm = row.grad_norm[self.kernels]
        with np.errstate(divide="ignore", invalid="ignore"):
            growth = norm / self.smallest
        holds = (
            np.isfinite(growth)
            & (growth >= self.th.exploding_growth)
            & (row.grad_to_weight[self.kernels] >= self.th.exploding_grad_to_weight)
        )
        if row.loss < self.best_loss:  # a new best: fitting, not exploding
            holds[:] = False
        self.growth.add(row.epoch, holds, growth)

    def _feed_stall(self, row: Row) -> None:
        defined = math.isfinite(self.improvement)
        self.defined += defined
        self.stall_now = np.zeros(self.kernels.size, dtype=bool)
        if not defined or self.improvement >= self.th.stall_frozen_loss:
            return
        change = row.grad_to_weight[self.kernels]
        measured = np.zeros(change.shape, dtype=bool)
        if row.weight_change is not None:
            measured = np.isfinite(row.weight_change[self.kernels])
            change = np.where(measured, row.weight_change[self.kernels], change)
        limit = np.where(measured, self.th.stall_update, self.th.stall_grad_to_weight)
        if self.improvement >= self.th.stall_loss:
            # A loss that still creeps down: stalled only if frozen.
            limit = np.full(limit.shape, self.th.stall_frozen)
        self.stall_now = change < limit
        self.stall.add(row.epoch, self.stall_now, change)
        self.stall_measured = np.where(self.stall_now, measured, self.stall_measured)

    def _remember(self, row: Row) -> None:
        """Running minima that the next epoch is compared with."""
        norm = row.grad_norm[self.kernels]
        positive = np.isfinite(norm) & (norm > 0)
        self.smallest = np.where(
            positive, np.minimum(self.smallest, norm), self.smallest
        )
        if math.isfinite(row.loss):
            self.best_loss = min(self.best_loss, row.loss)

    # --- verdicts --------------------------------------------------------

    def _needed(self, available: int | None = None) -> int:
        return max(
            1, min(self.th.min_epochs, self.fed if available is None else available)
        )

    def keys(self) -> set[tuple[str, tuple[str, ...]]]:
        return {f.key for f in self._plan()}

    def findings(self) -> list[Finding]:
        """Every finding so far, in `KINDS` order."""
        return [plan.build() for plan in self._plan()]

    def _plan(self) -> list[_Plan]:
        """What would be reported, with its key, before building messages."""
        plans = [
            *self._vanishing(),
            *self._exploding(),
            *self._non_finite(),
            *self._dead(),
        ]
        return plans or self._stalled()

    def _vanishing(self) -> list[_Plan]:
        plans = []
        dead = self._dead_layers_limit()
        if self.layers:
            flagged = self._lasting(self.signal_low)
            if dead >= 0:
                flagged[: dead + 1] = False  # a dead layer blocks the signal
            if flagged.any():
                plans.append(self._plan_signal("vanishing", flagged, self.signal_low))
        flagged = self._lasting(self.ratio_low)
        if dead >= 0:
            limit = dead if not self.layers else self._last_kernel_of(dead)
            flagged[: limit + 1] = False
        if flagged.any():
            plans.append(self._plan_ratio("vanishing", flagged, self.ratio_low))
        flagged = self._lasting(self.saturated)
        if flagged.any():
            plans.append(self._plan_saturated(flagged))
        flagged = self._lasting(self.time_low)
        if flagged.any():
            plans.append(self._plan_time("vanishing", flagged, self.time_low))
        return [_joined(plans)] if plans else []

    def _lasting(self, tally: _Tally) -> np.ndarray:
        """Where a condition held persistently and still holds: one that
        training has left behind (BatchNorm rescuing a deep sigmoid net
        after a few epochs) is history, not a verdict."""
        return tally.flagged(self._needed()) & tally.now

    def _exploding(self) -> list[_Plan]:
        plans = []
        if self.layers:
            flagged = self.signal_high.flagged(self._needed())
            if flagged.any():
                plans.append(self._plan_signal("exploding", flagged, self.signal_high))
        else:
            flagged = self.ratio_high.flagged(self._needed())
            # Dead units in front of the output layer shrink its ratio, the
            # reference: every other kernel would look large next to it.
            if self.dead.flagged(self._needed())[-2:].any():
                flagged[:] = False
            if flagged.any():
                plans.append(self._plan_ratio("exploding", flagged, self.ratio_high))
        flagged = self.time_high.flagged(self._needed())
        if flagged.any():
            plans.append(self._plan_time("exploding", flagged, self.time_high))
        flagged = self.growth.flagged(self._needed())
        if flagged.any():
            plans.append(self._plan_growth(flagged))
        return plans

    def _last_kernel_of(self, layer: int) -> int:
        """Index (among kernels) of the last kernel at or before `layer`."""
        at_or_before = np.flatnonzero((self.owner >= 0) & (self.owner <= layer))
        return int(at_or_before.max()) if at_or_before.size else -1

    def _dead_layers_limit(self) -> int:
        """The output-most column (layer index with layers, kernel index
        without) at or before which dead units explain a missing signal."""
        dead = self._lasting(self.dead)
        collapsed = len(self.collapsed) >= self._needed()
        if not dead.any() and not collapsed:
            return -1
        columns = np.flatnonzero(dead) if dead.any() else np.arange(self.kernels.size)
        if not self.layers:
            return int(columns.max())
        owners = self.owner[columns]
        return int(owners.max()) if (owners >= 0).any() else len(self.layers) - 1

    # --- the plans: key now, message on demand ---------------------------

    def _evidence(
        self, name: str, flagged: np.ndarray, columns: np.ndarray, values: np.ndarray
    ) -> dict[str, float]:
        """``<name>/<weight path>``: per flagged kernel (at `columns`), its
        value (a tally's extreme: the one its message may cite)."""
        return {
            f"{name}/{self.paths[c]}": float(values[j])
            for j, c in zip(np.flatnonzero(flagged), columns, strict=True)
        }

    def _names(self, columns: np.ndarray) -> tuple[str, ...]:
        return tuple(self.paths[c] for c in columns)

    def _layer_weights(self, flagged: np.ndarray) -> tuple[str, ...]:
        names: list[str] = []
        for i in np.flatnonzero(flagged):
            kernels = self.layer_kernels[int(i)]
            names.extend([self.paths[c] for c in kernels] or [self.layers[i]])
        return tuple(names)

    def _plan_signal(self, kind: str, flagged: np.ndarray, tally: _Tally) -> _Plan:
        """Through depth: the gain of flagged layers' backward signal."""

        def describe(layers: str, worst: float) -> tuple[str, float, str]:
            if kind == "vanishing":
                return (
                    "The backward signal vanishes toward the input: the loss "
                    f"gradient at the output of {layers} is down to {worst:.1e} "
                    "of that of a layer after it.",
                    self.th.signal_vanishing,
                    REMEDIES[kind],
                )
            return (
                "The backward signal explodes toward the input: the loss "
                f"gradient at the output of {layers} is up to {worst:.1e} "
                "times that of a layer after it.",
                self.th.signal_exploding,
                REMEDIES[kind],
            )

        return self._plan_layers(kind, flagged, tally, "act_grad_gain", describe)

    def _plan_time(self, kind: str, flagged: np.ndarray, tally: _Tally) -> _Plan:
        """Through time: flagged recurrent layers' first/last step ratio."""

        def describe(layers: str, worst: float) -> tuple[str, float, str]:
            if kind == "vanishing":
                return (
                    f"Gradients vanish through time in {layers}: the first time "
                    f"step gets {worst:.1e} of the last's, so early inputs "
                    "cannot be learned from.",
                    self.th.time_vanishing,
                    REMEDIES["vanishing_time"],
                )
            return (
                f"Gradients explode through time in {layers}: the first time "
                f"step gets {worst:.1e} times the last's.",
                self.th.time_exploding,
                REMEDIES["exploding"],
            )

        return self._plan_layers(kind, flagged, tally, "time_grad_ratio", describe)

    def _plan_layers(
        self,
        kind: str,
        flagged: np.ndarray,
        tally: _Tally,
        name: str,
        describe: Callable[[str, float], tuple[str, float, str]],
    ) -> _Plan:
        """A finding over flagged layers; evidence ``<name>/<layer>``, the
        most extreme value per layer; `describe` gives the message (citing
        the worst), threshold and remedy."""
        weights = self._layer_weights(flagged)

        def build() -> Finding:
            indices = np.flatnonzero(flagged)
            evidence = {
                f"{name}/{self.layers[i]}": float(tally.extreme[i]) for i in indices
            }
            pick = min if kind == "vanishing" else max
            layers = _listed([self.layers[i] for i in indices])
            text, limit, remedy = describe(layers, pick(evidence.values()))
            return Finding(
                kind,
                weights,
                tally.epochs(flagged),
                {**evidence, "threshold": limit},
                text,
                remedy,
            )

        return _Plan((kind, weights), build)

    def _plan_ratio(self, kind: str, flagged: np.ndarray, tally: _Tally) -> _Plan:
        columns = self.kernels[:-1][flagged]
        weights = self._names(columns)

        def build() -> Finding:
            evidence = self._evidence(
                "relative_grad_to_weight", flagged, columns, tally.extreme
            )
            output = self.paths[self.kernels[-1]]
            listed = _listed(weights)
            if kind == "vanishing":
                worst = min(evidence.values())
                moved = {}
                for j, c in zip(np.flatnonzero(flagged), columns, strict=True):
                    change = self.ratio_low_change.last[j]
                    if math.isfinite(change):
                        moved[f"weight_change/{self.paths[c]}"] = float(change)
                still = (
                    f"; their weights change {min(moved.values()):.1e} per logged "
                    f"{self.unit}"
                    if moved
                    else ""
                )
                text = (
                    f"Gradients vanish toward the input: {listed} get down to "
                    f"{worst:.1e} of the gradient/weight ratio of {output}{still}."
                )
                evidence.update(moved)
                limit = self.th.vanishing_ratio
            else:
                worst = max(evidence.values())
                text = (
                    f"Gradients explode toward the input: {listed} reach "
                    f"{worst:.1e} times the gradient/weight ratio of {output}."
                )
                limit = self.th.exploding_ratio
            return Finding(
                kind,
                weights,
                tally.epochs(flagged),
                {**evidence, "threshold": limit},
                text,
                REMEDIES[kind],
            )

        return _Plan((kind, weights), build)

    def _plan_saturated(self, flagged: np.ndarray) -> _Plan:
        columns = self.kernels[flagged]
        weights = self._names(columns)

        def build() -> Finding:
            evidence = self._evidence(
                "grad_dead_units", flagged, columns, self.saturated.extreme
            )
            names = sorted({self.activation[j] for j in np.flatnonzero(flagged)})
            return Finding(
                "vanishing",
                weights,
                self.saturated.epochs(flagged),
                {**evidence, "threshold": self.th.dead_fraction},
                f"Up to {max(evidence.values()):.0%} of the units of "
                f"{_listed(weights)} pass no gradient: their {'/'.join(names)} "
                "is saturated (its derivative rounds to zero).",
                REMEDIES["saturated"],
            )

        return _Plan(("vanishing", weights), build)

    def _plan_growth(self, flagged: np.ndarray) -> _Plan:
        columns = self.kernels[flagged]
        weights = self._names(columns)

        def build() -> Finding:
            evidence = self._evidence(
                "grad_norm_growth", flagged, columns, self.growth.extreme
            )
            loss = " while the loss stopped improving" if self.loss_seen else ""
            return Finding(
                "exploding",
                weights,
                self.growth.epochs(flagged),
                {**evidence, "threshold": self.th.exploding_growth},
                f"Gradient norms of {_listed(weights)} grew "
                f"{max(evidence.values()):.1e}-fold over the {self.unit}s{loss}.",
                REMEDIES["exploding"],
            )

        return _Plan(("exploding", weights), build)

    def _non_finite(self) -> list[_Plan]:
        grads = self.nonfinite.count > 0
        weights_bad = self.weights_nonfinite.count > 0
        columns = np.flatnonzero(grads | weights_bad)
        if not columns.size and not self.loss_nonfinite:
            return []
        weights = self._names(columns)

        def build() -> Finding:
            epochs = sorted(
                {e for e, _ in self.nonfinite.rows}
                | {e for e, _ in self.weights_nonfinite.rows}
                | set(self.loss_nonfinite)
            )
            first = epochs[0]
            evidence: dict[str, float] = {}
            for c in np.flatnonzero(grads):
                evidence[f"grad_nonfinite/{self.paths[c]}"] = float(
                    self.nonfinite.extreme[c]
                )
            for c in np.flatnonzero(weights_bad):
                evidence[f"weight_nonfinite/{self.paths[c]}"] = float(
                    self.weights_nonfinite.extreme[c]
                )
            where = []
            if grads.any():
                where.append(
                    f"gradients of {_listed(self._names(np.flatnonzero(grads)))}"
                )
            if weights_bad.any():
                listed = _listed(self._names(np.flatnonzero(weights_bad)))
                where.append(f"the weights {listed}")
            if self.loss_nonfinite:
                where.append(f"the {self.loss_name}")
                evidence["loss_nonfinite_epochs"] = float(len(self.loss_nonfinite))
            return Finding(
                "non_finite",
                weights,
                tuple(epochs),
                {**evidence, "first_epoch": float(first)},
                f"NaN/Inf from {self.unit} {first} on, in {' and '.join(where)}.",
                REMEDIES["non_finite"],
            )

        return [_Plan(("non_finite", weights), build)]

    def _dead(self) -> list[_Plan]:
        if self.kernels.size and len(self.collapsed) >= self._needed():
            weights = self._names(self.kernels)
            collapsed = tuple(self.collapsed)

            def build_collapsed() -> Finding:
                return Finding(
                    "dead_units",
                    weights,
                    collapsed,
                    {"collapsed_epochs": float(len(collapsed))},
                    "Every kernel's gradient is zero: the network has collapsed "
                    f"({self._cause(np.ones(self.kernels.size, bool))}, or a "
                    "constant output).",
                    REMEDIES["dead_units"],
                )

            return [_Plan(("dead_units", weights), build_collapsed)]
        flagged = self._lasting(self.dead)
        if not flagged.any():
            return []
        columns = self.kernels[flagged]
        weights = self._names(columns)

        def build() -> Finding:
            evidence = self._evidence(
                "grad_dead_units", flagged, columns, self.dead.extreme
            )
            return Finding(
                "dead_units",
                weights,
                self.dead.epochs(flagged),
                {**evidence, "threshold": self.th.dead_fraction},
                f"Up to {max(evidence.values()):.0%} of the units of "
                f"{_listed(weights)} get no gradient at all "
                f"({self._cause(flagged)}).",
                REMEDIES["dead_units"],
            )

        return [_Plan(("dead_units", weights), build)]

    def _cause(self, flagged: np.ndarray) -> str:
        names = {self.activation[j] for j in np.flatnonzero(flagged)}
        if names & RELU_LIKE:
            return "dying ReLU"
        if names and names <= SATURATING:
            return "saturated units, or dead units before them"
        return "dead ReLUs, or saturated units after this layer"

    def _stalled(self) -> list[_Plan]:
        if not self.loss_seen:
            return []
        flagged = self.stall.flagged(self._needed(self.defined)) & self.stall_now
        if not flagged.any():
            return []
        columns = self.kernels[flagged]
        weights = self._names(columns)
        improvement = self.improvement

        def build() -> Finding:
            evidence = {}
            for j, c in zip(np.flatnonzero(flagged), columns, strict=True):
                name = "weight_change" if self.stall_measured[j] else "grad_to_weight"
                evidence[f"{name}/{self.paths[c]}"] = float(self.stall.last[j])
            return Finding(
                "stalled",
                weights,
                self.stall.epochs(flagged),
                {**evidence, "loss_improvement": float(improvement)},
                f"The loss improved by {max(improvement, 0.0):.2%} over the last "
                f"{self.th.stall_window} logged {self.unit}s while {_listed(weights)} "
                "barely change: training has stalled (or converged).",
                REMEDIES["stalled"],
            )

        return [_Plan(("stalled", weights), build)]


@dataclass(frozen=True)
class _Plan:
    key: tuple[str, tuple[str, ...]]
    build: Callable[[], Finding]


def _joined(plans: list[_Plan]) -> _Plan:
    """One finding from several of a kind (the backward signal, the weight
    gradients, saturation, through time): the weights, evidence, epochs and
    sentences of all; the first one's remedy and threshold."""
    if len(plans) == 1:
        return plans[0]
    weights = tuple(dict.fromkeys(w for plan in plans for w in plan.key[1]))

    def build() -> Finding:
        parts = [plan.build() for plan in plans]
        evidence: dict[str, float] = {}
        for part in reversed(parts):
            evidence.update(part.evidence)
        return Finding(
            parts[0].kind,
            weights,
            tuple(sorted({e for part in parts for e in part.epochs})),
            evidence,
            " ".join(part.message for part in parts),
            parts[0].remedy,
        )

    return _Plan((plans[0].key[0], weights), build)


def _gains(norms: np.ndarray, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per layer, its backward signal over the largest and over the smallest
    of the layers after it (among `columns`); NaN elsewhere.

    Zero and non-finite norms take no part: an all-zero signal is dead, not
    vanishing, and NaN is its own finding.
    """
    low = np.full(norms.shape, np.nan)
    high = np.full(norms.shape, np.nan)
    values = norms[columns]
    usable = np.isfinite(values) & (values > 0)
    # Over the layers after each: the largest and smallest usable signal.
    later_max = np.maximum.accumulate(np.where(usable, values, -np.inf)[::-1])[::-1]
    later_min = np.minimum.accumulate(np.where(usable, values, np.inf)[::-1])[::-1]
    later_max = np.append(later_max[1:], -np.inf)
    later_min = np.append(later_min[1:], np.inf)
    judged = usable & np.isfinite(later_min)
    with np.errstate(divide="ignore", invalid="ignore"):
        low[columns] = np.where(judged, values / later_max, np.nan)
        high[columns] = np.where(judged, values / later_min, np.nan)
    return low, high


def _relative_to_output(ratio: np.ndarray) -> np.ndarray | None:
    """Kernels but the last: their gradient/weight ratio over the last's."""
    if ratio.size < 2:
        return None
    reference = ratio[-1]
    if not (math.isfinite(reference) and reference > 0):
        return np.full(ratio.size - 1, np.nan)
    return ratio[:-1] / reference


def _owner(path: str, layers: Sequence[str]) -> int | None:
    """Index of the layer a weight belongs to: the longest layer path that
    is a prefix of the weight's."""
    best, length = None, -1
    for i, layer in enumerate(layers):
        if path.startswith(layer + "/") and len(layer) > length:
            best, length = i, len(layer)
    return best


def _listed(names: Sequence[str], shown: int = 3) -> str:
    names = list(names)
    if len(names) <= shown + 1:
        return ", ".join(names)
    return f"{', '.join(names[:shown])} and {len(names) - shown} more"
