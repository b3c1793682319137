"""Per-tensor gradient statistics and histogram buckets, for all weights at once.

Everything here is traced into the one ``tf.function`` a callback builds, so
the functions take and return tensors and keep no state. The units and edge
cases are those documented in :mod:`keras_gradwatch.tags`.

The graph does not grow with the number of weights beyond one reshape of
each gradient and weight. Every one is flattened and zero-padded to whole
rows of `BLOCK` elements, and all are concatenated into one ``[rows,
BLOCK]`` buffer: one copy of every gradient, and one of every weight, held
for the length of the pass (the memory price of a graph of fixed size).
Each statistic is then a row reduction over the buffer (vectorized, and
accurate in float32 over 128 elements) followed by a float64 segment sum or
max over the few row results, keyed by the weight each row belongs to.
Histograms take one bucket index per element, computed with the arithmetic
of TensorBoard's own histogram op from its weight's range, and one
``bincount`` over ``weight * buckets + bucket``. Dead units fold each
weight's rows onto the period of its unit pattern (a row-wise segment max)
and take one ``bincount`` over global unit ids. Segment operations over
single elements, which TensorFlow's CPU kernels run one element at a time
(~10 ns each), are avoided. The padding zeros are kept out of every result.

Those two per-element kernels, a chain of ops each of which TensorFlow runs
as its own pass through memory (in float64, for the buckets), are compiled
with XLA on CPUs, which fuses each into one loop (`compile_by_default`);
the row reductions stay TensorFlow's, which are faster than XLA's there.

The statistics are written with ``keras.ops``; the sparse-gradient handling,
the branch, the fixed-size ``bincount`` and the compilation are TensorFlow's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import tensorflow as tf
from keras import ops

BLOCK = 128
"""Elements per row of the flat buffer; each weight starts a new row."""


class _Blocks(NamedTuple):
    """Several flat tensors laid out in rows of `BLOCK`, zero-padded."""

    values: tf.Tensor  # [rows, BLOCK] float32
    owner: tf.Tensor  # [rows] int32: the tensor each row belongs to
    offset: tf.Tensor  # [rows] int32: index of the row's first element in it
    size: tf.Tensor  # [k] int32: elements of each tensor (below 2**31)
    parts: int  # k


@tf.autograph.experimental.do_not_convert
def _blocks(parts: Sequence[tf.Tensor]) -> _Blocks:
    """Lays `parts` out in one zero-padded ``[rows, BLOCK]`` float32 buffer.

    Parts of one dtype are concatenated and cast together, so the graph
    holds one reshape per part and a few ops per dtype. Sizes not known at
    trace time (sparse gradients' distinct rows) are padded in the graph.
    """
    k = len(parts)
    groups: dict[tf.DType, list[int]] = {}
    for i, part in enumerate(parts):
        groups.setdefault(part.dtype, []).append(i)
    order = [i for members in groups.values() for i in members]
    static = np.zeros(k, np.int32)
    dynamic: dict[int, tf.Tensor] = {}
    padding: dict[tuple[tf.DType, int], tf.Tensor] = {}
    buffers = []
    flat_shape = tf.constant([-1])  # one constant for every reshape below
    for dtype, members in groups.items():
        pieces = []
        for i in members:
            flat = tf.reshape(parts[i], flat_shape)
            n = flat.shape[0]
            if n is None:
                size = tf.size(flat, out_type=tf.int32)
                dynamic[i] = size
                flat = tf.pad(flat, [[0, tf.math.floormod(-size, BLOCK)]])
            else:
                static[i] = n
            pieces.append(flat)
            if n is not None and n % BLOCK:
                key = (dtype, BLOCK - n % BLOCK)
                if key not in padding:
                    padding[key] = tf.zeros([key[1]], dtype)
                pieces.append(padding[key])
        buffer = tf.concat(pieces, 0) if len(pieces) > 1 else pieces[0]
        buffers.append(ops.cast(buffer, "float32"))
    flat = ops.concatenate(buffers, 0) if len(buffers) > 1 else buffers[0]
    values = ops.reshape(flat, [-1, BLOCK])

    size = tf.constant(static)
    if dynamic:
        size = ops.scatter_update(
            size, [[i] for i in dynamic], ops.stack(list(dynamic.values()))
        )
    # Rows per part, in buffer order; each row's part by binary search.
    rows = ops.take(ops.floor_divide(size + (BLOCK - 1), BLOCK), order)
    ends = ops.cumsum(rows)
    row = ops.arange(ops.shape(values)[0], dtype="int32")
    position = ops.cast(ops.searchsorted(ends, row, side="right"), "int32")
    first = ops.take(ends - rows, position)
    return _Blocks(
        values=values,
        owner=ops.take(tf.constant(order, tf.int32), position),
        offset=(row - first) * BLOCK,
        size=size,
        parts=k,
    )


def _row_squares(values: tf.Tensor) -> tf.Tensor:
    """Each row's sum of squares, in one pass over `values` (squaring first
    is a second pass); the norm's rounding adds ~1e-7 of relative error.
    """
    return ops.square(tf.math.reduce_euclidean_norm(values, axis=1))


def _per_part(rows: tf.Tensor, blocks: _Blocks) -> tf.Tensor:
    """Float64 sums, per part, of per-row float32 results."""
    return ops.segment_sum(ops.cast(rows, "float64"), blocks.owner, blocks.parts)


def _ranges(
    low_values: tf.Tensor, high_values: tf.Tensor, blocks: _Blocks
) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-part min of `low_values` and max of `high_values` (buffer-shaped).

    The padding zeros of each part's last row are left out; a part with no
    elements gets ``+inf`` / ``-inf``.
    """
    inf = float("inf")
    row_min = ops.min(low_values, axis=1)
    row_max = ops.max(high_values, axis=1)
    # The last row of every non-empty part, and how many real elements it has.
    last_row = ops.segment_max(
        ops.arange(ops.shape(row_min)[0], dtype="int32"), blocks.owner, blocks.parts
    )
    present = blocks.size > 0
    last_row = tf.boolean_mask(last_row, present)
    real = tf.boolean_mask(blocks.size, present) - ops.take(blocks.offset, last_row)
    mask = ops.arange(BLOCK, dtype="int32")[None, :] < real[:, None]
    index = last_row[:, None]
    row_min = ops.scatter_update(
        row_min,
        index,
        ops.min(ops.where(mask, ops.take(low_values, last_row, 0), inf), 1),
    )
    row_max = ops.scatter_update(
        row_max,
        index,
        ops.max(ops.where(mask, ops.take(high_values, last_row, 0), -inf), 1),
    )
    low = -ops.segment_max(-row_min, blocks.owner, blocks.parts)
    high = ops.segment_max(row_max, blocks.owner, blocks.parts)
    return ops.where(present, low, inf), ops.where(present, high, -inf)


def _bincount(
    index: tf.Tensor, length: int, weights: tf.Tensor | None = None
) -> tf.Tensor:
    """Counts (or sums of `weights`) of each value ``0 .. length - 1`` in the
    flat `index`: TensorFlow's op with its size fixed, as XLA needs
    (``ops.bincount`` sizes its output from the data)."""
    if weights is None:
        weights = tf.zeros([0], tf.int32)
    return tf.raw_ops.DenseBincount(input=index, size=length, weights=weights)


def compile_by_default() -> bool:
    """Whether the per-element kernels (`_kernel`) are compiled: on CPUs.

    TensorFlow runs each op as its own pass through memory, in float64
    where the histogram needs it; XLA fuses a chain of them into one loop,
    which makes the statistics of a 5M-weight model ~2x cheaper on a CPU.
    GPUs' kernels are fast already, and XLA there needs CUDA's
    ``libdevice``, which not every installation has.
    """
    return not tf.config.list_logical_devices("GPU")


COMPILE_FROM = 2**16
"""Buffer elements from which `_kernel` compiles: below, a pass costs about
a millisecond either way, and compiling about 0.1 s (measured on 2 cores)."""


def _kernel(
    function: Callable[..., tf.Tensor], compiled: bool, values: tf.Tensor
) -> Callable[..., tf.Tensor]:
    """`function`, compiled with XLA when `compiled` and the buffer `values`
    is not small."""
    rows = values.shape[0]
    if not compiled or (rows is not None and rows * BLOCK < COMPILE_FROM):
        return function
    return tf.function(function, jit_compile=True, autograph=False)


def _dead_units(blocks: _Blocks, units: list[int], compiled: bool = False) -> tf.Tensor:
    """Fraction of each part's units (last axis) with no non-zero element.

    NaN is not zero, so a unit with a NaN is not dead. Element ``j`` of a
    part is in unit ``j % u``; along a part's rows that pattern repeats every
    ``u / gcd(u, BLOCK)`` rows, so the rows are first folded (one row-wise
    segment max, vectorized) onto that many, and only those few are split
    into units. The padding zeros count for no unit.
    """
    units_np = np.array(units, np.int64)
    start = np.cumsum(units_np) - units_np
    period = units_np // np.gcd(units_np, BLOCK)
    group_start = np.cumsum(period) - period
    groups = int(period.sum())
    total = int(units_np.sum())
    owner = blocks.owner
    group = ops.take(tf.constant(group_start, tf.int32), owner) + ops.mod(
        blocks.offset // BLOCK, ops.take(tf.constant(period, tf.int32), owner)
    )

    def fold(values: tf.Tensor, group: tf.Tensor) -> tf.Tensor:
        return ops.segment_max(
            ops.cast(ops.not_equal(values, 0.0), "int32"), group, groups
        )

    nonzero = _kernel(fold, compiled, blocks.values)(blocks.values, group)
    # Which unit each element of the folded rows belongs to.
    group_owner = np.repeat(np.arange(len(units)), period)
    phase = np.arange(groups) - group_start[group_owner]
    unit = tf.constant(start[group_owner], tf.int32)[:, None] + ops.mod(
        tf.constant(phase * BLOCK, tf.int32)[:, None]
        + ops.arange(BLOCK, dtype="int32")[None, :],
        tf.constant(units_np[group_owner], tf.int32)[:, None],
    )
    # Folded rows no element reached hold the int32 minimum: not non-zero.
    per_unit = _bincount(
        ops.reshape(unit, [-1]),
        total,
        weights=ops.reshape(ops.cast(nonzero > 0, "float32"), [-1]),
    )
    dead = ops.segment_sum(
        ops.cast(per_unit == 0, "float64"),
        tf.constant(np.repeat(np.arange(len(units), dtype=np.int32), units_np)),
        len(units),
    )
    return dead / units_np.astype(np.float64)


# Plain Python over lists: AutoGraph has nothing to convert here, and doing
# it anyway cost ~1 s of tracing per model.
@tf.autograph.experimental.do_not_convert
def batch_stats(
    grads: Sequence[tf.Tensor | tf.IndexedSlices],
    weights: Sequence[tf.Tensor],
    buckets: int,
    *,
    compiled: bool = False,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Statistics and histograms of several weights' gradients.

    Args:
        grads: One gradient per weight, dense or `tf.IndexedSlices`
            (embeddings). Sparse gradients are reduced to their distinct rows;
            the untouched rows count as zeros without building the table.
        weights: The weights, in the same order.
        buckets: Number of histogram buckets.
        compiled: Whether the per-element kernels are compiled with XLA
            (`compile_by_default`).

    Returns:
        A float64 ``[k, 7]`` matrix whose columns are the statistics named in
        `tags.STATS_COLUMNS`, in that order (the gradient's norm, mean_abs,
        max_abs, to_weight, dead_units, nonfinite, then the count of the
        weight's own non-finite elements), and float64 ``[k, buckets, 3]``
        histograms in TensorBoard's ``[left, right, count]`` rows.
    """
    parts, units = [], []
    dense_sizes: dict[int, tf.Tensor] = {}  # of the sparse gradients
    for i, grad in enumerate(grads):
        values = grad
        if isinstance(grad, tf.IndexedSlices):
            values, dense_sizes[i] = _distinct_rows(grad)
        last = values.shape[-1] if values.shape.rank else 1
        units.append(last or 1)
        parts.append(values)
    g = _blocks(parts)
    w = _blocks(weights)
    size = ops.cast(g.size, "int64")
    if dense_sizes:
        size = ops.scatter_update(
            size, [[i] for i in dense_sizes], ops.stack(list(dense_sizes.values()))
        )
    n_zeros = size - ops.cast(g.size, "int64")

    # Memory passes are the cost here, so the common case gets as few as
    # possible: finite float32 sums of squares per row prove every element
    # finite and no sum overflowing, and then the histogram's min and max
    # also give max |g|. Anything else (NaN, Inf, or squares beyond float32)
    # takes the exact float64 branch.
    squares = _row_squares(g.values)
    weight_squares = _row_squares(w.values)
    common = ops.logical_and(
        ops.all(ops.isfinite(squares)), ops.all(ops.isfinite(weight_squares))
    )
    view = tf.cond(
        common,
        lambda: _common_view(g, squares, w, weight_squares),
        lambda: _exact_view(g, w),
    )

    size_f = ops.cast(ops.maximum(size, 1), "float64")
    mean_abs = ops.where(size > 0, view.sum_abs / size_f, 0.0)
    to_weight = ops.where(
        ops.logical_and(view.norm == 0.0, view.weight_norm == 0.0),
        0.0,
        view.norm / view.weight_norm,
    )
    histograms = _histograms(
        g,
        view.binned,
        view.low,
        view.high,
        count=size - view.nonfinite,
        nonfinite=view.nonfinite,
        n_zeros=n_zeros,
        buckets=buckets,
        compiled=compiled,
    )
    stats = ops.stack(
        [
            view.norm,
            mean_abs,
            view.max_abs,
            to_weight,
            _dead_units(g, units, compiled),
            ops.cast(view.nonfinite, "float64"),
            ops.cast(view.weight_nonfinite, "float64"),
        ],
        axis=1,
    )
    return stats, histograms


class _View(NamedTuple):
    """Per-weight reductions, from either branch of `batch_stats`."""

    norm: tf.Tensor  # [k] float64, NumPy semantics for NaN/Inf
    sum_abs: tf.Tensor  # [k] float64
    max_abs: tf.Tensor  # [k] float64
    weight_norm: tf.Tensor  # [k] float64
    nonfinite: tf.Tensor  # [k] int64
    weight_nonfinite: tf.Tensor  # [k] int64, of the weights
    low: tf.Tensor  # [k] float32, finite min (+inf for none)
    high: tf.Tensor  # [k] float32, finite max (-inf for none)
    binned: tf.Tensor  # the buffer to bucket; -inf marks a left-out element


def _common_view(
    g: _Blocks, squares: tf.Tensor, w: _Blocks, weight_squares: tf.Tensor
) -> _View:
    """Every gradient and weight finite, and no float32 sum overflowing."""
    low, high = _ranges(g.values, g.values, g)
    # Over no elements low is +inf and high -inf: max |g| is then 0.
    max_abs = ops.maximum(ops.maximum(-low, high), 0.0)
    return _View(
        norm=ops.sqrt(_per_part(squares, g)),
        sum_abs=_per_part(ops.sum(ops.abs(g.values), axis=1), g),
        max_abs=ops.cast(max_abs, "float64"),
        weight_norm=ops.sqrt(_per_part(weight_squares, w)),
        nonfinite=ops.zeros([g.parts], "int64"),
        weight_nonfinite=ops.zeros([w.parts], "int64"),
        low=low,
        high=high,
        binned=g.values,
    )


def _exact_view(g: _Blocks, w: _Blocks) -> _View:
    """NaN, Inf or huge values somewhere: float64 throughout, NumPy rules.

    Non-finite elements are counted and kept out of the range and of the
    buckets; those of the weights are counted too (in the common branch
    their finite sums of squares prove there are none).
    """
    inf = float("inf")
    wide = ops.cast(g.values, "float64")
    finite = ops.isfinite(g.values)
    has_nan = ops.segment_max(
        ops.cast(ops.any(ops.isnan(g.values), axis=1), "int32"), g.owner, g.parts
    )
    max_abs = ops.segment_max(ops.max(ops.abs(wide), axis=1), g.owner, g.parts)
    nonfinite = ops.segment_sum(
        ops.sum(ops.cast(ops.logical_not(finite), "int64"), axis=1), g.owner, g.parts
    )
    low, high = _ranges(
        ops.where(finite, g.values, inf), ops.where(finite, g.values, -inf), g
    )
    wide_weights = ops.cast(w.values, "float64")
    return _View(
        norm=ops.sqrt(_per_part(ops.sum(ops.square(wide), axis=1), g)),
        sum_abs=_per_part(ops.sum(ops.abs(wide), axis=1), g),
        max_abs=ops.where(has_nan > 0, float("nan"), ops.maximum(max_abs, 0.0)),
        weight_norm=ops.sqrt(_per_part(ops.sum(ops.square(wide_weights), axis=1), w)),
        nonfinite=nonfinite,
        weight_nonfinite=ops.segment_sum(
            ops.sum(ops.cast(ops.logical_not(ops.isfinite(w.values)), "int64"), 1),
            w.owner,
            w.parts,
        ),
        low=low,
        high=high,
        binned=ops.where(finite, g.values, -inf),
    )


def _distinct_rows(grad: tf.IndexedSlices) -> tuple[tf.Tensor, tf.Tensor]:
    """Sums duplicate rows; returns them and the dense gradient's size."""
    unique, segment = tf.unique(grad.indices)
    rows = tf.math.unsorted_segment_sum(grad.values, segment, tf.size(unique))
    if grad.dense_shape is not None:
        size = tf.reduce_prod(tf.cast(grad.dense_shape, tf.int64))
    else:
        size = tf.cast(tf.size(rows), tf.int64)
    return rows, size


def _histograms(
    blocks: _Blocks,
    binned: tf.Tensor,
    low: tf.Tensor,
    high: tf.Tensor,
    *,
    count: tf.Tensor,
    nonfinite: tf.Tensor,
    n_zeros: tf.Tensor,
    buckets: int,
    compiled: bool = False,
) -> tf.Tensor:
    """Buckets every part's finite elements plus its implicit zeros.

    Builds the ``[buckets, 3]`` rows of TensorBoard's ``histogram.summary_v2``
    for every part at once. Each element's bucket is TensorBoard's own, to
    the last bit (``(x - low) / ((high - low) / buckets)`` in float64,
    truncated, the maximum in the last bucket). `low`/`high` are each
    part's finite range (``inf``/``-inf`` for none); `count` its finite
    elements, implicit zeros included. The `nonfinite` elements of `binned`
    sit at ``-inf``, which lands in the first bucket, and are taken out of it.
    """
    k = blocks.parts
    buckets_f = float(buckets)
    has_zeros = n_zeros > 0
    low = ops.where(has_zeros, ops.minimum(low, 0.0), low)
    high = ops.where(has_zeros, ops.maximum(high, 0.0), high)
    spread = ops.logical_and(count > 0, high > low)
    # Placeholders keep the arithmetic valid for parts whose range is empty
    # or a point; their rows are replaced below.
    safe_low = ops.where(spread, low, 0.0)
    safe_high = ops.where(spread, high, 1.0)
    width = (ops.cast(safe_high, "float64") - ops.cast(safe_low, "float64")) / buckets_f

    def bucket(x: tf.Tensor, at_low: tf.Tensor, at_width: tf.Tensor) -> tf.Tensor:
        # max() is exact in float32, and keeps -inf markers at the bottom.
        offset = ops.cast(ops.maximum(x, at_low), "float64") - ops.cast(
            at_low, "float64"
        )
        return ops.cast(ops.minimum(offset / at_width, buckets_f - 1.0), "int32")

    def count_buckets(
        binned: tf.Tensor, owner: tf.Tensor, low: tf.Tensor, width: tf.Tensor
    ) -> tf.Tensor:
        index = owner[:, None] * buckets + bucket(
            binned, ops.take(low, owner)[:, None], ops.take(width, owner)[:, None]
        )
        return _bincount(ops.reshape(index, [-1]), k * buckets)

    counts = _kernel(count_buckets, compiled, binned)(
        binned, blocks.owner, safe_low, width
    )
    counts = ops.reshape(ops.cast(counts, "int64"), [k, buckets])
    # The padding zeros sit in the bucket of 0; implicit zeros belong there.
    padding = ops.cast(
        ops.floor_divide(blocks.size + (BLOCK - 1), BLOCK) * BLOCK - blocks.size,
        "int64",
    )
    zero_bucket = bucket(ops.zeros_like(safe_low), safe_low, width)
    counts += (
        ops.one_hot(zero_bucket, buckets, dtype="int64") * (n_zeros - padding)[:, None]
    )
    counts -= ops.one_hot(0, buckets, dtype="int64")[None, :] * nonfinite[:, None]

    edges = tf.linspace(
        ops.cast(safe_low, "float64"),
        ops.cast(safe_high, "float64"),
        buckets + 1,
        axis=1,
    )
    # linspace does not promise its last point equals `high` exactly.
    edges = ops.concatenate([edges[:, :-1], ops.cast(safe_high, "float64")[:, None]], 1)
    spread_rows = ops.stack(
        [edges[:, :-1], edges[:, 1:], ops.cast(counts, "float64")], 2
    )

    # A single distinct value (low == high) has all edges on it and its count
    # in the last bucket; no values at all gives zero rows.
    point = ops.where(count > 0, ops.cast(high, "float64"), 0.0)
    point = ops.tile(point[:, None], [1, buckets])
    last = ops.one_hot(buckets - 1, buckets, dtype="float64")
    point_rows = ops.stack(
        [point, point, last[None, :] * ops.cast(count, "float64")[:, None]], 2
    )
    return ops.where(spread[:, None, None], spread_rows, point_rows)


@tf.autograph.experimental.do_not_convert
def weight_stats(
    weights: Sequence[tf.Tensor],
    previous: Sequence[tf.Tensor],
    buckets: int | None,
    *,
    compiled: bool = False,
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """Norms of weights and of their change since `previous`.

    Returns:
        A float64 ``[k, 3]`` matrix whose columns are the statistics named in
        `tags.WEIGHT_SCALARS` (L1 norm, L2 norm, ‖w − previous‖₁ / ‖w‖₁), and
        float64 ``[k, buckets, 3]`` histograms of the weights, or None when
        `buckets` is None.
    """
    stats, histograms, _ = weight_stats_laid_out(
        weights, _blocks(previous).values, buckets, compiled=compiled
    )
    return stats, histograms


@tf.autograph.experimental.do_not_convert
def block_layout(parts: Sequence[tf.Tensor]) -> tf.Tensor:
    """`parts` in the one zero-padded ``[rows, BLOCK]`` float32 buffer that
    the statistics reduce; a snapshot kept in this form is not laid out again.
    """
    return _blocks(parts).values


@tf.autograph.experimental.do_not_convert
def weight_stats_laid_out(
    weights: Sequence[tf.Tensor],
    before: tf.Tensor,
    buckets: int | None,
    *,
    compiled: bool = False,
) -> tuple[tf.Tensor, tf.Tensor | None, tf.Tensor]:
    """`weight_stats` against a `block_layout` of the previous weights.

    Returns:
        The statistics and histograms of `weight_stats`, and the
        `block_layout` of `weights`, the next snapshot.
    """
    w = _blocks(weights)
    sum_abs = ops.sum(ops.abs(w.values), axis=1)
    squares = _row_squares(w.values)
    moved = ops.sum(ops.abs(w.values - before), axis=1)
    # Finite float32 sums of squares and of changes prove every element of
    # both snapshots finite and no sum overflowing; otherwise redo in float64.
    common = ops.logical_and(
        ops.all(ops.isfinite(squares)), ops.all(ops.isfinite(moved))
    )

    def fast() -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        return (
            _per_part(sum_abs, w),
            ops.sqrt(_per_part(squares, w)),
            _per_part(moved, w),
        )

    def exact() -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        wide = ops.cast(w.values, "float64")
        wide_before = ops.cast(before, "float64")
        return (
            _per_part(ops.sum(ops.abs(wide), axis=1), w),
            ops.sqrt(_per_part(ops.sum(ops.square(wide), axis=1), w)),
            _per_part(ops.sum(ops.abs(wide - wide_before), axis=1), w),
        )

    l1, l2, change = tf.cond(common, fast, exact)
    # 0/0 (an all-zero weight that stayed so) is no change; NaN propagates.
    relative = ops.where(change == 0.0, 0.0, change / l1)
    stats = ops.stack([l1, l2, relative], axis=1)
    if buckets is None:
        return stats, None, w.values
    all_finite = ops.all(ops.isfinite(sum_abs))
    return stats, _value_histograms(w, all_finite, buckets, compiled), w.values


def _value_histograms(
    w: _Blocks, all_finite: tf.Tensor, buckets: int, compiled: bool
) -> tf.Tensor:
    """Histograms of dense values, non-finite ones counted out as gradients'."""
    inf = float("inf")

    def plain() -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        low, high = _ranges(w.values, w.values, w)
        return low, high, ops.zeros([w.parts], "int64"), w.values

    def masked() -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        finite = ops.isfinite(w.values)
        low, high = _ranges(
            ops.where(finite, w.values, inf), ops.where(finite, w.values, -inf), w
        )
        nonfinite = ops.segment_sum(
            ops.sum(ops.cast(ops.logical_not(finite), "int64"), axis=1),
            w.owner,
            w.parts,
        )
        return low, high, nonfinite, ops.where(finite, w.values, -inf)

    low, high, nonfinite, binned = tf.cond(all_finite, plain, masked)
    size = ops.cast(w.size, "int64")
    return _histograms(
        w,
        binned,
        low,
        high,
        count=size - nonfinite,
        nonfinite=nonfinite,
        n_zeros=ops.zeros_like(size),
        buckets=buckets,
        compiled=compiled,
    )
