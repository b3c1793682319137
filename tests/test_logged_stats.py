"""Must show 1: every logged statistic equals a NumPy reference of the same
gradients, computed separately with a traced tape of the test's own (graph
mode runs the kernels GradWatch's traced pass runs; see
`helpers.traced_gradients`)."""

import logging

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers, ops

from helpers import np_global_norm, np_histogram, np_stats, read_run, traced_gradients
from keras_gradwatch import GradWatch, WeightNorms, _stats, tags

pytestmark = pytest.mark.numeric

rng = np.random.default_rng(7)


@pytest.fixture(autouse=True)
def compiled_kernels(monkeypatch):
    """The kernels compiled as for a large model (a CPU's default), even for
    these small ones; `test_stats` checks both ways on every edge case."""
    monkeypatch.setattr(_stats, "COMPILE_FROM", 0)


def dense_case():
    model = keras.Sequential(
        [keras.Input((6,)), layers.Dense(8, activation="relu"), layers.Dense(3)]
    )
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = rng.normal(size=(96, 6)).astype("float32")
    return model, x, rng.integers(0, 3, 96)


def conv_case():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 2)),
            layers.Conv2D(4, 3, activation="relu"),
            layers.Conv2D(3, 2),
            layers.Flatten(),
            layers.Dense(1),
        ]
    )
    model.compile("sgd", "mse")
    return model, rng.normal(size=(64, 8, 8, 2)), rng.normal(size=(64, 1))


def gru_case():
    model = keras.Sequential(
        [keras.Input((6, 3)), layers.GRU(4), layers.Dense(1, activation="sigmoid")]
    )
    model.compile("sgd", "binary_crossentropy")
    return model, rng.normal(size=(64, 6, 3)), rng.integers(0, 2, (64, 1))


def lstm_batchnorm_case():
    model = keras.Sequential(
        [
            keras.Input((5, 3)),
            layers.LSTM(4, return_sequences=True),
            layers.BatchNormalization(),
            layers.Flatten(),
            layers.Dense(1),
        ]
    )
    model.compile("sgd", "mse")
    return model, rng.normal(size=(64, 5, 3)), rng.normal(size=(64, 1))


def embedding_case():
    model = keras.Sequential(
        [
            keras.Input((10,), dtype="int32"),
            layers.Embedding(50, 4),
            layers.Conv1D(5, 3, activation="relu"),
            layers.GlobalAveragePooling1D(),
            layers.Dense(1),
        ]
    )
    model.compile("sgd", "mse")
    # Token ids 0..29 only: rows 30..49 stay untouched, many ids repeat.
    return model, rng.integers(0, 30, (64, 10)), rng.normal(size=(64, 1))


@pytest.mark.parametrize(
    "case",
    [dense_case, conv_case, gru_case, lstm_batchnorm_case, embedding_case],
    ids=lambda c: c.__name__,
)
def test_statistics_match_numpy(case, tmp_path):
    model, x, y = case()
    watch = GradWatch(tmp_path, held_out=(x[:48], y[:48]))
    history = model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[watch])

    logged = read_run(tmp_path / tags.DEFAULT_RUN)
    reference = traced_gradients(model, x[:48], y[:48])
    assert set(reference) == {w.path for w in model.trainable_weights}
    for path, (g, w) in reference.items():
        # Same gradient on both sides; GradWatch reduces it in float32. A sum
        # of n float32 terms is off by at most n * 6e-8 of the sum of their
        # magnitudes (a tree reduction: log2(n) * 6e-8); these weights have
        # n <= 200, so 1.2e-5 at worst for a sum of magnitudes (a mean |g|),
        # half that for a norm; a ratio of two norms adds their errors.
        for prefix, want in np_stats(g, w).items():
            got = logged[tags.tag(prefix, path)][1]
            np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-12, err_msg=prefix)
        hist = logged[tags.tag("grad", path)][1]
        np.testing.assert_allclose(hist[:, :2], np_histogram(g)[:, :2], rtol=1e-5)
        # The bucket arithmetic is NumPy's float64 one, to the last bit.
        np.testing.assert_array_equal(hist[:, 2], np_histogram(g)[:, 2])

    global_norm = np_global_norm(reference)
    np.testing.assert_allclose(history.history["grad_norm"][1], global_norm, rtol=1e-5)
    np.testing.assert_allclose(logged[tags.GLOBAL_NORM_TAG][1], global_norm, rtol=1e-5)


class Penalty(layers.Layer):
    """Identity that adds 0.5 * sum(h**2) through `add_loss`."""

    def call(self, h):
        self.add_loss(0.5 * ops.sum(ops.square(h)))
        return h


def test_multi_output_with_sample_weight_regularizer_and_add_loss(tmp_path):
    inputs = keras.Input((5,))
    hidden = layers.Dense(
        6, activation="tanh", kernel_regularizer=keras.regularizers.L2(0.01)
    )(inputs)
    hidden = Penalty()(hidden)
    out_a = layers.Dense(1, name="a")(hidden)
    out_b = layers.Dense(2, name="b")(hidden)
    model = keras.Model(inputs, {"a": out_a, "b": out_b})
    model.compile(
        "sgd", loss={"a": "mse", "b": "mae"}, loss_weights={"a": 1.0, "b": 0.5}
    )
    x = rng.normal(size=(40, 5)).astype("float32")
    y = {"a": rng.normal(size=(40, 1)), "b": rng.normal(size=(40, 2))}
    sw = rng.uniform(0.1, 2.0, 40).astype("float32")

    watch = GradWatch(tmp_path, held_out=(x, y, sw))
    model.fit(
        x, y, sample_weight=sw, epochs=2, batch_size=8, verbose=0, callbacks=[watch]
    )

    def hand_loss(y_true, y_pred, model):
        # sum_over_batch_size: weighted per-sample losses summed, / batch.
        n = 40.0
        mse = tf.reduce_mean((y_true["a"] - y_pred["a"]) ** 2, -1)
        mae = tf.reduce_mean(tf.abs(y_true["b"] - y_pred["b"]), -1)
        kernel = model.layers[1].kernel
        h = model.layers[1](x)  # what the Penalty layer sees
        return (
            tf.reduce_sum(sw * mse) / n
            + 0.5 * tf.reduce_sum(sw * mae) / n
            + 0.01 * tf.reduce_sum(kernel**2)
            + 0.5 * tf.reduce_sum(h**2)
        )

    y64 = {k: tf.constant(v, tf.float32) for k, v in y.items()}
    reference = traced_gradients(model, x, y64, loss_fn=hand_loss)
    logged = read_run(tmp_path / tags.DEFAULT_RUN)
    assert len(reference) == 6
    for path, (g, w) in reference.items():
        for prefix, want in np_stats(g, w).items():
            got = logged[tags.tag(prefix, path)][1]
            np.testing.assert_allclose(
                got, want, rtol=2e-5, atol=1e-12, err_msg=f"{prefix}/{path}"
            )


def test_statistics_without_xla_are_the_same(tmp_path, monkeypatch, caplog):
    """Where XLA cannot compile the kernels, both callbacks fall back to
    TensorFlow's ops at `on_train_begin` and log the same numbers."""
    kernel = _stats._kernel

    def uncompilable(function, compiled, values):
        if not compiled:
            return function

        def with_string(*args):  # XLA has no string ops
            out = function(*args)
            digits = tf.strings.length(tf.strings.as_string(tf.reduce_sum(out)))
            return out + tf.cast(digits * 0, out.dtype)

        return kernel(with_string, compiled, values)

    monkeypatch.setattr(_stats, "_kernel", uncompilable)
    monkeypatch.setattr(_stats, "compile_by_default", lambda: True)
    model, x, y = dense_case()
    callbacks = [
        GradWatch(tmp_path, held_out=(x[:48], y[:48])),
        WeightNorms(tmp_path, histograms=True),
    ]
    with caplog.at_level(logging.DEBUG, logger="keras_gradwatch"):
        model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=callbacks)
    fallbacks = [
        r.getMessage() for r in caplog.records if "without XLA" in r.getMessage()
    ]
    assert len(fallbacks) == 2, fallbacks

    logged = read_run(tmp_path / tags.DEFAULT_RUN)
    for path, (g, _) in traced_gradients(model, x[:48], y[:48]).items():
        hist = logged[tags.tag("grad", path)][0]
        np.testing.assert_array_equal(hist[:, 2], np_histogram(g)[:, 2])
    weights = read_run(tmp_path / tags.WEIGHTS_RUN)
    for w in model.trainable_weights:
        hist = weights[tags.tag(tags.WEIGHT_HISTOGRAM, w.path)][0]
        np.testing.assert_array_equal(hist[:, 2], np_histogram(w.numpy())[:, 2])
