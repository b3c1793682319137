"""What GradWatch costs per epoch and per `fit`, next to TensorBoard's histograms.

For each model:

1. Cost ratio. One GradWatch logging pass (`on_epoch_end`: forward/backward on
   the held-out batch, statistics, histograms, summary writes) and one
   `keras.callbacks.TensorBoard(histogram_freq=1)` epoch end (weight
   histograms) are timed against one training step (`train_on_batch`) on a
   batch of the held-out size. The three are interleaved, after warm-up; the
   one-time costs (tracing, writer creation, first call) are reported apart.
2. Fit overhead. `model.fit` with no callback, with GradWatch and with
   TensorBoard(histogram_freq=1), `--steps` steps per epoch, interleaved in
   rounds (none, GradWatch, TensorBoard, none, ...) after one warm-up fit
   each, on the same model object. The callbacks' own hooks are timed inside
   `fit` too, which splits the overhead into a once-per-fit setup and a
   per-epoch part.

Usage::

    python benchmarks/overhead.py [--quick] [--models a,b,c] [--rounds N]
                                  [--epochs E] [--steps S] [--repeats R]
                                  [--json PATH]

See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_gradwatch  # noqa: E402
from keras_gradwatch import GradWatch, WeightNorms  # noqa: E402

VOCAB = 20000
SEQ_LEN = 100


# --------------------------------------------------------------------------
# Models and synthetic data
# --------------------------------------------------------------------------


def build_mlp() -> keras.Model:
    """(a) The 5-layer two-circles MLP."""
    inputs = keras.Input((2,))
    h = inputs
    for _ in range(5):
        h = keras.layers.Dense(5, activation="relu")(h)
    outputs = keras.layers.Dense(1, activation="sigmoid")(h)
    model = keras.Model(inputs, outputs, name="two_circles_mlp")
    model.compile(optimizer=keras.optimizers.SGD(), loss="binary_crossentropy")
    return model


def data_mlp(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Two noisy concentric circles (radius 1 and 0.5), labels 0 / 1."""
    label = rng.integers(0, 2, n)
    angle = rng.uniform(0.0, 2.0 * math.pi, n)
    radius = np.where(label == 1, 0.5, 1.0)
    x = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    x += rng.normal(0.0, 0.1, x.shape)
    return x.astype(np.float32), label.astype(np.float32)[:, None]


def build_text() -> keras.Model:
    """(b) Embedding -> GRU -> 2 x Conv1D -> pooling -> Dense head."""
    inputs = keras.Input((SEQ_LEN,), dtype="int32")
    h = keras.layers.Embedding(VOCAB, 128)(inputs)
    h = keras.layers.GRU(64, return_sequences=True)(h)
    h = keras.layers.Conv1D(64, 5, activation="relu")(h)
    h = keras.layers.Conv1D(64, 5, activation="relu")(h)
    h = keras.layers.GlobalMaxPooling1D()(h)
    h = keras.layers.Dense(64, activation="relu")(h)
    outputs = keras.layers.Dense(1, activation="sigmoid")(h)
    model = keras.Model(inputs, outputs, name="gru_conv_text")
    model.compile(optimizer=keras.optimizers.Adam(), loss="binary_crossentropy")
    return model


def data_text(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Random token ids and random binary labels."""
    x = rng.integers(0, VOCAB, (n, SEQ_LEN)).astype(np.int32)
    y = rng.integers(0, 2, (n, 1)).astype(np.float32)
    return x, y


def build_cnn() -> keras.Model:
    """(c) A ~5.2M-parameter CNN on 32x32x3, 10 classes (logits)."""
    inputs = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(inputs)
    h = keras.layers.MaxPooling2D()(h)  # 16x16
    h = keras.layers.Conv2D(128, 3, padding="same", activation="relu")(h)
    h = keras.layers.MaxPooling2D()(h)  # 8x8
    h = keras.layers.Conv2D(256, 3, padding="same", activation="relu")(h)
    h = keras.layers.Conv2D(256, 3, padding="same", activation="relu")(h)
    h = keras.layers.MaxPooling2D()(h)  # 4x4x256
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(1024, activation="relu")(h)
    outputs = keras.layers.Dense(10)(h)
    model = keras.Model(inputs, outputs, name="cnn_5m")
    model.compile(
        optimizer=keras.optimizers.Adam(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def data_cnn(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Uniform random images and random class ids."""
    x = rng.random((n, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, (n,)).astype(np.int32)
    return x, y


@dataclass(frozen=True)
class Spec:
    key: str
    name: str
    build: Callable[[], keras.Model]
    data: Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]
    batch: int
    held_out: int
    quick_batch: int
    quick_held_out: int


SPECS = {
    spec.key: spec
    for spec in (
        Spec("a", "two-circles MLP", build_mlp, data_mlp, 32, 256, 32, 256),
        Spec("b", "GRU/Conv text", build_text, data_text, 256, 256, 64, 64),
        Spec("c", "CNN 32x32x3", build_cnn, data_cnn, 256, 256, 32, 32),
    )
}


# --------------------------------------------------------------------------
# Timing helpers
# --------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> float:
    """Seconds `fn()` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


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


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def instrument(callback: keras.callbacks.Callback, names: tuple[str, ...]) -> dict:
    """Times the listed hooks of `callback`, wherever they are called from.

    Instance attributes shadow the class methods, so `fit`'s CallbackList
    calls the wrappers. Returns ``{hook: [seconds per call]}``.
    """
    record: dict[str, list[float]] = {name: [] for name in names}
    for name in names:
        method = getattr(callback, name)

        @functools.wraps(method)
        def wrapper(*args, _method=method, _times=record[name], **kwargs):
            start = time.perf_counter()
            try:
                return _method(*args, **kwargs)
            finally:
                _times.append(time.perf_counter() - start)

        setattr(callback, name, wrapper)
    return record


class Collect(logging.Handler):
    """Keeps the `keras_gradwatch` log records, to list them at the end."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


# --------------------------------------------------------------------------
# The two measurements
# --------------------------------------------------------------------------


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

    # Training step on the fit batch size too, when it differs (model a).
    fit_steps: list[float] = []
    if fit_batch != rows:
        xf = tf.convert_to_tensor(x[:fit_batch])
        yf = tf.convert_to_tensor(y[:fit_batch])
        for _ in range(3):
            model.train_on_batch(xf, yf)
        fit_steps = [
            timed(lambda: model.train_on_batch(xf, yf)) for _ in range(repeats)
        ]

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

    # One more untimed round, then the interleaved repeats.
    model.train_on_batch(xs, ys)
    gw.on_epoch_end(1, {})
    for wn in weight_norms.values():
        wn.on_epoch_end(1, {})
    tb.on_epoch_end(1, {"loss": 0.0})
    steps, gw_passes, tb_passes = [], [], []
    wn_passes: dict[str, list[float]] = {key: [] for key in weight_norms}
    for i in range(repeats):
        epoch = i + 2
        steps.append(timed(lambda: model.train_on_batch(xs, ys)))
        gw_passes.append(timed(lambda e=epoch: gw.on_epoch_end(e, {})))
        for key, wn in weight_norms.items():
            wn_passes[key].append(timed(lambda e=epoch, wn=wn: wn.on_epoch_end(e, {})))
        tb_passes.append(timed(lambda e=epoch: tb.on_epoch_end(e, {"loss": 0.0})))
    out["gw_train_end_s"] = timed(gw.on_train_end)
    for key, wn in weight_norms.items():
        out[f"{key}_train_end_s"] = timed(wn.on_train_end)
    out["tb_train_end_s"] = timed(tb.on_train_end)

    out["train_step_s"] = steps
    out["train_step_fit_batch_s"] = fit_steps or steps
    out["gw_pass_s"] = gw_passes
    out["tb_pass_s"] = tb_passes
    step = median(steps)
    out["train_step_median_s"] = step
    out["train_step_fit_batch_median_s"] = median(fit_steps or steps)
    out["gw_pass_median_s"] = median(gw_passes)
    out["tb_pass_median_s"] = median(tb_passes)
    out["gw_ratio"] = median(gw_passes) / step
    out["tb_ratio"] = median(tb_passes) / step
    for key, passes in wn_passes.items():
        out[f"{key}_pass_s"] = passes
        out[f"{key}_pass_median_s"] = median(passes)
        out[f"{key}_ratio"] = median(passes) / step
    out["gw_ratio_paired_median"] = median(
        [g / s for g, s in zip(gw_passes, steps, strict=True)]
    )
    out["tb_ratio_paired_median"] = median(
        [t / s for t, s in zip(tb_passes, steps, strict=True)]
    )
    return out


CONFIGS = ("none", "gradwatch", "tensorboard")
GW_HOOKS = ("on_train_begin", "on_epoch_end", "on_train_end")
TB_HOOKS = (
    "set_model",
    "on_train_begin",
    "on_train_batch_end",
    "on_epoch_end",
    "on_train_end",
)


def make_callbacks(
    config: str, log_dir: str, held_out: tuple[np.ndarray, np.ndarray]
) -> tuple[list[keras.callbacks.Callback], dict]:
    if config == "none":
        return [], {}
    if config == "gradwatch":
        gw = GradWatch(log_dir, held_out=held_out)
        return [gw], instrument(gw, GW_HOOKS)
    tb = keras.callbacks.TensorBoard(log_dir, histogram_freq=1)
    return [tb], instrument(tb, TB_HOOKS)


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
        c: median(
            [
                100.0 * (t / n - 1.0)
                for t, n in zip(times[c], times["none"], strict=True)
            ]
        )
        for c in CONFIGS
    }
    out["in_fit"] = split_hooks(hooks, base, epochs)
    return out


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


# --------------------------------------------------------------------------
# Driver and report
# --------------------------------------------------------------------------


def run_model(spec: Spec, args: argparse.Namespace, tmp: str) -> dict[str, Any]:
    batch = spec.quick_batch if args.quick else spec.batch
    if spec.key == "c" and not args.quick:
        batch = args.cnn_batch
    held_rows = spec.quick_held_out if args.quick else spec.held_out
    keras.backend.clear_session()
    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = spec.build()
    params = model.count_params()
    print(
        f"[{spec.key}] {spec.name}: {params:,} parameters, fit batch {batch}, "
        f"held-out {held_rows}",
        flush=True,
    )
    x, y = spec.data(rng, args.steps * batch)
    # Enough rows for a training batch of the held-out size, too.
    if x.shape[0] < held_rows:
        extra_x, extra_y = spec.data(rng, held_rows - x.shape[0])
        x_steps = np.concatenate([x, extra_x])
        y_steps = np.concatenate([y, extra_y])
    else:
        x_steps, y_steps = x, y
    held_out = spec.data(rng, held_rows)
    model_tmp = os.path.join(tmp, spec.key)

    start = time.perf_counter()
    passes = measure_passes(
        model, x_steps, y_steps, held_out, batch, args.repeats, model_tmp
    )
    print(
        f"[{spec.key}] passes done in {time.perf_counter() - start:.1f}s: "
        f"train step {passes['train_step_median_s'] * 1e3:.1f} ms, GradWatch "
        f"{passes['gw_pass_median_s'] * 1e3:.1f} ms, TensorBoard "
        f"{passes['tb_pass_median_s'] * 1e3:.1f} ms",
        flush=True,
    )
    start = time.perf_counter()
    fit = measure_fit(model, x, y, held_out, batch, args.epochs, args.rounds, model_tmp)
    fit_per_step = fit["fit_median_s"]["none"] / (args.epochs * args.steps)
    print(
        f"[{spec.key}] fits done in {time.perf_counter() - start:.1f}s: "
        + ", ".join(f"{c} {s:.2f}s" for c, s in fit["fit_median_s"].items())
        + f" (train function retraced {fit['train_fn_retraces_in_timed_fits']}"
        " times in the timed fits)",
        flush=True,
    )
    shutil.rmtree(model_tmp, ignore_errors=True)
    return {
        "key": spec.key,
        "name": spec.name,
        "params": params,
        "batch": batch,
        "held_out": held_rows,
        "passes": passes,
        "fit": fit,
        "fit_step_s": fit_per_step,
    }


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        "| model | params | batch | train step (ms) | GradWatch pass (ms) | ratio "
        "| TensorBoard(hist) pass (ms) | ratio | fit no-cb (s) "
        "| fit +GradWatch (s, %) | fit +TensorBoard (s, %) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        p, f = r["passes"], r["fit"]
        batch = (
            str(r["batch"])
            if r["batch"] == r["held_out"]
            else f"{r['batch']} (held-out {r['held_out']})"
        )
        med, pct = f["fit_median_s"], f["overhead_pct"]
        lines.append(
            f"| ({r['key']}) {r['name']} | {r['params']:,} | {batch} "
            f"| {fmt_ms(p['train_step_median_s'])} "
            f"| {fmt_ms(p['gw_pass_median_s'])} | {p['gw_ratio']:.2f} "
            f"| {fmt_ms(p['tb_pass_median_s'])} | {p['tb_ratio']:.2f} "
            f"| {med['none']:.2f} "
            f"| {med['gradwatch']:.2f} ({pct['gradwatch']:+.1f}%) "
            f"| {med['tensorboard']:.2f} ({pct['tensorboard']:+.1f}%) |"
        )
    lines += [
        "",
        f"Train step: median `train_on_batch` on a batch of the held-out size "
        f"({args.repeats} calls, interleaved with the passes). fit: "
        f"{args.epochs} epoch(s) x {args.steps} steps, median of {args.rounds} "
        "round(s); % is relative to fit with no callback.",
        "",
        "One-time costs outside fit (ms): first train_on_batch (traces the "
        "train function); GradWatch on_train_begin (traces its function) and "
        "first pass; TensorBoard set_model + on_train_begin and first epoch end.",
        "",
        "| model | train fn trace | GradWatch on_train_begin | GradWatch 1st pass "
        "| TensorBoard setup | TensorBoard 1st pass |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        p = r["passes"]
        lines.append(
            f"| ({r['key']}) | {fmt_ms(p['train_first_s'])} "
            f"| {fmt_ms(p['gw_train_begin_s'])} | {fmt_ms(p['gw_first_pass_s'])} "
            f"| {fmt_ms(p['tb_set_model_s'] + p['tb_train_begin_s'])} "
            f"| {fmt_ms(p['tb_first_pass_s'])} |"
        )
    lines += [
        "",
        "WeightNorms (every trainable weight's L1/L2 norm and relative change; "
        "`histograms=True` adds weight histograms): one epoch-end pass, "
        "interleaved with the same training steps. Target: ratio <= 0.05 on "
        "(b), (c).",
        "",
        "| model | train step (ms) | WeightNorms pass (ms) | ratio "
        "| with histograms (ms) | ratio | on_train_begin (ms) | 1st pass (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        p = r["passes"]
        if "wn_ratio" not in p:  # a --json saved before WeightNorms existed
            continue
        lines.append(
            f"| ({r['key']}) | {fmt_ms(p['train_step_median_s'])} "
            f"| {fmt_ms(p['wn_pass_median_s'])} | {p['wn_ratio']:.3f} "
            f"| {fmt_ms(p['wnh_pass_median_s'])} | {p['wnh_ratio']:.3f} "
            f"| {fmt_ms(p['wn_train_begin_s'])} | {fmt_ms(p['wn_first_pass_s'])} |"
        )
    lines += [
        "",
        "The callbacks' own hooks inside the timed fits (ms, medians): setup = "
        "every hook but on_epoch_end, once per fit; 1st = the first on_epoch_end "
        "of a fit; later = the other epoch ends, also as % of one no-callback "
        "epoch (fit no-cb / epochs). fit step = fit no-cb / (epochs x steps).",
        "",
        "| model | fit step | GradWatch setup | GradWatch 1st "
        "| GradWatch later (% epoch) | GradWatch own % of fit | epochs to <= 3% "
        "| TensorBoard setup | TensorBoard 1st | TensorBoard later (% epoch) "
        "| TensorBoard own % of fit |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        split = r["fit"]["in_fit"]
        cells = [f"({r['key']})", fmt_ms(r["fit_step_s"])]
        for config in ("gradwatch", "tensorboard"):
            c = split[config]
            later = c["later_epoch_end_median_s"]
            cells += [
                fmt_ms(c["setup_per_fit_median_s"]),
                fmt_ms(c["first_epoch_end_median_s"]),
                "n/a (1 epoch)"
                if math.isnan(later)
                else f"{fmt_ms(later)} ({c['later_epoch_end_pct_of_epoch']:.1f}%)",
                f"{c['own_pct_of_fit']:.1f}%",
            ]
            if config == "gradwatch":
                needed = c["epochs_to_3pct"]
                cells.append("never" if needed is None else str(max(needed, 1)))
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Targets (GradWatch): ratio <= 1.0 on (b), (c); fit overhead <= 3% "
        "(per epoch once set up; own % of this fit, setup included).",
    ]
    for r in results:
        ratio = r["passes"]["gw_ratio"]
        c = r["fit"]["in_fit"]["gradwatch"]
        steady, own = c["later_epoch_end_pct_of_epoch"], c["own_pct_of_fit"]
        verdict = []
        if r["key"] in ("b", "c"):
            verdict.append(f"ratio {ratio:.2f} {'ok' if ratio <= 1.0 else 'MISSED'}")
        verdict.append(f"per epoch {steady:.1f}% {'ok' if steady <= 3.0 else 'MISSED'}")
        verdict.append(
            f"{args.epochs}-epoch fit {own:.1f}% {'ok' if own <= 3.0 else 'MISSED'}"
        )
        if r["key"] in ("b", "c") and "wn_ratio" in r["passes"]:
            wn = r["passes"]["wn_ratio"]
            verdict.append(
                f"WeightNorms ratio {wn:.3f} {'ok' if wn <= 0.05 else 'MISSED'}"
            )
        lines.append(f"- ({r['key']}): " + ", ".join(verdict))
    if args.quick:
        lines.append(
            "- (--quick: small batches and few steps; not a measurement of the targets)"
        )
    return "\n".join(lines)


def report_saved(path: str) -> str:
    """The report of a saved --json run, recomputed from its raw timings."""
    with open(path, encoding="utf-8") as handle:
        saved = json.load(handle)
    settings = argparse.Namespace(**saved["settings"])
    for r in saved["results"]:
        fit = r["fit"]
        base = median(fit["fit_s"]["none"])
        fit["in_fit"] = split_hooks(fit["hooks_s"], base, settings.epochs)
    return f"{path}: {json.dumps(saved['environment'])}\n\n" + report(
        saved["results"], settings
    )


def environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_gradwatch": keras_gradwatch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: small batches on (b) and (c), 5 steps per epoch, "
        "1 epoch, 1 round, 3 repeats (under 2 minutes on 2 cores)",
    )
    parser.add_argument(
        "--models", default="a,b,c", help="comma-separated subset of a,b,c"
    )
    parser.add_argument(
        "--rounds", type=int, help="interleaved fit rounds (default 3; quick 1)"
    )
    parser.add_argument(
        "--epochs", type=int, help="epochs per timed fit (default 2; quick 1)"
    )
    parser.add_argument(
        "--steps", type=int, help="steps per epoch (default 50; quick 5)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        help="timed train steps / callback passes (default 15; quick 3)",
    )
    parser.add_argument(
        "--cnn-batch",
        type=int,
        default=256,
        help="fit batch size of model (c) (default 256; 128 halves its fit "
        "time). Its held-out batch, and the train step the ratio uses, stay "
        "256; not used with --quick",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="also save raw numbers here")
    parser.add_argument(
        "--from-json",
        metavar="PATH",
        nargs="+",
        help="measure nothing: print the report of earlier --json runs",
    )
    args = parser.parse_args(argv)
    defaults = (
        {"rounds": 1, "epochs": 1, "steps": 5, "repeats": 3}
        if args.quick
        else {"rounds": 3, "epochs": 2, "steps": 50, "repeats": 15}
    )
    if args.cnn_batch < 1:
        parser.error("--cnn-batch must be >= 1")
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    keys = [k.strip() for k in args.models.split(",") if k.strip()]
    unknown = [k for k in keys if k not in SPECS]
    if unknown or not keys:
        parser.error(f"--models must name some of a,b,c; got {args.models!r}")
    args.model_keys = keys
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        for path in args.from_json:
            print(report_saved(path))
            print()
        return 0
    with collect_log() as collected:
        return run(args, collected)


@contextlib.contextmanager
def collect_log() -> Iterator[Collect]:
    """Collects and shows the `keras_gradwatch` log for the length of a run.

    The handlers go when the run ends: a handler left behind would write to
    this run's stderr, which a caller (a test capturing output) may have
    closed since.
    """
    log = logging.getLogger("keras_gradwatch")
    level = log.level
    collected = Collect()
    shown = logging.StreamHandler(sys.stderr)
    shown.setFormatter(
        logging.Formatter("keras_gradwatch log: %(levelname)s %(message)s")
    )
    log.setLevel(logging.INFO)
    log.addHandler(collected)
    log.addHandler(shown)
    try:
        yield collected
    finally:
        log.removeHandler(shown)
        log.removeHandler(collected)
        log.setLevel(level)


def run(args: argparse.Namespace, collected: Collect) -> int:
    env = environment()
    settings = {
        k: getattr(args, k)
        for k in (
            "quick",
            "model_keys",
            "rounds",
            "epochs",
            "steps",
            "repeats",
            "cnn_batch",
            "seed",
        )
    }
    print(f"environment: {json.dumps(env)}")
    print(f"settings: {json.dumps(settings)}", flush=True)

    start = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="gradwatch_bench_") as tmp:
        for key in args.model_keys:
            results.append(run_model(SPECS[key], args, tmp))
    total = time.perf_counter() - start

    print()
    print(report(results, args))
    print()
    print(f"total time: {total:.1f}s")
    records = [
        {"level": r.levelname, "message": r.getMessage()} for r in collected.records
    ]
    print(f"keras_gradwatch log records: {len(records)}")
    for record in records:
        print(f"  {record['level']}: {record['message']}")

    if args.json:
        payload = {
            "environment": env,
            "settings": settings,
            "total_s": total,
            "results": results,
            "keras_gradwatch_log": records,
        }
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2)
        print(f"raw numbers: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
