"""WeightNorms: norms and relative change against NumPy, through fit."""

import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import np_histogram, np_weight_stats, plugin_names, read_run
from keras_gradwatch import GradWatch, WeightNorms, _stats, tags

pytestmark = pytest.mark.numeric

rng = np.random.default_rng(5)
nan, inf = np.nan, np.inf


# (weight now, weight at the previous logged epoch)
CASES = {
    "random": (rng.normal(size=(6, 4)), rng.normal(size=(6, 4))),
    "unchanged": (np.full((3, 3), 0.5), np.full((3, 3), 0.5)),
    "zeros_unchanged": (np.zeros((2, 3)), np.zeros((2, 3))),
    "zeroed": (np.zeros((2, 3)), np.ones((2, 3))),
    "nan": (np.array([[1.0, nan], [2.5, 3.0]]), np.ones((2, 2))),
    "inf": (np.array([1.0, -inf, 2.0]), np.ones(3)),
    "one_element": (np.array(-0.75), np.array(0.25)),
    "empty": (np.zeros((0, 3)), np.zeros((0, 3))),
    # Squares overflow float32: the L2 norm must still be the true one.
    "huge": (rng.uniform(1e20, 3e20, size=(3, 4)), rng.uniform(1e20, 3e20, (3, 4))),
}


@pytest.mark.parametrize("case", CASES)
def test_weight_stats_contract(case):
    w, prev = (np.asarray(a, np.float32) for a in CASES[case])
    stats, hist = tf.function(_stats.weight_stats)(
        [tf.constant(w)], [tf.constant(prev)], 30
    )
    want = np_weight_stats(w, prev)
    for column, key in enumerate(tags.WEIGHT_SCALARS):
        np.testing.assert_allclose(
            stats.numpy()[0, column], want[key], rtol=1e-6, err_msg=key
        )
    np.testing.assert_allclose(hist.numpy()[0], np_histogram(w), rtol=1e-6)


def test_weight_stats_of_several_weights_do_not_mix():
    ws = [rng.normal(size=s).astype("float32") for s in [(5, 3), (7,), (2, 2, 4)]]
    prevs = [w + rng.normal(size=w.shape).astype("float32") * 0.1 for w in ws]
    stats, hist = _stats.weight_stats(
        [tf.constant(w) for w in ws], [tf.constant(p) for p in prevs], None
    )
    assert hist is None
    for row, (w, p) in enumerate(zip(ws, prevs, strict=True)):
        want = np_weight_stats(w, p)
        np.testing.assert_allclose(
            stats.numpy()[row], [want[k] for k in tags.WEIGHT_SCALARS], rtol=1e-6
        )


class Snapshots(keras.callbacks.Callback):
    """Records the trainable weights where WeightNorms looks at them."""

    def __init__(self):
        super().__init__()
        self.fits = []

    def on_train_begin(self, logs=None):
        self.fits.append({"begin": self._weights()})

    def on_epoch_end(self, epoch, logs=None):
        self.fits[-1][epoch] = self._weights()

    def _weights(self):
        return {w.path: w.numpy() for w in self.model.trainable_weights}


def sequence_model():
    m = keras.Sequential(
        [
            keras.Input((12, 3)),
            keras.layers.Conv1D(4, 3, activation="relu", name="conv"),
            keras.layers.GRU(5, return_sequences=True, name="gru"),
            keras.layers.Flatten(),
            keras.layers.Dense(6, activation="relu", name="frozen"),
            keras.layers.Dense(1, name="head"),
        ]
    )
    m.get_layer("frozen").trainable = False
    m.compile(keras.optimizers.SGD(0.05), "mse")
    return m


X = rng.normal(size=(64, 12, 3)).astype("float32")
Y = rng.normal(size=(64, 1)).astype("float32")


def expected(snapshots, logged_epochs):
    """NumPy reference: {tag: {epoch: value}} for the logged epochs."""
    out = {}
    previous = snapshots["begin"]
    for epoch in logged_epochs:
        now = snapshots[epoch]
        for path, w in now.items():
            for key, value in np_weight_stats(w, previous[path]).items():
                out.setdefault(tags.tag(key, path), {})[epoch] = value
        previous = now
    return out


def test_norms_and_change_match_numpy_across_fits_and_unfreezing(tmp_path, caplog):
    model, spy = sequence_model(), Snapshots()
    norms = WeightNorms(tmp_path)
    with caplog.at_level(logging.INFO, logger="keras_gradwatch"):
        model.fit(X, Y, epochs=3, batch_size=16, verbose=0, callbacks=[spy, norms])
    assert "WeightNorms skips frozen layers (trainable=False): frozen." in caplog.text

    model.get_layer("frozen").trainable = True
    model.compile(keras.optimizers.SGD(0.05), "mse")
    model.fit(
        X, Y, epochs=5, initial_epoch=3, batch_size=16, verbose=0,
        callbacks=[spy, norms],
    )  # fmt: skip

    logged = read_run(tmp_path / tags.WEIGHTS_RUN)
    want = expected(spy.fits[0], [0, 1, 2])
    for tag, values in expected(spy.fits[1], [3, 4]).items():
        want.setdefault(tag, {}).update(values)
    assert set(logged) == set(want)
    frozen_tags = {t for t in want if "/frozen/" in t}
    assert frozen_tags, "the unfrozen layer is logged in the second fit"
    for tag in frozen_tags:
        assert sorted(logged[tag]) == [3, 4]
    assert any("/gru/" in t for t in want)
    assert any("/conv/" in t for t in want)
    for tag, values in want.items():
        assert sorted(logged[tag]) == sorted(values), tag
        for epoch, value in values.items():
            np.testing.assert_allclose(
                logged[tag][epoch], value, rtol=1e-5, atol=1e-12, err_msg=tag
            )
    # Training moved every trainable weight.
    assert all(v > 0 for t, vs in want.items() if "change" in t for v in vs.values())


class Restore(keras.callbacks.Callback):
    """Puts one layer's weights back after every batch: learning rate zero."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def on_train_begin(self, logs=None):
        self.kept = self.layer.get_weights()

    def on_train_batch_end(self, batch, logs=None):
        self.layer.set_weights(self.kept)


def test_layer_that_does_not_learn_shows_zero_change(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu", name="still"),
            keras.layers.Dense(1, name="learns"),
        ]
    )
    model.compile(keras.optimizers.SGD(0.1), "mse")
    x, y = X[:, 0, :].copy(), Y
    x = np.concatenate([x, x[:, :1]], axis=1)
    restore = Restore(model.get_layer("still"))
    model.fit(
        x, y, epochs=3, batch_size=16, verbose=0,
        callbacks=[restore, WeightNorms(tmp_path)],
    )  # fmt: skip
    logged = read_run(tmp_path / tags.WEIGHTS_RUN)
    for path in ("still/kernel", "still/bias"):
        assert [
            float(v) for v in logged[f"weight_change/sequential/{path}"].values()
        ] == [0.0] * 3
    for path in ("learns/kernel", "learns/bias"):
        assert all(v > 0 for v in logged[f"weight_change/sequential/{path}"].values())


class RestoreAtStart(keras.callbacks.Callback):
    """Loads saved weights in on_train_begin, as BackupAndRestore does."""

    def __init__(self, weights):
        super().__init__()
        self.weights = weights

    def on_train_begin(self, logs=None):
        self.model.set_weights(self.weights)


def test_weights_restored_by_a_later_callback_are_the_start(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.SGD(0.0), "mse")
    saved = [w + 1.0 for w in model.get_weights()]
    model.fit(
        XS, YS[:, :1].repeat(2, axis=1), epochs=1, verbose=0,
        callbacks=[WeightNorms(tmp_path), RestoreAtStart(saved)],
    )  # fmt: skip
    logged = read_run(tmp_path / tags.WEIGHTS_RUN)
    assert float(logged["weight_change/sequential/dense/kernel"][0]) == 0.0


def mlp():
    m = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)]
    )
    m.compile("sgd", "mse")
    return m


XS, YS = rng.normal(size=(32, 4)).astype("float32"), Y[:32]


def test_freq_tags_plugins_and_histograms(tmp_path):
    model = mlp()
    model.fit(
        XS, YS, epochs=5, verbose=0,
        callbacks=[WeightNorms(tmp_path, freq=2, histograms=True, buckets=7)],
    )  # fmt: skip
    run = tmp_path / tags.WEIGHTS_RUN
    logged = read_run(run)
    paths = [w.path for w in model.trainable_weights]
    prefixes = (*tags.WEIGHT_SCALARS, tags.WEIGHT_HISTOGRAM)
    assert set(logged) == {tags.tag(p, path) for p in prefixes for path in paths}
    assert all(sorted(values) == [0, 2, 4] for values in logged.values())
    plugins = plugin_names(run)
    assert {plugins[tags.tag("weight", path)] for path in paths} == {"histograms"}
    assert {plugins[tags.tag("weight_l1", path)] for path in paths} == {"scalars"}
    kernel = model.trainable_weights[0]
    np.testing.assert_allclose(
        logged[tags.tag("weight", kernel.path)][4],
        np_histogram(kernel.numpy(), buckets=7),
        rtol=1e-6,
    )


def test_next_to_grad_watch_in_one_log_dir(tmp_path):
    model = mlp()
    model.fit(
        XS, YS, epochs=2, verbose=0,
        callbacks=[GradWatch(tmp_path, held_out=(XS, YS)), WeightNorms(tmp_path)],
    )  # fmt: skip
    grads = read_run(tmp_path / tags.DEFAULT_RUN)
    weights = read_run(tmp_path / tags.WEIGHTS_RUN)
    # Each callback's own tags in its own run: WeightNorms' weight_l1/l2/
    # change nowhere in GradWatch's, whose per-weight tags end in a path.
    ours = (tags.WEIGHT_HISTOGRAM, *tags.WEIGHT_SCALARS)
    assert not any(t.split("/", 1)[0] in ours for t in grads)
    assert all(t.split("/", 1)[0] in ours for t in weights)
    assert {t.split("/", 1)[0] for t in grads} >= {*tags.STATS_COLUMNS, "grad"}
    kernel = model.trainable_weights[0].path
    assert sorted(grads[tags.tag("grad_norm", kernel)]) == [0, 1]
    assert sorted(weights[tags.tag("weight_l1", kernel)]) == [0, 1]


class CountTracing(keras.callbacks.Callback):
    def __init__(self, norms):
        super().__init__()
        self.norms, self.counts = norms, []

    def on_train_end(self, logs=None):
        self.counts.append((self.norms._pass, self.norms._pass.tracing_count))


def test_traced_once_across_fits(tmp_path):
    norms = WeightNorms(tmp_path)
    count = CountTracing(norms)
    model = mlp()
    model.fit(XS, YS, epochs=4, verbose=0, callbacks=[count, norms])
    model.fit(XS, YS, epochs=6, initial_epoch=4, verbose=0, callbacks=[count, norms])
    assert [traces for _, traces in count.counts] == [1, 1]
    assert len({p for p, _ in count.counts}) == 1  # the same traced pass
    run = tmp_path / tags.WEIGHTS_RUN
    assert len(list(run.glob("events.out.tfevents.*"))) == 2
    assert sorted(read_run(run)["weight_l2/sequential/dense/kernel"]) == list(range(6))
    # Unfreezing a layer changes the trainable variables: traced again.
    model.layers[0].trainable = False
    model.compile("sgd", "mse")
    model.fit(XS, YS, epochs=7, initial_epoch=6, verbose=0, callbacks=[count, norms])
    assert count.counts[2][0] is not count.counts[1][0]
    assert "weight_l2/sequential/dense/kernel" in read_run(run)
    assert sorted(read_run(run)["weight_l2/sequential/dense_1/kernel"]) == list(
        range(7)
    )


def test_failure_is_logged_and_training_goes_on(tmp_path, caplog):
    class Broken(WeightNorms):
        def _log_epoch(self, epoch, logs):
            if epoch == 1:
                raise OSError("disk full")
            super()._log_epoch(epoch, logs)

    model = mlp()
    with caplog.at_level(logging.ERROR, logger="keras_gradwatch"):
        history = model.fit(XS, YS, epochs=3, verbose=0, callbacks=[Broken(tmp_path)])
    assert len(history.history["loss"]) == 3
    assert "Broken failed at epoch 1" in caplog.text
    assert "disk full" in caplog.text
    assert sorted(
        read_run(tmp_path / tags.WEIGHTS_RUN)["weight_l1/sequential/dense/kernel"]
    ) == [0]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"log_dir": None}, TypeError, r"`log_dir` must be a str .* log_dir=None"),
        ({"freq": 0}, ValueError, r"`freq` must be >= 1. Received: freq=0"),
        ({"histograms": 1}, TypeError, r"`histograms` must be a bool.*=1"),
        ({"buckets": 0}, ValueError, r"`buckets` must be >= 1.*=0"),
        ({"run": ""}, ValueError, r"`run` must be a non-empty name"),
    ],
)
def test_construction_errors(kwargs, error, message, tmp_path):
    with pytest.raises(error, match=message):
        WeightNorms(**({"log_dir": tmp_path} | kwargs))


def test_unwritable_log_dir_fails_before_the_first_epoch(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    model = mlp()
    before = [w.numpy() for w in model.weights]
    with pytest.raises(ValueError, match=r"`log_dir` must be a writable directory"):
        model.fit(XS, YS, epochs=1, verbose=0, callbacks=[WeightNorms(blocker)])
    for w, b in zip(model.weights, before, strict=True):
        np.testing.assert_array_equal(w.numpy(), b)
