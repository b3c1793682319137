"""AutoClip's writer: `tf.summary`, as its per-step scalars are written from
inside the compiled train step."""

from __future__ import annotations

import os
from typing import Any

import tensorflow as tf
from tensorboard.plugins.scalar import metadata as scalar_metadata

from keras_gradwatch import _compat, _summary, tags


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


def scalar(tag: str, value: tf.Tensor, description: str) -> tf.Operation:
    """Writes a scalar the way TensorBoard's scalar plugin stores it, at the
    default writer's step; `description` follows what the tag is
    (`keras_gradwatch.tags.describe`)."""
    about = f"{tags.describe(tag)} {description}".strip()
    return tf.summary.write(
        tag,
        tf.cast(value, tf.float32),
        metadata=_summary.metadata(scalar_metadata, about),
    )
