"""AutoClip's hook into a tf_keras (Keras 2) legacy optimizer.

The legacy optimizers (``tf_keras.optimizers.legacy.*``) run their
`gradient_transformers` after the cross-replica sum, which is the public
hook AutoClip needs. A transformer cannot skip the update, so a non-finite
step applies a zero gradient instead (momentum, if any, still moves the
weights).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from keras_gradwatch import _clipping

Decide = Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]
"""norm -> (scale factor, finite); updates AutoClip's state."""

_MARK = "keras_gradwatch_autoclip"


def check(optimizer: Any) -> None:
    """Raises unless the optimizer has the legacy `gradient_transformers`."""
    if not isinstance(getattr(optimizer, "gradient_transformers", None), list):
        name = type(optimizer).__name__
        raise ValueError(
            "With tf_keras, AutoClip clips through the `gradient_transformers` "
            "of the legacy optimizers: compile with "
            f"`tf_keras.optimizers.legacy.{name}` (or another legacy "
            f"optimizer). Received: {type(optimizer).__module__}.{name}"
        )


def install(optimizer: Any, decide: Decide) -> None:
    """Appends AutoClip to the optimizer's `gradient_transformers`."""
    uninstall(optimizer)

    def transform(grads_and_vars: Any) -> list[Any]:
        grads_and_vars = list(grads_and_vars)
        grads = _clipping.dense([g for g, _ in grads_and_vars])
        factor, finite = decide(_clipping.global_norm(grads, "float64"))
        present = [i for i, g in enumerate(grads) if g is not None]
        if present:
            kept = tf.cond(
                finite,
                lambda: _clipping.scale([grads[i] for i in present], factor),
                lambda: [tf.zeros_like(grads[i]) for i in present],
            )
            for i, grad in zip(present, kept, strict=True):
                grads[i] = grad
        return [(g, v) for g, (_, v) in zip(grads, grads_and_vars, strict=True)]

    setattr(transform, _MARK, True)
    optimizer.gradient_transformers = [*optimizer.gradient_transformers, transform]


def uninstall(optimizer: Any) -> None:
    transformers = getattr(optimizer, "gradient_transformers", None)
    if isinstance(transformers, list):
        optimizer.gradient_transformers = [
            t for t in transformers if not getattr(t, _MARK, False)
        ]
