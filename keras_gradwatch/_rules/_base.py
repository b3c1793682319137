"""What every rule shares: the logged row, the run's facts, tallies, plans."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import numpy as np

from keras_gradwatch import _chance
from keras_gradwatch._findings import REMEDIES, Finding, Thresholds, is_kernel

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


@dataclass(frozen=True)
class RuleDoc:
    """A rule's documentation, as ``gradwatch report --explain`` prints it.

    Attributes:
        summary: When the finding is reported, in one or two sentences.
        thresholds: The `Thresholds` fields the rule reads.
        mechanism: Why those thresholds: the bound, paper or tool they follow.
        example: A run it fires on, and what it says there.
        healthy: A run that looks close but where it stays silent.
    """

    summary: str
    thresholds: tuple[str, ...]
    mechanism: str
    example: str
    healthy: str

    def text(self, kind: str, thresholds: Thresholds | None = None) -> str:
        th = Thresholds() if thresholds is None else thresholds
        limits = "\n".join(
            f"  {name} = {getattr(th, name)!r}" for name in self.thresholds
        )
        return (
            f"{kind}\n\n{_wrap(self.summary)}\n\nThresholds:\n{limits}\n\n"
            f"Why:\n{_wrap(self.mechanism)}\n\nFires on:\n{_wrap(self.example)}\n\n"
            f"Silent on:\n{_wrap(self.healthy)}\n"
        )

    def complete(self) -> list[str]:
        """What is missing: empty texts or thresholds that do not exist."""
        known = {f.name for f in fields(Thresholds)}
        missing = [name for name in ("summary", "mechanism", "example", "healthy")
                   if not getattr(self, name).strip()]  # fmt: skip
        missing += [f"threshold {n}" for n in self.thresholds if n not in known]
        return missing + ([] if self.thresholds else ["thresholds"])


def _wrap(text: str, width: int = 76) -> str:
    import textwrap

    return "\n".join(
        textwrap.fill(" ".join(p.split()), width, initial_indent="  ",
                      subsequent_indent="  ")
        for p in text.strip().split("\n\n")
    )  # fmt: skip


class Clock:
    """Counts the logged epochs fed to the rules."""

    def __init__(self) -> None:
        self.tick = 0


class Tally:
    """Where one condition held, per column, over the epochs fed to it."""

    def __init__(
        self, size: int, clock: Clock, pick: Callable[..., np.ndarray] = np.fmax
    ) -> None:
        self.count = np.zeros(size, dtype=np.int64)
        self.extreme = np.full(size, np.nan)
        self.last = np.full(size, np.nan)
        self.rows: list[tuple[int, np.ndarray]] = []
        self.last_held = np.full(size, -1, dtype=np.int64)
        """The clock's tick at the last epoch where it held (-1: never)."""
        self._clock = clock
        self._pick = pick

    def add(
        self, epoch: int, holds: np.ndarray, values: np.ndarray | None = None
    ) -> None:
        if not holds.any():
            return
        self.count += holds
        self.last_held = np.where(holds, self._clock.tick, self.last_held)
        if values is not None:
            self.extreme = self._pick(self.extreme, np.where(holds, values, np.nan))
            self.last = np.where(holds, values, self.last)
        self.rows.append((epoch, holds.copy()))

    def flagged(self, needed: int) -> np.ndarray:
        return self.count >= needed

    def recent(self, window: int) -> np.ndarray:
        """Where it held in one of the last `window` logged epochs."""
        return self.last_held > self._clock.tick - window

    def epochs(self, flagged: np.ndarray) -> tuple[int, ...]:
        """The epochs where any `flagged` column held."""
        return tuple(epoch for epoch, holds in self.rows if (holds & flagged).any())


@dataclass(frozen=True)
class Plan:
    """A finding before its message is built: its key and whether it holds
    now are cheap; `build` is called only to report it."""

    key: tuple[str, tuple[str, ...]]
    current: bool
    build: Callable[[], Finding]


class Run:
    """The facts of one run every rule reads: its weights and layers, the
    thresholds, the clock, and the loss seen so far."""

    def __init__(
        self,
        paths: Sequence[str],
        kernels: np.ndarray | None,
        layers: Sequence[str],
        activations: dict[str, str],
        thresholds: Thresholds,
        axis: str,
        loss_source: str,
        target_outside: dict[str, float] | None = None,
    ) -> None:
        self.th = thresholds
        self.unit = axis
        self.loss_name = f"{loss_source} loss"
        self.paths = list(paths)
        self.layers = list(layers)
        if kernels is None:
            kernels = np.array([is_kernel(p) for p in self.paths], dtype=bool)
        self.kernels = np.flatnonzero(np.asarray(kernels, dtype=bool))
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
        self.activation = [
            activations.get(self.layers[o], "") if o is not None else "" for o in owner
        ]
        self.saturating = np.array([a in SATURATING for a in self.activation], bool)
        outside = target_outside or {}
        self.layer_activation = dict(activations)
        self.outside_layers = {
            i: outside[layer] for i, layer in enumerate(self.layers) if layer in outside
        }
        """Layer index -> the share of labels its activation cannot produce."""
        self.clock = Clock()
        self.fed = 0
        """Epochs the rules but non_finite judged (those with finite values)."""
        self.loss_seen = False
        self.best_loss = math.inf
        """The best loss before the epoch being fed."""

    def tally(self, size: int, pick: Callable[..., np.ndarray] = np.fmax) -> Tally:
        return Tally(size, self.clock, pick)

    def needed(self, available: int | None = None) -> int:
        """Logged epochs a condition must hold in: `min_epochs`, or all."""
        return max(
            1, min(self.th.min_epochs, self.fed if available is None else available)
        )

    def current(self, tally: Tally, flagged: np.ndarray) -> bool:
        """Whether any flagged column held in the last `needed` epochs: a
        finding starts after `min_epochs` epochs and ends after as many."""
        return bool((tally.recent(self.needed()) & flagged).any())

    def own_signal(self, signal: np.ndarray | None) -> np.ndarray:
        """Per kernel, the backward signal at its layer's output (NaN where
        unknown)."""
        if signal is None:
            return np.full(self.kernels.size, np.nan)
        return np.where(self.owner >= 0, signal[np.maximum(self.owner, 0)], np.nan)

    def names(self, columns: np.ndarray) -> tuple[str, ...]:
        return tuple(self.paths[c] for c in columns)

    def layer_weights(self, flagged: np.ndarray) -> tuple[str, ...]:
        names: list[str] = []
        for i in np.flatnonzero(flagged):
            kernels = self.layer_kernels[int(i)]
            names.extend([self.paths[c] for c in kernels] or [self.layers[i]])
        return tuple(names)

    def evidence(
        self, name: str, flagged: np.ndarray, columns: np.ndarray, values: np.ndarray
    ) -> dict[str, float]:
        """``<name>/<weight path>``: per flagged kernel (at `columns`), its
        value (a tally's extreme: the one its message may cite)."""
        return {
            f"{name}/{self.paths[c]}": float(values[j])
            for j, c in zip(np.flatnonzero(flagged), columns, strict=True)
        }

    def last_kernel_of(self, layer: int) -> int:
        """Index (among kernels) of the last kernel at or before `layer`."""
        at_or_before = np.flatnonzero((self.owner >= 0) & (self.owner <= layer))
        return int(at_or_before.max()) if at_or_before.size else -1


Describe = Callable[
    [tuple[str, ...], dict[str, float]], tuple[str, dict[str, float], str]
]
"""``(weights, evidence) -> (message, more evidence, remedy)``; the more
evidence holds the ``threshold``."""


def kernel_plan(
    run: Run,
    kind: str,
    flagged: np.ndarray,
    columns: np.ndarray,
    tally: Tally,
    name: str,
    describe: Describe,
) -> Plan:
    """A finding over the flagged kernels (at `columns` of the weights);
    evidence ``<name>/<weight path>``, each kernel's extreme in `tally`."""
    weights = run.names(columns)
    current = run.current(tally, flagged)

    def build() -> Finding:
        evidence = run.evidence(name, flagged, columns, tally.extreme)
        text, more, remedy = describe(weights, evidence)
        return Finding(
            kind,
            weights,
            tally.epochs(flagged),
            {**evidence, **more},
            text,
            remedy,
            current,
        )

    return Plan((kind, weights), current, build)


def joined(plans: list[Plan]) -> Plan:
    """One finding from several of a kind (the backward signal, the weight
    gradients, saturation, through time): the weights, evidence, epochs and
    sentences of all; the first one's remedy; current if any is."""
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
            any(part.current for part in parts),
        )

    return Plan((plans[0].key[0], weights), any(p.current for p in plans), build)


def gains(norms: np.ndarray, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def _owner(path: str, layers: Sequence[str]) -> int | None:
    """Index of the layer a weight belongs to: the longest layer path that
    is a prefix of the weight's."""
    best, length = None, -1
    for i, layer in enumerate(layers):
        if path.startswith(layer + "/") and len(layer) > length:
            best, length = i, len(layer)
    return best


def listed(names: Sequence[str], shown: int = 3) -> str:
    names = list(names)
    if len(names) <= shown + 1:
        return ", ".join(names)
    return f"{', '.join(names[:shown])} and {len(names) - shown} more"


def outside_labels(
    run: Run, among: np.ndarray | None = None
) -> tuple[str, float] | None:
    """A sentence on the label values an output layer's activation cannot
    produce and their share, for the layer of one of the kernels `among`
    (bools, ``[kernels]``; all by default); None where no share above 0 is
    known for them."""
    kernels = np.ones(run.kernels.size, bool) if among is None else among
    owners = {int(o) for o in run.owner[np.asarray(kernels, bool)] if o >= 0}
    best = max(owners, key=lambda o: run.outside_layers.get(o, 0.0), default=None)
    return None if best is None else outside_layer_labels(run, best)


def outside_layer_labels(run: Run, layer: int) -> tuple[str, float] | None:
    """The same for one layer (by index); None where not known or 0."""
    share = run.outside_layers.get(layer, 0.0)
    activation = run.layer_activation.get(run.layers[layer], "")
    if not share > 0 or activation not in _chance.RANGES:
        return None
    return _chance.outside_text(share, activation, run.layers[layer]), share


def labels_first(
    labels: tuple[str, float] | None,
    message: str,
    remedy: str,
    evidence: dict[str, float],
) -> tuple[str, str]:
    """`message` and `remedy`, with `labels` (from `outside_labels`) said
    after the one and their fix put before the other: labels an output
    cannot produce are wrong whatever else is, and the rest may follow
    from them. Records their share in `evidence`."""
    if labels is None:
        return message, remedy
    evidence["target_outside"] = labels[1]
    then = remedy[:1].lower() + remedy[1:]
    return (
        f"{message} {labels[0]}",
        f"{REMEDIES['target_outside']} Then, if it persists: {then}",
    )
