"""The gradient and weight statistics in `keras.ops`, for JAX and PyTorch.

The same numbers as `keras_gradwatch._stats` (units and edge cases in
`keras_gradwatch.tags`), written with `keras.ops` over groups of
same-shaped tensors (`SMALL`) so that JAX compiles them into the held-out
pass (`jax.jit`) and PyTorch runs them eagerly, in as many operations as
there are shapes. TensorFlow keeps `_stats`, whose one buffer for all
weights keeps its graph small.

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


SMALL = 2**15
"""Tensors are measured in groups of one shape, as the rows of one matrix,
so that the number of operations grows with the shapes, not the tensors
(a transformer's blocks repeat theirs). JAX groups every tensor: its cost
is the compiled program's size. PyTorch runs op by op, and groups only
tensors of fewer values than this, where an op's dispatch (~10 µs) costs
more than copying the tensor into the matrix (4 bytes a value at ~10 GB/s:
13 µs for 2**15); a larger one is measured as it is, with no copy."""


def _groups(parts: Sequence[Any]) -> list[list[int]]:
    """Indices of `parts` grouped by shape (see `SMALL`), in first-seen order."""
    torch = keras.backend.backend() == "torch"
    groups: dict[tuple[int, ...], list[int]] = {}
    out: list[list[int]] = []
    for i, v in enumerate(parts):
        shape = tuple(v.shape)
        if torch and _size(v) >= SMALL:
            out.append([i])
        elif shape in groups:
            groups[shape].append(i)
        else:
            groups[shape] = [i]
            out.append(groups[shape])
    return out


def _rows(parts: Sequence[Any], group: list[int]) -> Any:
    """The group's tensors as the rows of an ``[m, n]`` matrix."""
    if len(group) == 1:
        return ops.reshape(parts[group[0]], [1, -1])
    return ops.stack([ops.reshape(parts[i], [-1]) for i in group])


def _in_order(per_group: list[Any], groups: list[list[int]]) -> Any:
    """Results stacked group by group, put back in the tensors' order."""
    return _reorder(ops.concatenate(per_group, 0), groups)


def _reorder(x: Any, groups: list[list[int]]) -> Any:
    """`x`, whose rows follow `groups`, in the tensors' order."""
    order = [i for group in groups for i in group]
    if order == sorted(order):
        return x
    return ops.take(x, np.argsort(order), axis=0)


def _row_max_abs(m: Any) -> Any:
    """max |v| of each row, NaN where one is NaN, 0 for no elements."""
    if m.shape[1] == 0:
        return ops.zeros([m.shape[0]], m.dtype)
    if keras.backend.backend() == "torch":  # no temporary
        import torch

        if m.shape[0] == 1:  # a full reduction: PyTorch's faster kernel
            return torch.linalg.vector_norm(m[0], float("inf"))[None]
        return torch.linalg.vector_norm(m, float("inf"), dim=1)
    return ops.max(ops.abs(m), axis=1)


def _exact_rows(m: Any, wide: str) -> tuple[Any, Any, Any]:
    """NumPy's L2 norm of each row in `wide`, on values divided by the row's
    largest magnitude (no overflow where the norm is finite), its sum of
    magnitudes and its count of non-finite values."""
    m = ops.cast(m, wide)
    top = _row_max_abs(m)
    scale = ops.where(ops.logical_and(ops.isfinite(top), top > 0), top, 1.0)
    norm = scale * ops.sqrt(ops.sum(ops.square(m / scale[:, None]), axis=1))
    nonfinite = ops.sum(ops.cast(ops.logical_not(ops.isfinite(m)), "int32"), axis=1)
    return norm, ops.sum(ops.abs(m), axis=1), ops.cast(nonfinite, wide)


def _sums(parts: Sequence[Any], group: list[int]) -> tuple[Any, Any]:
    """Float32 sums of squares and of magnitudes of the group's tensors."""
    if keras.backend.backend() == "torch":  # no temporaries: read passes only
        import torch

        if len(group) == 1:  # any shape, any strides: no copy to flatten it
            v = parts[group[0]]
            norm, sum_abs = torch.linalg.vector_norm(v), torch.linalg.vector_norm(v, 1)
            return torch.square(norm)[None], sum_abs[None]
        m = _rows(parts, group)
        norm = torch.linalg.vector_norm(m, dim=1)
        return torch.square(norm), torch.linalg.vector_norm(m, 1, dim=1)
    m = _rows(parts, group)
    return ops.sum(ops.square(m), axis=1), ops.sum(ops.abs(m), axis=1)


def norms(parts: Sequence[Any], wide: str) -> tuple[Any, Any, Any]:
    """Each float32 tensor's L2 norm, sum of |v| and count of non-finite
    elements (over all its elements, any shape), as three ``[k]`` vectors in
    `wide`: from float32 sums where all of them are finite, else exactly
    (see the module's docstring)."""
    if not parts:
        return tuple(ops.zeros([0], wide) for _ in range(3))
    groups = _groups(parts)
    squares, sums = (
        ops.concatenate(x, 0)
        for x in zip(*(_sums(parts, g) for g in groups), strict=True)
    )
    finite = ops.all(ops.isfinite(ops.concatenate([squares, sums], 0)))

    def fast() -> tuple[Any, Any, Any]:
        return (
            ops.cast(ops.sqrt(squares), wide),
            ops.cast(sums, wide),
            ops.zeros(squares.shape, wide),
        )

    def exact() -> tuple[Any, Any, Any]:
        rows = [_exact_rows(_rows(parts, g), wide) for g in groups]
        return tuple(ops.concatenate(x, 0) for x in zip(*rows, strict=True))

    return tuple(_reorder(x, groups) for x in cond(finite, fast, exact))


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
    edges, counts = row_histograms(ops.reshape(v, [1, -1]), buckets, wide)
    return edges[0], counts[0]


def row_histograms(m: Any, buckets: int, wide: str) -> tuple[Any, Any]:
    """`histogram` of each row of the ``[rows, n]`` matrix `m`: ``[rows,
    buckets, 2]`` edges and ``[rows, buckets]`` counts."""
    rows, n = int(m.shape[0]), int(m.shape[1])
    if n == 0:
        return ops.zeros([rows, buckets, 2], wide), ops.zeros([rows, buckets], "int32")
    if keras.backend.backend() == "torch" and wide == "float64":
        fast = _torch_histograms(m, buckets)
        if fast is not None:
            return fast
    m = ops.cast(m, wide)
    finite = ops.isfinite(m)
    count = ops.sum(ops.cast(finite, "int32"), axis=1)
    inf = float("inf")
    low = ops.min(ops.where(finite, m, inf), axis=1)
    high = ops.max(ops.where(finite, m, -inf), axis=1)
    spread = ops.logical_and(count > 0, high > low)
    safe_low = ops.where(spread, low, 0.0)
    safe_high = ops.where(spread, high, 1.0)
    width = (safe_high - safe_low) / float(buckets)
    offset = ops.where(finite, m, safe_low[:, None]) - safe_low[:, None]
    # Clipped at 0 too: without a spread the placeholder range does not hold
    # the values, whose counts are then not used.
    index = ops.cast(ops.clip(offset / width[:, None], 0.0, buckets - 1.0), "int32")
    counts = ops.cast(_counts(index, finite, buckets), "int32")
    edges = (
        safe_low[:, None] + ops.arange(buckets + 1, dtype=wide)[None] * width[:, None]
    )
    edges = ops.concatenate([edges[:, :-1], safe_high[:, None]], 1)
    spread_edges = ops.stack([edges[:, :-1], edges[:, 1:]], axis=2)
    point = ops.where(count > 0, high, 0.0)[:, None, None] * ops.ones(
        [rows, buckets, 2], wide
    )
    last = ops.cast(ops.arange(buckets) == buckets - 1, "int32")[None] * count[:, None]
    return (
        ops.where(spread[:, None, None], spread_edges, point),
        ops.where(spread[:, None], counts, last),
    )


def _torch_histograms(m: Any, buckets: int) -> tuple[Any, Any] | None:
    """`row_histograms` of a float32 matrix on PyTorch where all values are
    finite and no row's are all equal (else None): the same float64
    arithmetic, bit for bit, in one float64 buffer updated in place (five
    memory passes where the general form takes about fifteen)."""
    import torch

    rows = int(m.shape[0])
    # One row as a vector: scalar bounds take PyTorch's faster kernels.
    v = m[0] if rows == 1 else m
    low, high = torch.aminmax(v, dim=None if rows == 1 else 1)  # NaN if any is
    # One read on the host (a sync on a GPU): not finite if either is not,
    # or if the range overflows float32 (the general form then takes it).
    if not bool(torch.all(torch.isfinite(high - low) & (high > low))):
        return None
    low, high = low.double(), high.double()
    width = (high - low) / float(buckets)
    column = (lambda x: x) if rows == 1 else (lambda x: x[:, None])
    index = v.to(torch.float64, copy=True).sub_(column(low)).div_(column(width))
    index = index.clamp_(0.0, buckets - 1.0).to(torch.int32)
    if rows > 1:
        index += (
            torch.arange(rows, dtype=torch.int32, device=m.device)[:, None] * buckets
        )
    counts = torch.bincount(index.reshape(-1), minlength=rows * buckets)
    steps = torch.arange(buckets + 1, dtype=torch.float64, device=m.device)
    edges = low.reshape(rows, 1) + steps[None] * width.reshape(rows, 1)
    edges[:, -1] = high
    spread = torch.stack([edges[:, :-1], edges[:, 1:]], dim=2)
    return spread, counts.reshape(rows, buckets).to(torch.int32)


def host_rows(edges: Any, counts: Any) -> np.ndarray:
    """``[..., buckets, 3]`` float64 rows on the host from `histogram`'s
    edges and counts."""
    edges = np.asarray(keras.ops.convert_to_numpy(edges), np.float64)
    counts = np.asarray(keras.ops.convert_to_numpy(counts), np.float64)
    return np.concatenate([edges, counts[..., None]], axis=-1)


def _any_nonzero(rows: Any) -> Any:
    """Per row and column of `rows` (``[m, n, units]``), whether any value
    is other than 0 (NaN is)."""
    if keras.backend.backend() == "torch":  # no boolean temporary
        import torch

        if rows.shape[0] == 1:
            return (torch.count_nonzero(rows[0], dim=0) > 0)[None]
        return torch.count_nonzero(rows, dim=1) > 0
    return ops.any(ops.not_equal(rows, 0.0), axis=1)


def _counts(index: Any, finite: Any, buckets: int) -> Any:
    """How many finite values of each row fall in each bucket (``[rows,
    buckets]``), in integers (a float32 count stops at 2**24): JAX's segment
    sum of int32 ones, PyTorch's `bincount` (Keras' PyTorch segment sum adds
    in float32)."""
    rows = int(index.shape[0])
    index = index + ops.arange(rows, dtype="int32")[:, None] * buckets
    if keras.backend.backend() == "torch":
        import torch

        counts = torch.bincount(index[finite], minlength=rows * buckets)
    else:
        counts = ops.segment_sum(
            ops.reshape(ops.cast(finite, "int32"), [-1]),
            ops.reshape(index, [-1]),
            num_segments=rows * buckets,
        )
    return ops.reshape(counts, [rows, buckets])


def _histograms(
    parts: Sequence[Any], groups: list[list[int]], buckets: int, wide: str
) -> tuple[Any, Any]:
    """`row_histograms` of each flat tensor of `parts`, in their order."""
    per_group = [row_histograms(_rows(parts, g), buckets, wide) for g in groups]
    return tuple(_in_order(list(x), groups) for x in zip(*per_group, strict=True))


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
    sizes = ops.convert_to_tensor([max(int(v.shape[0]), 1) for v in g], wide)
    to_weight = ops.where(
        ops.logical_and(norm == 0.0, weight_norm == 0.0), 0.0, norm / weight_norm
    )
    groups = _groups(g)
    max_abs, dead = [], []
    for group in groups:
        m = _rows(g, group)
        grad = grads[group[0]]  # the group's shape
        units = int(grad.shape[-1]) if len(grad.shape) and grad.shape[-1] else 1
        alive = _any_nonzero(ops.reshape(m, [len(group), -1, units]))
        dead.append(ops.mean(ops.cast(ops.logical_not(alive), wide), axis=1))
        max_abs.append(ops.cast(_row_max_abs(m), wide))
    columns = [norm, sum_abs / sizes, _in_order(max_abs, groups), to_weight]
    columns += [_in_order(dead, groups), nonfinite, weight_nonfinite]
    return ops.stack(columns, axis=1), _histograms(g, groups, buckets, wide)


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
    rows = ops.stack([l1, l2, ops.where(change == 0.0, 0.0, change / l1)], axis=1)
    if buckets is None:
        return rows, None
    return rows, _histograms(w, _groups(w), buckets, wide)
