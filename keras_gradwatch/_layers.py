"""Which layers the backward signal measures, and their names; no TensorFlow."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras

from keras_gradwatch import _compat

MAX_TEXT = 64
"""Longest activation name written, in characters."""


def measured_layers(model: Any) -> list[Any]:
    """The outermost non-model layers of `model` that own trainable weights.

    In walk order (the models' `layers`, depth first); a layer reached
    twice (shared, or in a model nested twice) is listed once. Keras 3 only:
    tf_keras models get none.
    """
    if _compat.is_tf_keras(model):
        return []
    found: list[Any] = []
    seen: set[int] = set()
    stack = [model]
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, keras.Model):
            stack.extend(reversed(layer.layers))
        elif layer.trainable_weights:
            found.append(layer)
    return found


def is_recurrent(layer: Any) -> bool:
    """Whether the layer's input is measured through time."""
    return isinstance(layer, keras.layers.RNN | keras.layers.Bidirectional)


def activation_name(layer: Any) -> str | None:
    """The name of the layer's activation ("relu", "linear"...), or None.

    Recurrent layers give their (cell's) `activation`; a Bidirectional
    layer its forward layer's. A callable with no ``__name__`` gives its
    class name. At most `MAX_TEXT` characters.
    """
    if isinstance(layer, keras.layers.Bidirectional):
        layer = layer.forward_layer
    function = getattr(layer, "activation", None)
    if function is None or not callable(function):
        return None
    name = getattr(function, "__name__", None)
    if not isinstance(name, str) or not name:
        name = type(function).__name__
    return name[:MAX_TEXT]


def unique_layer_paths(layers: Sequence[Any]) -> list[str]:
    """Layer paths (`Layer.path`, else its name), ``_1``... on repeats."""
    seen: dict[str, int] = {}
    paths = []
    for layer in layers:
        path = getattr(layer, "path", None) or layer.name
        count = seen.get(path, 0)
        seen[path] = count + 1
        paths.append(f"{path}_{count}" if count else path)
    return paths


@contextlib.contextmanager
def calls_wrapped(
    layers: Sequence[Any], wrap: Callable[[int, Any, Any], Any]
) -> Iterator[None]:
    """Sets ``wrap(i, layer, layer.call)`` as each layer's `call` for the
    block, on the instance (bypassing Keras' attribute tracking); afterwards
    removes it, or puts back the one that was there before, also when the
    block fails."""
    saved: list[tuple[Any, bool, Any]] = []
    try:
        for i, layer in enumerate(layers):
            own = vars(layer)
            saved.append((layer, "call" in own, own.get("call")))
            object.__setattr__(layer, "call", wrap(i, layer, layer.call))
        yield
    finally:
        for layer, had, before in reversed(saved):
            if had:
                object.__setattr__(layer, "call", before)
            else:
                object.__delattr__(layer, "call")


def sequence_argument(
    signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[inspect.BoundArguments, str, Any, Any] | None:
    """A recurrent call's arguments bound to `signature`, the name of its
    first (the input sequence), that argument, and the mask it received
    (the first of a list); None where the arguments do not bind."""
    names = list(signature.parameters)
    try:
        bound = signature.bind_partial(*args, **kwargs)
    except TypeError:
        return None
    if not names:
        return None
    mask: Any = bound.arguments.get("mask")
    while isinstance(mask, list | tuple) and mask:
        mask = mask[0]
    return bound, names[0], bound.arguments.get(names[0]), mask
