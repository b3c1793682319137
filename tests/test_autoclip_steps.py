"""AutoClip(every_n_steps=N): every N-th step's norm and bound, in-graph."""

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from helpers import NpAutoClip, load_script, read_run
from keras_gradwatch import AutoClip
from keras_gradwatch._cli import main
from keras_gradwatch.spikes import find_spikes

# The benchmark's text model (b), as the issue asks.
overhead = load_script(
    Path(__file__).resolve().parent.parent / "benchmarks/overhead.py"
)

pytestmark = pytest.mark.numeric


def test_every_step_on_the_text_model(tmp_path):
    """One point per step; the epoch's largest is the epoch's max_norm; the
    bounds are those of the documented rules for the logged norms."""
    keras.utils.set_random_seed(0)
    x, y = overhead.data_text(np.random.default_rng(0), 32 * 6)
    model = overhead.build_text()
    history = model.fit(
        x, y, batch_size=32, epochs=2, verbose=0,
        callbacks=[AutoClip(log_dir=tmp_path, every_n_steps=1)],
    ).history  # fmt: skip
    logged = read_run(tmp_path / "autoclip")
    norms = logged["autoclip/step_grad_norm"]
    assert sorted(norms) == list(range(12))
    for epoch in (0, 1):
        largest = max(float(norms[s]) for s in range(6 * epoch, 6 * epoch + 6))
        assert largest == float(logged["autoclip/max_norm"][epoch])
        assert largest == pytest.approx(history["autoclip_max_norm"][epoch])
    reference = NpAutoClip()
    bounds = logged["autoclip/step_threshold"]
    for step in range(12):
        expected, _ = reference.bound(float(norms[step]))
        assert float(bounds[step]) == pytest.approx(expected, rel=1e-5), step


def small_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=False)
    return model


def test_every_third_step_by_optimizer_iteration_without_skipped_ones(tmp_path):
    x = np.random.default_rng(1).normal(size=(80, 3)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    y[8 * 4] = np.nan  # step 4 is skipped: the optimizer's iteration stays
    model = small_model()
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0,
              callbacks=[AutoClip(log_dir=tmp_path, every_n_steps=3)])  # fmt: skip
    assert int(model.optimizer.iterations.numpy()) == 9
    logged = read_run(tmp_path / "autoclip")
    assert sorted(logged["autoclip/step_grad_norm"]) == [0, 3, 6]
    assert sorted(logged["autoclip/step_threshold"]) == [0, 3, 6]
    assert np.isinf(logged["autoclip/step_threshold"][0])  # nothing to compare


def test_per_epoch_scalars_only_by_default(tmp_path):
    x = np.ones((16, 3), "float32")
    small_model().fit(x, x[:, :1], batch_size=8, verbose=0,
                      callbacks=[AutoClip(log_dir=tmp_path)])  # fmt: skip
    assert not [t for t in read_run(tmp_path / "autoclip") if "step_" in t]


def test_xla_is_refused_before_training(tmp_path):
    model = small_model()
    model.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=True)
    x = np.ones((16, 3), "float32")
    with pytest.raises(ValueError, match=r"jit_compile=False.*every_n_steps=2"):
        model.fit(x, x[:, :1], verbose=0,
                  callbacks=[AutoClip(log_dir=tmp_path, every_n_steps=2)])  # fmt: skip
    assert "apply" not in vars(model.optimizer)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"every_n_steps": 5}, ValueError, r"needs `log_dir`.*every_n_steps=5"),
        (
            {"every_n_steps": 0, "log_dir": "logs"},
            ValueError,
            r"`every_n_steps` must be >= 1. Received: every_n_steps=0",
        ),
        (
            {"every_n_steps": 1.5, "log_dir": "logs"},
            TypeError,
            r"`every_n_steps` must be an int",
        ),
    ],
)
def test_every_n_steps_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        AutoClip(**kwargs)


def test_report_shows_the_spikes(tmp_path, capsys):
    """`gradwatch report` lists the steps where the logged norm spiked: those
    `find_spikes` finds in the series TensorBoard's reader reads back, which
    include the batches made to spike."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(8 * 60, 3)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    spiked = [20, 21, 45]  # batches, so optimizer steps (none is skipped)
    for step in spiked:
        x[8 * step : 8 * (step + 1)] *= 50.0
    small_model().fit(
        x, y, batch_size=8, epochs=1, shuffle=False, verbose=0,
        callbacks=[AutoClip(log_dir=tmp_path, every_n_steps=1)],
    )  # fmt: skip
    norms = read_run(tmp_path / "autoclip")["autoclip/step_grad_norm"]
    steps = sorted(norms)
    want = find_spikes(steps, [float(norms[s]) for s in steps]).tolist()
    assert set(spiked) <= set(want)

    assert main(["report", str(tmp_path), "--json"]) == 0
    (clip,) = json.loads(capsys.readouterr().out)["autoclip"]
    assert clip["run"] == "autoclip"
    assert clip["steps"] == len(steps)
    assert [s["step"] for s in clip["spikes"]] == want
    for spike in clip["spikes"]:
        assert spike["norm"] == pytest.approx(float(norms[spike["step"]]))

    assert main(["report", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert f"{len(want)} spike(s)" in text
    assert all(f"step {s}: norm" in text for s in want)
