"""Every callback under tf.distribute (one and two processes) and tf_keras.

Each configuration trains `tests/scripts/distributed_fit.py` (GradWatch,
WeightNorms and AutoClip("fixed") with SGD lr = 1, one global batch of 16 per
epoch, 3 epochs) in fresh processes; this process checks what they wrote
against single-device Keras 3 references computed here:

- GradWatch: every logged statistic, per epoch, equals that of an eager tape
  on one device with the weights the workers had at the end of the epoch.
- AutoClip: the norm it measured is the norm of the whole global batch's
  gradient (summed over replicas and workers), and the applied step is the
  threshold.
- WeightNorms: the logged norms equal NumPy's on the same weights.
- One copy of each run: exactly one event file per run directory and one
  event per tag and epoch, although the workers share the log directory.
"""

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_file_loader

from helpers import (
    eager_gradients,
    load_script,
    np_global_norm,
    np_stats,
    np_step_norm,
    np_weight_stats,
    read_run,
)
from keras_gradwatch import tags

pytestmark = pytest.mark.numeric

SCRIPT = Path(__file__).resolve().parent / "scripts" / "distributed_fit.py"
fit = load_script(SCRIPT)
TIMEOUT = 240
needs_tf_keras = pytest.mark.skipif(
    importlib.util.find_spec("tf_keras") is None,
    reason="tf_keras is not installed (it is in the [test] extra)",
)

# name: (strategy, Keras, worker processes, replicas in sync)
CONFIGURATIONS = {
    "keras3-mirrored": ("mirrored", "3", 1, 2),
    "tf_keras-single": ("single", "legacy", 1, 1),
    "tf_keras-mirrored": ("mirrored", "legacy", 1, 2),
    "tf_keras-multiworker": ("multiworker", "legacy", 2, 2),
}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(strategy, keras_version, workers, tmp_path):
    """Runs the worker processes to the end; returns the log dir and outputs.

    Bounded in time: a worker that fails or hangs (its peers then wait for it
    in a collective) ends the run, and every process still alive is killed.
    """
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_CONFIG", None)
    if keras_version == "legacy":
        env["TF_USE_LEGACY_KERAS"] = "1"
    cluster = {"worker": [f"127.0.0.1:{_free_port()}" for _ in range(workers)]}
    log_dir = tmp_path / "logs"
    consoles = [tmp_path / f"worker{index}.txt" for index in range(workers)]
    processes = []
    try:
        for index, console in enumerate(consoles):
            if strategy == "multiworker":
                task = {"type": "worker", "index": index}
                env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": task})
            with console.open("w") as out:
                processes.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            str(SCRIPT),
                            strategy,
                            str(log_dir),
                            str(tmp_path / f"worker{index}.npz"),
                        ],  # fmt: skip
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        deadline = time.monotonic() + TIMEOUT
        while any(p.poll() is None for p in processes):
            if time.monotonic() > deadline or any(p.returncode for p in processes):
                break
            time.sleep(0.2)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait()
    for process, console in zip(processes, consoles, strict=True):
        assert process.returncode == 0, console.read_text()[-4000:]
    return log_dir, [np.load(tmp_path / f"worker{i}.npz") for i in range(workers)]


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("keras3-mirrored"),
        pytest.param("tf_keras-single", marks=needs_tf_keras),
        pytest.param("tf_keras-mirrored", marks=needs_tf_keras),
        pytest.param("tf_keras-multiworker", marks=needs_tf_keras),
    ],
)
def run(request, tmp_path_factory):
    strategy, keras_version, workers, replicas = CONFIGURATIONS[request.param]
    log_dir, outputs = _launch(
        strategy, keras_version, workers, tmp_path_factory.mktemp(request.param)
    )
    return {"log_dir": log_dir, "workers": outputs, "replicas": replicas}


def _weights(output, when, epoch):
    return [output[f"{when}/{epoch}/{i}"] for i in range(4)]


def _reference_model(weights):
    model = fit.build()
    model.compile("sgd", "mse")
    model.set_weights(weights)
    return model


def _short(path):
    """``hidden/kernel`` from Keras 3's ``net/hidden/kernel`` or tf_keras'."""
    return "/".join(path.split("/")[-2:])


def test_workers_agree_and_see_every_replica(run):
    chief, *others = run["workers"]
    assert int(chief["replicas"]) == run["replicas"]
    for other in others:
        for key in chief.files:
            np.testing.assert_array_equal(other[key], chief[key], err_msg=key)


def test_one_copy_of_each_run(run):
    for name in ("heldout", "weights", "autoclip", "bystep"):
        files = list((run["log_dir"] / name).iterdir())
        assert len(files) == 1, files
        # By step, the pass after iteration t (one step per epoch).
        first = 1 if name == "bystep" else 0
        for tag, by_step in read_run(run["log_dir"] / name).items():
            # The activations and the chance level are written once per
            # fit, at its first epoch.
            once = tag.startswith(f"{tags.ACTIVATION}/") or tag == tags.CHANCE_LOSS
            expected = [first] if once else list(range(first, fit.EPOCHS + first))
            assert sorted(by_step) == expected, tag
    # A second writer's events would show up as repeated steps in one file
    # too; count the raw events of one tag.
    (path,) = (run["log_dir"] / "heldout").iterdir()
    events = [
        event
        for event in event_file_loader.EventFileLoader(str(path)).Load()
        for value in event.summary.value
        if value.tag == tags.GLOBAL_NORM_TAG
    ]
    assert len(events) == fit.EPOCHS


def test_gradwatch_equals_single_device(run):
    chief = run["workers"][0]
    _, _, (xh, yh) = fit.data()
    logged = read_run(run["log_dir"] / "heldout")
    for epoch in range(fit.EPOCHS):
        model = _reference_model(_weights(chief, "end", epoch))
        reference = eager_gradients(model, xh, yh)
        for path, (g, w) in reference.items():
            expected = np_stats(g, w)
            (tag_path,) = [
                t.split("/", 1)[1]
                for t in logged
                if t.startswith("grad_norm/") and _short(t) == _short(path)
            ]
            for prefix, value in expected.items():
                got = float(logged[f"{prefix}/{tag_path}"][epoch])
                assert got == pytest.approx(value, rel=1e-5, abs=1e-9), (
                    prefix,
                    path,
                    epoch,
                )
        global_norm = np_global_norm(reference)
        assert chief["logs/grad_norm"][epoch] == pytest.approx(global_norm, rel=1e-5)


def test_gradwatch_by_step_logs_the_iteration(run):
    """One step per epoch: the pass after iteration t sees the weights the
    per-epoch pass saw at epoch t - 1, so it logs the same numbers."""
    per_epoch = read_run(run["log_dir"] / "heldout")
    by_step = read_run(run["log_dir"] / "bystep")
    steps = list(range(1, fit.EPOCHS + 1))
    assert {s: float(v) for s, v in by_step[tags.EPOCH_TAG].items()} == {
        s: float(s - 1) for s in steps
    }
    assert tags.TRAIN_LOSS not in by_step  # by step, the loss is the held-out one
    for tag, values in per_epoch.items():
        if tag == tags.CHANCE_LOSS:  # once per fit, at its first logged step
            assert by_step[tag] == {1: values[0]}
            continue
        if tag.startswith(f"{tags.ACTIVATION}/") or tag == tags.TRAIN_LOSS:
            continue
        assert sorted(by_step[tag]) == steps, tag
        for step in steps:
            np.testing.assert_allclose(
                by_step[tag][step], values[step - 1], rtol=1e-6, err_msg=tag
            )


def test_autoclip_clips_the_aggregated_gradient(run):
    chief = run["workers"][0]
    x, y, _ = fit.data()
    for epoch in range(fit.EPOCHS):
        before = _weights(chief, "begin", epoch)
        reference = eager_gradients(_reference_model(before), x, y)
        norm = np_global_norm(reference)
        assert chief["logs/autoclip_max_norm"][epoch] == pytest.approx(norm, rel=1e-5)
        after = _weights(chief, "end", epoch)
        step = np_step_norm(before, after)
        assert step == pytest.approx(fit.THRESHOLD, rel=1e-4)
        assert chief["logs/autoclip_clipped_steps"][epoch] == 1


def test_weightnorms_logged_once_and_right(run):
    chief = run["workers"][0]
    logged = read_run(run["log_dir"] / "weights")
    model = _reference_model(_weights(chief, "end", 0))
    paths = [w.path for w in model.trainable_weights]
    for epoch in range(fit.EPOCHS):
        previous = (
            _weights(chief, "end", epoch - 1) if epoch else _weights(chief, "begin", 0)
        )
        for path, w, p in zip(
            paths, _weights(chief, "end", epoch), previous, strict=True
        ):
            (tag,) = [t for t in logged if t.startswith("weight_l1/")
                      and _short(t) == _short(path)]  # fmt: skip
            tag_path = tag.split("/", 1)[1]
            for prefix, value in np_weight_stats(w, p).items():
                got = float(logged[f"{prefix}/{tag_path}"][epoch])
                assert got == pytest.approx(value, rel=1e-5), (prefix, path, epoch)


@needs_tf_keras
def test_tf_keras_autoclip_needs_a_legacy_optimizer():
    code = (
        "import tensorflow as tf, numpy as np\n"
        "from keras_gradwatch import AutoClip\n"
        "m = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1)])\n"
        "m.compile(tf.keras.optimizers.Adam(), 'mse')\n"
        "try:\n"
        "    m.fit(np.ones((4, 2)), np.ones((4, 1)), verbose=0,"
        " callbacks=[AutoClip()])\n"
        "except ValueError as e:\n"
        "    print('ValueError:', e)\n"
    )
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )
    assert "ValueError: With tf_keras, AutoClip clips through" in done.stdout
    assert "tf_keras.optimizers.legacy.Adam" in done.stdout


@needs_tf_keras
def test_tf_keras_mixed_float16_gradients_are_unscaled(tmp_path):
    """tf_keras' LossScaleOptimizer: GradWatch scales its loss by the current
    scale and divides back, so the tiny gradients survive float16."""
    script = SCRIPT.parent / "tf_keras_mixed_precision.py"
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path), str(tmp_path / "w.npz")],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    mixed = load_script(script)
    weights = list(np.load(tmp_path / "w.npz").values())
    # The float32 reference: the same weights in a Keras 3 float32 model
    # (in this process, `tf.keras` is Keras 3).
    reference = mixed.build()
    reference.compile("sgd", "mse", loss_weights=[mixed.LOSS_WEIGHT])
    reference.set_weights(weights)
    x, y = mixed.data()
    logged = read_run(tmp_path / "heldout")
    for path, (g, w) in eager_gradients(reference, x, y).items():
        (tag,) = [t for t in logged if t.startswith("grad_norm/")
                  and _short(t) == _short(path)]  # fmt: skip
        got = float(logged[tag][0])
        assert got == pytest.approx(np_stats(g, w)["grad_norm"], rel=1e-2), path
