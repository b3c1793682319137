"""Summaries as TensorBoard's plugins store them, built without TensorFlow.

GradWatch's and WeightNorms' passes return their numbers; `Records` turns
them into the serialized `Summary` protos that `tf.summary.write` would have
made (same tag, tensor dtype and shape, plugin metadata and description),
and `keras_gradwatch._writer` writes them, one event per value. Writing thus
costs no op per tag in any graph, and the statistics' pass needs no writer,
so it outlives the writer of one `fit`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tensorboard.compat.proto import (
    summary_pb2,
    tensor_pb2,
    tensor_shape_pb2,
    types_pb2,
)
from tensorboard.compat.proto.summary_pb2 import SummaryMetadata
from tensorboard.plugins.histogram import metadata as histogram_metadata
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.plugins.text import metadata as text_metadata

from keras_gradwatch import tags


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
            _template(t, metadata(scalar_metadata, about(t)), np.float32, ())
            for t in scalar_tags
        ]
        self._histograms = [
            _template(
                t, metadata(histogram_metadata, about(t)), np.float64, (buckets, 3)
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


_DTYPES = {
    np.dtype(np.float32): types_pb2.DT_FLOAT,
    np.dtype(np.float64): types_pb2.DT_DOUBLE,
}


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
        dtype=_DTYPES[np.dtype(dtype)],
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
                    metadata=metadata(
                        text_metadata, f"{tags.describe(tag)} {description}".strip()
                    ),
                    tensor=tensor_pb2.TensorProto(
                        dtype=types_pb2.DT_STRING,
                        tensor_shape=tensor_shape_pb2.TensorShapeProto(),
                        string_val=[text.encode("utf-8")],
                    ),
                )
            ]
        ).SerializeToString()
        for tag, text in texts.items()
    ]


def metadata(plugin: object, description: str) -> SummaryMetadata:
    return plugin.create_summary_metadata(  # type: ignore[attr-defined]
        display_name=None, description=description
    )
