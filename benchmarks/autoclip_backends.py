"""What AutoClip costs per training step, on this run's backend.

``KERAS_BACKEND=jax python benchmarks/autoclip_backends.py`` (or ``torch``,
``tensorflow``). On the benchmark models of `overhead.py`
(`overhead_models.py`; by default the GRU/Conv text model, b, and the CNN,
c), six configurations train, each on its own model with the same initial
weights and optimizer: no clipping, twice (two models: the baseline is
their mean in each round, and their ratio, the control, is what two
identical configurations differ by, the benchmark's resolution);
``AutoClip()``, twice; ``AutoClip("percentile")``; and
``AutoClip(log_dir=..., every_n_steps=1)``.

Each step is the train function `fit` calls per step, after the callbacks'
``set_model``, ``on_train_begin`` and ``on_epoch_begin`` (where AutoClip
installs itself and the train function is rebuilt), on one fixed batch,
with the learning rate at 0, waiting for its loss. At 0, every
configuration computes the same numbers every step (the optimizer still
does all its work): the figure is AutoClip's own work, not that of
another trajectory (clipped weights drift from unclipped ones, and on a
CPU a kernel's speed depends on its values: in a first version, trained
at Adam's default rate, AutoClip's CNN steps were 3% faster than no
clipping's). The norms are then the same every step, so no step is
clipped: the common case. Steps are taken on JAX with the state threaded
from step to step as `fit` threads it (``train_function(state, data)``), on
PyTorch ``train_function(data)``, on TensorFlow
``train_function(iterator)``. The
configurations take their steps in turn in every round, so load from
elsewhere hits them alike, in an order that rotates each round and reverses
every other cycle of rounds, so none is always first (`rotated`). The figure
is the median over rounds of each configuration's step time over the mean
of the two no-clipping models' in the same round, with a 95% interval from
resampling rounds.
Target: AutoClip <= 1.02 of no clipping.

Usage::

    KERAS_BACKEND=jax python benchmarks/autoclip_backends.py [--models bc]
        [--repeats N] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from overhead_models import SPECS  # noqa: E402
from timing import paired_ratios, timed  # noqa: E402

from keras_gradwatch import AutoClip  # noqa: E402

CONFIGS = (
    "none",
    "none_again",
    "autoclip",
    "autoclip_again",
    "percentile",
    "every_step",
)
MEASURED = CONFIGS[2:]
TARGET = 1.02


def callbacks_for(config: str, log_dir: str) -> list[Any]:
    if config in ("autoclip", "autoclip_again"):
        return [AutoClip()]
    if config == "percentile":
        return [AutoClip("percentile")]
    if config == "every_step":
        return [AutoClip(log_dir=os.path.join(log_dir, config), every_n_steps=1)]
    return []


class Steps:
    """One configuration's model, stepped as `fit` steps it."""

    def __init__(self, model: keras.Model, callbacks: list[Any], x: Any, y: Any):
        self.model, self.callbacks = model, callbacks
        model.optimizer.build(model.trainable_variables)  # as fit does first
        for callback in callbacks:
            callback.set_model(model)
            callback.on_train_begin()
            callback.on_epoch_begin(0)
        model.make_train_function()
        self.backend = keras.backend.backend()
        batch = (keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y))
        self.data: Any = [batch]
        if self.backend == "tensorflow":
            import tensorflow as tf

            self.data = iter(tf.data.Dataset.from_tensors(batch).repeat())
        self.state: Any = None
        if self.backend == "jax":
            self.state = model._get_jax_state(
                trainable_variables=True,
                non_trainable_variables=True,
                optimizer_variables=True,
                metrics_variables=True,
                purge_model_variables=True,
            )

    def __call__(self, _: int = 0) -> float:
        if self.backend == "jax":
            step = self.model.train_function
            logs, self.state = step(self.state, iter(self.data))
        else:
            logs = self.model.train_function(self.data)
        return float(logs["loss"])

    def close(self) -> None:
        if self.backend == "jax":
            names = ("trainable", "non_trainable", "optimizer", "metrics")
            self.model._jax_state = {
                f"{name}_variables": values
                for name, values in zip(names, self.state, strict=True)
            }
            self.model._jax_state_synced = False
            self.model.jax_state_sync()
        for callback in self.callbacks:
            callback.on_epoch_end(0, {})
            callback.on_train_end()


def rotated(calls: dict[str, Any], repeats: int) -> dict[str, list[float]]:
    """Times each call once per round, `repeats` rounds: ``{name: [seconds]}``.
    Round i starts at call i (mod their number), and every other cycle of
    rounds goes backwards: the first call of a round (after the previous
    round's last) would otherwise always be the same one."""
    names = list(calls)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(repeats):
        shift = i % len(names)
        order = names[shift:] + names[:shift]
        if (i // len(names)) % 2:
            order.reverse()
        for name in order:
            times[name].append(timed(calls[name]))
    return times


def interval(
    ratios: list[float], rng: np.random.Generator
) -> tuple[float, float, float]:
    """The median of per-round ratios, with a 95% interval from resampling
    the rounds."""
    values = np.asarray(ratios)
    resampled = [
        np.median(values[rng.integers(0, len(values), len(values))])
        for _ in range(2000)
    ]
    low, high = np.percentile(resampled, [2.5, 97.5])
    return float(np.median(values)), float(low), float(high)


def measure(key: str, repeats: int, quick: bool, log_dir: str) -> dict[str, Any]:
    spec = SPECS[key]
    rows = spec.quick_batch if quick else spec.batch
    keras.utils.set_random_seed(0)
    x, y = spec.data(np.random.default_rng(0), rows)
    initial = spec.build().get_weights()
    runs = {}
    for config in CONFIGS:
        model = spec.build()
        model.set_weights(initial)
        model.optimizer.learning_rate = 0.0  # the same numbers every step
        runs[config] = Steps(model, callbacks_for(config, log_dir), x, y)
        for _ in range(3):  # the trace, and the first steps after it
            runs[config]()
    try:
        times = rotated(dict(runs.items()), repeats)
    finally:
        for run in runs.values():
            run.close()
    rng = np.random.default_rng(0)
    base = [
        (a + b) / 2 for a, b in zip(times["none"], times["none_again"], strict=True)
    ]
    out: dict[str, Any] = {"step_ms": 1e3 * statistics.median(base)}
    for config in MEASURED:
        out[config] = interval(paired_ratios(times[config], base), rng)
    out["control"] = interval(paired_ratios(times["none_again"], times["none"]), rng)
    return out


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="bc")
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--quick", action="store_true", help="smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 3
    print(f"backend: {keras.backend.backend()} (keras {keras.__version__})")
    print("| model | step (ms) | configuration | ratio to no clipping (95%) |")
    print("|---|---:|---|---:|")
    results = {}
    with tempfile.TemporaryDirectory(prefix="autoclip_backends_") as log_dir:
        for key in args.models:
            row = results[key] = measure(key, args.repeats, args.quick, log_dir)
            for config in (*MEASURED, "control"):
                middle, low, high = row[config]
                name = "control: none vs none" if config == "control" else config
                print(
                    f"| {SPECS[key].name} | {row['step_ms']:.1f} | {name} | "
                    f"{middle:.3f} ({low:.3f}-{high:.3f}) |"
                )
            middle, _, high = row["autoclip"]
            word = "ok" if middle <= TARGET else "MISSED"
            print(
                f"{SPECS[key].name}: AutoClip() {middle:.3f} per step, 95% up to "
                f"{high:.3f}: {word} (target <= {TARGET})"
            )
    return results


if __name__ == "__main__":
    main()
