"""One edge-case contract for the gradient statistic, dense and sparse."""

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.plugins.histogram import summary_v2

from helpers import np_histogram, np_stats
from keras_gradwatch import _stats, tags

pytestmark = pytest.mark.numeric

rng = np.random.default_rng(0)
nan, inf = np.nan, np.inf

CASES = {
    "random": rng.normal(size=(7, 5)),
    "constant": np.full((4, 3), 0.25),
    "zeros": np.zeros((4, 3)),
    "dead_columns": np.array([[0.0, 1.0, 0.0], [0.0, -2.0, 0.0]]),
    "nan_inf": np.array([[1.0, nan, -3.0], [inf, 0.5, -inf]]),
    "all_nonfinite": np.array([[nan, inf]]),
    "one_element": np.array([[-0.75]]),
    "empty": np.zeros((0, 3)),
    "tiny_range": np.array([[1e-9, 1.1e-9], [1.05e-9, 1e-9]]),
    # Squares overflow float32: the norm must still be the true one.
    "exploding": rng.uniform(1e20, 3e20, size=(3, 4)) * rng.choice([-1, 1], (3, 4)),
}


def dense(g):
    return tf.constant(g, tf.float32)


def sparse(g):
    """IndexedSlices whose dense value is `g`: every present row is split in
    two duplicate halves, and all-zero rows are left out (untouched)."""
    rows = [i for i in range(g.shape[0]) if not np.all(g[i] == 0)]
    halves = []
    for i in rows:
        finite = np.isfinite(g[i])
        half = np.where(finite, g[i] / 2, g[i])
        rest = np.where(finite, g[i], 0.0) - np.where(finite, g[i] / 2, 0.0)
        halves += [(i, half), (i, rest)]
    indices = tf.constant([i for i, _ in halves], tf.int64)
    values = tf.constant(
        np.array([v for _, v in halves]).reshape(-1, g.shape[1]), tf.float32
    )
    return tf.IndexedSlices(values, indices, tf.constant(g.shape, tf.int64))


@pytest.fixture(autouse=True)
def compile_tiny_buffers(monkeypatch):
    """`compiled=True` compiles the kernels even for these tiny buffers."""
    monkeypatch.setattr(_stats, "COMPILE_FROM", 0)


@pytest.fixture(params=[False, True], ids=["ops", "xla"])
def compiled(request):
    """The per-element kernels as TensorFlow ops, and compiled with XLA."""
    return request.param


def batch_stats(grads, weights, buckets, compiled):
    function = tf.function(
        lambda g, w: _stats.batch_stats(g, w, buckets, compiled=compiled)
    )
    return function(grads, weights)


def run(grad, weight, compiled, buckets=30):
    stats, hist = batch_stats(
        [grad], [tf.constant(weight, tf.float32)], buckets, compiled
    )
    return dict(zip(tags.STATS_COLUMNS, stats.numpy()[0], strict=True)), hist.numpy()[0]


# Sparse gradients reach the kernels as dense rows: compiled, they are
# covered by the sparse parts of `test_batched_weights_do_not_mix`.
@pytest.mark.parametrize(
    ("make", "compiled"),
    [(dense, False), (sparse, False), (dense, True)],
    ids=["dense", "sparse", "dense-xla"],
)
@pytest.mark.parametrize("case", CASES)
def test_contract(case, make, compiled):
    g = CASES[case].astype(np.float32).astype(np.float64)
    w = rng.normal(size=g.shape)
    grad = make(g)
    # The sparse form must really stand for g (duplicates summed).
    np.testing.assert_array_equal(tf.convert_to_tensor(grad).numpy(), g)

    got, hist = run(grad, w, compiled)
    want = np_stats(g, w)
    for key in tags.GRAD_SCALARS:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-6, err_msg=key)
    np.testing.assert_allclose(hist, np_histogram(g), rtol=1e-6)
    # Histograms never carry non-finite edges, and count every finite element.
    assert np.isfinite(hist).all()
    assert hist[:, 2].sum() == np.isfinite(g).sum()


def test_scalar_weight_is_one_unit():
    got, hist = run(tf.constant(0.0), np.float32(2.0), compiled=False)
    assert got["grad_dead_units"] == 1.0
    assert hist[:, 2].sum() == 1


def test_zero_weight_ratio():
    got, _ = run(dense(np.ones((2, 2))), np.zeros((2, 2)), compiled=False)
    assert got["grad_to_weight"] == np.inf


def test_sparse_untouched_rows_enter_the_histogram_as_zeros(compiled):
    # 1000-row table, two rows touched: 998 * 4 implicit zeros.
    grad = tf.IndexedSlices(
        tf.constant([[1.0, 2.0, 3.0, 4.0], [-1.0, -1.0, -1.0, -1.0]]),
        tf.constant([3, 900]),
        tf.constant([1000, 4]),
    )
    dense_g = tf.convert_to_tensor(grad).numpy()
    got, hist = run(grad, np.ones((1000, 4)), compiled)
    np.testing.assert_allclose(hist, np_histogram(dense_g))
    assert hist[:, 2].sum() == 4000
    np.testing.assert_allclose(got["grad_mean_abs"], np.abs(dense_g).mean())


@pytest.mark.parametrize("buckets", [1, 7, 30])
def test_buckets_match_tensorboard(buckets):
    """Same rows as TensorBoard's own (slow, one-hot) histogram op."""
    data = rng.normal(size=(200, 10)).astype(np.float32)
    _, hist = run(dense(data), np.ones_like(data), False, buckets)
    reference = summary_v2._buckets(tf.constant(data), bucket_count=buckets).numpy()
    np.testing.assert_allclose(hist, reference, rtol=1e-6)


def test_float32_accumulation_is_accurate_on_large_tensors(compiled):
    g = rng.normal(scale=1e-3, size=(2000, 1000)).astype(np.float32)
    got, _ = run(dense(g), g, compiled)
    want = np_stats(g, g)
    for key in ("grad_norm", "grad_mean_abs", "grad_to_weight"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, err_msg=key)


def test_batched_weights_do_not_mix(compiled):
    """All weights go through one concatenated vector: each must still get
    exactly its own statistics and histogram."""
    cases = [c for c in CASES.values() if c.size] + [CASES["empty"]]
    grads, weights, references = [], [], []
    for i, g in enumerate(cases):
        g = g.astype(np.float32).astype(np.float64)
        w = rng.normal(size=g.shape)
        grads.append(sparse(g) if i % 2 else dense(g))
        weights.append(tf.constant(w, tf.float32))
        references.append((np_stats(g, w), np_histogram(g, 7)))
    grads.append(tf.constant(3.0))  # a scalar weight, one unit
    weights.append(tf.constant(1.0))
    references.append((np_stats(np.array(3.0), 1.0), np_histogram(np.array([3.0]), 7)))

    stats, hists = batch_stats(grads, weights, 7, compiled)
    for row, (want, want_hist) in enumerate(references):
        got = dict(zip(tags.STATS_COLUMNS, stats.numpy()[row], strict=True))
        for key in tags.GRAD_SCALARS:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-6, err_msg=key)
        np.testing.assert_allclose(hists.numpy()[row], want_hist, rtol=1e-6)


def test_values_on_and_beside_bucket_edges_fall_as_in_tensorboard(compiled):
    """A value on an inner edge, or one float32 step beside it, lands in
    the bucket TensorBoard's own histogram op gives it: a float32 offset
    from the minimum, or a multiplication by the reciprocal width, would
    move some of these."""
    low, high, buckets = np.float32(-0.3), np.float32(0.7), 30
    width = (np.float64(high) - np.float64(low)) / buckets
    edges = (low + np.arange(buckets + 1) * width).astype(np.float32)
    data = np.concatenate(
        [edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf)]
    )
    data = np.clip(data, low, high).reshape(3, -1)
    _, hist = run(dense(data), np.ones_like(data), compiled, buckets)
    reference = summary_v2._buckets(tf.constant(data), bucket_count=buckets)
    np.testing.assert_array_equal(hist, reference.numpy())
    np.testing.assert_array_equal(hist, np_histogram(data, buckets))
