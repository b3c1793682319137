"""AutoClip: clipping and skipping inside the train step, against NumPy."""

import inspect
import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import NpAutoClip, read_run
from keras_gradwatch import AutoClip, _autoclip

pytestmark = pytest.mark.numeric

rng = np.random.default_rng(11)


def state_of(model):
    state = getattr(model.optimizer, _autoclip.STATE_ATTRIBUTE)
    return {v.name: v.numpy().copy() for v in state.weights}


# -- Must show 2: the applied update is the clipped gradient ----------------

BATCH = 8
X = (rng.normal(size=(BATCH * 24, 3)) * 0.3).astype("float32")
Y = (X @ rng.normal(size=(3, 1))).astype("float32")
X[BATCH * 7 : BATCH * 8] *= 20.0  # spikes
X[BATCH * 15 : BATCH * 16] *= 40.0
X[BATCH * 20 : BATCH * 21] *= 10.0


def small_model(lr=1.0, **optimizer):
    keras.utils.set_random_seed(0)
    m = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4, activation="tanh"),
            keras.layers.Dense(1),
        ]
    )
    m.compile(keras.optimizers.SGD(lr, **optimizer), "mse")
    return m


class UpdateRecorder(keras.callbacks.Callback):
    """Per step: the gradient at the weights before it, and the update."""

    def __init__(self, x, y):
        super().__init__()
        self.x, self.y = x, y
        self.grads, self.updates, self.weights = [], [], []

    def on_train_begin(self, logs=None):
        # Traced, as the train step is, so that both run the same kernels
        # (see helpers.traced_gradients). With oneDNN on, eager and graph tanh
        # differ in the last bit, and near saturation 1 - tanh**2 turns that
        # into percents: 3.8% on one element of the zscore case below.
        self.gradients = tf.function(self.tape)

    def tape(self, xs, ys):
        with tf.GradientTape() as tape:
            loss = self.model.compute_loss(
                x=xs, y=ys, y_pred=self.model(xs, training=True), training=True
            )
        return tape.gradient(loss, self.model.trainable_weights)

    def on_train_batch_begin(self, batch, logs=None):
        xs = self.x[batch * BATCH : (batch + 1) * BATCH]
        ys = self.y[batch * BATCH : (batch + 1) * BATCH]
        grads = self.gradients(xs, ys)  # sparse ones summed densely below
        self.grads.append(
            [tf.convert_to_tensor(g).numpy().astype(np.float64) for g in grads]
        )
        self.before = [
            w.numpy().astype(np.float64) for w in self.model.trainable_weights
        ]

    def on_train_batch_end(self, batch, logs=None):
        after = [w.numpy().astype(np.float64) for w in self.model.trainable_weights]
        self.updates.append([b - a for b, a in zip(self.before, after, strict=True)])
        self.weights.append(self.before)


MODES = {
    "zscore": {"warmup": 5, "z": 1.5},
    "percentile": {"percentile": 50.0, "window": 6},
    "fixed": {"threshold": 0.5},
}


@pytest.mark.parametrize("mode", MODES)
def test_update_is_the_clipped_gradient(mode):
    # lr=1 lets zscore's bound (never below 3 x the median) follow the
    # norms of this small net as they grow without limit.
    lr = 0.3
    model = small_model(lr)
    recorder = UpdateRecorder(X, Y)
    model.fit(
        X, Y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
        callbacks=[recorder, AutoClip(mode, **MODES[mode])],
    )  # fmt: skip
    reference = NpAutoClip(mode, **MODES[mode])
    factors, bounded = [], 0
    for step, (grads, update, weights) in enumerate(
        zip(recorder.grads, recorder.updates, recorder.weights, strict=True)
    ):
        norm = np.sqrt(sum(np.sum(g**2) for g in grads))
        factor = reference.factor(norm)
        factors.append(factor)
        limits = [np.inf] * len(grads)
        if mode == "zscore":  # and the step bound, as this is SGD
            limits = NpAutoClip.step_limits(grads, weights, lr)
            bounded += any(limit < factor for limit in limits)
        # The update is read back as a difference of float32 weights.
        for g, u, limit in zip(grads, update, limits, strict=True):
            np.testing.assert_allclose(
                u, lr * min(factor, limit) * g, rtol=1e-4, atol=1e-6,
                err_msg=f"step {step}",
            )  # fmt: skip
    clipped = sum(f < 1.0 for f in factors)
    assert 0 < clipped < len(factors), factors
    if mode == "zscore":
        assert 0 < bounded < len(factors)


def test_sparse_embedding_gradient_counts_as_its_dense_sum():
    ids = np.array([[1, 1, 3], [3, 3, 0], [1, 2, 2], [0, 0, 0]], "int32")
    targets = np.arange(4, dtype="float32")[:, None]
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((3,), dtype="int32"),
            keras.layers.Embedding(6, 2),
            keras.layers.Flatten(),
            keras.layers.Dense(1),
        ]
    )
    model.compile(keras.optimizers.SGD(1.0), "mse")
    recorder = UpdateRecorder(ids, targets)
    model.fit(ids, targets, batch_size=BATCH, epochs=1, verbose=0,
              callbacks=[recorder, AutoClip("fixed", threshold=0.05)])  # fmt: skip
    grads = recorder.grads[0]
    norm = np.sqrt(sum(np.sum(g**2) for g in grads))
    assert norm > 0.05
    for g, u in zip(grads, recorder.updates[0], strict=True):
        np.testing.assert_allclose(u, 0.05 / norm * g, rtol=1e-4, atol=1e-7)


# -- Must show 1: divergence and a poisoned batch --------------------------


def spiky_regression():
    """Clean regression data with one corrupted sample in three batches."""
    data = np.random.default_rng(0)
    x = data.normal(size=(32 * 64, 8)).astype("float32")
    y = (x @ data.normal(size=(8, 1))).astype("float32")
    for batch in (30, 45, 60):
        x[batch * 32 + 3] *= 100.0  # a sensor glitch
    return x, y


def relu_net():
    keras.utils.set_random_seed(0)
    m = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(1),
        ]
    )
    m.compile(keras.optimizers.SGD(0.01, momentum=0.9), "mse")
    return m


def finite(model):
    return all(np.isfinite(w.numpy()).all() for w in model.weights)


def test_spikes_diverge_to_nan_without_and_train_with_defaults(caplog):
    x, y = spiky_regression()
    plain = relu_net()
    history = plain.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    assert np.isnan(history.history["loss"][-1])
    assert not finite(plain)

    clipped = relu_net()
    with caplog.at_level(logging.WARNING, logger="keras_gradwatch"):
        history = clipped.fit(
            x, y, batch_size=32, epochs=2, shuffle=False, verbose=0,
            callbacks=[AutoClip()],
        )  # fmt: skip
    assert np.isfinite(history.history["loss"]).all()
    assert finite(clipped)
    assert history.history["autoclip_clipped_steps"][0] >= 3
    assert history.history["autoclip_skipped_steps"] == [0, 0]
    assert "AutoClip (zscore) first clipped at training step" in caplog.text
    # Away from the glitches the net has learned the regression.
    clean = np.abs(x).max(axis=1) < 10
    mse = float(np.mean((clipped.predict(x[clean], verbose=0) - y[clean]) ** 2))
    assert mse < 0.1 * float(np.mean(y[clean] ** 2))


class Weights(keras.callbacks.Callback):
    """Model and optimizer variables after every step."""

    def on_train_begin(self, logs=None):
        self.after = []

    def on_train_batch_end(self, batch, logs=None):
        variables = [*self.model.weights, *self.model.optimizer.variables]
        self.after.append([v.numpy().copy() for v in variables])


def test_nan_batch_is_skipped_and_counted():
    x, y = spiky_regression()
    x = x[: 32 * 10] / np.abs(x[: 32 * 10]).max()
    y = y[: 32 * 10]
    x[32 * 4 + 5, 2] = np.nan

    plain = relu_net()
    plain.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    assert not finite(plain)

    model, weights = relu_net(), Weights()
    history = model.fit(
        x, y, batch_size=32, epochs=1, shuffle=False, verbose=0,
        callbacks=[weights, AutoClip()],
    )  # fmt: skip
    assert finite(model)
    assert history.history["autoclip_skipped_steps"] == [1]
    # Nothing moved at the skipped step: weights, momentum, iteration count.
    assert len(weights.after[4]) > len(model.weights) + 1  # momentum included
    for before, after in zip(weights.after[3], weights.after[4], strict=True):
        np.testing.assert_array_equal(before, after)
    assert int(model.optimizer.iterations.numpy()) == 9
    assert not np.array_equal(weights.after[4][0], weights.after[5][0])


# -- Must show 4: state saved, restored, continued -------------------------


def test_state_survives_save_weights_and_reload(tmp_path):
    x, y = spiky_regression()
    model = relu_net()
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0,
              callbacks=[AutoClip()])  # fmt: skip
    saved = state_of(model)
    assert saved["seen"] == 64
    assert saved["clipped"] >= 3
    assert np.isfinite(saved["threshold"])
    path = tmp_path / "model.weights.h5"
    model.save_weights(path)

    fresh, clip = relu_net(), AutoClip()
    clip.set_model(fresh)  # what fit does first; attaches a fresh state
    fresh.optimizer.build(fresh.trainable_variables)
    assert state_of(fresh)["seen"] == 0
    fresh.load_weights(path)
    for name, value in state_of(fresh).items():
        np.testing.assert_array_equal(value, saved[name], err_msg=name)


class StopAt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("interrupted")


def test_backup_and_restore_resumes_with_the_same_thresholds(tmp_path):
    x, y = spiky_regression()
    fit = {"batch_size": 32, "epochs": 4, "shuffle": False, "verbose": 0}
    keys = ["autoclip_threshold", "autoclip_clipped_steps", "autoclip_max_norm"]

    straight = relu_net().fit(x, y, callbacks=[AutoClip()], **fit).history

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(RuntimeError, match="interrupted"):
        relu_net().fit(x, y, callbacks=[AutoClip(), backup, StopAt(2)], **fit)
    # A new process would build a new model and AutoClip; BackupAndRestore
    # is placed before AutoClip this time.
    model, clip = relu_net(), AutoClip()
    resumed = model.fit(x, y, callbacks=[backup, clip], **fit).history
    assert len(resumed["loss"]) == 2
    for key in keys:
        np.testing.assert_allclose(resumed[key], straight[key][2:], rtol=1e-6)
    assert state_of(model)["steps"] == 4 * 64


def test_checkpoint_without_autoclip_state_loads(tmp_path):
    x, y = spiky_regression()
    model = relu_net()
    model.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)
    path = tmp_path / "before.weights.h5"
    model.save_weights(path)

    resumed = relu_net()
    history = resumed.fit(
        x[:64], y[:64], batch_size=32, epochs=1, verbose=0,
        callbacks=[AutoClip(), keras.callbacks.LambdaCallback(
            on_train_begin=lambda logs: resumed.load_weights(path))],
    )  # fmt: skip
    assert history.history["autoclip_skipped_steps"] == [0]
    assert state_of(resumed)["steps"] == 2


# -- Reporting, lifecycle, errors ------------------------------------------


def test_scalars_logged_to_tensorboard(tmp_path):
    x, y = spiky_regression()
    model = relu_net()
    history = model.fit(
        x, y, batch_size=32, epochs=2, shuffle=False, verbose=0,
        callbacks=[AutoClip(log_dir=tmp_path)],
    )  # fmt: skip
    logged = read_run(tmp_path / "autoclip")
    assert set(logged) == {f"autoclip/{n}" for n in _autoclip.SCALARS}
    for name in _autoclip.SCALARS:
        values = [float(logged[f"autoclip/{name}"][e]) for e in (0, 1)]
        np.testing.assert_allclose(
            values, history.history[f"autoclip_{name}"], rtol=1e-6
        )


class Tracings(keras.callbacks.Callback):
    """Traces of the train function at fit's end (placed before AutoClip,
    which drops the function in its own on_train_end)."""

    def on_train_end(self, logs=None):
        function = self.model.train_function
        cells = [c.cell_contents for c in function.__closure__ or ()]
        self.count = sum(
            int(f.experimental_get_tracing_count())
            for f in [function, *cells]
            if hasattr(f, "experimental_get_tracing_count")
        )


@pytest.mark.parametrize("mode", MODES)
def test_train_function_traced_once_per_fit(mode):
    model, tracings = small_model(lr=0.01), Tracings()
    model.fit(X, Y, batch_size=BATCH, epochs=3, verbose=0,
              callbacks=[tracings, AutoClip(mode, **MODES[mode])])  # fmt: skip
    assert tracings.count == 1


def assert_fit_applies_raw_gradients(model):
    """A fit without AutoClip updates by the raw gradient (SGD, lr 1), even at
    the spike of batch 7 that AutoClip would clip."""
    recorder = UpdateRecorder(X, Y)
    model.fit(X, Y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
              callbacks=[recorder])  # fmt: skip
    for g, u in zip(recorder.grads[7], recorder.updates[7], strict=True):
        np.testing.assert_allclose(u, g, rtol=1e-4, atol=1e-6)


def test_optimizer_restored_after_fit():
    model = small_model()
    model.fit(X, Y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
              callbacks=[AutoClip("fixed", threshold=1e-3)])  # fmt: skip
    assert "apply" not in vars(model.optimizer)
    assert "_all_reduce_sum_gradients" not in vars(model.optimizer)
    assert_fit_applies_raw_gradients(model)


def test_keras_hooks_autoclip_relies_on():
    """Fails loudly if a Keras release moves the places AutoClip hooks into."""
    from keras.src.backend.tensorflow.optimizer import TFOptimizer
    from keras.src.optimizers.base_optimizer import BaseOptimizer

    assert "self.apply(" in inspect.getsource(BaseOptimizer.apply_gradients)
    assert "self.inner_optimizer.apply(" in inspect.getsource(
        keras.optimizers.LossScaleOptimizer
    )
    update = inspect.getsource(TFOptimizer._backend_update_step)
    assert "self._all_reduce_sum_gradients(" in update
    assert "_clip_gradients" in inspect.getsource(
        BaseOptimizer._backend_apply_gradients
    )
    # The step bound reads the variables `apply` falls back on.
    assert "self._trainable_variables" in inspect.getsource(BaseOptimizer.apply)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"mode": "spike"}, ValueError, r"`mode` must be one of 'zscore'.*'spike'"),
        ({"z": "2"}, TypeError, r"`z` must be a number.*'2'"),
        ({"z": 0}, ValueError, r"`z` must be > 0. Received: z=0.0"),
        ({"z": float("nan")}, ValueError, r"`z` must be > 0. Received: z=nan"),
        ({"warmup": 0}, ValueError, r"`warmup` must be >= 1.*=0"),
        (
            {"mode": "percentile", "percentile": 100},
            ValueError,
            r"`percentile` must be in \(0, 100\)",
        ),
        ({"mode": "percentile", "window": 2.5}, TypeError, r"`window` must be an int"),
        ({"mode": "fixed"}, ValueError, r"`threshold` is required with mode=\"fixed\""),
        ({"mode": "fixed", "threshold": -1}, ValueError, r"`threshold` must be > 0"),
        ({"threshold": 1.0}, ValueError, r"`threshold` applies to mode=\"fixed\" only"),
        (
            {"mode": "percentile", "z": 0.5},
            ValueError,
            r"`z` applies to mode=\"zscore\" only. Received: z=0.5",
        ),
        (
            {"mode": "fixed", "threshold": 1.0, "window": 0},
            ValueError,
            r"`window` applies to mode=\"percentile\" only",
        ),
        ({"log_dir": 3}, TypeError, r"`log_dir` must be a str"),
        ({"run": "a/b"}, ValueError, r"`run` must be"),
        ({"relative_step": 0}, ValueError, r"`relative_step` must be > 0"),
        ({"relative_step": "big"}, TypeError, r"`relative_step` must be a number"),
        (
            {"mode": "percentile", "relative_step": 0.1},
            ValueError,
            r"`relative_step` applies to mode=\"zscore\" only. Received: "
            r"relative_step=0.1 with mode='percentile'",
        ),
    ],
)
def test_construction_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        AutoClip(**kwargs)


@pytest.mark.parametrize(
    ("optimizer", "message"),
    [
        ({"global_clipnorm": 1.0}, r"create the optimizer without `global_clipnorm`"),
        ({"clipvalue": 0.5}, r"without `clipvalue`. Received: clipvalue=0.5"),
        ({"gradient_accumulation_steps": 2}, r"does not support gradient accumulation"),
    ],
)
def test_unsupported_optimizer_fails_before_training(optimizer, message):
    model = small_model(**optimizer)
    before = [w.numpy() for w in model.weights]
    with pytest.raises(ValueError, match=message):
        model.fit(X, Y, epochs=1, verbose=0, callbacks=[AutoClip()])
    for w, b in zip(model.weights, before, strict=True):
        np.testing.assert_array_equal(w.numpy(), b)


def test_uncompiled_model_fails_early():
    clip = AutoClip()
    clip.set_model(keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)]))
    with pytest.raises(ValueError, match=r"must be compiled"):
        clip.on_train_begin()


def test_loss_scale_factor_is_taken_out_of_the_norm():
    model = small_model(loss_scale_factor=1024.0)
    recorder = UpdateRecorder(X, Y)
    history = model.fit(
        X, Y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
        callbacks=[recorder, AutoClip("fixed", threshold=0.5)],
    )  # fmt: skip
    norms = [np.sqrt(sum(np.sum(g**2) for g in grads)) for grads in recorder.grads]
    np.testing.assert_allclose(
        history.history["autoclip_max_norm"][0], max(norms), rtol=1e-4
    )
    for grads, update, norm in zip(
        recorder.grads, recorder.updates, norms, strict=True
    ):
        factor = min(1.0, 0.5 / norm)
        for g, u in zip(grads, update, strict=True):
            np.testing.assert_allclose(u, factor * g, rtol=1e-3, atol=1e-6)


def test_another_mode_on_the_same_optimizer_starts_fresh(caplog):
    model = small_model(lr=0.01)
    model.fit(X, Y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
              callbacks=[AutoClip("fixed", threshold=0.5)])  # fmt: skip
    recorder = UpdateRecorder(X, Y)
    with caplog.at_level(logging.INFO, logger="keras_gradwatch"):
        model.fit(X, Y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
                  callbacks=[recorder, AutoClip(warmup=5)])  # fmt: skip
    assert "written with other settings; zscore starts fresh" in caplog.text
    assert state_of(model)["seen"] == 24
    # Warm-up again: the first step is only measured, the next ones apply
    # the raw gradient times lr.
    assert not any(np.any(u) for u in recorder.updates[0])
    for g, u in zip(recorder.grads[1], recorder.updates[1], strict=True):
        np.testing.assert_allclose(u, 0.01 * g, rtol=1e-3, atol=1e-7)


def test_unwritable_log_dir_leaves_the_optimizer_alone(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    model = small_model()
    with pytest.raises(ValueError, match="`log_dir` must be a writable directory"):
        model.fit(X, Y, epochs=1, verbose=0, callbacks=[AutoClip(log_dir=blocker)])
    assert "apply" not in vars(model.optimizer)


def test_detach_after_a_failed_fit():
    model, clip = small_model(), AutoClip("fixed", threshold=1e-3)
    with pytest.raises(RuntimeError, match="interrupted"):
        model.fit(X, Y, batch_size=BATCH, epochs=3, verbose=0,
                  callbacks=[clip, StopAt(1)])  # fmt: skip
    assert "apply" in vars(model.optimizer)  # Keras skipped on_train_end
    clip.detach()
    assert "apply" not in vars(model.optimizer)
    assert_fit_applies_raw_gradients(model)


def test_weights_loaded_before_fit_without_set_model_warn(tmp_path, caplog):
    x, y = spiky_regression()
    model = relu_net()
    model.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0,
              callbacks=[AutoClip()])  # fmt: skip
    path = tmp_path / "m.weights.h5"
    model.save_weights(path)
    resumed = relu_net()
    resumed.optimizer.build(resumed.trainable_variables)
    resumed.load_weights(path)  # no AutoClip attached yet: its state is dropped
    with caplog.at_level(logging.WARNING, logger="keras_gradwatch"):
        resumed.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0,
                    callbacks=[AutoClip()])  # fmt: skip
    assert "has taken 2 steps" in caplog.text
    assert "set_model(model) before model.load_weights" in caplog.text


def largest_kernel_step(model, clip):
    """The largest ||update|| / ||kernel before|| of any kernel and step."""
    recorder = UpdateRecorder(X, Y)
    model.fit(X, Y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
              callbacks=[recorder, clip])  # fmt: skip
    return max(
        np.linalg.norm(u) / np.linalg.norm(w)
        for update, weights in zip(recorder.updates, recorder.weights, strict=True)
        for u, w in zip(update, weights, strict=True)
        if w.ndim >= 2
    )


def test_step_bound_is_sgd_only_and_can_be_turned_off(caplog):
    assert largest_kernel_step(small_model(1.0), AutoClip()) <= 0.016 * (1 + 1e-4)
    free = largest_kernel_step(small_model(1.0), AutoClip(relative_step=None))
    assert free > 0.1  # what SGD(1.0) takes when nothing holds it
    model = small_model()
    model.compile(keras.optimizers.Adam(0.1), "mse")
    with caplog.at_level(logging.INFO, logger="keras_gradwatch"):
        adam = largest_kernel_step(model, AutoClip())
    assert adam > 0.016  # Adam's steps are its own: no step bound
    assert "applies to SGD; with Adam the spike test clips alone" in caplog.text
