"""What AutoClip costs per training step, next to no clipping and Keras' own.

On the GRU/Conv text model of `overhead.py` (b), eight configurations train on
the same cached input pipeline, each on its own model with the same initial
weights: no clipping, Keras' ``Adam(global_clipnorm=1.0)``, ``AutoClip()``
(zscore), a second ``AutoClip()`` on its own model (a control: it measures
what two identical configurations differ by, the benchmark's resolution),
``AutoClip("percentile")`` and ``AutoClip(log_dir=..., every_n_steps=1)``
(every step's norm and bound written to TensorBoard); and, on the same
model with ``SGD(0.01, momentum=0.9)``, ``AutoClip()`` against
``AutoClip(relative_step=None)``: what zscore's step bound (on with SGD
only) costs.

The steps are interleaved one by one: after each callback's
``on_train_begin`` (where AutoClip installs itself and Keras' train function
is rebuilt, as in `fit`), every configuration in turn runs one step of its
model's train function, the function `fit` calls per step, waiting for its
loss. The order rotates each cycle and reverses every few cycles, so no
configuration is always first, and a slow second of the machine falls on
all of them alike. Comparing whole `fit` calls one after another instead
left differences of 5% between two identical configurations.

The figure is each configuration's median step time as a ratio to no
clipping (or to ``AutoClip()``), with a 95% interval from resampling the
cycles (the same cycles for both sides of a ratio). The first step of a
`fit`, where AutoClip's trace falls, is timed apart: the first step after
``on_train_begin``, following a warm-up `fit` whose trace Keras keeps.
Targets: AutoClip <= 1.02 of no clipping, and every_n_steps=1 <= 1.02 of
``AutoClip()``, and the step bound <= 1.02 of the spike test alone.

A second measure of the step scalars' cost, with everything else equal:
one model with ``AutoClip(log_dir=..., every_n_steps=2)`` trains twice as
many steps, and the steps that write (even iterations) are compared with
those that do not (odd ones), pairing each with the next.

Usage::

    python benchmarks/autoclip.py [--quick] [--steps N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from overhead_models import build_text, data_text  # noqa: E402

from keras_gradwatch import AutoClip  # noqa: E402

CONFIGS = (
    "none",
    "keras_global_clipnorm",
    "autoclip_zscore",
    "autoclip_zscore_again",
    "autoclip_percentile",
    "autoclip_every_step",
    "sgd_autoclip_spike_test_only",
    "sgd_autoclip",
)
TARGET = 1.02


def make(
    config: str, weights: list[np.ndarray], log_dir: str
) -> tuple[keras.Model, list[Any]]:
    model = build_text()
    model.set_weights(weights)
    options = {"global_clipnorm": 1.0} if config == "keras_global_clipnorm" else {}
    optimizer = keras.optimizers.Adam(**options)
    if config.startswith("sgd_"):  # where AutoClip's step bound is on
        optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    model.compile(optimizer, "binary_crossentropy")
    callbacks: list[Any] = []
    if config in ("autoclip_zscore", "autoclip_zscore_again", "sgd_autoclip"):
        callbacks = [AutoClip()]
    elif config == "sgd_autoclip_spike_test_only":
        callbacks = [AutoClip(relative_step=None)]
    elif config == "autoclip_percentile":
        callbacks = [AutoClip("percentile")]
    elif config == "autoclip_every_step":
        callbacks = [AutoClip(log_dir=log_dir, every_n_steps=1)]
    return model, callbacks


def begin(model: keras.Model, callbacks: list[Any]) -> None:
    """What `fit` does before its first step: AutoClip installs itself."""
    for callback in callbacks:
        callback.set_model(model)
        callback.on_train_begin()
        callback.on_epoch_begin(0)
    model.make_train_function()


def end(callbacks: list[Any]) -> None:
    for callback in callbacks:
        callback.on_epoch_end(0, {})
        callback.on_train_end()


def interleave(
    runs: dict[str, tuple[keras.Model, list[Any]]], data: tf.data.Dataset, steps: int
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Each configuration's step times, one step of each in turn, and the
    time of its first step (where a `fit`'s trace falls)."""
    iterators = {}
    first = {}
    for config, (model, callbacks) in runs.items():
        begin(model, callbacks)
        iterators[config] = iter(data)
        for step in range(3):  # the trace, and the first steps after it
            start = time.perf_counter()
            float(model.train_function(iterators[config])["loss"])
            if not step:
                first[config] = time.perf_counter() - start
    times: dict[str, list[float]] = {config: [] for config in runs}
    names = list(runs)
    try:
        for cycle in range(steps):
            shift = cycle % len(names)
            order = names[shift:] + names[:shift]
            if (cycle // len(names)) % 2:
                order.reverse()
            for config in order:
                model = runs[config][0]
                start = time.perf_counter()
                float(model.train_function(iterators[config])["loss"])
                times[config].append(time.perf_counter() - start)
    finally:
        for _, callbacks in runs.values():
            end(callbacks)
    return {config: np.array(t) for config, t in times.items()}, first


def alternate(
    data: tf.data.Dataset, weights: list[np.ndarray], log_dir: str, steps: int
) -> dict[str, np.ndarray]:
    """Step times of one model whose AutoClip writes every second step."""
    model, _ = make("none", weights, log_dir)
    callback = AutoClip(log_dir=log_dir, run="every_2", every_n_steps=2)
    model.fit(data, epochs=1, steps_per_epoch=2, verbose=0, callbacks=[callback])
    begin(model, [callback])
    iterator = iter(data)
    times: dict[str, list[float]] = {"writes": [], "does_not_write": []}
    try:
        for step in range(3 + 2 * steps):
            # AutoClip writes when the iteration before the update is even.
            due = int(model.optimizer.iterations.numpy()) % 2 == 0
            start = time.perf_counter()
            float(model.train_function(iterator)["loss"])
            if step >= 3:
                key = "writes" if due else "does_not_write"
                times[key].append(time.perf_counter() - start)
    finally:
        end([callback])
    return {key: np.array(value) for key, value in times.items()}


def ratio(
    times: dict[str, np.ndarray], config: str, base: str, rng: np.random.Generator
) -> tuple[float, float, float]:
    """Median step time of `config` over `base`, with a 95% interval from
    resampling the cycles."""
    a, b = times[config], times[base]
    cycles = min(len(a), len(b))
    a, b = a[:cycles], b[:cycles]
    resampled = []
    for _ in range(2000):
        index = rng.integers(0, cycles, cycles)
        resampled.append(np.median(a[index]) / np.median(b[index]))
    low, high = np.percentile(resampled, [2.5, 97.5])
    return float(np.median(a) / np.median(b)), float(low), float(high)


def verdict(name: str, value: tuple[float, float, float]) -> str:
    middle, low, high = value
    if high <= TARGET:
        word = "ok, and so is its interval"
    elif middle <= TARGET:
        word = "ok, though its interval reaches past it"
    else:
        word = "MISSED"
    return (
        f"{name} per-step ratio {middle:.3f} (95% {low:.3f}-{high:.3f}): {word} "
        f"(target <= {TARGET})"
    )


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test")
    parser.add_argument(
        "--steps", type=int, default=300, help="interleaved steps per configuration"
    )
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.batch = 6, 16

    keras.utils.set_random_seed(0)
    x, y = data_text(np.random.default_rng(0), args.batch * 40)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(args.batch).cache().repeat()
    initial = build_text().get_weights()
    with tempfile.TemporaryDirectory(prefix="autoclip_bench_") as log_dir:
        runs = {config: make(config, initial, log_dir) for config in CONFIGS}
        for model, callbacks in runs.values():
            # Builds; Keras keeps its trace for later, AutoClip retraces.
            model.fit(data, epochs=1, steps_per_epoch=2, verbose=0, callbacks=callbacks)
        times, first = interleave(runs, data, args.steps)
        halves = alternate(data, initial, log_dir, args.steps)

    rng = np.random.default_rng(0)
    to_none = {config: ratio(times, config, "none", rng) for config in CONFIGS}
    print(
        f"GRU/Conv text model, batch {args.batch}, {args.steps} steps of each "
        "configuration, interleaved one by one."
    )
    print(
        "| configuration | step (ms) | ratio to none (95%) | first step of a fit (ms) |"
    )
    print("|---|---:|---:|---:|")
    for config in CONFIGS:
        middle, low, high = to_none[config]
        print(
            f"| {config} | {np.median(times[config]) * 1e3:.1f} | "
            f"{middle:.3f} ({low:.3f}-{high:.3f}) | {first[config] * 1e3:.0f} |"
        )
    control = ratio(times, "autoclip_zscore_again", "autoclip_zscore", rng)
    print(
        f"Control, a second AutoClip() against the first: {control[0]:.3f} "
        f"(95% {control[1]:.3f}-{control[2]:.3f}), the benchmark's resolution."
    )
    print(verdict("AutoClip (zscore)", to_none["autoclip_zscore"]))
    every = ratio(times, "autoclip_every_step", "autoclip_zscore", rng)
    print(verdict("every_n_steps=1 vs AutoClip()", every))
    bound = ratio(times, "sgd_autoclip", "sgd_autoclip_spike_test_only", rng)
    print(verdict("SGD: AutoClip() vs its spike test alone (the step bound)", bound))
    written = ratio(halves, "writes", "does_not_write", rng)
    print(
        "every_n_steps=2 on one model, steps that write vs steps that do not: "
        f"{written[0]:.3f} (95% {written[1]:.3f}-{written[2]:.3f})"
    )
    return {config: value[0] for config, value in to_none.items()}


if __name__ == "__main__":
    main()
