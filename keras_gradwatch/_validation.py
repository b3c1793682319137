"""Argument checks shared by the callbacks; each names what it received."""

from __future__ import annotations

import math
import os
from typing import Any

from keras_gradwatch import _compat


def positive_int(name: str, value: object) -> int:
    """Returns `value` if it is an int >= 1; raises otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"`{name}` must be an int. Received: {name}={value!r} "
            f"of type {type(value).__name__}"
        )
    if value < 1:
        raise ValueError(f"`{name}` must be >= 1. Received: {name}={value}")
    return value


def boolean(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(
            f"`{name}` must be a bool. Received: {name}={value!r} "
            f"of type {type(value).__name__}"
        )
    return value


def log_dir(value: object) -> str:
    if not isinstance(value, str | os.PathLike):
        raise TypeError(
            "`log_dir` must be a str or os.PathLike. Received: "
            f"log_dir={value!r} of type {type(value).__name__}"
        )
    path = os.fspath(value)
    if not isinstance(path, str) or not path:
        raise ValueError(f"`log_dir` must be a non-empty path. Received: {value!r}")
    return path


def run_name(value: object) -> str:
    if not isinstance(value, str) or not value or "/" in value or "\\" in value:
        raise ValueError(
            "`run` must be a non-empty name without path separators. "
            f"Received: run={value!r}"
        )
    return value


def keras_model(model: object) -> None:
    """Raises unless `model` is a Keras 3 or a tf_keras model."""
    if not _compat.is_model(model):
        raise ValueError(
            "The callback needs a `keras.Model` (Keras 3) or a `tf_keras.Model`. "
            f"Received: model of type {type(model).__name__}"
        )


def compiled(model: object) -> None:
    """Raises unless `model` is a Keras model compiled with a loss."""
    keras_model(model)
    if not _compat.is_compiled(model):
        raise ValueError(
            "The model must be compiled (with a loss) before training; "
            "call `model.compile(optimizer, loss)`. Received: an "
            "uncompiled model"
        )


def frozen_layers(model: Any) -> list[str]:
    """Names of the outermost layers with `trainable=False` that own weights."""
    found = []
    stack = list(reversed(model.layers))
    while stack:
        layer = stack.pop()
        if not layer.trainable and layer.weights:
            found.append(layer.name)
        else:
            stack.extend(reversed(getattr(layer, "layers", [])))
    return found


def number(
    name: str, value: object, *, low: float | None = None, high: float | None = None
) -> float:
    """Returns `value` as a float if it is a real number in (low, high)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"`{name}` must be a number. Received: {name}={value!r} "
            f"of type {type(value).__name__}"
        )
    value = float(value)
    if (
        not math.isfinite(value)
        or (low is not None and value <= low)
        or (high is not None and value >= high)
    ):
        if low is not None and high is not None:
            bounds = f"in ({low:g}, {high:g})"
        elif low is not None:
            bounds = f"> {low:g}"
        else:
            bounds = "finite" if high is None else f"< {high:g}"
        raise ValueError(f"`{name}` must be {bounds}. Received: {name}={value!r}")
    return value
