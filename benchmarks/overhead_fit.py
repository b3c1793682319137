"""Measurement 2 of `overhead.py`: what the callbacks add to `model.fit`.

`fit` runs with no callback, with GradWatch and with
`keras.callbacks.TensorBoard(histogram_freq=1)`, in rounds (none, GradWatch,
TensorBoard, none, ...) after one short warm-up fit of each, on the same
model object and the same cached input pipeline, each with a fresh callback
and log directory. The callbacks' hooks are timed inside `fit` too;
`split_hooks` splits their time into a once-per-fit setup and the per-epoch
part, the figure the 3% target is about.
"""

from __future__ import annotations

import math
import os
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from timing import median, paired_ratios, time_hooks, timed

from keras_gradwatch import GradWatch

CONFIGS = ("none", "gradwatch", "tensorboard")
# Every hook each callback does work in (TensorBoard writes the train graph
# at the first batch).
GW_HOOKS = ("on_train_begin", "on_epoch_end", "on_train_end")
TB_HOOKS = (
    "set_model",
    "on_train_begin",
    "on_train_batch_end",
    "on_epoch_end",
    "on_train_end",
)


def measure_fit(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    held_out: tuple[np.ndarray, np.ndarray],
    batch: int,
    epochs: int,
    rounds: int,
    tmp: str,
) -> dict[str, Any]:
    """`fit` with no callback / GradWatch / TensorBoard, interleaved rounds."""
    counter = 0
    # One input pipeline for every fit: converting a large NumPy array anew
    # in each fit cost some fits ~20 s more than others on (c), whichever
    # callback they had, and hid the callbacks' own cost.
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).cache()
    for _ in data:  # fill the cache before anything is timed
        pass

    def one_fit(config: str, n_epochs: int, batches: int | None) -> tuple[float, dict]:
        nonlocal counter
        counter += 1
        log_dir = os.path.join(tmp, f"fit_{counter:03d}_{config}")
        callbacks, hooks = make_callbacks(config, log_dir, held_out)
        inputs = data if batches is None else data.take(batches)
        seconds = timed(
            lambda: model.fit(inputs, epochs=n_epochs, verbose=0, callbacks=callbacks)
        )
        return seconds, hooks

    # Warm-up: one short fit per configuration (5 batches; the train function
    # is traced for a batch dimension of None, whatever the length).
    warmup = {config: one_fit(config, 1, 5)[0] for config in CONFIGS}
    traces_before = tracing_count(model)
    times: dict[str, list[float]] = {config: [] for config in CONFIGS}
    hooks: dict[str, list[dict]] = {config: [] for config in CONFIGS}
    for _ in range(rounds):
        for config in CONFIGS:
            seconds, hook_times = one_fit(config, epochs, None)
            times[config].append(seconds)
            hooks[config].append(hook_times)

    base = median(times["none"])
    out: dict[str, Any] = {"warmup_s": warmup, "fit_s": times, "hooks_s": hooks}
    # Should be 0: a retrace of the train function inside the timed fits
    # would be charged to whichever configuration ran first.
    after = tracing_count(model)
    out["train_fn_retraces_in_timed_fits"] = (
        None if after is None or traces_before is None else after - traces_before
    )
    out["fit_median_s"] = {c: median(times[c]) for c in CONFIGS}
    out["overhead_pct"] = {c: 100.0 * (median(times[c]) / base - 1.0) for c in CONFIGS}
    out["overhead_pct_paired_median"] = {
        c: median([100.0 * (r - 1.0) for r in paired_ratios(times[c], times["none"])])
        for c in CONFIGS
    }
    out["in_fit"] = split_hooks(hooks, base, epochs)
    return out


def make_callbacks(
    config: str, log_dir: str, held_out: tuple[np.ndarray, np.ndarray]
) -> tuple[list[keras.callbacks.Callback], dict]:
    """A fresh callback of the configuration, and its hook timings to fill."""
    if config == "none":
        return [], {}
    if config == "gradwatch":
        gw = GradWatch(log_dir, held_out=held_out)
        return [gw], time_hooks(gw, GW_HOOKS)
    tb = keras.callbacks.TensorBoard(log_dir, histogram_freq=1)
    return [tb], time_hooks(tb, TB_HOOKS)


def split_hooks(hooks: dict[str, list[dict]], base: float, epochs: int) -> dict:
    """The callbacks' own time inside the timed fits, from their hook timings.

    Once per fit: set_model, on_train_begin, on_train_end, the batch hooks
    (TensorBoard writes the train graph at the first batch) and the first
    on_epoch_end (the first call of a freshly traced function); then the later
    epoch ends. Whole-fit wall times on a shared machine vary by more than the
    3% target between identical runs, so the overhead verdict uses these.
    """
    epoch_s = base / epochs
    split: dict[str, Any] = {}
    for config in ("gradwatch", "tensorboard"):
        setup, first, later, own = [], [], [], []
        for record in hooks[config]:
            setup.append(
                sum(sum(t) for name, t in record.items() if name != "on_epoch_end")
            )
            first.append(record["on_epoch_end"][0])
            later.extend(record["on_epoch_end"][1:])
            own.append(sum(sum(t) for t in record.values()))
        steady = median(later)
        # Epochs after which the once-per-fit cost is paid off below 3%.
        fixed = median(setup) + median(first) - steady
        budget = 0.03 * epoch_s - steady
        split[config] = {
            "setup_per_fit_median_s": median(setup),
            "first_epoch_end_median_s": median(first),
            "later_epoch_end_median_s": steady,
            "later_epoch_end_pct_of_epoch": 100.0 * steady / epoch_s,
            "own_pct_of_fit": 100.0 * median(own) / base,
            "epochs_to_3pct": math.ceil(fixed / budget) if budget > 0 else None,
        }
    return split


def tracing_count(model: keras.Model) -> int | None:
    """Traces of the `tf.function`s behind `model.train_function`, if found.

    On the TensorFlow backend `train_function` is a plain function closing
    over the `tf.function` that `fit` runs; look there too.
    """
    candidates = [model.train_function]
    candidates += [c.cell_contents for c in model.train_function.__closure__ or ()]
    counts = [
        int(f.experimental_get_tracing_count())
        for f in candidates
        if hasattr(f, "experimental_get_tracing_count")
    ]
    return sum(counts) if counts else None
