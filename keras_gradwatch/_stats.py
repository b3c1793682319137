"""Per-tensor gradient statistics and histogram buckets, as TensorFlow ops.

Everything here is traced into the one ``tf.function`` a callback builds, so
the functions take and return tensors and keep no state. The units and edge
cases are those documented in :mod:`keras_gradwatch.tags`.

All weights are measured together. Work over elements is one fused kernel
per weight (``l2_loss``, ``reduce_*``, ``histogram_fixed_width``), which on
CPU beats any concatenate-and-segment scheme; everything else (the one
decision about non-finite values, ranges, bucket edges, edge cases) is done
once for all weights on ``[k]`` and ``[k, buckets]`` tensors. Tracing cost
grows by a few simple ops per weight instead of a conditional per weight
(~0.15 s each).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import tensorflow as tf


# Plain Python over lists: AutoGraph has nothing to convert here, and doing
# it anyway cost ~1 s of tracing per model.
@tf.autograph.experimental.do_not_convert
def batch_stats(
    grads: Sequence[tf.Tensor | tf.IndexedSlices],
    weights: Sequence[tf.Tensor],
    buckets: int,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Statistics and histograms of several weights' gradients.

    Args:
        grads: One gradient per weight, dense or `tf.IndexedSlices`
            (embeddings). Sparse gradients are reduced to their distinct rows;
            the untouched rows count as zeros without building the table.
        weights: The weights, in the same order.
        buckets: Number of histogram buckets.

    Returns:
        A float64 ``[k, 6]`` matrix whose columns are the statistics named in
        `tags.GRAD_SCALARS`, in that order (norm, mean_abs, max_abs,
        to_weight, dead_units, nonfinite), and float64 ``[k, buckets, 3]``
        histograms in TensorBoard's ``[left, right, count]`` rows.
    """
    parts, sizes, units = [], [], []
    for grad in grads:
        if isinstance(grad, tf.IndexedSlices):
            values, size = _distinct_rows(grad)
        else:
            values, size = grad, tf.size(grad, out_type=tf.int64)
        values = tf.cast(values, tf.float32)
        last = values.shape[-1] if values.shape.rank else 1
        units.append(last or 1)
        parts.append(tf.reshape(values, [-1]))
        sizes.append(size)
    size = tf.stack(sizes)
    n_zeros = size - tf.stack([tf.size(p, out_type=tf.int64) for p in parts])
    weight_parts = [tf.reshape(tf.cast(w, tf.float32), [-1]) for w in weights]

    # Memory passes are the cost here, so the common case gets as few as
    # possible: a finite float32 sum of squares (one fused l2_loss kernel)
    # proves every element finite and no sum overflowing, and then the
    # histogram's min and max also give max |g|. Anything else (NaN, Inf, or
    # squares beyond float32) takes the exact float64 branch.
    squares = tf.stack([2.0 * tf.nn.l2_loss(p) for p in parts])
    weight_squares = tf.stack([2.0 * tf.nn.l2_loss(w) for w in weight_parts])
    common = tf.logical_and(
        tf.reduce_all(tf.math.is_finite(squares)),
        tf.reduce_all(tf.math.is_finite(weight_squares)),
    )
    view = tf.cond(
        common,
        lambda: _common_view(parts, units, squares, weight_squares),
        lambda: _exact_view(parts, units, weight_parts),
    )

    size_f = tf.cast(tf.maximum(size, 1), tf.float64)
    mean_abs = tf.where(size > 0, view.sum_abs / size_f, tf.constant(0.0, tf.float64))
    to_weight = tf.where(
        tf.logical_and(view.norm == 0.0, view.weight_norm == 0.0),
        tf.constant(0.0, tf.float64),
        view.norm / view.weight_norm,
    )
    histograms = _histograms(
        view.binned,
        view.low,
        view.high,
        count=size - view.nonfinite,
        nonfinite=view.nonfinite,
        n_zeros=n_zeros,
        buckets=buckets,
    )
    stats = tf.stack(
        [
            view.norm,
            mean_abs,
            view.max_abs,
            to_weight,
            view.dead_units,
            tf.cast(view.nonfinite, tf.float64),
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
    dead_units: tf.Tensor  # [k] float64, fraction of units
    nonfinite: tf.Tensor  # [k] int64
    low: tf.Tensor  # [k] float32, finite min (+inf for none)
    high: tf.Tensor  # [k] float32, finite max (-inf for none)
    binned: list[tf.Tensor]  # values to bucket; -inf marks a left-out one


def _common_view(
    parts: list[tf.Tensor],
    units: list[int],
    squares: tf.Tensor,
    weight_squares: tf.Tensor,
) -> _View:
    """Every gradient and weight finite, and no float32 sum overflowing."""
    absolutes = [tf.abs(p) for p in parts]
    # Over no elements reduce_min is +inf and reduce_max -inf, as wanted.
    low = tf.stack([tf.reduce_min(p) for p in parts])
    high = tf.stack([tf.reduce_max(p) for p in parts])
    max_abs = tf.maximum(tf.maximum(-low, high), 0.0)
    # A unit is dead when its slice is all zeros: its column max |g| is 0,
    # or -inf when no element of it is present (untouched embedding rows).
    dead_units = tf.stack(
        [
            tf.reduce_mean(
                tf.cast(
                    tf.reduce_max(tf.reshape(a, [-1, n]), axis=0) <= 0.0, tf.float64
                )
            )
            for a, n in zip(absolutes, units, strict=True)
        ]
    )
    return _View(
        norm=tf.sqrt(tf.cast(squares, tf.float64)),
        sum_abs=tf.cast(tf.stack([tf.reduce_sum(a) for a in absolutes]), tf.float64),
        max_abs=tf.cast(max_abs, tf.float64),
        weight_norm=tf.sqrt(tf.cast(weight_squares, tf.float64)),
        dead_units=dead_units,
        nonfinite=tf.zeros([len(parts)], tf.int64),
        low=low,
        high=high,
        binned=parts,
    )


def _exact_view(
    parts: list[tf.Tensor], units: list[int], weight_parts: list[tf.Tensor]
) -> _View:
    """NaN, Inf or huge values somewhere: float64 throughout, NumPy rules.

    Non-finite elements are counted, kept out of the range, and parked at
    -inf for the buckets (histogram_fixed_width rejects NaN and clamps -inf
    into the first bucket, from which `_histograms` takes them back out).
    """
    inf = tf.constant(float("inf"))
    wide = [tf.cast(p, tf.float64) for p in parts]
    masks = [tf.math.is_finite(p) for p in parts]
    has_nan = tf.stack([tf.reduce_any(tf.math.is_nan(p)) for p in parts])
    max_abs = tf.maximum(tf.stack([tf.reduce_max(tf.abs(w)) for w in wide]), 0.0)
    nonfinite = [
        tf.size(m, out_type=tf.int64) - tf.math.count_nonzero(m, dtype=tf.int64)
        for m in masks
    ]
    # NaN is not zero, so a unit with a NaN is not dead.
    dead_units = [
        tf.reduce_mean(
            tf.cast(
                tf.equal(tf.math.count_nonzero(tf.reshape(p, [-1, n]), axis=0), 0),
                tf.float64,
            )
        )
        for p, n in zip(parts, units, strict=True)
    ]
    return _View(
        norm=tf.sqrt(tf.stack([tf.reduce_sum(tf.square(w)) for w in wide])),
        sum_abs=tf.stack([tf.reduce_sum(tf.abs(w)) for w in wide]),
        max_abs=tf.where(has_nan, tf.constant(float("nan"), tf.float64), max_abs),
        weight_norm=tf.sqrt(
            tf.stack(
                [tf.reduce_sum(tf.square(tf.cast(w, tf.float64))) for w in weight_parts]
            )
        ),
        dead_units=tf.stack(dead_units),
        nonfinite=tf.stack(nonfinite),
        low=tf.stack(
            [
                tf.reduce_min(tf.where(m, p, inf))
                for p, m in zip(parts, masks, strict=True)
            ]
        ),
        high=tf.stack(
            [
                tf.reduce_max(tf.where(m, p, -inf))
                for p, m in zip(parts, masks, strict=True)
            ]
        ),
        binned=[tf.where(m, p, -inf) for p, m in zip(parts, masks, strict=True)],
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
    binned: list[tf.Tensor],
    low: tf.Tensor,
    high: tf.Tensor,
    *,
    count: tf.Tensor,
    nonfinite: tf.Tensor,
    n_zeros: tf.Tensor,
    buckets: int,
) -> tf.Tensor:
    """Buckets every weight's finite elements plus its implicit zeros.

    Builds the ``[buckets, 3]`` rows of TensorBoard's ``histogram.summary_v2``
    with one ``tf.histogram_fixed_width`` pass per weight instead of its
    ``N x buckets`` one-hot matrix. `low`/`high` are each weight's finite
    range (``inf``/``-inf`` for none); `count` its finite elements, implicit
    zeros included; the `nonfinite` elements of `binned` sit at ``-inf``, in
    the first bucket, and are taken out of it.
    """
    buckets_f = tf.constant(buckets, tf.float64)
    has_zeros = n_zeros > 0
    low = tf.where(has_zeros, tf.minimum(low, 0.0), low)
    high = tf.where(has_zeros, tf.maximum(high, 0.0), high)
    spread = tf.logical_and(count > 0, high > low)
    # Placeholders keep the op valid for weights whose range is empty or a
    # point; their rows are replaced below.
    safe_low = tf.where(spread, low, 0.0)
    safe_high = tf.where(spread, high, 1.0)
    ranges = tf.stack([safe_low, safe_high], 1)
    counts = tf.stack(
        [
            tf.histogram_fixed_width(b, ranges[i], nbins=buckets, dtype=tf.int64)
            for i, b in enumerate(binned)
        ]
    )
    # Where 0 falls, as histogram_fixed_width computes it, for implicit zeros.
    zero_bucket = tf.cast(
        tf.minimum(
            tf.floor(
                tf.cast(-safe_low, tf.float64)
                / (tf.cast(safe_high - safe_low, tf.float64) / buckets_f)
            ),
            buckets_f - 1,
        ),
        tf.int32,
    )
    counts += tf.one_hot(zero_bucket, buckets, dtype=tf.int64) * n_zeros[:, None]
    counts -= tf.one_hot(0, buckets, dtype=tf.int64)[None, :] * nonfinite[:, None]

    edges = tf.linspace(
        tf.cast(safe_low, tf.float64),
        tf.cast(safe_high, tf.float64),
        buckets + 1,
        axis=1,
    )
    # linspace does not promise its last point equals `high` exactly.
    edges = tf.concat([edges[:, :-1], tf.cast(safe_high, tf.float64)[:, None]], 1)
    spread_rows = tf.stack(
        [edges[:, :-1], edges[:, 1:], tf.cast(counts, tf.float64)], 2
    )

    # A single distinct value (low == high) has all edges on it and its count
    # in the last bucket; no values at all gives zero rows.
    point = tf.where(count > 0, tf.cast(high, tf.float64), tf.constant(0.0, tf.float64))
    point = tf.tile(point[:, None], [1, buckets])
    last = tf.one_hot(buckets - 1, buckets, dtype=tf.float64)
    point_rows = tf.stack(
        [point, point, last[None, :] * tf.cast(count, tf.float64)[:, None]], 2
    )
    return tf.where(spread[:, None, None], spread_rows, point_rows)


@tf.autograph.experimental.do_not_convert
def weight_stats(
    weights: Sequence[tf.Tensor],
    previous: Sequence[tf.Tensor],
    buckets: int | None,
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """Norms of weights and of their change since `previous`.

    Returns:
        A float64 ``[k, 3]`` matrix whose columns are the statistics named in
        `tags.WEIGHT_SCALARS` (L1 norm, L2 norm, ‖w − previous‖₁ / ‖w‖₁), and
        float64 ``[k, buckets, 3]`` histograms of the weights, or None when
        `buckets` is None.
    """
    parts = [tf.reshape(tf.cast(w, tf.float32), [-1]) for w in weights]
    before = [tf.reshape(tf.cast(p, tf.float32), [-1]) for p in previous]
    sum_abs = tf.stack([tf.reduce_sum(tf.abs(p)) for p in parts])
    squares = tf.stack([2.0 * tf.nn.l2_loss(p) for p in parts])
    moved = tf.stack(
        [tf.reduce_sum(tf.abs(p - b)) for p, b in zip(parts, before, strict=True)]
    )
    # Finite float32 sums of squares and of changes prove every element of
    # both snapshots finite and no sum overflowing; otherwise redo in float64.
    common = tf.logical_and(
        tf.reduce_all(tf.math.is_finite(squares)),
        tf.reduce_all(tf.math.is_finite(moved)),
    )

    def fast() -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        return (
            tf.cast(sum_abs, tf.float64),
            tf.sqrt(tf.cast(squares, tf.float64)),
            tf.cast(moved, tf.float64),
        )

    def exact() -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        wide = [tf.cast(p, tf.float64) for p in parts]
        wide_before = [tf.cast(b, tf.float64) for b in before]
        return (
            tf.stack([tf.reduce_sum(tf.abs(w)) for w in wide]),
            tf.sqrt(tf.stack([tf.reduce_sum(tf.square(w)) for w in wide])),
            tf.stack(
                [
                    tf.reduce_sum(tf.abs(w - b))
                    for w, b in zip(wide, wide_before, strict=True)
                ]
            ),
        )

    l1, l2, change = tf.cond(common, fast, exact)
    # 0/0 (an all-zero weight that stayed so) is no change; NaN propagates.
    relative = tf.where(change == 0.0, tf.constant(0.0, tf.float64), change / l1)
    stats = tf.stack([l1, l2, relative], axis=1)
    if buckets is None:
        return stats, None
    all_finite = tf.reduce_all(tf.math.is_finite(sum_abs))
    return stats, _value_histograms(parts, all_finite, buckets)


def _value_histograms(
    parts: list[tf.Tensor], all_finite: tf.Tensor, buckets: int
) -> tf.Tensor:
    """Histograms of dense values, non-finite ones counted out as gradients'."""

    def plain() -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, list[tf.Tensor]]:
        return (
            tf.stack([tf.reduce_min(p) for p in parts]),
            tf.stack([tf.reduce_max(p) for p in parts]),
            tf.zeros([len(parts)], tf.int64),
            parts,
        )

    def masked() -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, list[tf.Tensor]]:
        inf = tf.constant(float("inf"))
        masks = [tf.math.is_finite(p) for p in parts]
        pairs = list(zip(parts, masks, strict=True))
        return (
            tf.stack([tf.reduce_min(tf.where(m, p, inf)) for p, m in pairs]),
            tf.stack([tf.reduce_max(tf.where(m, p, -inf)) for p, m in pairs]),
            tf.stack(
                [
                    tf.size(m, out_type=tf.int64)
                    - tf.math.count_nonzero(m, dtype=tf.int64)
                    for m in masks
                ]
            ),
            [tf.where(m, p, -inf) for p, m in pairs],
        )

    low, high, nonfinite, binned = tf.cond(all_finite, plain, masked)
    size = tf.stack([tf.size(p, out_type=tf.int64) for p in parts])
    return _histograms(
        binned,
        low,
        high,
        count=size - nonfinite,
        nonfinite=nonfinite,
        n_zeros=tf.zeros_like(size),
        buckets=buckets,
    )
