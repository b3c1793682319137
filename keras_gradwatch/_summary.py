"""Summary writers and the plugin metadata TensorBoard needs to read our tags.

Writes go through `tf.summary.write` with pre-built metadata, inside the
callback's traced function, so no eager per-variable summary call is made.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import tensorflow as tf
from tensorboard.compat.proto.summary_pb2 import SummaryMetadata
from tensorboard.plugins.histogram import metadata as histogram_metadata
from tensorboard.plugins.scalar import metadata as scalar_metadata

from keras_gradwatch import _compat


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


def histogram(tag: str, buckets: tf.Tensor, description: str) -> tf.Operation:
    """Writes a ``[k, 3]`` bucket tensor as a TensorBoard histogram."""
    return tf.summary.write(
        tag, buckets, metadata=_metadata(histogram_metadata, description)
    )


def scalar(tag: str, value: tf.Tensor, description: str) -> tf.Operation:
    """Writes a scalar the way TensorBoard's scalar plugin stores it, at the
    default writer's step."""
    return tf.summary.write(
        tag,
        tf.cast(value, tf.float32),
        metadata=_metadata(scalar_metadata, description),
    )


def _metadata(plugin: object, description: str) -> SummaryMetadata:
    return plugin.create_summary_metadata(  # type: ignore[attr-defined]
        display_name=None, description=description
    )
