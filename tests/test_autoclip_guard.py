"""AutoClip from the first step: early spikes clipped, a lost run stopped."""

import logging
import math
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import NpAutoClip, load_script
from keras_gradwatch import AutoClip, _autoclip, _clipping

pytestmark = pytest.mark.numeric

# -- Spikes in the first steps ----------------------------------------------

ADAPTIVE = {
    "zscore": _clipping.ZScore(2.5, 25),
    "percentile": _clipping.Percentile(10.0, 1000),
}


def healthy_norms(steps=40):
    """Norms of a healthy start: a falling trend with 20% noise."""
    rng = np.random.default_rng(3)
    return list(5.0 * np.exp(-np.arange(steps) / 30) * rng.uniform(0.8, 1.2, steps))


def run_policy(policy, norms):
    """Each step's factor, through the policy and the hold of `decide`."""
    memory = _clipping.Memory(
        tf.fill([policy.history_size], tf.constant(math.inf, tf.float64))
    )
    factors = []
    for seen, norm in enumerate(norms):
        bound, to, _, memory = policy(
            memory, tf.constant(norm, tf.float64), tf.constant(True),
            tf.constant(seen, tf.int64),
        )  # fmt: skip
        factor = float(to) / norm if norm > float(bound) else 1.0
        spike = seen > 0 and norm > 3.0 * sorted(norms[:seen])[(seen - 1) // 2]
        held = seen == 0 or (spike and not any(f > 0 for f in factors))
        factors.append(0.0 if held else factor)
    return factors


@pytest.mark.parametrize("mode", ADAPTIVE)
@pytest.mark.parametrize("step", range(2, 26))
def test_a_spike_at_any_early_step_is_clipped(mode, step):
    norms = healthy_norms()
    typical = norms[step - 1]
    norms[step - 1] = 1000 * typical
    factors = run_policy(ADAPTIVE[mode], norms)
    applied = factors[step - 1] * norms[step - 1]
    # Brought down to a few typical norms at most.
    assert applied < 10 * typical, (step, applied / typical)
    reference = NpAutoClip(mode)
    for norm, factor in zip(norms, factors, strict=True):
        assert factor == pytest.approx(reference.factor(norm), rel=1e-9)


@pytest.mark.parametrize("mode", ADAPTIVE)
def test_healthy_start_is_not_clipped(mode):
    factors = run_policy(ADAPTIVE[mode], healthy_norms(25))
    assert factors[0] == 0.0  # measured only
    if mode == "zscore":
        assert factors[1:] == [1.0] * 24


def test_zscore_follows_norms_that_have_moved():
    """Norms ten times higher for good after warm-up: clipped at first, then
    followed (most steps tripping means a move, not spikes); a spike in a
    quarter of the steps is not followed."""
    norms = healthy_norms(200)
    moved = norms[:40] + [10 * n for n in norms[40:]]
    factors = run_policy(ADAPTIVE["zscore"], moved)
    assert min(factors[40:45]) < 0.5
    assert factors[-50:] == [1.0] * 50
    reference = NpAutoClip()
    for norm, factor in zip(moved, factors, strict=True):
        assert factor == pytest.approx(reference.factor(norm), rel=1e-9)

    spiky = [1000 * n if i >= 40 and i % 4 == 0 else n for i, n in enumerate(norms)]
    factors = run_policy(ADAPTIVE["zscore"], spiky)
    assert all(f * n < 5 for f, n in zip(factors[40::4], spiky[40::4], strict=True))


# -- End to end: the corrupted-labels run of the issue ------------------------


# The benchmark's case (benchmarks/autoclip_early.py), so that the test and
# the figures in benchmarks/README.md are about the same runs.
EARLY = load_script(
    Path(__file__).resolve().parent.parent / "benchmarks/autoclip_early.py"
)
corrupted_labels, relu_mlp = EARLY.corrupted_data, EARLY.corrupted_net
SCENARIOS = load_script(
    Path(__file__).resolve().parent.parent / "benchmarks/autoclip_scenarios.py"
)


def finite(model):
    return all(np.isfinite(w.numpy()).all() for w in model.weights)


# Seed 10: its first batches hold corrupted rows. Seeds 10 and 22 were lost
# by zscore (mse 0.5-0.8) before gross spikes redescended (`redescend`):
# scaled to about the median, 8 steps an epoch still pulled the net towards
# the corrupted rows.
@pytest.mark.parametrize(
    ("mode", "seed"),
    [("zscore", 0), ("zscore", 10), ("zscore", 22), ("percentile", 0),
     ("percentile", 10)],
)  # fmt: skip
def test_corrupted_labels_train_with_defaults(mode, seed):
    x, y, labels = corrupted_labels(seed)
    plain = relu_mlp(seed)
    plain.fit(x, labels, batch_size=64, epochs=1, verbose=0)
    assert not finite(plain) or np.mean((plain.predict(x, verbose=0) - y) ** 2) > 1

    model = relu_mlp(seed)
    history = model.fit(x, labels, batch_size=64, epochs=20, verbose=0,
                        callbacks=[AutoClip(mode)]).history  # fmt: skip
    assert finite(model)
    assert sum(history["autoclip_skipped_steps"]) == 0
    mse = float(np.mean((model.predict(x, batch_size=2048, verbose=0) - y) ** 2))
    assert mse < 0.3


@pytest.mark.parametrize("mode", ["zscore", "percentile"])
def test_trips_before_any_applied_step_are_held(mode):
    """Batches 1 and 2 far apart: neither is applied (either may be the
    spike); batch 3, below the bound, is. Held steps count as iterations."""
    x, y, _ = corrupted_labels(6)
    x, y = x[: 64 * 3], y[: 64 * 3].copy()
    y[64 + 5] *= 1000.0  # a corrupted row in batch 2
    model = relu_mlp(6)
    initial = [w.numpy().copy() for w in model.weights]
    clip = AutoClip(mode)
    model.fit(x[: 64 * 2], y[: 64 * 2], batch_size=64, shuffle=False, verbose=0,
              callbacks=[clip])  # fmt: skip
    assert int(model.optimizer.iterations.numpy()) == 2
    for w, before in zip(model.weights, initial, strict=True):
        np.testing.assert_array_equal(w.numpy(), before)
    state = getattr(model.optimizer, _autoclip.STATE_ATTRIBUTE)
    assert int(state.applied.numpy()) == 0
    model.fit(x[64 * 2 :], y[64 * 2 :], batch_size=64, verbose=0, callbacks=[clip])
    assert int(state.applied.numpy()) == 1
    assert any(
        not np.array_equal(w.numpy(), before)
        for w, before in zip(model.weights, initial, strict=True)
    )


def test_spike_in_warmup_is_clipped_end_to_end():
    """A sensor glitch in batch 5: clipped, and the run trains."""
    x, y, _ = corrupted_labels(1)
    x[5 * 64 + 7] *= 1000.0
    model = relu_mlp(1)
    history = model.fit(x, y, batch_size=64, epochs=2, shuffle=False, verbose=0,
                        callbacks=[AutoClip()]).history  # fmt: skip
    assert history["autoclip_clipped_steps"][0] >= 1
    assert history["autoclip_max_norm"][0] > 100 * history["autoclip_threshold"][0]
    assert finite(model)
    clean = np.abs(x).max(axis=1) < 100
    mse = float(np.mean((model.predict(x[clean], verbose=0) - y[clean]) ** 2))
    assert mse < 0.3


# -- A lost run stops, loudly -------------------------------------------------


def test_all_nan_labels_stop_fit_with_an_error(caplog):
    x, y, _ = corrupted_labels(2)
    y[:] = np.nan
    model = relu_mlp(2)
    initial = [w.numpy().copy() for w in model.weights]
    with caplog.at_level(logging.ERROR, logger="keras_gradwatch"):
        history = model.fit(x, y, batch_size=64, epochs=20, verbose=0,
                            callbacks=[AutoClip()]).history  # fmt: skip
    assert len(history["loss"]) <= 2
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].name == "keras_gradwatch"
    for word in ("lost", "Training stops", "data", "learning rate", "loss"):
        assert word in errors[0].getMessage()
    # No step was finite: the weights are the initial ones.
    for w, before in zip(model.weights, initial, strict=True):
        np.testing.assert_array_equal(w.numpy(), before)


def test_run_lost_mid_epoch_keeps_the_last_good_weights(caplog):
    """5 good batches, then NaN labels: stopped after LOST_RUN_STEPS."""
    x = np.random.default_rng(4).normal(size=(64 * 150, 8)).astype("float32")
    y = x[:, :1].copy()
    y[5 * 64 :] = np.nan
    model = relu_mlp(4)
    good = relu_mlp(4)
    good.fit(x[: 5 * 64], y[: 5 * 64], batch_size=64, shuffle=False, verbose=0,
             callbacks=[AutoClip()])  # fmt: skip
    with caplog.at_level(logging.ERROR, logger="keras_gradwatch"):
        history = model.fit(x, y, batch_size=64, epochs=5, shuffle=False, verbose=0,
                            callbacks=[AutoClip()]).history  # fmt: skip
    assert len(history["loss"]) == 1
    assert "the last 145 training step(s)" in caplog.text
    for w, expected in zip(model.weights, good.weights, strict=True):
        np.testing.assert_allclose(w.numpy(), expected.numpy(), rtol=1e-6)


def test_recovering_run_is_not_stopped_and_switch_off_works(caplog):
    x, y, _ = corrupted_labels(5)
    x = x[: 64 * 4]
    y = y[: 64 * 4].copy()
    y[64 * 2] = np.nan  # one bad batch of four per epoch
    model = relu_mlp(5)
    with caplog.at_level(logging.WARNING, logger="keras_gradwatch"):
        history = model.fit(x, y, batch_size=64, epochs=3, shuffle=False, verbose=0,
                            callbacks=[AutoClip()]).history  # fmt: skip
    assert len(history["loss"]) == 3
    assert history["autoclip_skipped_steps"] == [1, 1, 1]
    assert not [r for r in caplog.records if r.levelno == logging.ERROR]

    y[:] = np.nan
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="keras_gradwatch"):
        history = relu_mlp(5).fit(
            x, y, batch_size=64, epochs=3, verbose=0,
            callbacks=[AutoClip(stop_on_lost_run=False)],
        ).history  # fmt: skip
    assert len(history["loss"]) == 3
    assert "Training goes on (stop_on_lost_run=False)" in caplog.text


def test_stop_on_lost_run_must_be_a_bool():
    with pytest.raises(TypeError, match=r"`stop_on_lost_run` must be a bool.*'yes'"):
        AutoClip(stop_on_lost_run="yes")


# -- A learning rate too high for a recurrent net -----------------------------


def exploding_rnn(seed, lr, clip):
    """A tanh RNN (16 units) under SGD (momentum 0.9) on the adding problem
    (10 steps, targets of unit variance), 10 epochs of 16 steps: the
    validation mse."""
    keras.utils.set_random_seed(seed)
    x, y = SCENARIOS.adding_problem(seed, 768, 10)
    model = keras.Sequential(
        [keras.Input((None, 2)), keras.layers.SimpleRNN(16), keras.layers.Dense(1)]
    )
    model.compile(keras.optimizers.SGD(lr, momentum=0.9), "mse")
    callbacks = [AutoClip()] if clip else []
    model.fit(x[:512], y[:512], batch_size=32, epochs=10, verbose=0,
              callbacks=callbacks)  # fmt: skip
    with np.errstate(all="ignore"):
        mse = float(np.mean((model.predict(x[512:], verbose=0) - y[512:]) ** 2))
    return mse if finite(model) else math.inf


def test_rnn_at_a_learning_rate_too_high_stays_finite_under_autoclip():
    """At 20 x the careful learning rate (0.2 against 0.01) the net explodes
    without clipping on every seed. AutoClip()'s step bound (SGD: no kernel
    steps more than 1.6% of its norm) keeps it finite on every seed; seed 0
    ends within the evaluation's criterion (1.25 x the careful run's mse +
    0.01: 0.96 against 1.04). Seeds 1 and 2 end outside it (1.42-1.54 and
    0.86-3.3, by TensorFlow release): the bound stops the explosion, it
    does not make a learning rate 20 x too high a careful one (as in
    `benchmarks/autoclip_eval.py`'s recurrent scenarios). Without the step
    bound, AutoClip's spike test follows the rise."""
    for seed in range(3):
        assert math.isinf(exploding_rnn(seed, 0.2, clip=False)), seed
        assert math.isfinite(exploding_rnn(seed, 0.2, clip=True)), seed
    careful = exploding_rnn(0, 0.01, clip=False)
    assert exploding_rnn(0, 0.2, clip=True) <= 1.25 * careful + 0.01
