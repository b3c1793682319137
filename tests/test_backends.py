"""GradWatch and WeightNorms on the backend this run uses (KERAS_BACKEND).

Every number is checked against a reference computed without the package:
hand-written NumPy backpropagation (float64) for the gradients' statistics,
and the backend's own autodiff (`jax.grad`, `torch.autograd`,
`tf.GradientTape`) for the gradients the histograms bucket. Files are read
back with TensorBoard's own reader. CI runs this file once per backend.
"""

import logging
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from helpers import (
    get_json,
    load_script,
    np_histogram,
    np_stats,
    np_time,
    np_weight_stats,
    read_run,
    tensorboard_server,
)
from keras_gradwatch import GradWatch, WeightNorms, _report, tags

BACKEND = keras.backend.backend()
ROOT = Path(__file__).resolve().parents[1]

# Float32 forward and backward passes over 64 samples and 16 units, against
# float64 NumPy: each gradient element carries a few float32 roundings
# (~1e-7 relative each); sums of 64-1024 such terms stay within ~1e-6 of
# the reference unless they cancel, which norms and absolute sums do not.
RTOL = 1e-5


def _wide() -> type:
    """The dtype the backend's statistics compute in (see `_stats_ops`)."""
    if BACKEND == "jax":
        import jax

        return np.float64 if jax.config.jax_enable_x64 else np.float32
    return np.float64


class Unused(keras.layers.Layer):
    """A layer with a weight its output does not depend on."""

    def build(self, shape):
        self.scale = self.add_weight(shape=(), initializer="ones", name="scale")
        self.unused = self.add_weight(shape=(2,), initializer="ones", name="unused")

    def call(self, x):
        return x * self.scale


def _model(dead: int = 4) -> keras.Model:
    """Dense(16, relu) -> Dense(3) -> Unused, MSE; `dead` hidden units have
    a bias so negative that no input reaches them (exactly zero gradient)."""
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(16, activation="relu", name="hidden"),
            keras.layers.Dense(3, name="out"),
            Unused(name="unused"),
        ],
        name="mlp",
    )
    rng = np.random.default_rng(3)
    w1 = rng.normal(size=(5, 16)).astype("float32")
    b1 = rng.normal(size=16).astype("float32") * 0.1
    b1[:dead] = -1e3
    model.layers[0].set_weights([w1, b1])
    model.layers[1].set_weights(
        [rng.normal(size=(16, 3)).astype("float32"), np.zeros(3, "float32")]
    )
    return model


def _np_gradients(model, x, y) -> dict[str, np.ndarray]:
    """MSE's gradients by hand: L = mean over batch and outputs of (ŷ - y)²;
    under ``layer:<path>``, those at the measured layers' outputs."""
    w1, b1, w2, b2 = (np.asarray(v, np.float64) for v in model.get_weights()[:4])
    scale = float(model.get_weights()[4])
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    z = x @ w1 + b1
    h = np.maximum(z, 0.0)
    out = h @ w2 + b2
    d_pred = 2.0 * (scale * out - y) / y.size
    d_out = d_pred * scale
    dh = (d_out @ w2.T) * (z > 0)
    return {
        "mlp/hidden/kernel": x.T @ dh,
        "mlp/hidden/bias": dh.sum(0),
        "mlp/out/kernel": h.T @ d_out,
        "mlp/out/bias": d_out.sum(0),
        "mlp/unused/scale": np.array(np.sum(d_pred * out)),
        "layer:mlp/hidden": d_out @ w2.T,
        "layer:mlp/out": d_out,
        "layer:mlp/unused": d_pred,
    }


def _autodiff_gradients(model, x, y, weight=1.0) -> dict[str, np.ndarray]:
    """The same loss's gradients (times `weight`), by the backend's own
    autodiff."""
    weights = model.trainable_weights
    x, y = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)

    def loss(pred):
        return weight * keras.ops.mean(
            keras.ops.square(keras.ops.cast(pred, "float32") - y)
        )

    if BACKEND == "jax":
        import jax

        def of(values):
            pred, _ = model.stateless_call(values, model.non_trainable_variables, x)
            return loss(pred)

        grads = jax.jit(jax.grad(of))([w.value for w in weights])
    elif BACKEND == "torch":
        import torch

        params = [w.value for w in weights]
        grads = torch.autograd.grad(loss(model(x)), params, allow_unused=True)
    else:
        import tensorflow as tf

        @tf.function
        def of():
            with tf.GradientTape() as tape:
                value = loss(model(x))
            return tape.gradient(value, weights)

        grads = of()
    return {
        w.path: np.asarray(keras.ops.convert_to_numpy(keras.ops.stop_gradient(g)))
        for w, g in zip(weights, grads, strict=True)
        if g is not None
    }


def _near_edges(values: np.ndarray, rows: np.ndarray) -> int:
    """How many `values` lie within float32 rounding (1e-6 relative to the
    range) of an inner bucket edge: the most that may change buckets when
    two programs round the same gradient differently."""
    edges = rows[1:, 0]
    span = rows[-1, 1] - rows[0, 0]
    return int(np.sum(np.min(np.abs(values[:, None] - edges[None]), 1) <= 1e-6 * span))


@pytest.mark.numeric
def test_gradients_match_numpy_backprop(tmp_path, caplog):
    model = _model()
    model.compile(keras.optimizers.SGD(0.0), "mse")  # weights stay as set
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype("float32")
    y = rng.normal(size=(64, 3)).astype("float32")
    with caplog.at_level(logging.WARNING, "keras_gradwatch"):
        history = model.fit(
            x,
            y,
            epochs=2,
            verbose=0,
            callbacks=[GradWatch(tmp_path, held_out=(x, y), diagnose=False)],
        )
    logged = read_run(tmp_path / tags.DEFAULT_RUN)
    expected = _np_gradients(model, x, y)
    for name in [k for k in expected if k.startswith("layer:")]:
        g, path = expected.pop(name), name.removeprefix("layer:")
        norm = np.linalg.norm(g)
        got = logged[tags.tag(tags.ACT_GRAD_NORM, path)][1]
        np.testing.assert_allclose(float(got), norm, rtol=RTOL)
        got = logged[tags.tag(tags.ACT_GRAD_RMS, path)][1]
        np.testing.assert_allclose(float(got), norm / np.sqrt(g.size), rtol=RTOL)
    autodiff = _autodiff_gradients(model, x, y)
    weights = {w.path: w.numpy() for w in model.trainable_weights}
    for path, g in expected.items():
        want = np_stats(g, weights[path])
        for prefix, value in want.items():
            got = logged[tags.tag(prefix, path)]
            assert sorted(got) == [0, 1]
            np.testing.assert_allclose(float(got[1]), value, rtol=RTOL, atol=1e-12)
        rows = logged[tags.tag(tags.GRAD_HISTOGRAM, path)][1]
        reference = np_histogram(autodiff[path], dtype=_wide())
        np.testing.assert_allclose(rows[:, :2], reference[:, :2], rtol=RTOL)
        assert rows[:, 2].sum() == g.size
        moved = np.abs(rows[:, 2] - reference[:, 2]).sum() / 2
        assert moved <= _near_edges(autodiff[path].ravel(), reference), path
    # 4 of 16 hidden units get no gradient at all: a quarter dead.
    assert float(logged["grad_dead_units/mlp/hidden/kernel"][0]) == 0.25
    global_norm = np.sqrt(sum(np.sum(g**2) for g in expected.values()))
    np.testing.assert_allclose(history.history["grad_norm"][-1], global_norm, RTOL)
    # The weight the loss does not read is skipped, and said so, everywhere.
    assert not any(tag.endswith("mlp/unused/unused") for tag in logged)
    assert any("mlp/unused/unused" in r.getMessage() for r in caplog.records)


@pytest.mark.numeric
def test_heldout_loss_is_the_compiled_loss(tmp_path):
    model = _model(dead=0)
    model.compile(keras.optimizers.SGD(0.0), "mse")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 5)).astype("float32")
    y = rng.normal(size=(40, 3)).astype("float32")
    model.fit(x, y, epochs=1, verbose=0, callbacks=[GradWatch(tmp_path, (x, y))])
    logged = read_run(tmp_path / tags.DEFAULT_RUN)
    expected = np.mean((np.asarray(model.predict(x, verbose=0), np.float64) - y) ** 2)
    np.testing.assert_allclose(float(logged[tags.HELDOUT_LOSS][0]), expected, RTOL)


@pytest.fixture
def mixed_float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


# 2**-24: every float16 gradient underflows to 0 unless the loss is scaled
# (2**-24 x 2 / 64 rows is below float16's least subnormal, 6e-8). 1e3: the
# loss times the scale (2**15 at the start) overflows float16's 65504.
@pytest.mark.numeric
@pytest.mark.parametrize("loss_weight", [2.0**-24, 1e3], ids=["underflow", "overflow"])
def test_mixed_float16_gradients_are_unscaled_float32(
    tmp_path, mixed_float16, loss_weight
):
    """Under mixed_float16 the pass scales the loss as training does (the
    LossScaleOptimizer's scale) and divides back: the statistics are those
    of the float32 gradient, where the unscaled float16 ones underflow; where
    the scaled ones overflow, those of the unscaled loss, finite."""
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="tanh", name="hidden"),
            keras.layers.Dense(1, name="out"),
        ],
        name="net",
    )
    model.compile(keras.optimizers.SGD(0.0), "mse", loss_weights=[loss_weight])
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype("float32")
    y = rng.normal(size=(64, 1)).astype("float32")
    model.fit(x, y, epochs=1, verbose=0, callbacks=[GradWatch(tmp_path, (x, y))])

    # Float64 backpropagation of the float32 network: L = w·mean((ŷ - y)²).
    w1, b1, w2, b2 = (np.asarray(v, np.float64) for v in model.get_weights())
    h = np.tanh(x @ w1 + b1)
    d_out = 2.0 * loss_weight * (h @ w2 + b2 - y) / y.size
    dh = (d_out @ w2.T) * (1.0 - h**2)
    reference = {
        "net/hidden/kernel": (x.T @ dh, w1),
        "net/hidden/bias": (dh.sum(0), b1),
        "net/out/kernel": (h.T @ d_out, w2),
        "net/out/bias": (d_out.sum(0), b2),
    }
    # The premise, by the backend's own autodiff in float16: unscaled, every
    # gradient is 0; scaled, some overflow.
    scale = float(keras.ops.convert_to_numpy(model.optimizer.scale_loss(1.0)))
    if loss_weight < 1:
        unscaled = _autodiff_gradients(model, x, y, loss_weight)
        assert not any(np.any(g) for g in unscaled.values())
    else:
        scaled = _autodiff_gradients(model, x, y, loss_weight * scale)
        assert not all(np.isfinite(g).all() for g in scaled.values())
    logged = read_run(tmp_path / tags.DEFAULT_RUN)
    for path, (g, w) in reference.items():
        expected = np_stats(g, w)
        # float16 forward passes: each value within a few float16 roundings
        # (5e-4 relative each) of the float32 network's.
        for prefix in ("grad_norm", "grad_mean_abs", "grad_max_abs", "grad_to_weight"):
            got = float(logged[f"{prefix}/{path}"][0])
            assert got == pytest.approx(expected[prefix], rel=1e-2), (prefix, path)
        assert float(logged[f"grad_dead_units/{path}"][0]) == 0.0
        assert float(logged[f"grad_nonfinite/{path}"][0]) == 0.0
        buckets = logged[f"grad/{path}"][0]
        assert buckets[0, 0] == pytest.approx(g.min(), rel=1e-2, abs=1e-12)
        assert buckets[-1, 1] == pytest.approx(g.max(), rel=1e-2, abs=1e-12)
        assert buckets[:, 2].sum() == g.size


@pytest.mark.numeric
def test_weight_norms_match_numpy(tmp_path):
    model = _model(dead=0)
    model.compile(keras.optimizers.SGD(0.002), "mse")
    rng = np.random.default_rng(2)
    x = rng.normal(size=(64, 5)).astype("float32")
    y = rng.normal(size=(64, 3)).astype("float32")
    seen: dict[int, dict[str, np.ndarray]] = {}

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 0:
                seen[-1] = {w.path: w.numpy() for w in self.model.trainable_weights}

        def on_epoch_end(self, epoch, logs=None):
            seen[epoch] = {w.path: w.numpy() for w in self.model.trainable_weights}

    model.fit(
        x,
        y,
        epochs=3,
        batch_size=16,
        verbose=0,
        callbacks=[Record(), WeightNorms(tmp_path, histograms=True)],
    )
    logged = read_run(tmp_path / tags.WEIGHTS_RUN)
    for epoch in range(3):
        for path, w in seen[epoch].items():
            want = np_weight_stats(w, seen[epoch - 1][path])
            for prefix, value in want.items():
                got = float(logged[tags.tag(prefix, path)][epoch])
                np.testing.assert_allclose(got, value, rtol=RTOL, atol=1e-12)
            rows = logged[tags.tag(tags.WEIGHT_HISTOGRAM, path)][epoch]
            reference = np_histogram(w, dtype=_wide())
            np.testing.assert_allclose(rows[:, :2], reference[:, :2], rtol=RTOL)
            np.testing.assert_array_equal(rows[:, 2], reference[:, 2])
    assert seen[2]["mlp/hidden/kernel"].std() > 0  # it trained


def test_later_fits_reuse_the_pass(tmp_path):
    model = _model(dead=0)
    model.compile("sgd", "mse")
    x = np.ones((8, 5), "float32")
    y = np.zeros((8, 3), "float32")
    watch = GradWatch(tmp_path, held_out=(x, y))
    model.fit(x, y, epochs=2, verbose=0, callbacks=[watch])
    probe = watch._probe
    model.fit(x, y, epochs=2, verbose=0, callbacks=[watch])
    assert watch._probe is probe
    assert len(list((tmp_path / tags.DEFAULT_RUN).iterdir())) == 2


@pytest.mark.skipif(
    BACKEND == "tensorflow", reason="tests/test_story.py runs it on TensorFlow"
)
def test_main_example_tells_its_story_and_tensorboard_serves_it(tmp_path):
    """The README's example, GradWatch alone, on this backend: the live
    diagnosis and the report tell TensorFlow's story (vanishing gradients
    for the tanh net, to the end; nothing for the ReLU net: the example
    draws its weights with NumPy), and TensorBoard's server serves the
    logs."""
    env = {**os.environ, "KERAS_BACKEND": BACKEND}
    run = subprocess.run(
        [sys.executable, "examples/two_circles.py", "--gradwatch-only"]
        + ["--logdir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    live = [line for line in run.stderr.splitlines() if "GradWatch diagnosis" in line]
    assert live
    assert all("tanh_uniform" in line and "vanish" in line for line in live)
    report = subprocess.run(
        [sys.executable, "-m", "keras_gradwatch", "report", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr
    assert "vanishing (epochs" in report.stdout
    # The story tests/test_story.py checks on TensorFlow, finding by finding.
    told = {
        run.name: [(f.kind, f.current) for f in run.findings]
        for run in _report.load(tmp_path).runs
    }
    assert told == {
        "tanh_uniform/heldout": [("vanishing", True)],
        "relu_he/heldout": [],
    }
    runs = ("tanh_uniform/heldout", "relu_he/heldout")
    with tensorboard_server(tmp_path, *runs) as base:
        listed = get_json(base, "/data/plugin/histograms/tags")
        assert set(listed) == set(runs)
        series = get_json(
            base,
            "/data/plugin/histograms/histograms",
            run="relu_he/heldout",
            tag="grad/mlp/hidden_1/kernel",
        )
        # The server samples long series (50 of 100 histograms by default).
        steps = [step for _, step, _ in series]
        assert (steps[0], steps[-1]) == (0, 99)
        assert set(steps) <= set(range(100))
        assert all(sum(c for _, _, c in rows) == 2 * 5 for _, _, rows in series)
    assert sorted(read_run(tmp_path / runs[0])["grad/mlp/hidden_1/kernel"]) == list(
        range(100)
    )


@pytest.mark.numeric
def test_every_n_steps_sees_the_weights_of_that_step(tmp_path):
    """Passes after the optimizer steps 3, 6 and 9 of two 5-step epochs,
    each on the weights as that step left them (read back by a callback
    before GradWatch; on JAX it syncs the trainer's state, as GradWatch
    does), checked against NumPy backpropagation."""
    model = _model(dead=0)
    model.compile(keras.optimizers.SGD(0.01), "mse")
    rng = np.random.default_rng(8)
    x = rng.normal(size=(40, 5)).astype("float32")
    y = rng.normal(size=(40, 3)).astype("float32")
    seen: dict[int, list[np.ndarray]] = {}

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if BACKEND == "jax":
                self.model.jax_state_sync()
            step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
            seen[step] = self.model.get_weights()

    watch = GradWatch(tmp_path, held_out=(x, y), every_n_steps=3, diagnose=False)
    model.fit(
        x,
        y,
        epochs=2,
        batch_size=8,
        shuffle=False,
        verbose=0,
        callbacks=[Record(), watch],
    )
    logged = read_run(tmp_path / tags.DEFAULT_RUN)
    assert sorted(logged[tags.EPOCH_TAG]) == [3, 6, 9]
    assert [float(logged[tags.EPOCH_TAG][s]) for s in (3, 6, 9)] == [0.0, 1.0, 1.0]
    for step in (3, 6, 9):
        model.set_weights(seen[step])
        expected = _np_gradients(model, x, y)["mlp/hidden/kernel"]
        got = float(logged["grad_norm/mlp/hidden/kernel"][step])
        np.testing.assert_allclose(got, np.linalg.norm(expected), rtol=RTOL)
    assert not np.allclose(seen[3][0], seen[9][0])  # it trained


def test_batch_hook_only_with_every_n_steps():
    """Keras dispatches batch hooks asynchronously (JAX) unless a callback
    defines one: GradWatch defines it only for `every_n_steps`."""
    x = np.ones((4, 5), "float32")
    held_out = (x, x[:, :3])
    per_epoch = keras.callbacks.CallbackList([GradWatch("unused", held_out)])
    per_step = keras.callbacks.CallbackList(
        [GradWatch("unused", held_out, every_n_steps=2)]
    )
    if BACKEND == "jax":
        assert per_epoch._async_train
    assert not per_step._async_train


DATA_PARALLEL = """
import os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
import jax, jax.numpy as jnp, keras, numpy as np
sys.path.insert(0, "tests")
from helpers import read_run
from keras_gradwatch import GradWatch, WeightNorms
devices = jax.devices()
assert len(devices) == 2, devices
keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
rng = np.random.default_rng(0)
x = rng.normal(size=(256, 8)).astype("float32")
y = rng.normal(size=(256, 2)).astype("float32")
model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                          keras.layers.Dense(2)], name="dp")
model.compile(keras.optimizers.SGD(0.01), "mse")
log_dir = sys.argv[1]
model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[
    GradWatch(log_dir, held_out=(x[:64], y[:64]), diagnose=False),
    WeightNorms(log_dir)])
assert len(model.trainable_variables[0].value.sharding.device_set) == 2
# The reference: jax.grad of the same loss on the first device alone.
w = [jax.device_put(v.numpy(), devices[0]) for v in model.trainable_variables]
def loss(w):
    h = jnp.maximum(x[:64] @ w[0] + w[1], 0.0)
    return jnp.mean((h @ w[2] + w[3] - y[:64]) ** 2)
reference = jax.grad(loss)(w)
logged = read_run(os.path.join(log_dir, "heldout"))
for v, g in zip(model.trainable_variables, reference):
    want = np.linalg.norm(np.asarray(g, np.float64))
    got = float(logged["grad_norm/" + v.path][1])
    assert abs(got - want) <= 1e-5 * want, (v.path, got, want)
weights = read_run(os.path.join(log_dir, "weights"))
for v in model.trainable_variables:
    want = np.abs(np.asarray(v.numpy(), np.float64)).sum()
    got = float(weights["weight_l1/" + v.path][1])
    assert abs(got - want) <= 1e-5 * want, (v.path, got, want)
print("ok")
"""


@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution on JAX")
def test_jax_data_parallel_on_two_devices(tmp_path):
    """`keras.distribution.DataParallel` over 2 virtual CPU devices: the
    held-out gradients are the whole batch's, as `jax.grad` computes them on
    one device, and one process writes them once."""
    run = subprocess.run(
        [sys.executable, "-c", DATA_PARALLEL, str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "KERAS_BACKEND": "jax"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().endswith("ok")
    for name in ("heldout", "weights"):
        assert len(list((tmp_path / name).iterdir())) == 1


@pytest.mark.numeric
def test_signal_at_a_sigmoid_output_is_taken_at_its_logits(tmp_path):
    """Under binary cross-entropy TensorFlow's loss reads a sigmoid output
    through its logits; every backend reports the gradient there: (σ(z) -
    y) / N, in NumPy."""
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4, activation="tanh", name="hidden"),
            keras.layers.Dense(1, activation="sigmoid", name="output"),
        ],
        name="clf",
    )
    model.compile(keras.optimizers.SGD(0.0), "binary_crossentropy")
    rng = np.random.default_rng(5)
    x = rng.normal(size=(32, 3)).astype("float32")
    y = (rng.random((32, 1)) > 0.5).astype("float32")
    model.fit(x, y, epochs=1, verbose=0, callbacks=[GradWatch(tmp_path, (x, y))])
    logged = read_run(tmp_path / tags.DEFAULT_RUN)
    w1, b1, w2, b2 = (np.asarray(w, np.float64) for w in model.get_weights())
    h = np.tanh(x @ w1 + b1)
    d_logits = (1 / (1 + np.exp(-(h @ w2 + b2))) - y) / len(x)
    expected = {"clf/output": d_logits, "clf/hidden": d_logits @ w2.T}
    for path, g in expected.items():
        got = float(logged[tags.tag(tags.ACT_GRAD_NORM, path)][0])
        np.testing.assert_allclose(got, np.linalg.norm(g), rtol=RTOL)
    assert logged[tags.tag(tags.ACTIVATION, "clf/output")][0] == b"sigmoid"


@pytest.mark.numeric
def test_signal_through_time_on_the_model_input(tmp_path):
    """A SimpleRNN on the model's input: the through-time scalars of the
    gradient at its input sequence, which is the gradient with respect to
    the model's input, from the backend's own autodiff."""
    model = keras.Sequential(
        [
            keras.Input((7, 2)),
            keras.layers.SimpleRNN(5, name="rnn"),
            keras.layers.Dense(1, name="head"),
        ],
        name="seq",
    )
    model.compile(keras.optimizers.SGD(0.0), "mse")
    rng = np.random.default_rng(6)
    x = rng.normal(size=(16, 7, 2)).astype("float32")
    y = rng.normal(size=(16, 1)).astype("float32")
    model.fit(x, y, epochs=1, verbose=0, callbacks=[GradWatch(tmp_path, (x, y))])
    logged = read_run(tmp_path / tags.DEFAULT_RUN)
    g = _input_gradient(model, x, y)
    ratio, profile = np_time(g, np.ones(g.shape[:2], bool))
    got = float(logged[tags.tag(tags.TIME_GRAD_RATIO, "seq/rnn")][0])
    np.testing.assert_allclose(got, ratio, rtol=RTOL)
    for q, value in zip(tags.TIME_QUANTILES, profile, strict=True):
        got = float(logged[tags.tag(tags.TIME_GRAD_NORM, f"seq/rnn/{q}")][0])
        np.testing.assert_allclose(got, value, rtol=RTOL)


def _input_gradient(model, x, y) -> np.ndarray:
    """∂L/∂x of the MSE, by the backend's autodiff (float64 on the host)."""
    target = keras.ops.convert_to_tensor(y)

    def loss(inputs):
        return keras.ops.mean(keras.ops.square(model(inputs) - target))

    if BACKEND == "jax":
        import jax

        g = jax.jit(jax.grad(loss))(x)
    elif BACKEND == "torch":
        import torch

        inputs = torch.tensor(x, requires_grad=True)
        (g,) = torch.autograd.grad(loss(inputs), [inputs])
    else:
        import tensorflow as tf

        inputs = tf.convert_to_tensor(x)

        @tf.function
        def of(inputs):
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                value = loss(inputs)
            return tape.gradient(value, inputs)

        g = of(inputs)
    return np.asarray(
        keras.ops.convert_to_numpy(keras.ops.stop_gradient(g)), np.float64
    )


@pytest.mark.numeric
def test_training_mode_uses_batch_statistics_and_leaves_them(tmp_path):
    """`training=True`: BatchNormalization normalizes with the held-out
    batch's own statistics (the loss NumPy computes that way), and the
    moving statistics are left as they were."""
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4, name="dense"),
            keras.layers.BatchNormalization(momentum=0.5, name="bn"),
            keras.layers.Dense(1, name="head"),
        ],
        name="bnnet",
    )
    model.compile(keras.optimizers.SGD(0.0), "mse")
    rng = np.random.default_rng(7)
    x = rng.normal(size=(32, 3)).astype("float32")
    y = rng.normal(size=(32, 1)).astype("float32")
    watch = GradWatch(tmp_path, held_out=(x, y), training=True)
    watch.set_model(model)
    watch.on_train_begin()
    bn = model.get_layer("bn")
    moving = [v.numpy().copy() for v in bn.non_trainable_weights]
    watch.on_epoch_end(0, {"loss": 1.0})
    watch.on_train_end()
    for before, variable in zip(moving, bn.non_trainable_weights, strict=True):
        np.testing.assert_array_equal(variable.numpy(), before)
    w1, b1, gamma, beta, _, _, w2, b2 = (
        np.asarray(w, np.float64) for w in model.get_weights()
    )
    z = x @ w1 + b1
    normal = (z - z.mean(0)) / np.sqrt(z.var(0) + bn.epsilon) * gamma + beta
    expected = np.mean((normal @ w2 + b2 - y) ** 2)
    logged = read_run(tmp_path / tags.DEFAULT_RUN)
    np.testing.assert_allclose(float(logged[tags.HELDOUT_LOSS][0]), expected, RTOL)


def test_histogram_counts_stay_exact_beyond_float32():
    """A bucket holding more than 2**24 values (where a float32 count stops
    growing) still counts each one."""
    from keras_gradwatch import _stats_ops

    values = np.zeros(2**24 + 4, "float32")  # 2**24 + 3 zeros: not a float32
    values[0] = 1.0
    rows = _stats_ops.host_rows(
        *_stats_ops.histogram(keras.ops.convert_to_tensor(values), 30, "float32")
    )
    assert rows[0, 2] == 2**24 + 3
    assert rows[-1, 2] == 1


@pytest.mark.skipif(
    _wide() is np.float32,
    reason="float32 buckets (JAX without x64): XLA may round a value next to "
    "an edge otherwise than NumPy; the other histogram tests bound that",
)
def test_histogram_of_values_on_bucket_edges_matches_numpy():
    """Values on and next to every bucket edge fall where TensorBoard's
    float64 arithmetic puts them, bit for bit."""
    from keras_gradwatch import _stats_ops

    edges = np.arange(31, dtype=np.float32) / np.float32(30)
    v = np.concatenate(
        [edges, np.nextafter(edges, np.float32(2)), np.nextafter(edges, np.float32(-1))]
    )
    v = v[(v >= 0) & (v <= 1)]
    rows = _stats_ops.host_rows(
        *_stats_ops.histogram(
            keras.ops.convert_to_tensor(v), 30, _stats_ops.wide_dtype()
        )
    )
    np.testing.assert_array_equal(rows, np_histogram(v, 30, dtype=_wide()))


@pytest.mark.parametrize(
    "values",
    [
        [-0.5, -0.5, -0.5],  # one distinct value, below the placeholder range
        [np.nan, np.inf, -np.inf],  # no finite value
        [3.0, np.nan, -1.0, np.inf, 0.25],  # the finite ones only
        [],
    ],
    ids=["point", "none-finite", "mixed", "empty"],
)
def test_histogram_edge_cases_match_numpy(values):
    from keras_gradwatch import _stats_ops

    v = np.array(values, "float32")
    rows = _stats_ops.host_rows(
        *_stats_ops.histogram(keras.ops.convert_to_tensor(v), 7, "float32")
    )
    np.testing.assert_array_equal(rows, np_histogram(v, 7, dtype=np.float32))


@pytest.mark.parametrize(
    "special",
    [None, np.nan, np.inf, 1e30],
    ids=["finite", "nan", "inf", "float32-overflowing-squares"],
)
def test_statistics_of_hand_made_gradients_match_numpy(special):
    """`_stats_ops.batch_stats` on given gradients, against `np_stats` and
    `np_histogram`: the float32 path where every sum is finite, the exact
    one (NumPy's rules) where a NaN, an Inf or squares beyond float32
    appear. Same-shaped tensors are measured together (`_stats_ops.SMALL`),
    interleaved here with others and with one too large to group."""
    from keras_gradwatch import _stats_ops

    rng = np.random.default_rng(9)
    shapes = [(6, 4), (3,), (6, 4), (6, 4), (_stats_ops.SMALL + 3,), (3,)]
    grads = [rng.normal(size=shape).astype("float32") for shape in shapes]
    grads[1][:] = 0.0  # one distinct value
    weights = [rng.normal(size=shape).astype("float32") for shape in shapes]
    if special is not None:
        grads[2][2, 1] = special  # inside a group
        weights[5][0] = special
    stats, histograms = _stats_ops.batch_stats(
        [keras.ops.convert_to_tensor(g) for g in grads],
        [keras.ops.convert_to_tensor(w) for w in weights],
        5,
        _stats_ops.wide_dtype(),
    )
    stats = np.asarray(keras.ops.convert_to_numpy(stats), np.float64)
    rows = _stats_ops.host_rows(*histograms)
    for i, (g, w) in enumerate(zip(grads, weights, strict=True)):
        want = np_stats(g, w)
        want["weight_nonfinite"] = float(np.sum(~np.isfinite(w)))
        np.testing.assert_allclose(stats[i], list(want.values()), rtol=RTOL)
        expected = np_histogram(g, 5, dtype=_wide())
        np.testing.assert_array_equal(rows[i, :, :2], expected[:, :2])
        moved = np.abs(rows[i, :, 2] - expected[:, 2]).sum() / 2
        finite = g[np.isfinite(g)].astype(np.float64)
        assert moved <= (0 if _wide() is np.float64 else _near_edges(finite, expected))


def test_backend_pass_benchmark_runs():
    """`benchmarks/backend_pass.py` still runs on this backend (tiny
    settings; no timing is asserted)."""
    bench = load_script(ROOT / "benchmarks" / "backend_pass.py")
    log = logging.getLogger("keras_gradwatch")
    level = log.level
    row = bench.main(["--models", "a", "--repeats", "2", "--quick"])["a"]
    assert log.level == level  # later tests read its warnings
    assert row["pass_ms"] > 0
    assert row["pass_per_step"] > 0
    assert row["setup_per_trace"] > 0
    assert ("gradients_ms" in row) == (BACKEND != "tensorflow")


@pytest.mark.parametrize("bad", ["x", "y"])
def test_held_out_that_does_not_fit_fails_before_training(tmp_path, bad):
    """Held-out data of the wrong shape stops `fit` at its start, with one
    error that names `held_out`, on every backend."""
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    x, y = np.ones((8, 4), "float32"), np.ones((8, 2), "float32")
    held_out = (np.ones((8, 5), "float32"), y) if bad == "x" else (x, x[:, :3])
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(
        ValueError, match="could not compute the model's loss on `held_out`"
    ):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[GradWatch(tmp_path, held_out)])
    for w, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(w, b)  # no step was taken
