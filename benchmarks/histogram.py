"""Statistics and histogram of one large gradient: ours vs TensorBoard's op.

`tf.summary.histogram` buckets with TensorBoard's `summary_v2._buckets`, which
builds an N x buckets one-hot matrix. GradWatch computes all its statistics
(norm, mean and max |g|, grad/weight ratio, dead units, non-finite count) and
the same [buckets, 3] histogram from row reductions and one bincount, its
per-element kernels compiled with XLA (a CPU's default) or run as TensorFlow
ops. All run as traced functions, interleaved, after warm-up; the ratios to
the compiled statistics are printed.

    python benchmarks/histogram.py [--elements 4194304] [--repeats 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
from tensorboard.plugins.histogram import summary_v2  # noqa: E402

from keras_gradwatch import _stats  # noqa: E402


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", type=int, default=2048 * 2048)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)

    tf.random.set_seed(0)
    grad = tf.random.normal([args.elements // 1024, 1024])
    weight = tf.random.normal(grad.shape)
    contenders = {
        "gradwatch, kernels compiled": tf.function(
            lambda g, w: _stats.batch_stats([g], [w], 30, compiled=True)
        ),
        "gradwatch, TensorFlow ops": tf.function(
            lambda g, w: _stats.batch_stats([g], [w], 30, compiled=False)
        ),
        "tensorboard histogram buckets": tf.function(
            lambda g, w: summary_v2._buckets(g, 30)
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(2):  # trace and warm up
        for fn in contenders.values():
            tf.nest.map_structure(lambda t: t.numpy(), fn(grad, weight))
    for _ in range(args.repeats):
        for name, fn in contenders.items():
            start = time.perf_counter()
            tf.nest.map_structure(lambda t: t.numpy(), fn(grad, weight))
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    ours = medians["gradwatch, kernels compiled"]
    print(f"{args.elements:,} float32 elements, median of {args.repeats}:")
    for name, seconds in medians.items():
        print(f"  {name:30s} {seconds * 1e3:8.1f} ms  {seconds / ours:6.2f}x")
    return medians


if __name__ == "__main__":
    main()
