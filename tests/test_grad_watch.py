"""GradWatch's behaviour around training: lifecycle, state, logs, failures."""

import csv
import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import np_global_norm, read_run, traced_gradients
from keras_gradwatch import GradWatch, _probe, tags

pytestmark = pytest.mark.numeric

rng = np.random.default_rng(3)
X = rng.normal(size=(64, 4)).astype("float32")
Y = rng.normal(size=(64, 1)).astype("float32")


def mlp():
    m = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(1),
        ]
    )
    m.compile("sgd", "mse")
    return m


class Spy(keras.callbacks.Callback):
    """Looks at a GradWatch from inside fit (placed before it in the list)."""

    def __init__(self, watch):
        super().__init__()
        self.watch = watch
        self.tracings = []

    def on_train_end(self, logs=None):
        self.tracings.append(self.watch._probe.tracing_count)


def steps(logdir, tag="grad_norm/global"):
    return sorted(read_run(logdir / tags.DEFAULT_RUN)[tag])


def test_traced_once_per_fit(tmp_path):
    watch = GradWatch(tmp_path, held_out=(X[:16], Y[:16]))
    spy = Spy(watch)
    mlp().fit(X, Y, epochs=5, verbose=0, callbacks=[spy, watch])
    assert spy.tracings == [1]
    assert steps(tmp_path) == [0, 1, 2, 3, 4]


def test_reuse_across_fits_respects_initial_epoch(tmp_path):
    m, watch = mlp(), GradWatch(tmp_path, held_out=(X[:16], Y[:16]))
    m.fit(X, Y, epochs=2, verbose=0, callbacks=[watch])
    m.fit(X, Y, epochs=4, initial_epoch=2, verbose=0, callbacks=[watch])
    assert steps(tmp_path) == [0, 1, 2, 3]
    assert len(list((tmp_path / tags.DEFAULT_RUN).glob("events.out.tfevents.*"))) == 2


def test_freq(tmp_path):
    watch = GradWatch(tmp_path, held_out=(X, Y), freq=2)
    history = mlp().fit(X, Y, epochs=5, verbose=0, callbacks=[watch])
    assert steps(tmp_path) == [0, 2, 4]
    assert steps(tmp_path, "grad/sequential/dense/kernel") == [0, 2, 4]
    # logs only carry the norm on logged epochs.
    assert len(history.history["grad_norm"]) == 3


def test_global_norm_reaches_history_csvlogger_and_earlystopping(tmp_path, caplog):
    csv_path = tmp_path / "log.csv"
    stop = keras.callbacks.EarlyStopping(monitor="grad_norm", mode="min", patience=100)
    history = mlp().fit(
        X,
        Y,
        epochs=3,
        verbose=0,
        callbacks=[
            GradWatch(tmp_path, held_out=(X, Y)),
            keras.callbacks.CSVLogger(str(csv_path)),
            stop,
        ],
    )
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    logged = [float(r["grad_norm"]) for r in rows]
    np.testing.assert_allclose(logged, history.history["grad_norm"], rtol=1e-6)
    assert stop.best == min(history.history["grad_norm"])


def bn_dropout_model(outputs=1):
    inputs = keras.Input((4,))
    h = keras.layers.Dense(8)(inputs)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.Dropout(0.5)(h)
    heads = {f"o{i}": keras.layers.Dense(1, name=f"o{i}")(h) for i in range(outputs)}
    m = keras.Model(inputs, heads)
    m.compile(
        "adam", loss={k: "mse" for k in heads}, metrics={k: ["mae"] for k in heads}
    )
    return m


@pytest.mark.parametrize("training", [False, True])
def test_non_trainable_state_is_exactly_restored(training, tmp_path):
    m = bn_dropout_model(outputs=2)
    y = {"o0": Y, "o1": Y}
    m.fit(X, y, epochs=1, verbose=0)
    watch = GradWatch(tmp_path, held_out=(X, y), training=training)
    watch.set_model(m)
    watch.on_train_begin()
    state = m.non_trainable_variables + m.metrics_variables + m.trainable_variables
    before = [v.numpy().copy() for v in state]
    watch.on_epoch_end(0, {})
    watch.on_epoch_end(1, {})
    watch.on_train_end()
    for variable, old in zip(state, before, strict=True):
        np.testing.assert_array_equal(variable.numpy(), old, err_msg=variable.path)


def test_training_flag_changes_the_gradients(tmp_path):
    """training=True really runs Dropout/BatchNorm in training mode."""
    m = bn_dropout_model()
    m.fit(X, {"o0": Y}, epochs=1, verbose=0)
    norms = {}
    for training in (False, True):
        watch = GradWatch(
            tmp_path / str(training), held_out=(X, {"o0": Y}), training=training
        )
        watch.set_model(m)
        watch.on_train_begin()
        logs = {}
        watch.on_epoch_end(0, logs)
        watch.on_train_end()
        norms[training] = logs["grad_norm"]
    assert norms[False] != pytest.approx(norms[True], rel=1e-3)


def test_frozen_layers_and_missing_gradients_are_skipped_and_reported(tmp_path, caplog):
    inputs = keras.Input((4,))
    frozen = keras.layers.Dense(5, name="frozen")
    frozen.trainable = False
    h = keras.layers.Dense(6, name="trunk")(frozen(inputs))
    used = keras.layers.Dense(1, name="used")(h)
    unused = keras.layers.Dense(1, name="unused")(h)
    m = keras.Model(inputs, {"used": used, "unused": unused})
    m.compile("sgd", loss={"used": "mse", "unused": None})
    caplog.set_level(logging.INFO, logger="keras_gradwatch")
    m.fit(
        X,
        {"used": Y, "unused": Y},
        epochs=2,
        verbose=0,
        callbacks=[GradWatch(tmp_path, held_out=(X, {"used": Y, "unused": Y}))],
    )

    histograms = {
        t for t in read_run(tmp_path / tags.DEFAULT_RUN) if t.startswith("grad/")
    }
    assert histograms == {
        f"grad/{n}/{k}" for n in ("trunk", "used") for k in ("kernel", "bias")
    }
    messages = [r.getMessage() for r in caplog.records]
    skipped = [m for m in messages if "unused/kernel" in m]
    assert len(skipped) == 1  # reported once, not every epoch
    assert "gradient is None" in skipped[0]
    assert any("frozen" in m and "trainable=False" in m for m in messages)


@pytest.mark.parametrize("diagnose", [True, False])
def test_non_finite_gradients_are_counted_and_reported(tmp_path, caplog, diagnose):
    x = X[:16].copy()
    x[3, 2] = np.nan  # one poisoned held-out sample
    m = mlp()
    watch = GradWatch(tmp_path, held_out=(x, Y[:16]), diagnose=diagnose)
    history = m.fit(X, Y, epochs=2, verbose=0, callbacks=[watch])
    logged = read_run(tmp_path / tags.DEFAULT_RUN)
    kernel = "sequential/dense/kernel"
    # How far the NaN spreads depends on the kernels: through every unit of
    # the first kernel (4 x 8) with plain ones, through one row only (8)
    # where oneDNN's fused MatMul + BiasAdd + ReLU maps NaN to 0. So the count
    # to log is the one a traced tape computes here, with the same weights.
    # That row is NaN whatever the kernels: its gradient multiplies the NaN.
    reference = traced_gradients(m, x, Y[:16])
    for path, (g, _) in reference.items():
        assert logged[f"grad_nonfinite/{path}"][1] == np.sum(~np.isfinite(g))
    expected = int(np.sum(~np.isfinite(reference[kernel][0])))
    assert expected >= 8
    assert np.isfinite(logged[f"grad/{kernel}"][1]).all()
    assert np.isnan(history.history["grad_norm"]).all()
    warnings = [r.getMessage() for r in caplog.records if r.name == "keras_gradwatch"]
    assert len(warnings) == 1, warnings  # said once, not every epoch
    if diagnose:
        # Which model, where it writes, when, what.
        where = tmp_path / tags.DEFAULT_RUN
        assert warnings[0].startswith(
            f"GradWatch diagnosis of {m.name!r} ({where}), epoch 0: NaN/Inf"
        )
        assert "Try: " in warnings[0]
    else:
        assert "non-finite gradient values at epoch 0" in warnings[0]
        assert f"{kernel} ({expected})" in warnings[0]
    # The training data were clean: the model itself is unharmed.
    assert all(np.isfinite(w.numpy()).all() for w in m.weights)


def test_a_failing_monitor_never_stops_training(tmp_path, caplog, monkeypatch):
    def broken(self, batch):
        raise OSError("No space left on device")

    monkeypatch.setattr(_probe.GradientProbe, "__call__", broken)
    history = mlp().fit(
        X, Y, epochs=3, verbose=0, callbacks=[GradWatch(tmp_path, held_out=(X, Y))]
    )
    assert len(history.history["loss"]) == 3
    errors = [r for r in caplog.records if r.name == "keras_gradwatch"]
    assert len(errors) == 1  # then it is off for the rest of fit
    assert "training goes on" in errors[0].getMessage()
    assert "No space left" in errors[0].exc_text


def test_large_held_out_is_capped(tmp_path, caplog):
    m = mlp()
    m.fit(
        X,
        Y,
        epochs=1,
        verbose=0,
        callbacks=[GradWatch(tmp_path, held_out=(X, Y), max_samples=40)],
    )
    reference = traced_gradients(m, X[:40], Y[:40])
    want = np_global_norm(reference)
    np.testing.assert_allclose(
        read_run(tmp_path / tags.DEFAULT_RUN)["grad_norm/global"][0], want, rtol=1e-5
    )
    assert "first 40 of 64 held-out samples" in caplog.text


def test_dataset_first_batch(tmp_path):
    dataset = tf.data.Dataset.from_tensor_slices((X, Y)).batch(16)
    m = mlp()
    m.fit(X, Y, epochs=1, verbose=0, callbacks=[GradWatch(tmp_path, held_out=dataset)])
    reference = traced_gradients(m, X[:16], Y[:16])
    want = np_global_norm(reference)
    np.testing.assert_allclose(
        read_run(tmp_path / tags.DEFAULT_RUN)["grad_norm/global"][0], want, rtol=1e-5
    )


class Residual(keras.Model):
    def __init__(self):
        super().__init__()
        self.inner = keras.layers.Dense(4, activation="tanh")
        self.out = keras.layers.Dense(1)

    def call(self, x):
        return self.out(x + self.inner(x))


def two_inputs():
    a, b = keras.Input((4,), name="a"), keras.Input((2,), name="b")
    h = keras.layers.Concatenate()([keras.layers.Dense(3)(a), b])
    m = keras.Model({"a": a, "b": b}, keras.layers.Dense(1)(h))
    m.compile("sgd", "mse")
    return m, {"a": X, "b": X[:, :2]}


@pytest.mark.parametrize("kind", ["subclassed", "multi_input"])
def test_subclassed_and_multi_input_models(kind, tmp_path):
    if kind == "subclassed":
        m, x = Residual(), X
        m.compile("sgd", "mse")
    else:
        m, x = two_inputs()
    m.fit(x, Y, epochs=1, verbose=0, callbacks=[GradWatch(tmp_path, held_out=(x, Y))])
    reference = traced_gradients(m, x, Y)
    logged = read_run(tmp_path / tags.DEFAULT_RUN)
    assert len(reference) == 4
    for path, (g, _) in reference.items():
        np.testing.assert_allclose(
            logged[f"grad_norm/{path}"][0], np.linalg.norm(g), rtol=1e-5
        )


def test_duplicate_weight_paths_get_distinct_tags():
    class Twice(keras.layers.Layer):
        def build(self, shape):
            self.a = self.add_weight(name="w", shape=(1,))
            self.b = self.add_weight(name="w", shape=(1,))

    layer = Twice()
    layer.build((1,))
    assert _probe.unique_paths(layer.trainable_weights) == ["twice/w", "twice/w_1"]


class Traces(keras.callbacks.Callback):
    """Records, at every fit's end, which probe GradWatch used and its traces."""

    def __init__(self, watch):
        super().__init__()
        self.watch = watch
        self.seen = []

    def on_train_end(self, logs=None):
        self.seen.append((self.watch._probe, self.watch._probe.tracing_count))


def test_traced_once_across_fits_with_an_event_file_per_fit(tmp_path):
    m, watch = mlp(), GradWatch(tmp_path, held_out=(X[:16], Y[:16]))
    spy = Traces(watch)
    norms = []
    for fit in range(3):
        m.fit(
            X, Y, epochs=2 * fit + 2, initial_epoch=2 * fit, verbose=0,
            callbacks=[spy, watch],
        )  # fmt: skip
        norms.append(np_global_norm(traced_gradients(m, X[:16], Y[:16])))
    assert len({probe for probe, _ in spy.seen}) == 1
    assert [count for _, count in spy.seen] == [1, 1, 1]
    run = tmp_path / tags.DEFAULT_RUN
    assert len(list(run.glob("events.out.tfevents.*"))) == 3
    logged = read_run(run)[tags.GLOBAL_NORM_TAG]
    assert sorted(logged) == list(range(6))
    # The last epoch of each fit, against the weights that fit left.
    np.testing.assert_allclose([logged[s] for s in (1, 3, 5)], norms, rtol=1e-5)


KINDS = (tags.GRAD_HISTOGRAM, *tags.STATS_COLUMNS)


def frozen_first_layer():
    m = mlp()
    m.layers[0].trainable = False
    m.compile("sgd", "mse")
    return m


@pytest.mark.parametrize("change", ["recompile", "unfreeze", "new_model"])
def test_a_changed_model_is_traced_again(change, tmp_path):
    m = frozen_first_layer()
    watch = GradWatch(tmp_path, held_out=(X[:16], Y[:16]))
    spy = Traces(watch)
    m.fit(X, Y, epochs=1, verbose=0, callbacks=[spy, watch])
    if change == "recompile":
        m.compile(keras.optimizers.SGD(0.5), "mae")
    elif change == "unfreeze":
        m.layers[0].trainable = True
        m.compile("sgd", "mse")
    else:
        m = frozen_first_layer()
    m.fit(X, Y, epochs=2, initial_epoch=1, verbose=0, callbacks=[spy, watch])
    assert spy.seen[0][0] is not spy.seen[1][0]
    assert [count for _, count in spy.seen] == [1, 1]
    logged = read_run(tmp_path / tags.DEFAULT_RUN)
    reference = traced_gradients(m, X[:16], Y[:16])
    second = {t for t, steps in logged.items() if 1 in steps and "kernel" in t}
    assert second == {f"{k}/{p}" for p in reference if "kernel" in p for k in KINDS}
    np.testing.assert_allclose(
        logged[tags.GLOBAL_NORM_TAG][1], np_global_norm(reference), rtol=1e-5
    )


def test_twenty_fits_trace_nothing_again(tmp_path, caplog):
    m, watch = mlp(), GradWatch(tmp_path, held_out=(X[:16], Y[:16]))
    spy = Traces(watch)
    with caplog.at_level(logging.WARNING):
        for fit in range(20):
            m.fit(
                X, Y, epochs=fit + 1, initial_epoch=fit, verbose=0,
                callbacks=[spy, watch],
            )  # fmt: skip
    assert {count for _, count in spy.seen} == {1}
    assert len({probe for probe, _ in spy.seen}) == 1
    assert "retracing" not in caplog.text
    assert len(list((tmp_path / tags.DEFAULT_RUN).glob("events.*"))) == 20


def test_training_loss_is_logged_and_left_out_where_keras_reports_none(tmp_path):
    """``train_loss`` is Keras' ``logs["loss"]``; an epoch without one gets
    no value (not a NaN that would read as a diverged loss)."""
    seen = {}

    class Keep(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen[epoch] = logs["loss"]
            if epoch == 1:
                del logs["loss"]

    watch = GradWatch(tmp_path, held_out=(X[:16], Y[:16]))
    mlp().fit(X, Y, epochs=3, verbose=0, callbacks=[Keep(), watch])
    logged = read_run(tmp_path / tags.DEFAULT_RUN)[tags.TRAIN_LOSS]
    assert sorted(logged) == [0, 2]
    for epoch in (0, 2):
        assert float(logged[epoch]) == pytest.approx(seen[epoch], rel=1e-6)


def test_labels_the_output_cannot_produce(tmp_path, caplog):
    """A sigmoid regression output on labels of 0-255: said once per fit at
    its start, logged for TensorBoard, and the live diagnosis and the report
    tell the same story with the remedy to rescale the labels."""
    from keras_gradwatch import _report
    from keras_gradwatch._findings import REMEDIES

    caplog.set_level(logging.INFO, logger="keras_gradwatch")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(320, 8)).astype("float32")
    y = (255 / (1 + np.exp(-x @ rng.normal(size=(8, 1))))).astype("float32")
    y[:4] = 0.5  # a few labels it can produce: the share is not 1
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
         keras.layers.Dense(1, activation="sigmoid")], name="reg",
    )  # fmt: skip
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    held_x, held_y = x[:64], y[:64]
    share = float(np.mean((held_y < 0) | (held_y > 1)))
    assert 0 < share < 1
    model.fit(x, y, epochs=20, batch_size=32, verbose=0,
              callbacks=[GradWatch(tmp_path, held_out=(held_x, held_y))])  # fmt: skip
    messages = [r.getMessage() for r in caplog.records]
    said = f"{share:.0%} of the held-out label values lie outside the range"
    assert sum(m.startswith(f"GradWatch: {said}") for m in messages) == 1
    tag = tags.tag(tags.TARGET_OUTSIDE, "reg/dense_1")
    logged = read_run(tmp_path / tags.DEFAULT_RUN)
    assert set(logged[tag]) == {0}  # once per fit
    assert float(logged[tag][0]) == pytest.approx(share, rel=1e-6)
    live = [m for m in messages if m.startswith("GradWatch diagnosis") and said in m]
    assert live, messages
    (run,) = _report.load(tmp_path).runs
    current = [f for f in run.findings if f.current]
    assert current
    assert all(said in f.message for f in current)
    assert all(f.remedy.startswith(REMEDIES["target_outside"]) for f in current)


def test_a_bidirectional_output_is_not_judged_by_its_forward_activation(
    tmp_path, caplog
):
    """Summed, two tanh LSTMs reach 2: labels of 1.5 are not out of range."""
    caplog.set_level(logging.INFO, logger="keras_gradwatch")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 5, 3)).astype("float32")
    y = np.full((32, 1), 1.5, "float32")
    model = keras.Sequential([
        keras.Input((5, 3)),
        keras.layers.Bidirectional(keras.layers.LSTM(1), merge_mode="sum"),
    ])  # fmt: skip
    model.compile("adam", "mse")
    model.fit(x, y, epochs=1, verbose=0, callbacks=[GradWatch(tmp_path, (x, y))])
    assert not any("outside the range" in r.getMessage() for r in caplog.records)
    assert not any(
        t.startswith(tags.TARGET_OUTSIDE) for t in read_run(tmp_path / tags.DEFAULT_RUN)
    )
