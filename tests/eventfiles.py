"""A small TFRecord event-file writer for crafting logs, hostile ones too.

Pure Python over TensorBoard's protos: no TensorFlow, and every field can be
set to what no real writer would write (shapes, dtypes, content, CRCs).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable
from pathlib import Path

from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

DT_FLOAT = 1
PATHS = ["m/dense_0/kernel", "m/dense_1/kernel", "m/dense_2/kernel"]


def record(data: bytes, *, length: int | None = None) -> bytes:
    """One TFRecord; `length` overrides the length field (its CRC matches)."""
    header = struct.pack("<Q", len(data) if length is None else length)
    return (
        header
        + struct.pack("<I", masked_crc32c(header))
        + data
        + struct.pack("<I", masked_crc32c(data))
    )


def tensor(
    value: float | None = 0.0,
    *,
    dtype: int = DT_FLOAT,
    shape: Iterable[int] = (),
    content: bytes | None = None,
) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=dtype)
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    if content is not None:
        proto.tensor_content = content
    elif value is not None:
        proto.tensor_content = struct.pack("<f", value)
    return proto


def event(
    tag: str,
    step: int,
    value: float | tensor_pb2.TensorProto,
    wall_time: float | None = None,
) -> bytes:
    proto = tensor(value) if isinstance(value, float | int) else value
    summary = summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag=tag, tensor=proto)]
    )
    return event_pb2.Event(
        wall_time=time.time() if wall_time is None else wall_time,
        step=step,
        summary=summary,
    ).SerializeToString()


def version(wall_time: float) -> bytes:
    return event_pb2.Event(
        wall_time=wall_time, file_version="brain.Event:2"
    ).SerializeToString()


def gradwatch_events(
    epochs: Iterable[int],
    *,
    paths: list[str] = PATHS,
    ratio: tuple[float, ...] = (0.05, 0.05, 0.05),
    wall_time: float = 1.0e9,
) -> list[bytes]:
    """The scalars of a plausible GradWatch run, one event per tag and epoch."""
    out = [version(wall_time)]
    for epoch in epochs:
        for path, r in zip(paths, ratio, strict=True):
            for prefix, value in (
                ("grad_norm", r),
                ("grad_mean_abs", r / 10),
                ("grad_to_weight", r),
                ("grad_dead_units", 0.0),
                ("grad_nonfinite", 0.0),
            ):
                out.append(event(f"{prefix}/{path}", epoch, value, wall_time + epoch))
    return out


def write(path: Path, events: Iterable[bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(record(e) for e in events))
    return path


def name(wall_time: float = 1.0e9, tail: str = "host.1.v2") -> str:
    return f"events.out.tfevents.{int(wall_time)}.{tail}"
