"""The example scripts run end to end and leave gradients TensorBoard can read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers import load_script, read_run

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# script: (tiny arguments besides --logdir, run directories under --logdir,
#          whether it runs WeightNorms too)
CASES = {
    "two_circles": (["--epochs", "2"], ["tanh_uniform", "relu_he"], True),
    "sentiment_gru_conv": (["--epochs", "1", "--samples", "64"], ["."], True),
    "activations_digits": (
        ["--epochs", "1"],
        ["sigmoid", "relu", "leaky_relu"],
        False,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_example_logs_gradients(name, tmp_path, capsys):
    args, runs, weight_norms = CASES[name]
    epochs = int(args[args.index("--epochs") + 1])
    example = load_script(EXAMPLES / f"{name}.py")

    results = example.main(["--logdir", str(tmp_path), *args])

    assert isinstance(results, dict)
    assert f"tensorboard --logdir {tmp_path}" in capsys.readouterr().out
    for run in runs:
        run_dir = tmp_path / run
        subs = ["heldout", "train", "validation"] + ["weights"] * weight_norms
        for sub in subs:
            assert (run_dir / sub).is_dir(), f"missing {run_dir / sub}"
        tensors = read_run(run_dir / "heldout")
        kernels = [
            tag
            for tag in tensors
            if tag.startswith("grad/") and tag.endswith("/kernel")
        ]
        assert kernels, f"no grad/.../kernel histogram in {run_dir / 'heldout'}"
        for tag in kernels:
            assert sorted(tensors[tag]) == list(range(epochs))
            assert tensors[tag][epochs - 1].shape == (30, 3)
        logged = tensors["grad_norm/global"]
        assert sorted(logged) == list(range(epochs))
        # The returned norm comes from history.history["grad_norm"]. A
        # single-run example returns its results at the top level.
        result = results.get(run, results)
        returned = result["grad_norm"]
        if isinstance(returned, list):
            assert len(returned) == epochs
            returned = returned[-1]
        np.testing.assert_allclose(returned, logged[epochs - 1], rtol=1e-6)
        assert 0.0 <= result["accuracy"] <= 1.0
        if not weight_norms:
            continue
        moved = read_run(run_dir / "weights")
        for tag in kernels:
            change = moved[tag.replace("grad/", "weight_change/", 1)]
            assert sorted(change) == list(range(epochs))
            assert change[epochs - 1] > 0


def test_progress_lines_are_throttled(capsys, monkeypatch):
    progress_module = load_script(EXAMPLES / "progress.py")
    clock = iter([0.0, 0.5, 1.0, 2.5, 3.0, 3.2])  # begin, then epochs 1-5
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: next(clock))
    progress = progress_module.Progress("run", epochs=5)
    progress.on_train_begin()
    for epoch in range(5):
        progress.on_epoch_end(epoch, {"loss": 0.5 - 0.1 * epoch})
    assert capsys.readouterr().out.splitlines() == [
        "run: epoch 3/5, train loss 0.3000",  # 2.5 s after the start
        "run: epoch 5/5, train loss 0.1000",  # the last epoch, always
    ]
