"""Clipping as pure TF ops: the global norm, the scaling, and the policies.

`global_norm`, `scale` and `dense` act on a list of gradients (None for a
weight without one). A policy is called once per training step, inside the
compiled train function, with what it remembers (`Memory`), the step's
global gradient norm (float64; 0 when `finite` is False) and how many finite
norms came before. It returns the bound for this step (a norm above it is
scaled down to it), the threshold in force after the step, and its new
memory, unchanged on a non-finite step. The callback keeps the memory in
variables.

References:
    Kumar, Owen, Chowdhury and Güra, "ZClip: Adaptive Spike Mitigation for
    LLM Pre-Training", 2025 (`ZScore`).
    Seetharaman, Wichern, Pardo and Le Roux, "AutoClip: Adaptive Gradient
    Clipping for Source Separation Networks", MLSP 2020 (`Percentile`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import tensorflow as tf


class Memory(NamedTuple):
    """What a policy carries from step to step (float64 tensors)."""

    mean: tf.Tensor
    var: tf.Tensor
    history: tf.Tensor  # [history_size]; unfilled slots hold +inf


Step = tuple[tf.Tensor, tf.Tensor, Memory]
"""(bound for this step, threshold after it, new memory)."""


class Policy(Protocol):
    @property
    def mode(self) -> str: ...

    @property
    def history_size(self) -> int:
        """Length of `Memory.history` the policy needs."""

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

    @property
    def config(self) -> tuple[float, ...]:
        return (0.0, self.threshold, 0.0, 0.0)

    def __call__(
        self, memory: Memory, norm: tf.Tensor, finite: tf.Tensor, seen: tf.Tensor
    ) -> Step:
        bound = tf.constant(self.threshold, tf.float64)
        return bound, bound, memory


@dataclass(frozen=True)
class ZScore:
    """Clip spikes above ``mean + z * std`` of moving averages of the norm.

    The averages start from the mean and variance of the first `warmup`
    finite norms (no clipping before) and are then updated, with factor
    `alpha`, by the clipped norm, as in ZClip (which by default clips a spike
    below the bound, to ``mean + z**2 * std / z_score``; we clip to the bound
    itself).
    """

    alpha: float
    z: float
    warmup: int
    mode = "zscore"
    history_size = 1

    @property
    def config(self) -> tuple[float, ...]:
        return (1.0, self.alpha, self.z, float(self.warmup))

    def __call__(
        self, memory: Memory, norm: tf.Tensor, finite: tf.Tensor, seen: tf.Tensor
    ) -> Step:
        mean, var = memory.mean, memory.var
        warm = seen < self.warmup
        nan = tf.constant(math.nan, tf.float64)
        bound = tf.where(warm, nan, mean + self.z * tf.sqrt(tf.maximum(var, 0.0)))
        used = tf.where(tf.logical_and(~warm, norm > bound), bound, norm)
        # During warm-up `mean` and `var` hold the sum and sum of squares.
        total, squares = mean + used, var + used * used
        n = float(self.warmup)
        started = tf.equal(seen + 1, self.warmup)
        first_mean = total / n
        first_var = tf.maximum(squares / n - first_mean * first_mean, 0.0)
        ema_mean = self.alpha * mean + (1.0 - self.alpha) * used
        ema_var = self.alpha * var + (1.0 - self.alpha) * (used - ema_mean) ** 2
        new_mean = tf.where(warm, tf.where(started, first_mean, total), ema_mean)
        new_var = tf.where(warm, tf.where(started, first_var, squares), ema_var)
        ready = tf.logical_or(~warm, started)
        after = tf.where(ready, new_mean + self.z * tf.sqrt(new_var), nan)
        kept = Memory(
            tf.where(finite, new_mean, mean),
            tf.where(finite, new_var, var),
            memory.history,
        )
        return bound, after, kept


@dataclass(frozen=True)
class Percentile:
    """Clip at a percentile of the last `window` finite norms, this one included.

    The paper keeps the whole history; a window bounds the memory and follows
    the norms as training changes them. Percentiles use NumPy's linear rule.
    """

    percentile: float
    window: int
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
        return bound, bound, memory._replace(history=history)


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


def scale(grads: list[Any], factor: tf.Tensor) -> list[Any]:
    """Gradients times `factor`, without a pass over them when it is 1."""
    present = [g for g in grads if g is not None]
    if not present:
        return grads
    scaled = iter(
        tf.cond(
            factor < 1.0,
            lambda: [g * tf.cast(factor, g.dtype) for g in present],
            lambda: [tf.identity(g) for g in present],
        )
    )
    return [None if g is None else next(scaled) for g in grads]
