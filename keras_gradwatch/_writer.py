"""Event files for TensorBoard, written without TensorFlow.

An event file is a sequence of TFRecord records, each one serialized
`Event` proto: a first one that names the file version, then one per
summary value (as `tf.summary` writes them: one value per event). A record
is its length (uint64, little-endian), the masked CRC-32C of those 8 bytes,
the data, and the data's masked CRC-32C. The CRCs of one write are computed
together, with the NumPy kernel the reader checks them with
(`keras_gradwatch._events.masked_crc32c`).

The file is named as TensorFlow 2 names its own
(``events.out.tfevents.<time>.<host>.<pid>.<n>.v2``), which tells the
report's reader the process that wrote it. Each `write` ends with a flush
to the operating system (no fsync), so TensorBoard sees an epoch as soon as
it is written. Paths with a scheme (``gs://``, ``s3://``...) go through
TensorBoard's file-system layer, which uses TensorFlow's where it is
installed.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import struct
import time
from collections.abc import Sequence
from typing import Any, BinaryIO

import numpy as np
from tensorboard.compat.proto import event_pb2

from keras_gradwatch._events import masked_crc32c

_FILE_UIDS = itertools.count()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


_SUMMARY_FIELD = b"\x2a"  # Event.summary: field 5, length-delimited


def event(step: int, summary: bytes, wall_time: float) -> bytes:
    """A serialized `Event` holding the serialized `Summary` `summary`."""
    head = event_pb2.Event(wall_time=wall_time, step=step).SerializeToString()
    return b"".join((head, _SUMMARY_FIELD, _varint(len(summary)), summary))


def records(datas: Sequence[bytes]) -> bytes:
    """`datas` framed as TFRecord records, one after the other."""
    if not datas:
        return b""
    heads = [struct.pack("<Q", len(d)) for d in datas]
    pieces = [piece for pair in zip(heads, datas, strict=True) for piece in pair]
    buffer = np.frombuffer(b"".join(pieces), np.uint8)
    sizes = np.array([len(p) for p in pieces], np.int64)
    starts = np.cumsum(sizes) - sizes
    crcs = masked_crc32c(buffer, starts, sizes).astype("<u4").tobytes()
    return b"".join(
        b"".join((head, crcs[8 * i : 8 * i + 4], data, crcs[8 * i + 4 : 8 * i + 8]))
        for i, (head, data) in enumerate(zip(heads, datas, strict=True))
    )


class EventWriter:
    """Appends events to a new event file in `directory`.

    Raises:
        OSError: the directory cannot be created or the file opened.
    """

    def __init__(self, directory: str) -> None:
        self._file = _open(directory)
        self.path = self._file.name if isinstance(self._file.name, str) else directory
        first = event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")
        self._append([first.SerializeToString()])

    def write(self, step: int, summaries: Sequence[bytes]) -> None:
        """Writes one event per serialized `Summary`, at `step`, now."""
        now = time.time()
        self._append([event(step, s, now) for s in summaries])

    def _append(self, datas: list[bytes]) -> None:
        self._file.write(records(datas))
        self._file.flush()

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class NoopWriter:
    """Drops every event: the writer of a worker that does not write."""

    path = None

    def write(self, step: int, summaries: Sequence[bytes]) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


Writer = EventWriter | NoopWriter


def open_writer(log_dir: str, run: str, writes: bool) -> Writer:
    """The writer of a new event file in ``<log_dir>/<run>``; with `writes`
    False (the non-chief workers of a multi-worker strategy, which share
    the directory with the chief), one that drops every event.

    Raises:
        ValueError: the directory cannot be created or written.
    """
    if not writes:
        return NoopWriter()
    try:
        return EventWriter(os.path.join(log_dir, run))
    except Exception as error:
        raise ValueError(
            f"`log_dir` must be a writable directory. Received: "
            f"log_dir={log_dir!r} ({type(error).__name__}: {error})"
        ) from error


def close_writer(writer: Any, owner: str) -> None:
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


def _open(directory: str) -> BinaryIO:
    name = (
        f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}"
        f".{os.getpid()}.{next(_FILE_UIDS)}.v2"
    )
    if "://" not in directory:
        os.makedirs(directory, exist_ok=True)
        return open(os.path.join(directory, name), "xb")  # noqa: SIM115
    from tensorboard.compat import tf as tb_tf  # TensorFlow's gfile if installed

    gfile: Any = tb_tf.io.gfile
    gfile.makedirs(directory)
    handle: BinaryIO = gfile.GFile(f"{directory.rstrip('/')}/{name}", "wb")
    return handle
