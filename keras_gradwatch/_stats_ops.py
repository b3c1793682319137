"""The gradient and weight statistics in `keras.ops`, for JAX and PyTorch.

The same numbers as `keras_gradwatch._stats` (units and edge cases in
`keras_gradwatch.tags`), written weight by weight with `keras.ops` so that
JAX compiles them into the held-out pass (`jax.jit`) and PyTorch runs them
eagerly. TensorFlow keeps `_stats`, whose one buffer for all weights keeps
its graph small.

Cost and precision. Memory passes are the cost, so the common case gets
few: sums of squares and of magnitudes in float32, whose relative error
(about log2(n) x 6e-8 for n terms of one sign) is far below what the
statistics are read for; where any is not finite (a NaN or Inf value, or
a sum beyond float32), `ops.cond` takes an exact branch that follows
NumPy's rules on values scaled by their largest magnitude, in `wide`.
Histogram buckets follow TensorBoard's arithmetic in `wide`: float64 where
the backend has it (PyTorch; JAX with ``jax_enable_x64``), else float32
(JAX's default), whose histogram edges and bucket boundaries are then
float32 numbers. Counts are integers throughout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops


def wide_dtype() -> str:
    """float64 where the backend computes in it, else float32."""
    if keras.backend.backend() == "jax":
        import jax

        return "float64" if jax.config.jax_enable_x64 else "float32"
    return "float64"


def _flat(x: Any) -> Any:
    """`x` as a flat float32 vector."""
    return ops.reshape(ops.cast(x, "float32"), [-1])


def _size(v: Any) -> int:
    return int(np.prod(v.shape, dtype=np.int64))


def _max_abs(v: Any) -> Any:
    """max |v|, NaN if any is NaN, 0 for no elements."""
    if _size(v) == 0:
        return ops.zeros([], v.dtype)
    if keras.backend.backend() == "torch":  # no temporary
        import torch

        return torch.linalg.vector_norm(v, float("inf"))
    return ops.max(ops.abs(v))


def _exact_norm(v: Any, wide: str) -> Any:
    """NumPy's L2 norm of `v` in `wide`, on values divided by the largest
    magnitude (no overflow where the norm is finite)."""
    v = ops.cast(v, wide)
    top = _max_abs(v)
    scale = ops.where(ops.logical_and(ops.isfinite(top), top > 0), top, 1.0)
    return scale * ops.sqrt(ops.sum(ops.square(v / scale)))


def norms(parts: Sequence[Any], wide: str) -> tuple[list[Any], list[Any], list[Any]]:
    """Each float32 tensor's L2 norm, sum of |v| and count of non-finite
    elements (over all its elements, any shape: no copy to flatten it), in
    `wide`: from float32 sums where all of them are finite, else exactly
    (see the module's docstring)."""
    if keras.backend.backend() == "torch":  # no temporaries: read passes only
        import torch

        squares = [torch.square(torch.linalg.vector_norm(v)) for v in parts]
        sums = [torch.linalg.vector_norm(v, 1) for v in parts]
    else:
        squares = [ops.sum(ops.square(v)) for v in parts]
        sums = [ops.sum(ops.abs(v)) for v in parts]
    finite = ops.all(ops.isfinite(ops.stack(squares + sums))) if parts else True

    def fast() -> tuple[list[Any], list[Any], list[Any]]:
        return (
            [ops.cast(ops.sqrt(q), wide) for q in squares],
            [ops.cast(a, wide) for a in sums],
            [ops.zeros([], wide) for _ in parts],
        )

    def exact() -> tuple[list[Any], list[Any], list[Any]]:
        return (
            [_exact_norm(v, wide) for v in parts],
            [ops.sum(ops.abs(ops.cast(v, wide))) for v in parts],
            [_count(ops.logical_not(ops.isfinite(v)), wide) for v in parts],
        )

    if not parts:
        return [], [], []
    return cond(finite, fast, exact)


def cond(pred: Any, true_fn: Callable[[], Any], false_fn: Callable[[], Any]) -> Any:
    """`ops.cond`, or a Python branch on a concrete boolean (eager PyTorch)."""
    if keras.backend.backend() == "torch":
        return true_fn() if bool(pred) else false_fn()
    return ops.cond(pred, true_fn, false_fn)


def histogram(v: Any, buckets: int, wide: str) -> tuple[Any, Any]:
    """TensorBoard's histogram of the finite values of `v`: ``[buckets, 2]``
    edges (in `wide`) and ``[buckets]`` counts (int32, exact).

    As ``histogram.summary_v2``: edges from the finite minimum to the
    maximum, each value in bucket ``floor((x - low) / ((high - low) /
    buckets))``, the maximum in the last; one distinct value puts every
    edge on it and its count in the last bucket; no finite value, zeros.
    """
    if keras.backend.backend() == "torch" and wide == "float64" and v.shape[0]:
        fast = _torch_histogram(v, buckets)
        if fast is not None:
            return fast
    v = ops.cast(v, wide)
    finite = ops.isfinite(v)
    count = ops.sum(ops.cast(finite, "int32"))
    inf = float("inf")
    low = ops.min(ops.where(finite, v, inf)) if v.shape[0] else inf
    high = ops.max(ops.where(finite, v, -inf)) if v.shape[0] else -inf
    spread = ops.logical_and(count > 0, high > low)
    safe_low = ops.where(spread, low, 0.0)
    safe_high = ops.where(spread, high, 1.0)
    width = (safe_high - safe_low) / float(buckets)
    offset = ops.where(finite, v, safe_low) - safe_low
    # Clipped at 0 too: without a spread the placeholder range does not hold
    # the values, whose counts are then not used.
    index = ops.cast(ops.clip(offset / width, 0.0, buckets - 1.0), "int32")
    counts = ops.cast(_counts(index, finite, buckets), "int32")
    edges = safe_low + ops.arange(buckets + 1, dtype=wide) * width
    edges = ops.concatenate([edges[:-1], ops.reshape(safe_high, [1])])
    spread_edges = ops.stack([edges[:-1], edges[1:]], axis=1)
    point = ops.where(count > 0, high, 0.0) * ops.ones([buckets, 2], wide)
    last = ops.cast(ops.arange(buckets) == buckets - 1, "int32") * count
    return (
        ops.where(spread, spread_edges, point),
        ops.where(spread, counts, last),
    )


def _torch_histogram(v: Any, buckets: int) -> tuple[Any, Any] | None:
    """`histogram` of a float32 vector on PyTorch where all values are finite
    and not all equal (else None): the same float64 arithmetic, bit for bit,
    in one float64 buffer updated in place (five memory passes where the
    general form takes about fifteen)."""
    import torch

    low, high = torch.aminmax(v)  # NaN if any is NaN
    # One read on the host (a sync on a GPU): not finite if either is not,
    # or if the range overflows float32 (the general form then takes it).
    if not bool(torch.isfinite(high - low) & (high > low)):
        return None
    low, high = low.double(), high.double()
    width = (high - low) / float(buckets)
    index = v.to(torch.float64, copy=True).sub_(low).div_(width)
    index = index.clamp_(0.0, buckets - 1.0)
    counts = torch.bincount(index.to(torch.int32), minlength=buckets)
    steps = torch.arange(buckets + 1, dtype=torch.float64, device=v.device)
    edges = low + steps * width
    edges[-1] = high
    return torch.stack([edges[:-1], edges[1:]], dim=1), counts.to(torch.int32)


def host_rows(edges: Any, counts: Any) -> np.ndarray:
    """``[..., buckets, 3]`` float64 rows on the host from `histogram`'s
    edges and counts."""
    edges = np.asarray(keras.ops.convert_to_numpy(edges), np.float64)
    counts = np.asarray(keras.ops.convert_to_numpy(counts), np.float64)
    return np.concatenate([edges, counts[..., None]], axis=-1)


def _any_nonzero(rows: Any) -> Any:
    """Per column of `rows`, whether any value is other than 0 (NaN is)."""
    if keras.backend.backend() == "torch":  # no boolean temporary
        import torch

        return torch.count_nonzero(rows, dim=0) > 0
    return ops.any(ops.not_equal(rows, 0.0), axis=0)


def _count(mask: Any, wide: str) -> Any:
    """How many elements `mask` holds, summed in int32, then in `wide`."""
    return ops.cast(ops.sum(ops.cast(mask, "int32")), wide)


def _counts(index: Any, finite: Any, buckets: int) -> Any:
    """How many finite values fall in each bucket, in integers (a float32
    count stops at 2**24): JAX's segment sum of int32 ones, PyTorch's
    `bincount` (Keras' PyTorch segment sum adds in float32)."""
    if keras.backend.backend() == "torch":
        import torch

        return torch.bincount(index[finite], minlength=buckets)
    return ops.segment_sum(ops.cast(finite, "int32"), index, num_segments=buckets)


def batch_stats(
    grads: Sequence[Any], weights: Sequence[Any], buckets: int, wide: str
) -> tuple[Any, Any]:
    """A ``[k, 7]`` matrix (columns `tags.STATS_COLUMNS`), in `wide`, and
    the gradients' histograms as `histogram` gives them, stacked (``[k,
    buckets, 2]`` edges, ``[k, buckets]`` counts; `host_rows` joins them)."""
    if not grads:
        return (
            ops.zeros([0, 7], wide),
            (ops.zeros([0, buckets, 2], wide), ops.zeros([0, buckets], "int32")),
        )
    g = [_flat(grad) for grad in grads]
    w = [_flat(weight) for weight in weights]
    norm, sum_abs, nonfinite = norms(g, wide)
    weight_norm, _, weight_nonfinite = norms(w, wide)
    rows, histograms = [], []
    for i, grad in enumerate(grads):
        size = max(int(g[i].shape[0]), 1)
        to_weight = ops.where(
            ops.logical_and(norm[i] == 0.0, weight_norm[i] == 0.0),
            0.0,
            norm[i] / weight_norm[i],
        )
        units = int(grad.shape[-1]) if len(grad.shape) and grad.shape[-1] else 1
        alive = _any_nonzero(ops.reshape(g[i], [-1, units]))
        dead = ops.mean(ops.cast(ops.logical_not(alive), wide))
        stats = [norm[i], sum_abs[i] / float(size), ops.cast(_max_abs(g[i]), wide)]
        stats += [to_weight, dead, nonfinite[i], weight_nonfinite[i]]
        rows.append(ops.stack(stats))
        histograms.append(histogram(g[i], buckets, wide))
    return ops.stack(rows), tuple(
        ops.stack(part) for part in zip(*histograms, strict=True)
    )


def weight_stats(
    weights: Sequence[Any], previous: Sequence[Any], buckets: int | None, wide: str
) -> tuple[Any, Any | None]:
    """A ``[k, 3]`` matrix (columns `tags.WEIGHT_SCALARS`: L1, L2, ‖w −
    previous‖₁ / ‖w‖₁, 0 where both are 0) and, unless `buckets` is None,
    the weights' histograms as `batch_stats` gives them."""
    if not weights:
        return ops.zeros([0, 3], wide), None
    w = [_flat(weight) for weight in weights]
    moved = [w[i] - _flat(before) for i, before in enumerate(previous)]
    l2, l1, _ = norms(w, wide)
    _, change, _ = norms(moved, wide)
    rows = [
        ops.stack([l1[i], l2[i], ops.where(change[i] == 0.0, 0.0, change[i] / l1[i])])
        for i in range(len(w))
    ]
    if buckets is None:
        return ops.stack(rows), None
    histograms = [histogram(v, buckets, wide) for v in w]
    return ops.stack(rows), tuple(
        ops.stack(part) for part in zip(*histograms, strict=True)
    )
