"""Clipping in `keras.ops`: the global norm, the scaling, and the policies.

The same code runs inside the train step of every backend (a `tf.function`,
a `jax.jit`, PyTorch's eager step). `global_norm` and `scale` act on a list
of gradients (None for a weight without one). A policy is called once per
training step with what it remembers (`Memory`), the step's global gradient
norm (in the state's dtype, `wide`: float64, or float32 on JAX without
``jax_enable_x64``; 0 when `finite` is False) and how many finite norms
came before. It returns the bound for this step, the norm a step
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

import keras
from keras import ops


class Memory(NamedTuple):
    """What a policy carries from step to step."""

    history: Any  # [history_size] norms (`wide`); unfilled slots hold +inf


Step = tuple[Any, Any, Any, Memory]
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

    def __call__(self, memory: Memory, norm: Any, finite: Any, seen: Any) -> Step: ...


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

    def __call__(self, memory: Memory, norm: Any, finite: Any, seen: Any) -> Step:
        bound = ops.full((), self.threshold, norm.dtype)
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

    def __call__(self, memory: Memory, norm: Any, finite: Any, seen: Any) -> Step:
        bound, to = self._bound(memory.history, seen, norm)
        history = _record(memory.history, seen, norm, finite)
        after, _ = self._bound(history, seen + ops.cast(finite, seen.dtype), norm)
        return bound, to, after, Memory(history)

    def _bound(self, history: Any, seen: Any, norm: Any) -> tuple[Any, Any]:
        """(the bound after `seen` finite norms, what `norm` above it is
        scaled to)."""
        count = _min(seen, _like(self.warmup, seen))
        middle = low_median(history, count)
        spread = low_median(ops.abs(history - middle), count)
        early = early_bound(self.early, middle)
        # Never below the early bound: a healthy norm at twice the median is
        # no spike, however small the MAD of a calm stretch.
        robust = _max(middle + self.z * MAD_TO_STD * spread, early)
        bound = ops.where(seen < self.warmup, early, robust)
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

    def __call__(self, memory: Memory, norm: Any, finite: Any, seen: Any) -> Step:
        earlier = _min(seen, _like(self.window, seen))
        cap = early_bound(self.early, low_median(memory.history, earlier))
        history = _record(memory.history, seen, norm, finite)
        count = _min(seen + ops.cast(finite, seen.dtype), _like(self.window, seen))
        ordered = ops.sort(history)  # unfilled slots hold +inf, at the end
        last = _max(count - 1, _like(0, count))
        position = self.percentile / 100.0 * ops.cast(last, norm.dtype)
        low = ops.cast(ops.floor(position), seen.dtype)
        high = _min(low + 1, last)
        below, above = ops.take(ordered, low), ops.take(ordered, high)
        fraction = position - ops.cast(low, norm.dtype)
        bound = ops.where(high > low, below + fraction * (above - below), below)
        bound = _min(bound, cap)
        return bound, bound, bound, memory._replace(history=history)


def _record(history: Any, seen: Any, norm: Any, finite: Any) -> Any:
    """`history` with a finite `norm` in the slot of the `seen`-th norm (a
    ring: the oldest goes); unchanged when `finite` is False."""
    size = history.shape[0]
    slot = ops.arange(size, dtype=seen.dtype) == ops.mod(seen, size)
    return ops.where(ops.logical_and(finite, slot), norm, history)


def low_median(history: Any, count: Any) -> Any:
    """The low median (the lower middle value for an even `count`) of the
    `count` finite entries of `history`, whose other slots hold +inf; 0 when
    `count` is 0.

    The low median of two norms is the smaller one: the mean of a norm and a
    spike would be half the spike.
    """
    ordered = ops.sort(history)
    middle = ops.take(ordered, (_max(count - 1, _like(0, count))) // 2)
    return ops.where(count > 0, middle, ops.zeros((), history.dtype))


def early_bound(factor: float, middle: Any) -> Any:
    """`factor` times the median of the earlier norms, `middle`.

    +inf, so that nothing is clipped, when that median is 0 (no earlier norm,
    or zero gradients): a bound of 0 would zero every later gradient, and
    with the clipped norms kept it would never rise again.
    """
    inf = ops.full((), math.inf, middle.dtype)
    return ops.where(middle > 0.0, factor * middle, inf)


def reciprocal(center: Any, bound: Any, norm: Any) -> Any:
    """ZClip's reciprocal clipping: what a norm above `bound` is scaled to.

    ``center + (bound - center)**2 / (norm - center)``: the bound itself for
    a norm at the bound, and closer to `center` the larger the spike, so
    that a spike moves the weights no further than a typical step. With
    ``center = mean`` and ``bound = mean + z * std`` this is ZClip's
    ``mean + z**2 * std / z_score``. Equal to `bound` when that is +inf.
    """
    excess = _max(norm - center, _tiny(norm.dtype))
    to = center + ops.square(bound - center) / excess
    return ops.where(ops.isinf(bound), bound, _min(to, bound))


def _like(value: float, like: Any) -> Any:
    """`value` as a scalar of `like`'s dtype."""
    return ops.full((), value, keras.backend.standardize_dtype(like.dtype))


def _max(a: Any, b: Any) -> Any:
    """The larger of `a` and `b` (neither NaN), in their dtype: Keras 3.15's
    `ops.maximum` and `ops.minimum` on PyTorch return float32 (or int32) for
    two float64 (int64) tensors."""
    return ops.where(a < b, b, a)


def _min(a: Any, b: Any) -> Any:
    """The smaller of `a` and `b` (neither NaN), in their dtype."""
    return ops.where(b < a, b, a)


def _tiny(dtype: Any) -> Any:
    """A tiny positive number of `dtype` (float32 or 64): 1e-300, or 1e-38
    in float32 (just below its smallest normal, 1.2e-38), as a divisor that
    is never 0."""
    return ops.full((), 1e-300 if "64" in str(dtype) else 1e-38, dtype)


def redescend(far: float, bound: Any, norm: Any, to: Any) -> Any:
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
    return ops.where(norm > cutoff, to * (cutoff / norm), to)


def step_limits(
    grads: list[Any], variables: list[Any], relative: float, rate: Any, wide: str
) -> list[Any | None]:
    """Per gradient, the largest factor it may be scaled by so that an SGD
    step, ``rate * factor * ||g||``, stays within `relative` times its
    kernel's norm (at least `WEIGHT_FLOOR`), in `wide`: +inf when it
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
    rate = ops.cast(rate, wide)
    limits: list[Any | None] = []
    for g, v in zip(grads, variables, strict=True):
        if g is None or len(v.shape) < 2:
            limits.append(None)
            continue
        weight = _max(global_norm([v], wide), ops.full((), WEIGHT_FLOOR, wide))
        step = rate * global_norm([g], wide)
        limit = relative * weight / _max(step, _tiny(wide))
        limits.append(ops.where(step > relative * weight, limit, math.inf))
    return limits


def least(limits: list[Any | None], wide: str) -> Any:
    """The smallest of `step_limits`' factors; +inf when there is none."""
    present = [limit for limit in limits if limit is not None]
    if not present:
        return ops.full((), math.inf, wide)
    return ops.min(ops.stack(present))


def global_norm(grads: list[Any], wide: str) -> Any:
    """L2 norm of all (dense) gradients together, in `wide`.

    TensorFlow and JAX without float64 sum float32 squares and, where that
    sum is not finite, take the exact branch (`ops.cond`): float64 squares,
    or on JAX without float64 each tensor's norm on values divided by its
    largest magnitude, so that only a norm beyond float32 (3.4e38) is +inf.
    PyTorch takes float32 norms of each tensor as it lies (`_torch_norm`),
    and float64 ones where their total is not finite. JAX with float64 sums
    float64 squares at once (the cast fuses into the reduction)."""
    backend = keras.backend.backend()
    if backend == "torch":
        return _torch_norm([g for g in grads if g is not None], wide)
    values = [ops.reshape(g, [-1]) for g in grads if g is not None]
    if not values:
        return ops.zeros((), wide)
    if backend == "jax" and wide == "float64":
        return ops.sqrt(sum(ops.sum(ops.square(ops.cast(v, wide))) for v in values))
    if backend == "tensorflow":
        import tensorflow as tf

        fast = tf.sqrt(
            tf.add_n([2.0 * tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in values])
        )
    else:
        fast = ops.sqrt(
            sum(ops.sum(ops.square(ops.cast(v, "float32"))) for v in values)
        )

    def exact() -> Any:
        if wide == "float64":
            squares = [ops.sum(ops.square(ops.cast(v, wide))) for v in values]
            return ops.sqrt(sum(squares))
        parts = []
        for v in values:
            top = ops.max(ops.abs(ops.cast(v, wide)))
            safe = ops.where(top > 0.0, top, 1.0)
            scaled = top * ops.sqrt(ops.sum(ops.square(v / safe)))
            parts.append(ops.where(ops.isfinite(top), scaled, top))
        return _norm_of(ops.stack(parts))

    # A float32 sum of squares can overflow for finite gradients: redo it.
    return ops.cond(ops.isfinite(fast), lambda: ops.cast(fast, wide), exact)


def _torch_norm(values: list[Any], wide: str) -> Any:
    """PyTorch: float32 norms of each tensor as it lies (no copy), then, on
    the host, float64 ones where their total is not finite."""
    import torch

    if not values:
        return torch.zeros((), dtype=torch.float64)
    values = [ops.convert_to_tensor(v) for v in values]  # Keras variables too
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(values)))
    if bool(torch.isfinite(total)):
        return total.to(torch.float64)
    parts = [torch.linalg.vector_norm(v, dtype=torch.float64) for v in values]
    return torch.linalg.vector_norm(torch.stack(parts))


def _norm_of(parts: Any) -> Any:
    """The L2 norm of a vector of norms, scaled as above."""
    top = ops.max(parts)
    safe = ops.where(ops.logical_and(top > 0.0, ops.isfinite(top)), top, 1.0)
    return ops.where(
        ops.isfinite(top), top * ops.sqrt(ops.sum(ops.square(parts / safe))), top
    )


def scale(grads: list[Any], factor: Any, limits: list[Any] | None = None) -> list[Any]:
    """Gradients times `factor`, each at most its `limits` entry (None: no
    limit), without a pass over them when every factor is 1. On JAX the
    product is taken always: XLA fuses it into the optimizer's update, where
    a `lax.cond` would stop that fusion and pass the gradients through."""
    present = [i for i, g in enumerate(grads) if g is not None]
    if not present:
        return grads
    limits = limits or [None] * len(grads)
    factors = [
        factor if limits[i] is None else _min(factor, limits[i]) for i in present
    ]
    # Without limits (no step bound), the graph is that of one factor.
    bounded = any(limits[i] is not None for i in present)
    if keras.backend.backend() == "jax":
        products = [
            grads[i] * ops.cast(f, grads[i].dtype)
            for i, f in zip(present, factors, strict=True)
        ]
        out = iter(products)
        return [None if g is None else next(out) for g in grads]
    smallest = ops.min(ops.stack(factors)) if bounded else factor
    scaled = iter(
        ops.cond(
            smallest < 1.0,
            lambda: [
                grads[i] * ops.cast(f, grads[i].dtype)
                for i, f in zip(present, factors, strict=True)
            ],
            lambda: _same([grads[i] for i in present]),
        )
    )
    return [None if g is None else next(scaled) for g in grads]


def dense(grads: Any) -> list[Any]:
    """Sparse (embedding) gradients made dense (TensorFlow's `IndexedSlices`;
    the other backends' gradients are dense): their norm needs duplicate
    rows summed, and the optimizers that keep moments (momentum, Adam...)
    densify them anyway."""
    if keras.backend.backend() != "tensorflow":
        return list(grads)
    import tensorflow as tf

    return [
        tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads
    ]


def _same(grads: list[Any]) -> list[Any]:
    """The gradients unchanged, as a branch of `ops.cond` returns them (an
    identity op on TensorFlow; on JAX and PyTorch the values themselves)."""
    if keras.backend.backend() != "tensorflow":
        return grads
    import tensorflow as tf

    return [tf.identity(g) for g in grads]
