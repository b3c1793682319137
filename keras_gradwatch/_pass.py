"""What a held-out pass returns and depends on, whatever the backend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import keras
import numpy as np

from keras_gradwatch import _compat


@dataclass
class Trace:
    """What tracing learned about the model; filled once, at trace time."""

    paths: list[str] = field(default_factory=list)
    """Weight paths whose statistics are rows of the returned matrix."""
    no_gradient: list[str] = field(default_factory=list)
    """Trainable weights the loss does not depend on (gradient None)."""
    signal_tags: list[str] = field(default_factory=list)
    """Tags of `Result.signal`, in order."""
    activations: dict[str, str] = field(default_factory=dict)
    """Measured layer path -> its activation's name."""


class Result(NamedTuple):
    """One pass: rows are the weights of `Trace.paths`."""

    stats: np.ndarray
    """float64 ``[k, 7]``, columns as in `tags.STATS_COLUMNS`."""
    histograms: np.ndarray
    """float64 ``[k, buckets, 3]``."""
    global_norm: float
    signal: np.ndarray
    """float64, the backward-signal scalars of `Trace.signal_tags`."""
    loss: float
    """The compiled loss on the batch, as the gradients are of it."""


def key(model: Any) -> tuple[Any, ...]:
    """What a traced pass depends on besides the batch, compared by identity.

    The trainable variables (a new, unfrozen or frozen one changes the list)
    and what `compile` makes (the loss and the optimizer, whose loss scale
    the pass reads) are captured when the function is traced.
    """
    return (
        model,
        *model.trainable_weights,
        getattr(model, "optimizer", None),
        _compat.compiled_loss(model),
    )


def unique_paths(weights: list[keras.Variable]) -> list[str]:
    """Weight paths, with ``_1``, ``_2``... appended to repeats.

    Two weights of one layer may share a path (``add_weight`` with the same
    name twice); their tags must not collide.
    """
    seen: dict[str, int] = {}
    paths = []
    for weight in weights:
        path = _compat.weight_path(weight)
        count = seen.get(path, 0)
        seen[path] = count + 1
        paths.append(f"{path}_{count}" if count else path)
    return paths


def same(now: Sequence[Any], before: Sequence[Any]) -> bool:
    """Whether two lists hold the same objects in the same order (what a
    traced pass captured against what the model has now)."""
    return len(now) == len(before) and all(
        a is b for a, b in zip(now, before, strict=True)
    )
