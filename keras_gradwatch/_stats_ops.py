"""The gradient and weight statistics in `keras.ops`, for JAX and PyTorch.

The same numbers as `keras_gradwatch._stats` (units and edge cases in
`keras_gradwatch.tags`), written weight by weight with `keras.ops` so that
JAX compiles them into the held-out pass (`jax.jit`) and PyTorch runs them
eagerly. TensorFlow keeps `_stats`, whose one buffer for all weights keeps
its graph small.

Precision. Sums, norms and every histogram's bucket arithmetic run in
`wide`: float64 where the backend has it (PyTorch; JAX with
``jax_enable_x64``), else float32 (JAX's default), whose histogram edges
and bucket boundaries are then float32 numbers. Norms are taken of the
values divided by their largest magnitude, so that no float32 sum of
squares overflows where the norm itself is finite.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops


def wide_dtype() -> str:
    """float64 where the backend computes in it, else float32."""
    if keras.backend.backend() == "jax":
        import jax

        return "float64" if jax.config.jax_enable_x64 else "float32"
    return "float64"


def _flat(x: Any, wide: str) -> Any:
    return ops.reshape(ops.cast(x, wide), [-1])


def _norm_parts(v: Any) -> tuple[Any, Any]:
    """(NumPy's L2 norm of the flat `v`, its max |v|), overflow-safe."""
    top = _max_abs(v)
    scale = ops.where(ops.logical_and(ops.isfinite(top), top > 0), top, 1.0)
    return scale * ops.sqrt(ops.sum(ops.square(v / scale))), top


def _max_abs(v: Any) -> Any:
    """max |v|, NaN if any is NaN, 0 for no elements."""
    if v.shape[0] == 0:
        return ops.zeros([], v.dtype)
    return ops.max(ops.abs(v))


def histogram(v: Any, buckets: int, wide: str) -> Any:
    """TensorBoard's ``[buckets, 3]`` histogram of the finite values of `v`.

    As ``histogram.summary_v2``: edges from the finite minimum to the
    maximum, each value in bucket ``floor((x - low) / ((high - low) /
    buckets))``, the maximum in the last; one distinct value puts every
    edge on it and its count in the last bucket; no finite value, zeros.
    """
    finite = ops.isfinite(v)
    count = ops.sum(ops.cast(finite, wide))
    inf = float("inf")
    low = ops.min(ops.where(finite, v, inf)) if v.shape[0] else inf
    high = ops.max(ops.where(finite, v, -inf)) if v.shape[0] else -inf
    spread = ops.logical_and(count > 0, high > low)
    safe_low = ops.where(spread, low, 0.0)
    safe_high = ops.where(spread, high, 1.0)
    width = (safe_high - safe_low) / float(buckets)
    offset = ops.where(finite, v, safe_low) - safe_low
    index = ops.cast(ops.minimum(offset / width, buckets - 1.0), "int32")
    counts = ops.segment_sum(ops.cast(finite, wide), index, num_segments=buckets)
    edges = safe_low + ops.arange(buckets + 1, dtype=wide) * width
    edges = ops.concatenate([edges[:-1], ops.reshape(safe_high, [1])])
    spread_rows = ops.stack([edges[:-1], edges[1:], counts], axis=1)
    point = ops.where(count > 0, high, 0.0) * ops.ones([buckets], wide)
    last = ops.cast(ops.arange(buckets) == buckets - 1, wide) * count
    point_rows = ops.stack([point, point, last], axis=1)
    return ops.where(spread, spread_rows, point_rows)


def batch_stats(
    grads: Sequence[Any], weights: Sequence[Any], buckets: int, wide: str
) -> tuple[Any, Any]:
    """A ``[k, 7]`` matrix (columns `tags.STATS_COLUMNS`) and ``[k, buckets,
    3]`` histograms of the gradients `grads` of `weights`, in `wide`."""
    rows, histograms = [], []
    for grad, weight in zip(grads, weights, strict=True):
        g = _flat(grad, wide)
        w = _flat(weight, wide)
        size = max(int(g.shape[0]), 1)
        norm, max_abs = _norm_parts(g)
        weight_norm, _ = _norm_parts(w)
        scale = ops.where(
            ops.logical_and(ops.isfinite(max_abs), max_abs > 0), max_abs, 1.0
        )
        mean_abs = scale * ops.sum(ops.abs(g / scale)) / float(size)
        to_weight = ops.where(
            ops.logical_and(norm == 0.0, weight_norm == 0.0), 0.0, norm / weight_norm
        )
        units = int(grad.shape[-1]) if len(grad.shape) and grad.shape[-1] else 1
        alive = ops.any(ops.reshape(ops.not_equal(g, 0.0), [-1, units]), axis=0)
        dead = ops.mean(ops.cast(ops.logical_not(alive), wide))
        rows.append(
            ops.stack(
                [
                    norm,
                    mean_abs,
                    max_abs,
                    to_weight,
                    dead,
                    ops.sum(ops.cast(ops.logical_not(ops.isfinite(g)), wide)),
                    ops.sum(ops.cast(ops.logical_not(ops.isfinite(w)), wide)),
                ]
            )
        )
        histograms.append(histogram(g, buckets, wide))
    if not rows:
        return ops.zeros([0, 7], wide), ops.zeros([0, buckets, 3], wide)
    return ops.stack(rows), ops.stack(histograms)


def weight_stats(
    weights: Sequence[Any], previous: Sequence[Any], buckets: int | None, wide: str
) -> tuple[Any, Any | None]:
    """A ``[k, 3]`` matrix (columns `tags.WEIGHT_SCALARS`: L1, L2, ‖w −
    previous‖₁ / ‖w‖₁, 0 where both are 0) and, unless `buckets` is None,
    ``[k, buckets, 3]`` histograms of the weights."""
    rows, histograms = [], []
    for weight, before in zip(weights, previous, strict=True):
        w = _flat(weight, wide)
        l1 = ops.sum(ops.abs(w))
        l2, _ = _norm_parts(w)
        change = ops.sum(ops.abs(w - _flat(before, wide)))
        relative = ops.where(change == 0.0, 0.0, change / l1)
        rows.append(ops.stack([l1, l2, relative]))
        if buckets is not None:
            histograms.append(histogram(w, buckets, wide))
    stats = ops.stack(rows) if rows else ops.zeros([0, 3], wide)
    if buckets is None:
        return stats, None
    return stats, ops.stack(histograms) if histograms else None
