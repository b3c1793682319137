"""GradWatch(every_n_steps=N): the pass by optimizer step, and its readers."""

import logging

import keras
import numpy as np
import pytest

from keras_gradwatch import GradWatch, _probe, _report, tags
from tests.helpers import read_run, traced_gradients

pytestmark = pytest.mark.numeric

ROWS, BATCH, HELD = 256, 32, 64  # 8 steps per epoch


def data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(ROWS + HELD, 6)).astype("float32")
    y = (x @ rng.normal(size=(6, 1)) + 0.1).astype("float32")
    return x[:ROWS], y[:ROWS], x[ROWS:], y[ROWS:]


def mlp(depth=2, activation="tanh", init="glorot_uniform"):
    layers = [keras.Input((6,))]
    layers += [
        keras.layers.Dense(8, activation=activation, kernel_initializer=init)
        for _ in range(depth)
    ]
    model = keras.Sequential([*layers, keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.01), "mse")
    return model


def fit_watched(model, log_dir, epochs, **kwargs):
    """`fit` on `data()` with a GradWatch on its held-out part."""
    x, y, xh, yh = data()
    model.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=epochs,
        verbose=0,
        callbacks=[GradWatch(log_dir, held_out=(xh, yh), **kwargs)],
    )


class Snapshots(keras.callbacks.Callback):
    """The weights after every step whose iteration is a multiple of n."""

    def __init__(self, n):
        super().__init__()
        self.n, self.weights = n, {}

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step % self.n == 0:
            self.weights[step] = [w.numpy() for w in self.model.weights]


def test_pass_every_n_optimizer_steps_matches_a_traced_tape(tmp_path):
    x, y, xh, yh = data()
    model = mlp()
    snapshots = Snapshots(5)
    watch = GradWatch(tmp_path, held_out=(xh, yh), every_n_steps=5)
    history = model.fit(
        x, y, batch_size=BATCH, epochs=3, verbose=0, callbacks=[snapshots, watch]
    )
    run = read_run(tmp_path / "heldout")
    # 24 steps: passes after the 5th, 10th, 15th and 20th update.
    assert sorted(run[tags.GLOBAL_NORM_TAG]) == [5, 10, 15, 20]
    assert sorted(snapshots.weights) == [5, 10, 15, 20]
    # Steps 1-8 are epoch 0, 9-16 epoch 1, 17-24 epoch 2.
    assert {s: float(v) for s, v in run[tags.EPOCH_TAG].items()} == {
        5: 0.0,
        10: 1.0,
        15: 1.0,
        20: 2.0,
    }
    reference = mlp()
    for step, weights in snapshots.weights.items():
        reference.set_weights(weights)
        grads = traced_gradients(reference, xh, yh)
        for weight, (g, _) in zip(model.trainable_weights, grads.values(), strict=True):
            logged = float(run[tags.tag("grad_norm", weight.path)][step])
            # float32 norms of at most 48 elements: n * 6e-8 < 1e-5.
            np.testing.assert_allclose(logged, np.linalg.norm(g), rtol=1e-5)
        total = np.sqrt(sum(np.sum(g**2) for g, _ in grads.values()))
        np.testing.assert_allclose(
            float(run[tags.GLOBAL_NORM_TAG][step]), total, rtol=1e-5
        )
        loss = np.mean((reference.predict(xh, verbose=0) - yh) ** 2)
        # a mean of 64 float32 squares: 64 * 6e-8 = 4e-6 relative.
        np.testing.assert_allclose(float(run[tags.HELDOUT_LOSS][step]), loss, rtol=1e-5)
    # No per-epoch pass; the epoch logs carry the latest pass's norm.
    assert not any(step in run[tags.GLOBAL_NORM_TAG] for step in (0, 1, 2))
    np.testing.assert_allclose(
        history.history["grad_norm"],
        [float(run[tags.GLOBAL_NORM_TAG][s]) for s in (5, 15, 20)],
        rtol=1e-6,
    )


def test_steps_per_execution_passes_where_a_multiple_is_crossed(tmp_path):
    model = mlp()
    model.compile(keras.optimizers.SGD(0.01), "mse", steps_per_execution=3)
    fit_watched(model, tmp_path, 3, every_n_steps=5)
    run = read_run(tmp_path / "heldout")
    # Iterations after each call: 3, 6, 8 | 11, 14, 16 | 19, 22, 24.
    assert sorted(run[tags.GLOBAL_NORM_TAG]) == [6, 11, 16, 22]


def test_a_second_fit_goes_on_from_the_optimizer_iteration(tmp_path):
    x, y, xh, yh = data()
    model = mlp()
    watch = GradWatch(tmp_path, held_out=(xh, yh), every_n_steps=6)
    for _ in range(2):
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[watch])
    run = read_run(tmp_path / "heldout")
    assert sorted(run[tags.GLOBAL_NORM_TAG]) == [6, 12]
    loaded = _report.load(tmp_path)
    assert [list(r.series.epochs) for r in loaded.runs] == [[6, 12]]


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"every_n_steps": 0}, ValueError, "every_n_steps"),
        ({"every_n_steps": -3}, ValueError, "every_n_steps"),
        ({"every_n_steps": 2.5}, TypeError, "every_n_steps"),
        ({"every_n_steps": True}, TypeError, "every_n_steps"),
        ({"every_n_steps": 10, "freq": 2}, ValueError, "give one of them"),
    ],
)
def test_bad_every_n_steps_is_refused_at_construction(tmp_path, kwargs, error, words):
    x, y, xh, yh = data()
    with pytest.raises(error, match=words):
        GradWatch(tmp_path, held_out=(xh, yh), **kwargs)


def test_failing_pass_is_logged_at_its_step_and_training_goes_on(
    tmp_path, monkeypatch, caplog
):
    x, y, xh, yh = data()
    model = mlp()

    def broken(self, batch):
        raise RuntimeError("disk full")

    watch = GradWatch(tmp_path, held_out=(xh, yh), every_n_steps=4)
    monkeypatch.setattr(_probe.GradientProbe, "__call__", broken)
    with caplog.at_level(logging.ERROR, "keras_gradwatch"):
        history = model.fit(
            x, y, batch_size=BATCH, epochs=2, verbose=0, callbacks=[watch]
        )
    assert len(history.history["loss"]) == 2
    failures = [r for r in caplog.records if "failed at step 4" in r.getMessage()]
    assert len(failures) == 1, caplog.text
    assert "failed at step 8" not in caplog.text


def test_report_reads_the_step_axis_and_diagnoses_it(tmp_path, caplog):
    """A deep sigmoid stack whose signal vanishes toward the input (the
    classic case), logged every 4 steps: the report and the live warning
    speak of steps, and the held-out loss is the series' loss."""
    model = mlp(depth=8, activation="sigmoid", init="random_normal")
    with caplog.at_level(logging.WARNING, "keras_gradwatch"):
        fit_watched(model, tmp_path, 2, every_n_steps=4)
    loaded = _report.load(tmp_path)
    (run,) = loaded.runs
    assert run.series.axis == "step"
    assert list(run.series.epochs) == [4, 8, 12, 16]
    logged = read_run(tmp_path / "heldout")[tags.HELDOUT_LOSS]
    np.testing.assert_array_equal(
        run.series.loss, [float(logged[s]) for s in (4, 8, 12, 16)]
    )
    kinds = {f.kind for f in run.findings}
    assert "vanishing" in kinds, _report.table(loaded.runs)
    text = _report.table(loaded.runs)
    assert "4 logged steps (4-16 every 4), held-out loss" in text
    assert "vanishing (steps " in text
    assert _report.to_json(loaded)["runs"][0]["axis"] == "step"
    assert "/heldout), step " in caplog.text


def test_healthy_run_by_step_has_no_findings(tmp_path):
    """The healthy trap: a small tanh MLP that fits, logged every 8 steps for
    12 epochs; its held-out loss keeps falling, so nothing stalls."""
    model = mlp()
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    fit_watched(model, tmp_path, 12, every_n_steps=8)
    (run,) = _report.load(tmp_path).runs
    assert run.series.epochs.size == 12
    assert run.series.loss[-1] < run.series.loss[0] / 2  # it did fit
    assert run.findings == []


def test_per_epoch_and_per_step_fits_in_one_run_keep_the_step_axis(tmp_path):
    model = mlp()
    fit_watched(model, tmp_path, 2)
    fit_watched(model, tmp_path, 2, every_n_steps=5)
    loaded = _report.load(tmp_path)
    (run,) = loaded.runs
    # Iterations 17-32 in the second fit: passes at 20, 25, 30.
    assert list(run.series.epochs) == [20, 25, 30]
    assert any("without an epoch mark" in note for note in loaded.notes)
