"""The fixed held-out batch: checked at construction, taken once, capped."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import keras
import numpy as np


class Batch(NamedTuple):
    """A held-out batch as tensors; `y` and `sample_weight` may be None."""

    x: Any
    y: Any
    sample_weight: Any
    rows: int
    """Number of samples actually used (after the cap)."""
    available: int | None
    """Number of samples offered, when known (None for a dataset batch)."""


def is_dataset(value: object) -> bool:
    """Whether `value` is a `tf.data.Dataset` (never importing TensorFlow)."""
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(value, tf.data.Dataset)


def check(held_out: object) -> None:
    """Validates `held_out` without touching TensorFlow data.

    Raises:
        TypeError: `held_out` is neither a tuple nor a `tf.data.Dataset`.
        ValueError: wrong tuple length, missing `x`, empty arrays, or arrays
            whose first dimensions disagree.
    """
    if is_dataset(held_out):
        return
    if not isinstance(held_out, tuple | list):
        raise TypeError(
            "`held_out` must be a tuple `(x, y)` or `(x, y, sample_weight)`, "
            "or a `tf.data.Dataset` yielding such tuples. Received: "
            f"held_out of type {type(held_out).__name__}"
        )
    _rows(held_out)


def _rows(parts: Sequence[Any]) -> int:
    if len(parts) not in (2, 3):
        raise ValueError(
            "`held_out` must be `(x, y)` or `(x, y, sample_weight)`. Received: "
            f"a {type(parts).__name__} of length {len(parts)}"
        )
    if parts[0] is None:
        raise ValueError("`held_out` needs inputs `x`. Received: x=None")
    counts: dict[str, set[int]] = {}
    for name, part in zip(("x", "y", "sample_weight"), parts, strict=False):
        for leaf in keras.tree.flatten(part):
            if leaf is None:
                continue
            shape = getattr(leaf, "shape", None)
            if shape is None:
                shape = np.shape(leaf)
            if len(shape) == 0:
                raise ValueError(
                    f"`held_out` {name} must have a batch dimension. Received: "
                    f"a scalar {leaf!r}"
                )
            counts.setdefault(name, set()).add(int(shape[0]))
    sizes = set().union(*counts.values())
    if len(sizes) > 1:
        detail = ", ".join(f"{k}: {sorted(v)}" for k, v in counts.items())
        raise ValueError(
            "`held_out` arrays must all have the same number of samples. "
            f"Received first dimensions {detail}"
        )
    (rows,) = sizes
    if rows == 0:
        raise ValueError("`held_out` is empty. Received: 0 samples")
    return rows


def take(held_out: object, max_samples: int, convert: Callable[[Any], Any]) -> Batch:
    """Takes the batch: the first `max_samples` rows, as tensors (`convert`).

    A dataset contributes its first element, which is expected to be a batch.

    Raises:
        ValueError: the dataset is empty or its elements are not tuples of
            length 2 or 3.
    """
    available: int | None
    if is_dataset(held_out):
        dataset: Any = held_out
        try:
            element = next(iter(dataset.take(1)))
        except StopIteration:
            raise ValueError(
                "`held_out` dataset is empty. Received: a dataset with no elements"
            ) from None
        if not isinstance(element, tuple | list):
            raise ValueError(
                "`held_out` dataset must yield `(x, y)` or "
                "`(x, y, sample_weight)` batches. Received: an element of "
                f"type {type(element).__name__}"
            )
        parts: Sequence[Any] = element
        try:
            _rows(parts)
        except ValueError as error:
            raise ValueError(
                f"{error}. A `tf.data.Dataset` is read one element at a time, "
                "and its first element must be a batch: pass "
                "`held_out=dataset.batch(n)`."
            ) from None
        available = None
    else:
        parts = held_out  # type: ignore[assignment]
        available = _rows(parts)
    x, y, *rest = parts
    sample_weight = rest[0] if rest else None

    def cap(leaf: Any) -> Any:
        if leaf is None:
            return None
        return convert(leaf[:max_samples])

    x, y, sample_weight = (
        None if part is None else keras.tree.map_structure(cap, part)
        for part in (x, y, sample_weight)
    )
    rows = int(keras.tree.flatten(x)[0].shape[0])
    return Batch(x, y, sample_weight, rows, available)
