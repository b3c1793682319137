"""GradWatch and WeightNorms under mixed_float16 and with jit_compile=True."""

import logging
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import (
    eager_gradients,
    load_script,
    np_stats,
    np_step_norm,
    np_weight_stats,
    read_run,
)
from keras_gradwatch import AutoClip, GradWatch, WeightNorms

pytestmark = pytest.mark.numeric

# One model and data set for Keras 3 here and tf_keras in test_scaling.py.
shared = load_script(
    Path(__file__).resolve().parent / "scripts" / "tf_keras_mixed_precision.py"
)
build = shared.build
LOSS_WEIGHT = shared.LOSS_WEIGHT  # small enough for float16 to underflow unscaled


@pytest.fixture
def data():
    return shared.data()


@pytest.fixture
def mixed_float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


def float32_reference(weights, x, y):
    """The exact gradients: the same weights in a float32 model."""
    keras.mixed_precision.set_global_policy("float32")
    model = build()
    model.compile("sgd", "mse", loss_weights=[LOSS_WEIGHT])
    model.set_weights(weights)
    return list(eager_gradients(model, x, y).values())


def test_mixed_float16_gradients_are_unscaled_float32(tmp_path, data, mixed_float16):
    x, y = data
    model = build()
    model.compile(keras.optimizers.SGD(1e-3), "mse", loss_weights=[LOSS_WEIGHT])
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    model.fit(x, y, epochs=1, verbose=0,
              callbacks=[GradWatch(tmp_path, held_out=(x, y))])  # fmt: skip
    paths = [w.path for w in model.trainable_weights]

    # The premise: without loss scaling, float16 loses these gradients.
    with tf.GradientTape() as tape:
        loss = model.compute_loss(x=x, y=y, y_pred=model(x), training=False)
    plain = tape.gradient(loss, model.trainable_weights)

    reference = float32_reference(model.get_weights(), x, y)
    logged = read_run(tmp_path / "heldout")
    for path, (g, w), g16 in zip(paths, reference, plain, strict=True):
        expected = np_stats(g, w)
        assert logged[f"grad_norm/{path}"][0].dtype == np.float32
        for prefix in ("grad_norm", "grad_mean_abs", "grad_max_abs", "grad_to_weight"):
            got = float(logged[f"{prefix}/{path}"][0])
            assert got == pytest.approx(expected[prefix], rel=1e-2), (prefix, path)
        assert float(logged[f"grad_dead_units/{path}"][0]) == 0.0
        # Unscaled float16 is off by far more than the tolerance above.
        unscaled = np.linalg.norm(tf.convert_to_tensor(g16).numpy())
        assert abs(unscaled / expected["grad_norm"] - 1) > 0.05, path
        # Histograms span the true gradient values, not values times the
        # loss scale (32768 at the start).
        buckets = logged[f"grad/{path}"][0]
        assert buckets[0, 0] == pytest.approx(g.min(), rel=1e-2, abs=1e-12)
        assert buckets[-1, 1] == pytest.approx(g.max(), rel=1e-2, abs=1e-12)
        assert buckets[:, 2].sum() == g.size


def test_jit_compile(tmp_path, data, caplog):
    """XLA-compiled training: every callback works; GradWatch says its own
    pass runs without XLA."""
    x, y = data
    model = build()
    model.compile(keras.optimizers.SGD(1.0), "mse", jit_compile=True)
    before = [w.numpy() for w in model.trainable_weights]
    threshold = 1e-3
    with caplog.at_level(logging.INFO, logger="keras_gradwatch"):
        history = model.fit(
            x, y, batch_size=64, epochs=1, verbose=0,
            callbacks=[GradWatch(tmp_path, held_out=(x, y)), WeightNorms(tmp_path),
                       AutoClip("fixed", threshold=threshold)],
        ).history  # fmt: skip
    assert model.jit_compile is True
    notices = [r.message for r in caplog.records if "XLA" in r.message]
    assert len(notices) == 1
    after = [w.numpy() for w in model.trainable_weights]
    step = np_step_norm(before, after)
    assert step == pytest.approx(threshold, rel=1e-4)
    assert history["autoclip_clipped_steps"] == [1]

    reference = eager_gradients(model, x, y)
    logged = read_run(tmp_path / "heldout")
    for path, (g, w) in reference.items():
        for prefix, value in np_stats(g, w).items():
            got = float(logged[f"{prefix}/{path}"][0])
            assert got == pytest.approx(value, rel=1e-5, abs=1e-9), (prefix, path)
    norms = read_run(tmp_path / "weights")
    for weight, b, a in zip(model.trainable_weights, before, after, strict=True):
        for prefix, value in np_weight_stats(a, b).items():
            got = float(norms[f"{prefix}/{weight.path}"][0])
            assert got == pytest.approx(value, rel=1e-5), (prefix, weight.path)


def test_mixed_float16_overflowing_scale_falls_back_to_the_plain_loss(
    tmp_path, data, mixed_float16
):
    """A held-out batch whose scaled gradients overflow float16: GradWatch
    reports the gradients of the unscaled loss, finite, not Inf."""
    x, y = data
    loss_weight = 1e3
    model = build()
    model.compile(keras.optimizers.SGD(0.0), "mse", loss_weights=[loss_weight])
    model.fit(x, y, batch_size=64, epochs=1, verbose=0,
              callbacks=[GradWatch(tmp_path, held_out=(x, y))])  # fmt: skip
    scale = float(model.optimizer.scale_loss(1.0))
    with tf.GradientTape() as tape:
        loss = model.compute_loss(x=x, y=y, y_pred=model(x), training=False)
        scaled = loss * scale
    overflowed = tape.gradient(scaled, model.trainable_weights)
    assert not all(np.isfinite(g.numpy()).all() for g in overflowed)

    keras.mixed_precision.set_global_policy("float32")
    reference = build()
    reference.compile("sgd", "mse", loss_weights=[loss_weight])
    reference.set_weights(model.get_weights())
    expected = eager_gradients(reference, x, y)
    logged = read_run(tmp_path / "heldout")
    for weight, (g, w) in zip(model.trainable_weights, expected.values(), strict=True):
        assert float(logged[f"grad_nonfinite/{weight.path}"][0]) == 0.0
        got = float(logged[f"grad_norm/{weight.path}"][0])
        assert got == pytest.approx(np_stats(g, w)["grad_norm"], rel=1e-2)
