"""What writing one logged epoch's events costs: our writer against tf.summary.

GradWatch writes, per logged epoch, one histogram and eight scalars per
weight and a few more. This times writing exactly those serialized summaries
(`keras_gradwatch._summary.Records`) to a fresh event file, once per epoch:

- ``writer``: `keras_gradwatch._writer.EventWriter`, which GradWatch and
  WeightNorms use on every backend (NumPy CRCs, one write and flush per
  epoch);
- ``tf.summary``: what they used before, one traced loop over
  `tf.summary.experimental.write_raw_pb` (one event per value) followed by
  a flush, the fastest way we had found through TensorFlow's writer.

Both are timed in turn in each round (`timing.interleaved`), for a small
CNN's weight count and a transformer's, and the table gives the median
milliseconds per epoch and the median of the per-round ratios with their
spread. Run: ``python benchmarks/event_writing.py`` (about a minute).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from timing import interleaved, paired_ratios  # noqa: E402

from keras_gradwatch import _summary, _writer, tags  # noqa: E402

SIZES = {"CNN (8 weights)": 8, "transformer (300 weights)": 300}


def summaries(weights: int, buckets: int = 30) -> list[bytes]:
    """One epoch of GradWatch's summaries for `weights` weights."""
    paths = [f"model/layer_{i}/kernel" for i in range(weights)]
    records = _summary.Records(
        [tags.tag(p, path) for path in paths for p in tags.STATS_COLUMNS]
        + [tags.GLOBAL_NORM_TAG, tags.HELDOUT_LOSS, tags.TRAIN_LOSS],
        [tags.tag(tags.GRAD_HISTOGRAM, path) for path in paths],
        buckets,
        "On the held-out batch (512 samples, training=False), at the end of the epoch.",
    )
    rng = np.random.default_rng(0)
    return records.serialize(
        rng.normal(size=weights * len(tags.STATS_COLUMNS) + 3),
        rng.normal(size=(weights, buckets, 3)),
    )


def tf_summary_writer(directory: str):  # type: ignore[no-untyped-def]
    """The former path: a traced `write_raw_pb` loop, then a flush."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(directory)

    def write(protos: tf.Tensor, step: tf.Tensor) -> None:
        with writer.as_default(step=step):
            for i in tf.range(tf.size(protos)):
                tf.summary.experimental.write_raw_pb(protos[i], step=step)

    traced = tf.function(write).get_concrete_function(
        tf.TensorSpec([None], tf.string), tf.TensorSpec([], tf.int64)
    )

    def call(step: int, protos: list[bytes]) -> None:
        traced(tf.constant(protos, tf.string), tf.constant(step, tf.int64))
        writer.flush()

    return call


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    results = {}
    print(f"{'model':<26} {'writer ms':>10} {'tf.summary ms':>14} {'ratio':>22}")
    for name, weights in SIZES.items():
        protos = summaries(weights)
        root = tempfile.mkdtemp()
        ours = _writer.EventWriter(os.path.join(root, "ours"))
        theirs = tf_summary_writer(os.path.join(root, "tf"))
        theirs(0, protos)  # the first call runs the traced function's setup
        times = interleaved(
            {
                "writer": lambda i, p=protos, w=ours: w.write(i, p),
                "tf.summary": lambda i, p=protos, w=theirs: w(i, p),
            },
            args.repeats,
        )
        ours.close()
        ratios = sorted(paired_ratios(times["writer"], times["tf.summary"]))
        low, high = ratios[len(ratios) // 10], ratios[-1 - len(ratios) // 10]
        row = {
            "writer_ms": 1e3 * statistics.median(times["writer"]),
            "tf_summary_ms": 1e3 * statistics.median(times["tf.summary"]),
            "ratio": statistics.median(ratios),
        }
        results[name] = row
        print(
            f"{name:<26} {row['writer_ms']:>10.2f} {row['tf_summary_ms']:>14.2f} "
            f"{row['ratio']:>8.2f} (10-90%: {low:.2f}-{high:.2f})"
        )
    return results


if __name__ == "__main__":
    main()
