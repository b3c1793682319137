"""AutoClip in the first steps: healthy runs and the corrupted-labels run.

Two measurements of ``AutoClip()`` (zscore) and ``AutoClip("percentile")``
at their defaults:

1. **Clean runs**: the share of steps AutoClip clips on healthy training,
   in the first 25 steps and in all, on the models of the examples
   (two circles with ReLU/He init and SGD, the digits MLP with ReLU and
   Adam, the GRU/Conv sentiment model) and on the text model of
   `benchmarks/autoclip.py`. A step counts as clipped when AutoClip's
   ``clipped`` counter moved (read after every batch; this benchmark may
   use batch hooks, AutoClip itself does not).
2. **Corrupted labels**: the regression MLP of the issue, 6 x Dense(32,
   relu, he_uniform), SGD(0.01, momentum 0.9), batch 64, 2048 shuffled rows
   whose labels have unit variance, 8 of them multiplied by 1000; the
   clean-data mse after 20 epochs, per seed.

Run it with the code before and after a change of the rules (put the older
package first on ``PYTHONPATH``) to compare them.

Usage::

    python benchmarks/autoclip_early.py [--quick] [--seeds N]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "examples")]

import activations_digits  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import sentiment_gru_conv  # noqa: E402
import two_circles  # noqa: E402
from overhead import build_text, data_text  # noqa: E402

from keras_gradwatch import AutoClip, _autoclip  # noqa: E402

MODES = ("zscore", "percentile")
EARLY = 25


class Clipped(keras.callbacks.Callback):
    """Whether each step was clipped, from AutoClip's counter."""

    def on_train_begin(self, logs: Any = None) -> None:
        self.flags: list[bool] = []
        self.last = 0

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        state = getattr(self.model.optimizer, _autoclip.STATE_ATTRIBUTE)
        count = int(state.clipped.numpy())
        self.flags.append(count > self.last)
        self.last = count


def clean_cases(quick: bool) -> dict[str, Any]:
    """name -> () -> (model, x, y, fit arguments)."""
    scale = 0.1 if quick else 1.0

    def circles() -> Any:
        keras.utils.set_random_seed(1)
        x, y, _, _ = two_circles.load_data(1)
        model = two_circles.build_model("relu", keras.initializers.HeUniform)
        return model, x, y, {"epochs": max(1, int(100 * scale)), "batch_size": 32}

    def digits() -> Any:
        keras.utils.set_random_seed(0)
        x, _, y, _ = activations_digits.load_data(0)
        model = activations_digits.build_model("relu", 1e-3)
        return model, x, y, {"epochs": max(1, int(20 * scale)), "batch_size": 32}

    def sentiment() -> Any:
        keras.utils.set_random_seed(0)
        x, y = sentiment_gru_conv.make_data(2000, 2000, 50, 0)
        model = sentiment_gru_conv.build_model(2000, 50)
        return model, x, y, {"epochs": max(1, int(5 * scale)), "batch_size": 32}

    def text() -> Any:
        keras.utils.set_random_seed(0)
        x, y = data_text(np.random.default_rng(0), 256 * (4 if quick else 40))
        return build_text(), x, y, {"epochs": 2, "batch_size": 256}

    return {
        "two_circles (relu, SGD)": circles,
        "digits (relu, Adam)": digits,
        "sentiment GRU/Conv (Adam)": sentiment,
        "benchmark text model (Adam)": text,
    }


def clean(quick: bool) -> list[dict[str, Any]]:
    rows = []
    for name, make in clean_cases(quick).items():
        for mode in MODES:
            model, x, y, fit = make()
            flags = Clipped()
            model.fit(x, y, verbose=0, callbacks=[AutoClip(mode), flags], **fit)
            steps = len(flags.flags)
            rows.append(
                {
                    "model": name,
                    "mode": mode,
                    "steps": steps,
                    "early": sum(flags.flags[:EARLY]),
                    "after": sum(flags.flags[EARLY:]),
                    "share": sum(flags.flags) / steps,
                }
            )
    return rows


def corrupted_data(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2048, 8)).astype("float32")
    y = (x @ rng.normal(size=(8, 1)) / np.sqrt(8)).astype("float32")
    corrupted = y.copy()
    corrupted[rng.choice(2048, 8, replace=False)] *= 1000.0
    return x, y, corrupted


def corrupted_net(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    relu = {"activation": "relu", "kernel_initializer": "he_uniform"}
    model = keras.Sequential(
        [keras.Input((8,))]
        + [keras.layers.Dense(32, **relu) for _ in range(6)]
        + [keras.layers.Dense(1)]
    )
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "mse")
    return model


def corrupted(seeds: int, epochs: int) -> list[dict[str, Any]]:
    rows = []
    for mode in MODES:
        for seed in range(seeds):
            x, y, labels = corrupted_data(seed)
            model = corrupted_net(seed)
            history = model.fit(x, labels, batch_size=64, epochs=epochs, verbose=0,
                                callbacks=[AutoClip(mode)]).history  # fmt: skip
            prediction = model.predict(x, batch_size=2048, verbose=0)
            rows.append(
                {
                    "mode": mode,
                    "seed": seed,
                    "finite": all(np.isfinite(w.numpy()).all() for w in model.weights),
                    "mse": float(np.mean((prediction - y) ** 2)),
                    "skipped": int(sum(history["autoclip_skipped_steps"])),
                }
            )
    return rows


def main(argv: list[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test")
    parser.add_argument("--seeds", type=int, default=12)
    args = parser.parse_args(argv)
    seeds, epochs = (1, 2) if args.quick else (args.seeds, 20)

    clean_rows = clean(args.quick)
    print(f"Clean runs: steps clipped in the first {EARLY} and after.")
    print("| model | mode | steps | clipped, first 25 | clipped, after | share |")
    print("|---|---|---:|---:|---:|---:|")
    for r in clean_rows:
        print(
            f"| {r['model']} | {r['mode']} | {r['steps']} | {r['early']} | "
            f"{r['after']} | {r['share']:.1%} |"
        )
    corrupted_rows = corrupted(seeds, epochs)
    print(f"Corrupted labels: clean-data mse after {epochs} epochs.")
    print("| mode | " + " | ".join(f"seed {s}" for s in range(seeds)) + " |")
    print("|---|" + "---:|" * seeds)
    for mode in MODES:
        cells = [
            f"{r['mse']:.3g}" if r["finite"] else "non-finite"
            for r in corrupted_rows
            if r["mode"] == mode
        ]
        print(f"| {mode} | " + " | ".join(cells) + " |")
    return {"clean": clean_rows, "corrupted": corrupted_rows}


if __name__ == "__main__":
    main()
