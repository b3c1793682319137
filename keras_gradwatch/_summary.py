"""Summary writers and the plugin metadata TensorBoard needs to read our tags.

GradWatch's and WeightNorms' traced functions return their numbers;
`Records` turns them into the serialized `Summary` protos that
`tf.summary.write` would have made (same tag, tensor dtype and shape, plugin
metadata and description), and `RawWriter` writes them, one event per value
as before, with one small traced loop over
`tf.summary.experimental.write_raw_pb`. Writing thus costs no op per tag in
any graph, and the statistics' traced function needs no writer, so it
outlives the writer of one `fit`. `scalar` writes
from inside a traced function (AutoClip's).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2
from tensorboard.compat.proto.summary_pb2 import SummaryMetadata
from tensorboard.plugins.histogram import metadata as histogram_metadata
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.plugins.text import metadata as text_metadata

from keras_gradwatch import _compat, tags


def open_writer(
    log_dir: str, run: str, model: Any, max_queue: int | None = None
) -> tf.summary.SummaryWriter:
    """Creates the writer for ``<log_dir>/<run>``; a no-op one off the chief.

    On the non-chief workers of a multi-worker strategy the writer drops
    every summary: the workers share the log directory and only the chief
    writes to it. `max_queue` (TensorFlow's default: 10) is how many
    summaries wait before a write flushes the file, with an fsync, inside
    the op that wrote it; a writer used every training step wants many.

    Raises:
        ValueError: the directory cannot be created or written.
    """
    if not _compat.should_write(model):
        return tf.summary.create_noop_writer()
    path = os.path.join(log_dir, run)
    try:
        tf.io.gfile.makedirs(path)
        if max_queue is None:
            return tf.summary.create_file_writer(path)
        return tf.summary.create_file_writer(path, max_queue=max_queue)
    except (tf.errors.OpError, OSError) as error:
        raise ValueError(
            f"`log_dir` must be a writable directory. Received: "
            f"log_dir={log_dir!r} ({type(error).__name__}: {error})"
        ) from error


def close_writer(writer: tf.summary.SummaryWriter | None, owner: str) -> None:
    """Flushes and closes `writer`; a failure is logged, never raised.

    Closing runs at the end of `fit`, where an error (a full disk, say) must
    not cost the user their training.
    """
    if writer is None:
        return
    try:
        writer.flush()
        writer.close()
    except Exception:
        logging.getLogger("keras_gradwatch").exception(
            "%s could not close its writer.", owner
        )


class Records:
    """Serializes scalars and histograms under fixed tags, fast.

    Each tag's proto is built once, with protobuf, around a placeholder
    tensor content; per step only the raw bytes of the values are put in.

    Args:
        scalar_tags: Tags of the float32 scalars, in the order of the values.
        histogram_tags: Tags of the ``[buckets, 3]`` float64 histograms.
        buckets: Number of histogram buckets.
        description: What every summary's description ends with (when and
            on what data), after what its tag's statistic is
            (`keras_gradwatch.tags.describe`).
    """

    def __init__(
        self,
        scalar_tags: Sequence[str],
        histogram_tags: Sequence[str],
        buckets: int,
        description: str,
    ) -> None:
        def about(name: str) -> str:
            return f"{tags.describe(name)} {description}".strip()

        self._scalars = [
            _template(t, _metadata(scalar_metadata, about(t)), np.float32, ())
            for t in scalar_tags
        ]
        self._histograms = [
            _template(
                t, _metadata(histogram_metadata, about(t)), np.float64, (buckets, 3)
            )
            for t in histogram_tags
        ]

    def serialize(self, scalars: np.ndarray, histograms: np.ndarray) -> list[bytes]:
        """One serialized `Summary` proto per value: histograms, then scalars."""
        protos = [
            b"".join((head, rows.tobytes(), tail))
            for (head, tail), rows in zip(
                self._histograms, np.asarray(histograms, np.float64), strict=True
            )
        ]
        protos += [
            b"".join((head, value.tobytes(), tail))
            for (head, tail), value in zip(
                self._scalars, np.asarray(scalars, np.float32).ravel(), strict=True
            )
        ]
        return protos


class RawWriter:
    """Writes serialized `Summary` protos through `writer`, one event each.

    `write_raw_pb` merges all the protos it gets into one event, and called
    eagerly costs ~0.1 ms per value; a traced loop writes each as its own
    event for ~10 µs. It is traced with `get_concrete_function` when the
    writer is made (once per `fit`), which TensorFlow does not count as the
    retracing it warns about.
    """

    def __init__(self, writer: tf.summary.SummaryWriter) -> None:
        def write(protos: tf.Tensor, step: tf.Tensor) -> None:
            with writer.as_default(step=step):
                for i in tf.range(tf.size(protos)):
                    tf.summary.experimental.write_raw_pb(protos[i], step=step)

        self._write = tf.function(write).get_concrete_function(
            tf.TensorSpec([None], tf.string), tf.TensorSpec([], tf.int64)
        )

    def __call__(self, step: int, protos: list[bytes]) -> None:
        self._write(tf.constant(protos, tf.string), tf.constant(step, tf.int64))


def _template(
    tag: str, metadata: SummaryMetadata, dtype: type, shape: tuple[int, ...]
) -> tuple[bytes, bytes]:
    """The bytes of a one-value `Summary` before and after its tensor content.

    The content is the last field of the tensor, which the value's metadata
    follows, so a placeholder content splits the proto in two.
    """
    size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    placeholder = b"\xff" * size
    tensor = tensor_pb2.TensorProto(
        dtype=tf.as_dtype(dtype).as_datatype_enum,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=n) for n in shape]
        ),
        tensor_content=placeholder,
    )
    value = summary_pb2.Summary.Value(tag=tag, tensor=tensor, metadata=metadata)
    proto = summary_pb2.Summary(value=[value]).SerializeToString()
    start = (
        proto.index(tensor.SerializeToString()) + len(tensor.SerializeToString()) - size
    )
    assert proto[start : start + size] == placeholder
    return proto[:start], proto[start + size :]


def text_protos(texts: dict[str, str], description: str) -> list[bytes]:
    """One serialized `Summary` per tag: a rank-0 string tensor, as
    `tf.summary.text` writes it (TensorBoard's text plugin); `description`
    follows what the tag is (`keras_gradwatch.tags.describe`)."""
    return [
        summary_pb2.Summary(
            value=[
                summary_pb2.Summary.Value(
                    tag=tag,
                    metadata=_metadata(
                        text_metadata, f"{tags.describe(tag)} {description}".strip()
                    ),
                    tensor=tensor_pb2.TensorProto(
                        dtype=tf.string.as_datatype_enum,
                        tensor_shape=tensor_shape_pb2.TensorShapeProto(),
                        string_val=[text.encode("utf-8")],
                    ),
                )
            ]
        ).SerializeToString()
        for tag, text in texts.items()
    ]


def scalar(tag: str, value: tf.Tensor, description: str) -> tf.Operation:
    """Writes a scalar the way TensorBoard's scalar plugin stores it, at the
    default writer's step; `description` follows what the tag is
    (`keras_gradwatch.tags.describe`)."""
    about = f"{tags.describe(tag)} {description}".strip()
    return tf.summary.write(
        tag,
        tf.cast(value, tf.float32),
        metadata=_metadata(scalar_metadata, about),
    )


def _metadata(plugin: object, description: str) -> SummaryMetadata:
    return plugin.create_summary_metadata(  # type: ignore[attr-defined]
        display_name=None, description=description
    )
