"""The backward signal (issue 14): every new scalar against a traced tape.

The references call the layers one by one inside a `tf.function` of their
own and take ∂L/∂y of the tensors they watch: no code of GradWatch runs in
them. Tolerances (float32): the tape's gradients are the same float32
kernels in the same graph form as GradWatch's (hence `tf.function`, not
eager: oneDNN fuses MatMul + BiasAdd + activation in graph mode only), so
the gradients agree to a few ulps; GradWatch then sums squares in float32
(one `l2_loss` kernel per tensor, pairwise-like summation: relative error
about log2(n) x 6e-8 for n elements, below 1e-6 here) while the references
sum in float64, so rtol=1e-5 leaves an order of magnitude of room. Time
profiles sum squares over features in float32 too (a handful of elements).
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import np_time, read_run
from keras_gradwatch import GradWatch, _events, _signal, tags

pytestmark = pytest.mark.numeric

RTOL = 1e-5
rng = np.random.default_rng(14)


def logged(model, x, y, tmp_path, *, fit=True, traces=1):
    """GradWatch's values at epoch 0 of a one-epoch fit (computed with the
    weights the fit left), read by TensorBoard's reader; without `fit`, of
    the hooks alone, on the weights as they are."""
    watch = GradWatch(tmp_path, held_out=(x, y), diagnose=False)
    if fit:
        model.fit(x, y, epochs=1, batch_size=len(x), verbose=0, callbacks=[watch])
    else:
        watch.set_model(model)
        watch.on_train_begin()
        watch.on_epoch_end(0, {})
        watch.on_train_end()
    assert watch._probe.tracing_count == traces
    run = read_run(tmp_path / tags.DEFAULT_RUN)
    return {tag: steps[0] for tag, steps in run.items() if 0 in steps}


def reference(model, x, y, forward):
    """∂L/∂t for the tensors `forward(tape, x)` watches, with a traced tape.

    `forward` returns ``(y_pred, {name: tensor})`` and watches the tensors.
    """

    @tf.function
    def run(x, y):
        with tf.GradientTape() as tape:
            y_pred, named = forward(tape, x)
            loss = model.compute_loss(x=x, y=y, y_pred=y_pred, training=False)
        return tape.gradient(loss, named)

    grads = run(tf.convert_to_tensor(x), tf.convert_to_tensor(y))
    return {k: v.numpy().astype(np.float64) for k, v in grads.items()}


def watched(tape, tensor):
    tape.watch(tensor)
    return tensor


def check_outputs(got, grads):
    """act_grad_norm and act_grad_rms of every layer in `grads`."""
    for path, g in grads.items():
        norm = np.linalg.norm(g.ravel())
        assert float(got[tags.tag(tags.ACT_GRAD_NORM, path)]) == pytest.approx(
            norm, rel=RTOL
        ), path
        assert float(got[tags.tag(tags.ACT_GRAD_RMS, path)]) == pytest.approx(
            norm / math.sqrt(g.size), rel=RTOL
        ), path


def check_time(got, path, g, valid):
    ratio, profile = np_time(g, valid)
    assert float(got[tags.tag(tags.TIME_GRAD_RATIO, path)]) == pytest.approx(
        ratio, rel=RTOL
    )
    for q, value in zip(tags.TIME_QUANTILES, profile, strict=True):
        tag = tags.tag(tags.TIME_GRAD_NORM, f"{path}/{q}")
        assert float(got[tag]) == pytest.approx(value, rel=RTOL), tag


def signal_tags(got):
    prefixes = (tags.ACT_GRAD_NORM, tags.ACT_GRAD_RMS, tags.TIME_GRAD_RATIO)
    prefixes += (tags.TIME_GRAD_NORM, tags.ACTIVATION)
    return {t for t in got if t.split("/")[0] in prefixes}


def test_sequential(tmp_path):
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(16, activation="tanh"),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(1),
        ]
    )
    model.compile("sgd", "mse")
    x = rng.normal(size=(32, 6)).astype("float32")
    y = rng.normal(size=(32, 1)).astype("float32")
    got = logged(model, x, y, tmp_path)
    d1, drop, d2, d3 = model.layers

    def forward(tape, x):
        h1 = watched(tape, d1(x))
        h2 = watched(tape, d2(drop(h1)))
        out = watched(tape, d3(h2))
        return out, {d1.path: h1, d2.path: h2, d3.path: out}

    grads = reference(model, x, y, forward)
    check_outputs(got, grads)
    assert signal_tags(got) == {
        tags.tag(prefix, layer.path)
        for prefix in (tags.ACT_GRAD_NORM, tags.ACT_GRAD_RMS, tags.ACTIVATION)
        for layer in (d1, d2, d3)
    }
    # Text summaries: TensorBoard's reader gives the bytes.
    assert got[tags.tag(tags.ACTIVATION, d1.path)] == b"tanh"
    assert got[tags.tag(tags.ACTIVATION, d2.path)] == b"relu"
    assert got[tags.tag(tags.ACTIVATION, d3.path)] == b"linear"
    # The layers' Python state is as before the trace.
    assert all("call" not in vars(layer) for layer in model.layers)


def test_functional_with_a_nested_sequential(tmp_path):
    keras.utils.set_random_seed(2)
    inner = keras.Sequential(
        [
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dense(4, activation="gelu"),
        ]
    )
    inputs = keras.Input((5,))
    first = keras.layers.Dense(8, activation="relu")
    head = keras.layers.Dense(1, activation="sigmoid")
    model = keras.Model(inputs, head(inner(first(inputs))))
    model.compile("adam", "binary_crossentropy")
    x = rng.normal(size=(32, 5)).astype("float32")
    y = rng.integers(0, 2, (32, 1)).astype("float32")
    got = logged(model, x, y, tmp_path)
    a, b = inner.layers

    def forward(tape, x):
        h1 = watched(tape, first(x))
        h2 = watched(tape, a(h1))
        h3 = watched(tape, b(h2))
        out = head(h3)
        # Keras' crossentropy reads a sigmoid output's logits, not the output.
        logits = out._keras_logits
        return out, {first.path: h1, a.path: h2, b.path: h3, head.path: logits}

    grads = reference(model, x, y, forward)
    assert len({first.path, a.path, b.path, head.path}) == 4
    assert a.path.startswith(inner.name + "/")
    check_outputs(got, grads)
    assert got[tags.tag(tags.ACTIVATION, b.path)] == b"gelu"
    assert got[tags.tag(tags.ACTIVATION, head.path)] == b"sigmoid"


def test_simple_rnn_with_a_masked_prepadded_embedding(tmp_path):
    keras.utils.set_random_seed(3)
    steps, vocab = 12, 30
    embedding = keras.layers.Embedding(vocab, 4, mask_zero=True)
    rnn = keras.layers.SimpleRNN(5)
    dense = keras.layers.Dense(1)
    inputs = keras.Input((steps,), dtype="int32")
    model = keras.Model(inputs, dense(rnn(embedding(inputs))))
    model.compile("sgd", "mse")
    x = rng.integers(1, vocab, (16, steps)).astype("int32")
    lengths = rng.integers(1, steps + 1, 16)
    lengths[:2] = (1, steps)  # one valid step; none padded
    for row, n in enumerate(lengths):
        x[row, : steps - n] = 0  # pre-padding
    y = rng.normal(size=(16, 1)).astype("float32")
    got = logged(model, x, y, tmp_path)

    def forward(tape, x):
        e = watched(tape, embedding(x))
        h = watched(tape, rnn(e, mask=embedding.compute_mask(x)))
        out = watched(tape, dense(h))
        return out, {embedding.path: e, rnn.path: h, dense.path: out}

    grads = reference(model, x, y, forward)
    check_outputs(got, grads)
    check_time(got, rnn.path, grads[embedding.path], x != 0)
    # Pre-padding: the first valid step is not step 0.
    assert np_time(grads[embedding.path], x != 0)[0] != pytest.approx(
        np_time(grads[embedding.path], np.ones_like(x, bool))[0], rel=1e-3
    )
    assert got[tags.tag(tags.ACTIVATION, rnn.path)] == b"tanh"
    assert tags.tag(tags.ACTIVATION, embedding.path) not in got


def test_bidirectional_lstm_on_the_model_input(tmp_path):
    """The RNN reads the model's own float input, which must be watched."""
    keras.utils.set_random_seed(4)
    bidirectional = keras.layers.Bidirectional(keras.layers.LSTM(4))
    dense = keras.layers.Dense(1)
    inputs = keras.Input((9, 3))
    model = keras.Model(inputs, dense(bidirectional(inputs)))
    model.compile("sgd", "mse")
    x = rng.normal(size=(16, 9, 3)).astype("float32")
    y = rng.normal(size=(16, 1)).astype("float32")
    got = logged(model, x, y, tmp_path)

    def forward(tape, x):
        x = watched(tape, x)
        h = watched(tape, bidirectional(x))
        out = watched(tape, dense(h))
        return out, {"input": x, bidirectional.path: h, dense.path: out}

    grads = reference(model, x, y, forward)
    check_time(got, bidirectional.path, grads.pop("input"), np.ones((16, 9), bool))
    check_outputs(got, grads)
    # Measured whole: nothing of its inner LSTMs or cells.
    assert {t.split("/", 1)[1] for t in signal_tags(got)} == {
        bidirectional.path,
        dense.path,
        *(f"{bidirectional.path}/{q}" for q in tags.TIME_QUANTILES),
    }
    assert got[tags.tag(tags.ACTIVATION, bidirectional.path)] == b"tanh"


class Subclassed(keras.Model):
    """A shared layer, raw TF ops, and an LSTM that returns its states."""

    def __init__(self):
        super().__init__()
        self.shared = keras.layers.Dense(3, activation="relu")
        self.lstm = keras.layers.LSTM(4, return_state=True)
        self.out = keras.layers.Dense(1)

    def call(self, x):
        h = self.shared(x)  # [batch, time, 3]; measured here, its first call
        h = self.shared(h) * 2.0  # raw op: not measured
        sequence, state, _ = self.lstm(h)
        return self.out(sequence + state)


def test_subclassed_model(tmp_path):
    keras.utils.set_random_seed(5)
    model = Subclassed()
    model.compile("sgd", "mse")
    x = rng.normal(size=(8, 6, 3)).astype("float32")
    y = rng.normal(size=(8, 1)).astype("float32")
    # Traced twice, with or without the capture: fit has not built this
    # model when GradWatch traces, the trace builds it, and TensorFlow traces
    # a function again when its first trace made variables.
    got = logged(model, x, y, tmp_path, traces=2)

    def forward(tape, x):
        h1 = watched(tape, model.shared(x))
        h2 = watched(tape, model.shared(h1) * 2.0)
        sequence, state, _ = model.lstm(h2)
        watched(tape, sequence)
        out = watched(tape, model.out(sequence + state))
        return out, {
            model.shared.path: h1,
            "lstm_input": h2,
            model.lstm.path: sequence,
            model.out.path: out,
        }

    grads = reference(model, x, y, forward)
    check_time(got, model.lstm.path, grads.pop("lstm_input"), np.ones((8, 6), bool))
    check_outputs(got, grads)
    assert got[tags.tag(tags.ACTIVATION, model.shared.path)] == b"relu"


def test_mixed_float16_signal_is_unscaled(tmp_path):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(6)
        model = keras.Sequential(
            [
                keras.Input((4,)),
                keras.layers.Dense(8, activation="tanh"),
                keras.layers.Dense(1, dtype="float32"),
            ]
        )
        model.compile(keras.optimizers.SGD(1e-3), "mse")
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        x = rng.normal(size=(32, 4)).astype("float32")
        y = rng.normal(size=(32, 1)).astype("float32") * 1e-3
        got = logged(model, x, y, tmp_path)
        weights = model.get_weights()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    exact = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, "tanh"), keras.layers.Dense(1)]
    )
    exact.compile("sgd", "mse")
    exact.set_weights(weights)
    d1, d2 = exact.layers

    def forward(tape, x):
        h = watched(tape, d1(x))
        out = watched(tape, d2(h))
        return out, {model.layers[0].path: h, model.layers[1].path: out}

    grads = reference(exact, x, y, forward)
    for path, g in grads.items():
        norm = np.linalg.norm(g)
        # float16 forward pass: about 3 significant digits.
        got_norm = float(got[tags.tag(tags.ACT_GRAD_NORM, path)])
        assert got_norm == pytest.approx(norm, rel=1e-2), path
        assert got[tags.tag(tags.ACT_GRAD_NORM, path)].dtype == np.float32


def test_weight_nonfinite_counts_nan_and_inf_weights(tmp_path):
    """With oneDNN the fused Dense+Relu maps NaN to 0: the gradients may all
    be zero, the weight count is what shows it."""
    keras.utils.set_random_seed(7)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(1),
        ]
    )
    model.compile("sgd", "mse")
    kernel = model.layers[0].kernel
    value = kernel.numpy()
    value[0, :3] = np.nan
    value[1, 0] = np.inf
    kernel.assign(value)
    x = rng.normal(size=(16, 4)).astype("float32")
    y = rng.normal(size=(16, 1)).astype("float32")
    got = logged(model, x, y, tmp_path, fit=False)
    counts = {
        w.path: float(got[tags.tag(tags.WEIGHT_NONFINITE, w.path)])
        for w in model.trainable_weights
    }
    assert counts == {
        w.path: 4.0 if w is kernel else 0.0 for w in model.trainable_weights
    }


def test_healthy_weights_have_no_nonfinite(tmp_path):
    keras.utils.set_random_seed(8)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    x = rng.normal(size=(8, 3)).astype("float32")
    got = logged(model, x, x[:, :2], tmp_path)
    for w in model.trainable_weights:
        assert float(got[tags.tag(tags.WEIGHT_NONFINITE, w.path)]) == 0.0


def test_capture_restores_the_layers_when_tracing_fails():
    keras.utils.set_random_seed(9)
    dense = keras.layers.Dense(2)
    dense.build((None, 3))
    own = dense.call  # a bound method set on the instance: kept as it is
    object.__setattr__(dense, "call", own)
    other = keras.layers.Dense(2)
    other.build((None, 3))
    capture = _signal.Capture([dense, other])
    seen = []

    def failing_trace():
        with capture.installed(tf.GradientTape()):
            seen.append(vars(dense)["call"])
            raise RuntimeError("tracing failed")

    with pytest.raises(RuntimeError, match="tracing failed"):
        failing_trace()
    assert seen[0] is not own
    assert vars(dense)["call"] is own
    assert "call" not in vars(other)


def test_measured_layers_walk_models_not_layers():
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4)])
    inputs = keras.Input((4,))
    lstm = keras.layers.LSTM(2)
    frozen = keras.layers.Dense(4)
    frozen.trainable = False
    h = inner(frozen(inner(inputs)))  # nested twice: its layer once
    h = keras.layers.Reshape((2, 2))(h)
    attention = keras.layers.MultiHeadAttention(2, 3)
    h = attention(h, h)
    model = keras.Model(inputs, lstm(h))
    assert _signal.measured_layers(model) == [inner.layers[0], attention, lstm]
    assert _signal.activation_name(attention) is None
    assert _signal.activation_name(lstm) == "tanh"


def test_events_reader_returns_the_activation_texts(tmp_path):
    keras.utils.set_random_seed(10)
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4, "relu"), keras.layers.Dense(1)]
    )
    model.compile("sgd", "mse")
    x = rng.normal(size=(8, 3)).astype("float32")
    y = rng.normal(size=(8, 1)).astype("float32")
    for _ in range(2):  # a second fit writes them again, at its first epoch
        model.fit(
            x,
            y,
            epochs=2,
            verbose=0,
            callbacks=[GradWatch(tmp_path, held_out=(x, y), freq=1)],
        )
    run_dir = tmp_path / tags.DEFAULT_RUN
    files = sorted(str(p) for p in run_dir.iterdir())
    run = _events.read_run("heldout", files, lambda tag: True)
    assert run.texts == {
        tags.tag(tags.ACTIVATION, model.layers[0].path): "relu",
        tags.tag(tags.ACTIVATION, model.layers[1].path): "linear",
    }
    single = _events.read_file(files[0], lambda tag: True)
    assert {t: sorted(s) for t, s in single.texts.items()} == {
        t: [0] for t in run.texts
    }


@pytest.mark.parametrize(
    ("activation", "gain", "vanishing"),
    [("tanh", 0.3, True), ("linear", 1.2, False)],
    ids=["vanishing", "exploding"],
)
def test_time_ratio_tells_vanishing_from_exploding(
    activation, gain, vanishing, tmp_path
):
    """Over 60 steps the signal shrinks (or grows) about gain**60 going back
    in time: far below (above) 1, whatever the weights' gradients say."""
    keras.utils.set_random_seed(11)
    rnn = keras.layers.SimpleRNN(
        8,
        activation=activation,
        recurrent_initializer=keras.initializers.Orthogonal(gain),
    )
    model = keras.Sequential([keras.Input((60, 2)), rnn, keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.0), "mse")
    x = rng.normal(size=(16, 60, 2)).astype("float32") * 0.1
    y = rng.normal(size=(16, 1)).astype("float32")
    got = logged(model, x, y, tmp_path)
    ratio = float(got[tags.tag(tags.TIME_GRAD_RATIO, rnn.path)])
    profile = [
        float(got[tags.tag(tags.TIME_GRAD_NORM, f"{rnn.path}/{q}")])
        for q in tags.TIME_QUANTILES
    ]
    if vanishing:
        assert ratio < 1e-6
        assert profile == sorted(profile)  # grows toward the last step
    else:
        assert ratio > 1e2
        assert profile == sorted(profile, reverse=True)
