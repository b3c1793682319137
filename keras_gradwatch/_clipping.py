"""Clipping as pure TF ops: the global norm, the scaling, and the policies.

`global_norm`, `scale` and `dense` act on a list of gradients (None for a
weight without one). A policy is called once per training step, inside the
compiled train function, with what it remembers (`Memory`), the step's
global gradient norm (float64; 0 when `finite` is False) and how many finite
norms came before. It returns the bound for this step, the norm a step
above it is scaled to, the threshold in force after the step, and its new
memory, unchanged on a non-finite step. The callback keeps the memory in
variables.

References:
    Kumar, Owen, Chowdhury and Güra, "ZClip: Adaptive Spike Mitigation for
    LLM Pre-Training", 2025 (`ZScore`).
    Seetharaman, Wichern, Pardo and Le Roux, "AutoClip: Adaptive Gradient
    Clipping for Source Separation Networks", MLSP 2020 (`Percentile`).
    Hampel, "The influence curve and its role in robust estimation", JASA
    1974; Leys, Ley, Klein, Bernard and Licata, "Detecting outliers: Do not
    use standard deviation around the mean, use absolute deviation around
    the median", J. Exp. Soc. Psychol. 2013 (the median and MAD of
    `ZScore`; the early bound). Hampel's redescending influence (ibid.;
    Andrews, Bickel, Hampel, Huber, Rogers and Tukey, "Robust Estimates of
    Location", Princeton University Press 1972) for `redescend`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import tensorflow as tf


class Memory(NamedTuple):
    """What a policy carries from step to step."""

    history: tf.Tensor  # [history_size] float64 norms; unfilled slots hold +inf


Step = tuple[tf.Tensor, tf.Tensor, tf.Tensor, Memory]
"""(bound for this step, the norm a step above it is scaled to, threshold
after the step, new memory)."""


class Policy(Protocol):
    @property
    def mode(self) -> str: ...

    @property
    def history_size(self) -> int:
        """Length of `Memory.history` the policy needs."""

    @property
    def holds_first(self) -> bool:
        """Whether the first finite step is measured but not applied (and,
        until a step is applied, a step above the early bound)."""

    @property
    def early(self) -> float:
        """Factor of the early bound (`early_bound`) on the low median of
        the norms in `Memory.history`."""

    @property
    def config(self) -> tuple[float, ...]:
        """The mode and its parameters, stored with the state to tell whose
        memory a checkpoint holds."""

    def __call__(
        self, memory: Memory, norm: tf.Tensor, finite: tf.Tensor, seen: tf.Tensor
    ) -> Step: ...


@dataclass(frozen=True)
class Fixed:
    """Clip at a given threshold."""

    threshold: float
    mode = "fixed"
    history_size = 1
    holds_first = False
    early = math.inf  # no early bound

    @property
    def config(self) -> tuple[float, ...]:
        return (0.0, self.threshold, 0.0, 0.0)

    def __call__(
        self, memory: Memory, norm: tf.Tensor, finite: tf.Tensor, seen: tf.Tensor
    ) -> Step:
        bound = tf.constant(self.threshold, tf.float64)
        return bound, bound, bound, memory


MAD_TO_STD = 1.4826
"""The median absolute deviation times this estimates a normal's standard
deviation."""
EARLY_FACTOR = 3.0
"""Early bound: a norm above this many times the (low) median of the earlier
norms trips (zscore's warm-up, and its floor after; percentile's cap). 3
kept the spikes of the corrupted-labels run out where 5 and 10 did not, and
clipped 0-1 of the first 25 steps of healthy runs
(`benchmarks/autoclip_early.py`); as zscore's floor, 2.5 failed seed 10 of
that run (mse 0.35) where 3 passed, and 10 failed 22 of its 36 seeds (the
healthy SGD CNN of `autoclip_eval.py` clips 4-7% of its steps with 3, 0-1%
with 10: spikes of hard examples and of corrupted labels overlap)."""
RELATIVE_STEP = 0.016
"""zscore's step bound with SGD: the largest ``learning_rate * ||g||`` a
kernel's gradient may carry, relative to the kernel's norm. Adaptive
gradient clipping (Brock et al. 2021) bounds ``||g|| / ||w||`` per unit by
0.01 at the peak learning rate it was tuned with, 0.1 x 4096 / 256 = 1.6
(SGD, Nesterov momentum 0.9; the NFNet training configuration): a step of
at most 1.6% of the weights. Healthy SGD runs step ~0.1% (the SGD CNN of
`benchmarks/autoclip_eval.py`'s design half: median 0.15%, largest 1.5%,
over all its kernels together), while a learning rate too high takes steps
of up to 54% from the first steps (the design half's recurrent net; 14%
for its fine-tuning run). Set from AGC's figures before the design half was run
with it."""
WEIGHT_FLOOR = 1e-3
"""A kernel's norm is taken as at least this in the step bound (AGC's
`eps`), so that a kernel initialised at zero can move."""
FAR_FACTOR = 3.0
"""zscore: a norm more than this many times its bound is a gross spike, and
what it is scaled to falls in proportion to it (`redescend`). With 3, all 36
seeds (0-35) of the corrupted-labels run trained in both oneDNN settings
(without: 34) and the healthy sentiment run clipped 15.6% of its steps
(without: 14.6%); 10 lost seed 10 with oneDNN off
(`benchmarks/autoclip_early.py`)."""


@dataclass(frozen=True)
class ZScore:
    """Clip spikes more than `z` robust standard deviations above the median
    of the last `warmup` norms.

    - The first finite step is measured, not applied (`holds_first`).
    - Warm-up (the first `warmup` finite norms): a norm above `early` times
      the low median of the earlier norms trips.
    - Then a norm above both ``median + z * 1.4826 * MAD`` (Hampel's
      identifier: the MAD times 1.4826 estimates a standard deviation, as
      ZClip's z-score uses one) and `early` times the median, over the last
      `warmup` norms, trips. The floor spares a healthy run's norm at twice
      the median after a calm stretch (small MAD).
    - A tripping norm is scaled to ZClip's reciprocal value (`reciprocal`)
      about the median: the bound for a norm at the bound, close to the
      median for a large spike; beyond `far` times the bound, to that
      value times ``far * bound / norm`` (`redescend`), towards 0.

    The window holds raw norms, clipped or not: a spike moves neither its
    median nor its MAD much, even one in four steps, while norms that grow
    or fall for good carry both with them within `warmup` steps. (Moving
    averages cannot do both: fed the clipped norm, frequent spikes inflate
    the variance without limit; fed ZClip's reciprocal value, they lag
    norms that grow and clip healthy runs. See `benchmarks/README.md`.)
    """

    z: float
    warmup: int
    early: float = EARLY_FACTOR
    far: float = FAR_FACTOR
    holds_first: bool = True
    mode = "zscore"

    @property
    def history_size(self) -> int:
        return self.warmup

    @property
    def config(self) -> tuple[float, ...]:
        return (1.0, self.z, float(self.warmup), 0.0)

    def __call__(
        self, memory: Memory, norm: tf.Tensor, finite: tf.Tensor, seen: tf.Tensor
    ) -> Step:
        bound, to = self._bound(memory.history, seen, norm)
        slot = tf.math.floormod(seen, self.warmup)
        history = tf.tensor_scatter_nd_update(memory.history, [[slot]], [norm])
        history = tf.where(finite, history, memory.history)
        after, _ = self._bound(history, seen + tf.cast(finite, tf.int64), norm)
        return bound, to, after, Memory(history)

    def _bound(
        self, history: tf.Tensor, seen: tf.Tensor, norm: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """(the bound after `seen` finite norms, what `norm` above it is
        scaled to)."""
        count = tf.minimum(seen, self.warmup)
        middle = low_median(history, count)
        spread = low_median(tf.abs(history - middle), count)
        early = early_bound(self.early, middle)
        # Never below the early bound: a healthy norm at twice the median is
        # no spike, however small the MAD of a calm stretch.
        robust = tf.maximum(middle + self.z * MAD_TO_STD * spread, early)
        bound = tf.where(seen < self.warmup, early, robust)
        return bound, redescend(self.far, bound, norm, reciprocal(middle, bound, norm))


@dataclass(frozen=True)
class Percentile:
    """Clip at a percentile of the last `window` finite norms, this one included.

    The paper keeps the whole history; a window bounds the memory and follows
    the norms as training changes them. Percentiles use NumPy's linear rule.
    The bound is never above `early` times the median of the earlier norms
    in the window: with few norms, the linear rule puts the percentile of
    two norms a tenth of the way to the second, a spike. (Later, a low
    percentile is far below that cap.)
    """

    percentile: float
    window: int
    early: float = EARLY_FACTOR
    holds_first: bool = True
    mode = "percentile"

    @property
    def history_size(self) -> int:
        return self.window

    @property
    def config(self) -> tuple[float, ...]:
        return (2.0, self.percentile, float(self.window), 0.0)

    def __call__(
        self, memory: Memory, norm: tf.Tensor, finite: tf.Tensor, seen: tf.Tensor
    ) -> Step:
        earlier = tf.minimum(seen, self.window)
        cap = early_bound(self.early, low_median(memory.history, earlier))
        slot = tf.math.floormod(seen, self.window)
        history = tf.tensor_scatter_nd_update(memory.history, [[slot]], [norm])
        history = tf.where(finite, history, memory.history)
        count = tf.minimum(seen + tf.cast(finite, tf.int64), self.window)
        ordered = tf.sort(history)  # unfilled slots hold +inf, at the end
        last = tf.maximum(count - 1, 0)
        position = self.percentile / 100.0 * tf.cast(last, tf.float64)
        low = tf.cast(tf.floor(position), tf.int64)
        high = tf.minimum(low + 1, last)
        below, above = tf.gather(ordered, low), tf.gather(ordered, high)
        fraction = position - tf.cast(low, tf.float64)
        bound = tf.where(high > low, below + fraction * (above - below), below)
        bound = tf.minimum(bound, cap)
        return bound, bound, bound, memory._replace(history=history)


def low_median(history: tf.Tensor, count: tf.Tensor) -> tf.Tensor:
    """The low median (the lower middle value for an even `count`) of the
    `count` finite entries of `history`, whose other slots hold +inf; 0 when
    `count` is 0.

    The low median of two norms is the smaller one: the mean of a norm and a
    spike would be half the spike.
    """
    ordered = tf.sort(history)
    middle = tf.gather(ordered, tf.maximum(count - 1, 0) // 2)
    return tf.where(count > 0, middle, tf.constant(0.0, tf.float64))


def early_bound(factor: float, middle: tf.Tensor) -> tf.Tensor:
    """`factor` times the median of the earlier norms, `middle`.

    +inf, so that nothing is clipped, when that median is 0 (no earlier norm,
    or zero gradients): a bound of 0 would zero every later gradient, and
    with the clipped norms kept it would never rise again.
    """
    inf = tf.constant(math.inf, tf.float64)
    return tf.where(middle > 0.0, factor * middle, inf)


def reciprocal(center: tf.Tensor, bound: tf.Tensor, norm: tf.Tensor) -> tf.Tensor:
    """ZClip's reciprocal clipping: what a norm above `bound` is scaled to.

    ``center + (bound - center)**2 / (norm - center)``: the bound itself for
    a norm at the bound, and closer to `center` the larger the spike, so
    that a spike moves the weights no further than a typical step. With
    ``center = mean`` and ``bound = mean + z * std`` this is ZClip's
    ``mean + z**2 * std / z_score``. Equal to `bound` when that is +inf.
    """
    excess = tf.maximum(norm - center, tf.constant(1e-300, tf.float64))
    to = center + tf.square(bound - center) / excess
    return tf.where(tf.math.is_inf(bound), bound, tf.minimum(to, bound))


def redescend(
    far: float, bound: tf.Tensor, norm: tf.Tensor, to: tf.Tensor
) -> tf.Tensor:
    """`to`, what a norm above `bound` is scaled to, times ``far * bound /
    norm`` when the norm is more than `far` times the bound.

    A gross spike is often one example's gradient (a corrupted label), not
    the batch's: scaled to ZClip's value, about the median, it still moves
    the weights a typical step towards that example, every time the example
    comes round. Hampel's redescending influence: beyond a cut-off, the
    further out an observation, the less it counts. Continuous at the
    cut-off; unchanged when the bound is +inf.
    """
    cutoff = far * bound
    return tf.where(norm > cutoff, to * (cutoff / norm), to)


def step_limits(
    grads: list[Any], variables: list[Any], relative: float, rate: tf.Tensor
) -> list[tf.Tensor | None]:
    """Per gradient, the largest factor it may be scaled by so that an SGD
    step, ``rate * factor * ||g||``, stays within `relative` times its
    kernel's norm (at least `WEIGHT_FLOOR`), as float64: +inf when it
    already does; None for a missing gradient or a weight of fewer than 2
    dimensions (biases and scales: their norm starts at 0 or 1 and says
    nothing of the step they can take, and LARS leaves them out too).

    References:
        Brock, De, Smith and Simonyan, "High-Performance Large-Scale Image
        Recognition Without Normalization", ICML 2021 (adaptive gradient
        clipping). You, Gitman and Ginsburg, "Large Batch Training of
        Convolutional Networks", 2017 (LARS: a layer's step relative to its
        weight norm).
    """
    rate = tf.cast(rate, tf.float64)
    limits: list[tf.Tensor | None] = []
    for g, v in zip(grads, variables, strict=True):
        if g is None or len(v.shape) < 2:
            limits.append(None)
            continue
        weight = tf.maximum(global_norm([v]), WEIGHT_FLOOR)
        step = rate * global_norm([g])
        limit = relative * weight / tf.maximum(step, 1e-300)
        limits.append(tf.where(step > relative * weight, limit, math.inf))
    return limits


def least(limits: list[tf.Tensor | None]) -> tf.Tensor:
    """The smallest of `step_limits`' factors; +inf when there is none."""
    present = [limit for limit in limits if limit is not None]
    if not present:
        return tf.constant(math.inf, tf.float64)
    return tf.reduce_min(tf.stack(present))


def dense(grads: Any) -> list[Any]:
    """Sparse (embedding) gradients made dense: their norm needs duplicate
    rows summed, and the optimizers that keep moments (momentum, Adam...)
    densify them anyway."""
    return [
        tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads
    ]


def global_norm(grads: list[Any]) -> tf.Tensor:
    """L2 norm of all (dense) gradients together, as float64."""
    values = [tf.reshape(g, [-1]) for g in grads if g is not None]
    if not values:
        return tf.constant(0.0, tf.float64)
    fast = tf.sqrt(
        tf.add_n([2.0 * tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in values])
    )

    def exact() -> tf.Tensor:
        squares = [tf.reduce_sum(tf.square(tf.cast(v, tf.float64))) for v in values]
        return tf.sqrt(tf.add_n(squares))

    # A float32 sum of squares can overflow for finite gradients: redo it.
    return tf.cond(tf.math.is_finite(fast), lambda: tf.cast(fast, tf.float64), exact)


def scale(
    grads: list[Any], factor: tf.Tensor, limits: list[Any] | None = None
) -> list[Any]:
    """Gradients times `factor`, each at most its `limits` entry (None: no
    limit), without a pass over them when every factor is 1."""
    present = [i for i, g in enumerate(grads) if g is not None]
    if not present:
        return grads
    limits = limits or [None] * len(grads)
    factors = [
        factor if limits[i] is None else tf.minimum(factor, limits[i]) for i in present
    ]
    # Without limits (no step bound), the graph is that of one factor.
    bounded = any(limits[i] is not None for i in present)
    smallest = tf.reduce_min(tf.stack(factors)) if bounded else factor
    scaled = iter(
        tf.cond(
            smallest < 1.0,
            lambda: [
                grads[i] * tf.cast(f, grads[i].dtype)
                for i, f in zip(present, factors, strict=True)
            ],
            lambda: [tf.identity(grads[i]) for i in present],
        )
    )
    return [None if g is None else next(scaled) for g in grads]
