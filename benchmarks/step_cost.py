"""What `GradWatch(every_n_steps=N)` adds to `fit`, by optimizer step.

The text model (b) of `overhead.py` (Embedding -> GRU -> 2 x Conv1D ->
Dense) as there: `fit` batch 256, held-out batch 256; 200 steps per epoch,
`--epochs` epochs per `fit`, on one cached input pipeline. Configurations,
one `fit` of each per round, in turn:

- ``none``: no callback (the baseline of every ratio);
- ``hook``: GradWatch with an `every_n_steps` larger than the fit, so only
  its per-step check runs (one read of the optimizer's iteration): what the
  batch hook costs by itself;
- ``every_50``: ``GradWatch(every_n_steps=50)``, 4 passes per epoch.

Each GradWatch instance is made once and reused by every round (its pass is
traced in the warm-up fit, as it is once per model in real use; a new
event file per `fit`); a warm-up fit of each configuration comes first.
The ratio of a round is its `fit` time over that round's ``none``; the
median over rounds is reported. Whole-`fit` times on a shared 2-core
machine vary by 10% or more between identical fits, so GradWatch's own
hooks are also timed inside each `fit` (`on_train_begin`, every
`on_train_batch_end`, `on_epoch_end`, `on_train_end`): their sum over the
`fit` time is its own share, which load from elsewhere slows alike.

A `fit` is timed from its call to the end of the last callback's
`on_train_end` (a clock callback last in every configuration's list). On
this machine `fit` sometimes returns about 7 s after that, with no callback
as with TensorBoard or GradWatch: the stalls are counted per configuration
(``stalls``) and left out of the ratios.

Usage::

    python benchmarks/step_cost.py [--rounds N] [--epochs E] [--every N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from overhead_models import build_text, data_text  # noqa: E402
from timing import median, paired_ratios, time_hooks, timed_fit  # noqa: E402

from keras_gradwatch import GradWatch  # noqa: E402

BATCH, STEPS, HELD_OUT = 256, 200, 256
HOOKS = ("on_train_begin", "on_train_batch_end", "on_epoch_end", "on_train_end")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--steps", type=int, default=STEPS, help="per epoch")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x, y = data_text(rng, args.steps * BATCH)
    held_out = data_text(rng, HELD_OUT)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH).cache()
    for _ in data:  # fill the cache before anything is timed
        pass
    model = build_text()
    tmp = tempfile.mkdtemp(prefix="step_cost_")
    never = args.steps * args.epochs * (args.rounds + 2) + 1
    callbacks: dict[str, list[keras.callbacks.Callback]] = {
        "none": [],
        "hook": [GradWatch(f"{tmp}/hook", held_out, every_n_steps=never)],
        f"every_{args.every}": [
            GradWatch(f"{tmp}/every", held_out, every_n_steps=args.every)
        ],
    }

    stalls: dict[str, int] = {name: 0 for name in callbacks}

    def fit(name: str, epochs: int) -> float:
        seconds, stalled = timed_fit(
            lambda c: model.fit(
                data, epochs=epochs, verbose=0, shuffle=False, callbacks=c
            ),
            callbacks[name],
        )
        stalls[name] += stalled
        return seconds

    for name in callbacks:  # warm-up: Keras' and GradWatch's traces
        fit(name, 1)
    stalls.update(dict.fromkeys(stalls, 0))
    hooks = {
        name: time_hooks(callback[0], HOOKS)
        for name, callback in callbacks.items()
        if callback
    }
    times: dict[str, list[float]] = {name: [] for name in callbacks}
    own: dict[str, list[float]] = {name: [] for name in hooks}
    for _ in range(args.rounds):
        for name in callbacks:
            times[name].append(fit(name, args.epochs))
            if name in hooks:
                total = sum(sum(calls) for calls in hooks[name].values())
                own[name].append(total - sum(own[name]))

    print(
        f"text model (b), batch {BATCH}, {args.steps} steps/epoch, "
        f"{args.epochs} epochs per fit, {args.rounds} rounds"
    )
    print(
        f"{'config':<12} {'median fit s':>12} {'ratio to none':>14} "
        f"{'own % of fit':>13} {'stalls':>6}  ratio per round"
    )
    result: dict[str, Any] = {}
    for name, seconds in times.items():
        ratios = paired_ratios(seconds, times["none"])
        shares = paired_ratios(own.get(name, [0.0] * len(seconds)), seconds)
        result[name] = {
            "seconds": seconds,
            "ratios": ratios,
            "own": shares,
            "stalls": stalls[name],
        }
        print(
            f"{name:<12} {median(seconds):>12.2f} {median(ratios):>14.3f} "
            f"{median(shares):>12.2%} {stalls[name]:>6}  "
            + " ".join(f"{r:.3f}" for r in ratios)
        )
    steps = args.steps * args.epochs
    per_step = median(times["none"]) / steps
    print(f"one training step: {per_step * 1e3:.2f} ms (median none fit / steps)")
    return result


if __name__ == "__main__":
    main()
