"""Measurement 1 of `overhead.py`: one epoch's logging against a training step.

A GradWatch pass, a WeightNorms pass (without and with histograms) and a
`keras.callbacks.TensorBoard(histogram_freq=1)` epoch end are each timed as
`on_epoch_end` after `set_model` and `on_train_begin`, interleaved with
`train_on_batch` on a batch of the held-out size, after warm-up. The one-time
costs (the train function's trace, the callbacks' set-up and first pass) are
kept apart.

`measure_passes` returns plain data, saved as is by `--json`: `*_s` are
seconds (a list: one per repeat), `*_median_s` their medians, `*_ratio` a
median pass over the median training step. Keys by callback: `gw` GradWatch,
`wn` WeightNorms, `wnh` WeightNorms with histograms, `tb` TensorBoard.
"""

from __future__ import annotations

import os
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from timing import interleaved, median, paired_ratios, timed

from keras_gradwatch import GradWatch, WeightNorms


def measure_passes(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    held_out: tuple[np.ndarray, np.ndarray],
    fit_batch: int,
    repeats: int,
    tmp: str,
) -> dict[str, Any]:
    """Train step vs. GradWatch pass vs. TensorBoard epoch end, interleaved."""
    rows = held_out[0].shape[0]
    xs = tf.convert_to_tensor(x[:rows])
    ys = tf.convert_to_tensor(y[:rows])
    out: dict[str, Any] = {}

    # Training step on the held-out batch size. The first call traces.
    out["train_first_s"] = timed(lambda: model.train_on_batch(xs, ys))
    for _ in range(2):
        model.train_on_batch(xs, ys)
    fit_steps = fit_batch_steps(model, x, y, fit_batch, rows, repeats)

    gw = GradWatch(os.path.join(tmp, "passes_gw"), held_out=held_out)
    gw.set_model(model)
    out["gw_train_begin_s"] = timed(gw.on_train_begin)
    out["gw_first_pass_s"] = timed(lambda: gw.on_epoch_end(0, {}))

    weight_norms = {
        "wn": WeightNorms(os.path.join(tmp, "passes_wn")),
        "wnh": WeightNorms(os.path.join(tmp, "passes_wnh"), histograms=True),
    }
    for key, wn in weight_norms.items():
        wn.set_model(model)
        out[f"{key}_train_begin_s"] = timed(wn.on_train_begin)
        out[f"{key}_first_pass_s"] = timed(lambda wn=wn: wn.on_epoch_end(0, {}))

    tb = keras.callbacks.TensorBoard(os.path.join(tmp, "passes_tb"), histogram_freq=1)
    out["tb_set_model_s"] = timed(lambda: tb.set_model(model))
    out["tb_train_begin_s"] = timed(tb.on_train_begin)
    out["tb_first_pass_s"] = timed(lambda: tb.on_epoch_end(0, {"loss": 0.0}))

    # Epoch 0 was the first pass and epoch 1 is one more untimed round; the
    # repeats are epochs 2, 3, ...
    calls = {
        "train_step": lambda i: model.train_on_batch(xs, ys),
        "gw": lambda i: gw.on_epoch_end(i + 2, {}),
        **{
            key: lambda i, wn=wn: wn.on_epoch_end(i + 2, {})
            for key, wn in weight_norms.items()
        },
        "tb": lambda i: tb.on_epoch_end(i + 2, {"loss": 0.0}),
    }
    for call in calls.values():
        call(-1)
    times = interleaved(calls, repeats)
    out["gw_train_end_s"] = timed(gw.on_train_end)
    for key, wn in weight_norms.items():
        out[f"{key}_train_end_s"] = timed(wn.on_train_end)
    out["tb_train_end_s"] = timed(tb.on_train_end)

    steps = times["train_step"]
    step = median(steps)
    out["train_step_s"] = steps
    out["train_step_fit_batch_s"] = fit_steps or steps
    out["gw_pass_s"] = times["gw"]
    out["tb_pass_s"] = times["tb"]
    out["train_step_median_s"] = step
    out["train_step_fit_batch_median_s"] = median(fit_steps or steps)
    out["gw_pass_median_s"] = median(times["gw"])
    out["tb_pass_median_s"] = median(times["tb"])
    out["gw_ratio"] = median(times["gw"]) / step
    out["tb_ratio"] = median(times["tb"]) / step
    for key in weight_norms:
        out[f"{key}_pass_s"] = times[key]
        out[f"{key}_pass_median_s"] = median(times[key])
        out[f"{key}_ratio"] = median(times[key]) / step
    out["gw_ratio_paired_median"] = median(paired_ratios(times["gw"], steps))
    out["tb_ratio_paired_median"] = median(paired_ratios(times["tb"], steps))
    return out


def fit_batch_steps(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    fit_batch: int,
    rows: int,
    repeats: int,
) -> list[float]:
    """Training steps on the `fit` batch size, where it differs from the
    held-out size (model a); none where it does not."""
    if fit_batch == rows:
        return []
    xf = tf.convert_to_tensor(x[:fit_batch])
    yf = tf.convert_to_tensor(y[:fit_batch])
    for _ in range(3):
        model.train_on_batch(xf, yf)
    return [timed(lambda: model.train_on_batch(xf, yf)) for _ in range(repeats)]
