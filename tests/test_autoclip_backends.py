"""AutoClip on the backend this run uses (KERAS_BACKEND): TensorFlow, JAX or
PyTorch. CI runs this file once per backend.

The reference is a float64 NumPy replay of the training itself: SGD on a
linear model, whose gradients NumPy computes by hand, clipped by AutoClip's
documented rules (`helpers.NpAutoClip`). Files are read back with
TensorBoard's own reader.
"""

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest

from helpers import NpAutoClip, load_script, read_run
from keras_gradwatch import AutoClip

BACKEND = keras.backend.backend()
ROOT = Path(__file__).resolve().parents[1]
BATCH, BATCHES, LR = 8, 24, 0.05
NAN_BATCH = 4  # a NaN label: the step is skipped
SPIKES = {9: 40.0, 20: 400.0}  # inputs x40 (a spike) and x400 (a gross one)

# Float32 training against a float64 replay: each of the 23 steps adds
# float32 roundings (~1e-7 relative) to weights of order 1, so they agree to
# ~1e-5 after them; 1e-4 leaves 10x margin. A decision that differs (a step
# clipped in one and not the other) moves a weight by far more.
RTOL = 1e-4

pytestmark = pytest.mark.numeric


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH * BATCHES, 3)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5]]) + 0.3).astype("float32")
    y[BATCH * NAN_BATCH + 2] = np.nan
    for batch, factor in SPIKES.items():
        x[BATCH * batch : BATCH * (batch + 1)] *= factor
    return x, y


def linear_model(optimizer=None, steps_per_execution=1):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(
        optimizer or keras.optimizers.SGD(LR),
        "mse",
        steps_per_execution=steps_per_execution,
    )
    return model


class Recording(NpAutoClip):
    """NpAutoClip that keeps each step's bound."""

    def bound(self, norm):
        self.last = super().bound(norm)
        return self.last


def replay(w, b, x, y, relative_step=0.016):
    """SGD with AutoClip in float64 NumPy, over the batches of (x, y) in
    order: the final weights and, per applied (finite) step, its norm and
    bound, with the steps clipped and skipped."""
    w, b = w.astype(np.float64), b.astype(np.float64)
    clip = Recording()
    steps, clipped, skipped = [], 0, 0
    for start in range(0, len(x), BATCH):
        xb = x[start : start + BATCH].astype(np.float64)
        yb = y[start : start + BATCH].astype(np.float64)
        error = xb @ w + b - yb
        gw, gb = 2.0 / len(xb) * xb.T @ error, 2.0 / len(xb) * error.sum(axis=0)
        norm = float(np.sqrt((gw**2).sum() + (gb**2).sum()))
        factor = clip.factor(norm)
        if factor is None:  # not finite: skipped, the iteration stays
            skipped += 1
            continue
        bound = clip.last[0]
        (limit,) = NpAutoClip.step_limits([gw], [w], LR, relative_step)
        clipped += bool(norm > bound or limit < factor)
        steps.append((norm, bound))
        w = w - LR * min(factor, limit) * gw
        b = b - LR * factor * gb
    return w, b, steps, clipped, skipped


@pytest.mark.parametrize(
    ("scale", "per_call"),
    [(None, 1), (1024.0, 1), (None, 4)],
    ids=["plain", "loss_scale_factor", "steps_per_execution"],
)
def test_training_matches_a_numpy_replay_of_the_rules(tmp_path, scale, per_call):
    """Weights, per-step norms and bounds (every_n_steps=1, by optimizer
    iteration), per-epoch counts: all as the float64 replay has them,
    through a held first step, a skipped NaN step, a spike and a gross spike
    clipped, and SGD's step bound; with the optimizer's own loss scaling
    (a power of 2: the same float32 numbers, scaled), and with 4 steps per
    call of the train function (not on PyTorch, which refuses it), as
    without."""
    if per_call > 1 and BACKEND == "torch":
        pytest.skip("PyTorch's trainer refuses steps_per_execution > 1")
    x, y = data()
    model = linear_model(keras.optimizers.SGD(LR, loss_scale_factor=scale), per_call)
    w0, b0 = (np.asarray(v.numpy()) for v in model.trainable_variables)
    w, b, steps, clipped, skipped = replay(w0, b0, x, y)
    assert skipped == 1
    assert 2 <= clipped < len(steps)  # the premise: it clipped, not always

    history = model.fit(
        x, y, batch_size=BATCH, shuffle=False, verbose=0,
        callbacks=[AutoClip(log_dir=tmp_path, every_n_steps=1)],
    ).history  # fmt: skip
    got_w, got_b = (np.asarray(v.numpy()) for v in model.trainable_variables)
    np.testing.assert_allclose(got_w, w, rtol=RTOL)
    np.testing.assert_allclose(got_b, b, rtol=RTOL)
    assert int(model.optimizer.iterations.numpy()) == len(steps)
    assert history["autoclip_clipped_steps"] == [clipped]
    assert history["autoclip_skipped_steps"] == [skipped]
    assert history["autoclip_max_norm"][0] == pytest.approx(
        max(n for n, _ in steps), rel=RTOL
    )

    logged = read_run(tmp_path / "autoclip")
    norms, bounds = logged["autoclip/step_grad_norm"], logged["autoclip/step_threshold"]
    assert sorted(norms) == sorted(bounds) == list(range(len(steps)))
    for step, (norm, bound) in enumerate(steps):
        assert float(norms[step]) == pytest.approx(norm, rel=RTOL), step
        assert float(bounds[step]) == pytest.approx(bound, rel=RTOL), step
    assert float(logged["autoclip/clipped_steps"][0]) == clipped
    assert float(logged["autoclip/skipped_steps"][0]) == skipped
    # Taken out of the optimizer at the end of fit.
    assert "apply" not in vars(model.optimizer)


def test_every_non_finite_step_is_skipped_and_the_lost_run_stops(caplog):
    x, y = data()
    y[:] = np.nan
    model = linear_model()
    before = [np.asarray(v.numpy()) for v in model.trainable_variables]
    with caplog.at_level(logging.ERROR, logger="keras_gradwatch"):
        history = model.fit(
            x, y, batch_size=BATCH, epochs=5, verbose=0, callbacks=[AutoClip()]
        ).history
    assert len(history["loss"]) == 1  # stopped after the first epoch
    assert history["autoclip_skipped_steps"] == [BATCHES]
    assert int(model.optimizer.iterations.numpy()) == 0
    for v, old in zip(model.trainable_variables, before, strict=True):
        np.testing.assert_array_equal(np.asarray(v.numpy()), old)
    assert "this run is lost" in caplog.text


def state_values(model):
    state = model.optimizer._keras_gradwatch_autoclip
    return {
        v.name: np.asarray(keras.ops.convert_to_numpy(v.value)) for v in state.weights
    }


def test_state_round_trips_through_checkpoints(tmp_path, caplog):
    """ModelCheckpoint during fit, then load_weights: with AutoClip set first
    the state comes back whole; without AutoClip, Keras' own optimizer load
    still restores every optimizer variable (its positional match is
    untouched), and so does `load_model`."""
    x, y = data()
    y = np.nan_to_num(y)
    path = tmp_path / "ckpt.weights.h5"
    model = linear_model(keras.optimizers.SGD(LR, momentum=0.9))
    model.fit(
        x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0,
        callbacks=[
            AutoClip(),
            keras.callbacks.ModelCheckpoint(path, save_weights_only=True),
        ],
    )  # fmt: skip
    saved = state_values(model)
    assert saved["steps"] == 2 * BATCHES
    optimizer = [np.asarray(v.numpy()) for v in model.optimizer.variables]
    assert len(optimizer) == 4  # iterations, learning rate, two momenta

    def load(model, clip=None):
        """Loads the checkpoint, with Keras' warnings turned into errors."""
        model.optimizer.build(model.trainable_variables)
        if clip is not None:
            clip.set_model(model)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model.load_weights(path)
        for got, want in zip(model.optimizer.variables, optimizer, strict=True):
            np.testing.assert_array_equal(np.asarray(got.numpy()), want)

    restored = linear_model(keras.optimizers.SGD(LR, momentum=0.9))
    clip = AutoClip()
    load(restored, clip)
    for name, value in state_values(restored).items():
        np.testing.assert_array_equal(value, saved[name], err_msg=name)
    load(linear_model(keras.optimizers.SGD(LR, momentum=0.9)))

    # Training on with the restored state: no warning that it starts fresh.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="keras_gradwatch"):
        restored.fit(x, y, batch_size=BATCH, verbose=0, callbacks=[clip])
    assert "starts without statistics" not in caplog.text
    assert state_values(restored)["steps"] == 3 * BATCHES

    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    for got, want in zip(loaded.optimizer.variables, optimizer, strict=True):
        np.testing.assert_array_equal(np.asarray(got.numpy()), want)


DATA_PARALLEL = """
import sys
import keras
import numpy as np
from keras_gradwatch import AutoClip
sys.path.insert(0, "tests")
from helpers import read_run

assert len(keras.distribution.list_devices()) == 2
rng = np.random.default_rng(0)
x = rng.normal(size=(256, 4)).astype("float32")
y = x.sum(axis=1, keepdims=True)
x[64:80] *= 50.0  # spikes

def run(log_dir, distribute):
    keras.distribution.set_distribution(
        keras.distribution.DataParallel() if distribute else None
    )
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
                              keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.05), "mse")
    clip = AutoClip(log_dir=log_dir, every_n_steps=1)
    history = model.fit(x, y, batch_size=16, shuffle=False, verbose=0,
                        callbacks=[clip]).history
    return history, read_run(f"{log_dir}/autoclip")["autoclip/step_grad_norm"]

one, norms_one = run(sys.argv[1] + "/one", False)
two, norms_two = run(sys.argv[1] + "/two", True)
assert one["autoclip_clipped_steps"] == two["autoclip_clipped_steps"], (one, two)
assert one["autoclip_clipped_steps"][0] >= 1
assert sorted(norms_two) == sorted(norms_one) == list(range(16))
for step in norms_one:
    a, b = float(norms_one[step]), float(norms_two[step])
    assert abs(a - b) <= 1e-5 * a, (step, a, b)
print("ok")
"""


@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution on JAX")
def test_jax_data_parallel_decides_on_the_global_gradient(tmp_path):
    """DataParallel over 2 virtual CPU devices: the same norms, bounds and
    decisions as on one device (the global batch's gradient), each step
    written once, by one process."""
    flags = os.environ.get("XLA_FLAGS", "")
    run = subprocess.run(
        [sys.executable, "-c", DATA_PARALLEL, str(tmp_path)],
        cwd=ROOT,
        env={
            **os.environ,
            "KERAS_BACKEND": "jax",
            "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count=2",
        },
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().endswith("ok")
    assert len(list((tmp_path / "two" / "autoclip").iterdir())) == 1


class Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise RuntimeError("interrupted")


def test_backup_and_restore_resumes_the_state(tmp_path):
    """A fit interrupted after epoch 1 and resumed by BackupAndRestore, which
    loads after AutoClip has joined the optimizer (AutoClip first in the
    list): the state and the optimizer resume where the backup left them,
    and training ends as an uninterrupted fit does."""
    x, y = data()
    y = np.nan_to_num(y)

    def fit(callbacks, epochs=3):
        return model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False,
                         verbose=0, callbacks=callbacks)  # fmt: skip

    model = linear_model(keras.optimizers.SGD(LR, momentum=0.9))
    fit([AutoClip()])
    want = state_values(model)
    want_weights = [np.asarray(v.numpy()) for v in model.trainable_variables]

    backup = keras.callbacks.BackupAndRestore(tmp_path / "backup")
    model = linear_model(keras.optimizers.SGD(LR, momentum=0.9))
    with pytest.raises(RuntimeError, match="interrupted"):
        fit([AutoClip(), backup, Interrupt()])
    AutoClip().detach()  # nothing attached: a no-op
    model = linear_model(keras.optimizers.SGD(LR, momentum=0.9))
    history = fit([AutoClip(), backup])
    assert len(history.history["loss"]) == 1  # epoch 2 only
    got = state_values(model)
    for name in ("steps", "seen", "history", "threshold", "clipped"):
        np.testing.assert_allclose(got[name], want[name], rtol=RTOL, err_msg=name)
    for v, w in zip(model.trainable_variables, want_weights, strict=True):
        np.testing.assert_allclose(np.asarray(v.numpy()), w, rtol=RTOL)


def test_mixed_precision_measures_the_unscaled_norm(tmp_path):
    """Under mixed_float16 and Keras' LossScaleOptimizer (loss scale 2**8,
    low enough that no float16 gradient overflows, so no step is the
    scaler's to skip), AutoClip measures the norm of the unscaled
    gradients: each step's within float16's rounding (~1e-3 relative on
    these sums; 1e-2 allowed) of the float64 replay's, where a norm still
    scaled would be 256 times it."""
    x, y = data()
    y = np.nan_to_num(y)[: BATCH * 3]
    x = x[: BATCH * 3]
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        model = linear_model(
            keras.optimizers.LossScaleOptimizer(
                keras.optimizers.SGD(LR), initial_scale=2.0**8
            )
        )
        w0, b0 = (np.asarray(v.numpy()) for v in model.trainable_variables)
        model.fit(
            x, y, batch_size=BATCH, shuffle=False, verbose=0,
            callbacks=[AutoClip(log_dir=tmp_path, every_n_steps=1)],
        )  # fmt: skip
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    _, _, steps, _, _ = replay(w0, b0, x, y)
    norms = read_run(tmp_path / "autoclip")["autoclip/step_grad_norm"]
    assert sorted(norms) == [0, 1, 2]
    for step, (norm, _) in enumerate(steps):
        assert float(norms[step]) == pytest.approx(norm, rel=1e-2), step


def test_autoclip_backends_benchmark_runs():
    """`benchmarks/autoclip_backends.py` still runs on this backend (tiny
    settings; no timing is asserted), and leaves the state of its models
    synced (the JAX trainer's state is threaded by hand there)."""
    bench = load_script(ROOT / "benchmarks" / "autoclip_backends.py")
    row = bench.main(["--models", "a", "--quick"])["a"]
    assert row["step_ms"] > 0
    for config in ("autoclip", "autoclip_again", "percentile", "every_step", "control"):
        middle, low, high = row[config]
        assert 0 < low <= middle <= high


class BreakWriter(keras.callbacks.Callback):
    """Makes AutoClip's event writer fail, as a full disk would."""

    def __init__(self, clip):
        super().__init__()
        self.clip = clip

    def on_train_begin(self, logs=None):
        def write(step, summaries):
            raise OSError("No space left on device")

        self.clip._writer.write = write


@pytest.mark.skipif(
    BACKEND == "tensorflow",
    reason="on TensorFlow the step scalars are tf.summary ops in the train step",
)
def test_a_writer_that_fails_costs_the_scalars_not_the_training(tmp_path, caplog):
    """every_n_steps' writes fail from the first step (inside JAX's jitted
    step, through its host callback): training goes on and clips as without
    the failure, and each failure is said once."""
    x, y = data()
    y = np.nan_to_num(y)
    clip = AutoClip(log_dir=tmp_path, every_n_steps=1)
    model = linear_model()
    with caplog.at_level(logging.ERROR, logger="keras_gradwatch"):
        history = model.fit(
            x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0,
            callbacks=[clip, BreakWriter(clip)],
        ).history  # fmt: skip
    want = linear_model()
    want.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0,
             callbacks=[AutoClip()])  # fmt: skip
    for got, ref in zip(
        model.trainable_variables, want.trainable_variables, strict=True
    ):
        np.testing.assert_array_equal(np.asarray(got.numpy()), np.asarray(ref.numpy()))
    assert len(history["autoclip_clipped_steps"]) == 2
    assert caplog.text.count("could not write its step scalars") == 1
    assert caplog.text.count("could not write its scalars") == 1
