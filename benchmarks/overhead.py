"""What GradWatch costs per epoch and per `fit`, next to TensorBoard's histograms.

For each model:

1. Cost ratio. One GradWatch logging pass (`on_epoch_end`: forward/backward on
   the held-out batch, statistics, histograms, summary writes), one
   WeightNorms pass (without and with histograms) and one
   `keras.callbacks.TensorBoard(histogram_freq=1)` epoch end (weight
   histograms) are timed against one training step (`train_on_batch`) on a
   batch of the held-out size. They are interleaved, after warm-up; the
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
                                  [--json PATH] [--from-json PATH ...]

The pieces, one job each: `overhead_models.py` (the models and their data),
`overhead_passes.py` (measurement 1), `overhead_fit.py` (measurement 2),
`overhead_report.py` (the tables and verdicts) and `timing.py` (timing
helpers the other benchmarks share). This file is the command line: it runs
both measurements model by model, prints the report and saves the raw numbers.

See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from overhead_fit import measure_fit, split_hooks  # noqa: E402
from overhead_models import SPECS, Spec, build_text, data_text  # noqa: E402
from overhead_passes import measure_passes  # noqa: E402
from overhead_report import report  # noqa: E402
from timing import median  # noqa: E402

import keras_gradwatch  # noqa: E402

# autoclip_early.py and tests/test_autoclip_steps.py take the text model (b)
# from here.
__all__ = ["build_text", "data_text", "main"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        for path in args.from_json:
            print(report_saved(path))
            print()
        return 0
    with collect_log() as collected:
        return run(args, collected)


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


def run(args: argparse.Namespace, collected: Collect) -> int:
    """Measures the chosen models and prints (and saves) what it found."""
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


def run_model(spec: Spec, args: argparse.Namespace, tmp: str) -> dict[str, Any]:
    """Both measurements on a fresh model of `spec`, with progress lines."""
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
    """Versions and machine, printed first and saved with --json."""
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


class Collect(logging.Handler):
    """Keeps the `keras_gradwatch` log records, to list them at the end."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


if __name__ == "__main__":
    sys.exit(main())
