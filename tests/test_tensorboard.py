"""Must show 2: event files read back by TensorBoard's reader and server."""

import keras
import numpy as np
import pytest

from helpers import get_json as _get
from helpers import plugin_names, read_run, tensorboard_server
from keras_gradwatch import GradWatch, tags

EPOCHS = 3


EXPECTED: dict = {}
"""Log directory -> tag -> step -> the value a NumPy reference expects."""


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    """A Conv + Dense model trained for 3 epochs next to Keras' TensorBoard."""
    keras.utils.set_random_seed(0)
    root = tmp_path_factory.mktemp("logs")
    model = keras.Sequential(
        [
            keras.Input((12, 12, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(2),
        ]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(True))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 12, 12, 1)), rng.integers(0, 2, 64)
    history = model.fit(
        x,
        y,
        epochs=EPOCHS,
        verbose=0,
        validation_data=(x[:16], y[:16]),
        callbacks=[
            GradWatch(root, held_out=(x[:32], y[:32])),
            keras.callbacks.TensorBoard(root, histogram_freq=1),
        ],
    )
    layers = [layer.path for layer in model.layers if layer.trainable_weights]
    sizes = {w.path: int(np.prod(w.shape)) for w in model.trainable_weights}
    # What the held-out labels' chance level is (entropy of their
    # frequencies) and the training loss Keras reported, for the checks.
    p = np.bincount(y[:32]) / 32
    EXPECTED[root] = {
        tags.CHANCE_LOSS: {0: -np.sum(p[p > 0] * np.log(p[p > 0]))},
        tags.TRAIN_LOSS: dict(enumerate(history.history["loss"])),
    }
    return root, sizes, layers


def test_reader_sees_one_histogram_per_epoch_per_weight(logdir):
    root, sizes, layers = logdir
    logged = read_run(root / tags.DEFAULT_RUN)
    plugins = plugin_names(root / tags.DEFAULT_RUN)
    for path, size in sizes.items():
        series = logged[f"grad/{path}"]
        assert sorted(series) == list(range(EPOCHS))
        for buckets in series.values():
            assert buckets.shape == (30, 3)
            assert buckets[:, 2].sum() == size
            assert np.all(buckets[:, 0] <= buckets[:, 1])
        assert plugins[f"grad/{path}"] == "histograms"
        for prefix in tags.STATS_COLUMNS:
            assert sorted(logged[tags.tag(prefix, path)]) == list(range(EPOCHS))
            assert plugins[tags.tag(prefix, path)] == "scalars"
    signal = {
        tags.tag(prefix, p)
        for prefix in (tags.ACT_GRAD_NORM, tags.ACT_GRAD_RMS)
        for p in layers
    }
    for tag in (*signal, tags.HELDOUT_LOSS):
        assert sorted(logged[tag]) == list(range(EPOCHS))
        assert plugins[tag] == "scalars"
    # The activations, once, at the fit's first logged epoch.
    texts = {tags.tag(tags.ACTIVATION, p) for p in layers}
    for tag in texts:
        assert sorted(logged[tag]) == [0]
        assert plugins[tag] == "text"
    assert logged[tags.tag(tags.ACTIVATION, layers[0])][0] == b"relu"
    expected = {f"grad/{p}" for p in sizes} | {
        tags.tag(prefix, p) for prefix in tags.STATS_COLUMNS for p in sizes
    }
    scalars = {tags.GLOBAL_NORM_TAG, tags.HELDOUT_LOSS}  # no epoch tag per epoch
    scalars |= {tags.TRAIN_LOSS, tags.CHANCE_LOSS}
    assert set(logged) == expected | signal | texts | scalars
    for tag, values in EXPECTED[root].items():
        assert sorted(logged[tag]) == sorted(values)
        for step, value in values.items():
            assert float(logged[tag][step]) == pytest.approx(value, rel=1e-6)


def test_runs_coexist_with_keras_tensorboard(logdir):
    root, _, _ = logdir
    runs = {p.name for p in root.iterdir() if p.is_dir()}
    assert runs == {"train", "validation", tags.DEFAULT_RUN}
    # Keras' callback still writes its own weight histograms, untouched.
    assert any(t.endswith("histogram") for t in read_run(root / "train"))


@pytest.fixture(scope="module")
def server(logdir):
    root, _, _ = logdir
    with tensorboard_server(root, tags.DEFAULT_RUN) as base:
        yield base


def test_tensorboard_server_serves_histograms_and_scalars(server, logdir):
    _, sizes, _ = logdir
    histogram_tags = _get(server, "/data/plugin/histograms/tags")[tags.DEFAULT_RUN]
    assert set(histogram_tags) == {f"grad/{p}" for p in sizes}
    assert (
        "held-out batch (32 samples"
        in histogram_tags[next(iter(histogram_tags))]["description"]
    )
    scalar_tags = _get(server, "/data/plugin/scalars/tags")[tags.DEFAULT_RUN]
    assert tags.GLOBAL_NORM_TAG in scalar_tags
    # Each statistic says what it is, then on what data and when.
    kinds = {
        t.split("/")[0]: scalar_tags[t]["description"].removeprefix("<p>")
        for t in scalar_tags
    }
    assert kinds[tags.HELDOUT_LOSS].startswith("The compiled loss, which the")
    assert "exactly 0" in kinds["grad_dead_units"]
    assert "NaN and Inf" in kinds["grad_nonfinite"]
    assert len(set(kinds.values())) == len(kinds)
    assert all("(32 samples, training=False)" in d for d in kinds.values())
    assert {f"grad_norm/{p}" for p in sizes} <= set(scalar_tags)

    kernel = next(p for p in sizes if p.endswith("conv2d/kernel"))
    series = _get(
        server,
        "/data/plugin/histograms/histograms",
        run=tags.DEFAULT_RUN,
        tag=f"grad/{kernel}",
    )
    assert [step for _, step, _ in series] == list(range(EPOCHS))
    for _, _, buckets in series:
        assert sum(count for _, _, count in buckets) == sizes[kernel]
    norms = _get(
        server,
        "/data/plugin/scalars/scalars",
        run=tags.DEFAULT_RUN,
        tag=tags.GLOBAL_NORM_TAG,
    )
    assert [step for _, step, _ in norms] == list(range(EPOCHS))
    assert all(value > 0 for _, _, value in norms)
