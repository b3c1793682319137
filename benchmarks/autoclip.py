"""What AutoClip costs per training step, next to no clipping and Keras' own.

On the GRU/Conv text model of `overhead.py` (b), five configurations train
in interleaved rounds on the same cached input pipeline, each on its own
model with the same initial weights: no clipping, Keras'
``Adam(global_clipnorm=1.0)``, ``AutoClip()`` (zscore),
``AutoClip("percentile")`` and ``AutoClip(log_dir=..., every_n_steps=1)``
(every step's norm and bound written to TensorBoard). Each `fit` runs
`--steps` steps; the time of every step is taken at ``on_train_batch_end``
and the first `--skip` steps of each `fit` are left out (they include
tracing, which AutoClip repeats once per `fit`; that one-time cost is
printed apart). The figure is the median step time of each configuration
over all rounds, as a ratio to no clipping. Targets: AutoClip <= 1.02 of
no clipping, and every_n_steps=1 <= 1.02 of ``AutoClip()``.

Usage::

    python benchmarks/autoclip.py [--quick] [--rounds N] [--steps S]
"""

from __future__ import annotations

import argparse
import os
import statistics
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
    "autoclip_percentile",
    "autoclip_every_step",
)


class StepTimes(keras.callbacks.Callback):
    def on_train_begin(self, logs: Any = None) -> None:
        self.times: list[float] = []
        self.last = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        now = time.perf_counter()
        self.times.append(now - self.last)
        self.last = now


def make(
    config: str, weights: list[np.ndarray], log_dir: str
) -> tuple[keras.Model, list[Any]]:
    model = build_text()
    model.set_weights(weights)
    options = {"global_clipnorm": 1.0} if config == "keras_global_clipnorm" else {}
    model.compile(keras.optimizers.Adam(**options), "binary_crossentropy")
    callbacks: list[Any] = []
    if config == "autoclip_zscore":
        callbacks = [AutoClip()]
    elif config == "autoclip_percentile":
        callbacks = [AutoClip("percentile")]
    elif config == "autoclip_every_step":
        callbacks = [AutoClip(log_dir=log_dir, every_n_steps=1)]
    return model, callbacks


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--skip", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.steps, args.skip, args.batch = 1, 4, 1, 16

    keras.utils.set_random_seed(0)
    x, y = data_text(np.random.default_rng(0), args.batch * args.steps)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(args.batch).cache().repeat()
    initial = build_text().get_weights()
    log_dir = tempfile.mkdtemp(prefix="autoclip_bench_")
    runs = {config: make(config, initial, log_dir) for config in CONFIGS}
    steps: dict[str, list[float]] = {config: [] for config in CONFIGS}
    first: dict[str, list[float]] = {config: [] for config in CONFIGS}
    for model, callbacks in runs.values():  # warm-up fit: traces
        model.fit(data, epochs=1, steps_per_epoch=2, verbose=0, callbacks=callbacks)
    for _ in range(args.rounds):
        for config, (model, callbacks) in runs.items():
            timer = StepTimes()
            model.fit(data, epochs=1, steps_per_epoch=args.steps, verbose=0,
                      callbacks=[*callbacks, timer])  # fmt: skip
            first[config].append(timer.times[0])
            steps[config] += timer.times[args.skip :]

    medians = {config: statistics.median(t) for config, t in steps.items()}
    base = medians["none"]
    print(
        f"GRU/Conv text model, batch {args.batch}, {args.rounds} round(s) x "
        f"{args.steps} steps, first {args.skip} of each fit left out."
    )
    print("| configuration | step (ms) | ratio to none | first step of a fit (ms) |")
    print("|---|---:|---:|---:|")
    for config in CONFIGS:
        print(
            f"| {config} | {medians[config] * 1e3:.1f} | "
            f"{medians[config] / base:.3f} | "
            f"{statistics.median(first[config]) * 1e3:.0f} |"
        )
    ratio = medians["autoclip_zscore"] / base
    verdict = "ok" if ratio <= 1.02 else "MISSED"
    print(f"AutoClip (zscore) per-step ratio {ratio:.3f}: {verdict} (target <= 1.02)")
    every = medians["autoclip_every_step"] / medians["autoclip_zscore"]
    verdict = "ok" if every <= 1.02 else "MISSED"
    print(
        f"every_n_steps=1 vs AutoClip() per-step ratio {every:.3f}: {verdict} "
        "(target <= 1.02)"
    )
    return {config: medians[config] / base for config in CONFIGS}


if __name__ == "__main__":
    main()
