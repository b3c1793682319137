"""The few places where Keras 3 and tf_keras (Keras 2) differ for us.

A model is a Keras 3 `keras.Model` or, for users pinned to Keras 2 (with
``TF_USE_LEGACY_KERAS=1``, `tf.keras` is tf_keras), a `tf_keras.Model`. The
callbacks derive from Keras 3's `Callback` and add the hooks tf_keras'
`CallbackList` asks every callback for, so either `fit` can call them.
tf_keras is never imported here: a tf_keras model means it already is.
"""

from __future__ import annotations

import sys
from typing import Any

import keras


def tf_keras() -> Any:
    """The tf_keras module if the program has imported it, else None."""
    return sys.modules.get("tf_keras")


def is_tf_keras(model: object) -> bool:
    legacy = tf_keras()
    return legacy is not None and isinstance(model, legacy.Model)


def is_model(model: object) -> bool:
    """A Keras 3 or a tf_keras model."""
    return isinstance(model, keras.Model) or is_tf_keras(model)


def is_compiled(model: Any) -> bool:
    if is_tf_keras(model):
        return getattr(model, "compiled_loss", None) is not None
    return bool(model.compiled)


def weight_path(variable: Any) -> str:
    """Keras 3's ``layer/weight`` path; tf_keras' variable name without ``:0``."""
    path = getattr(variable, "path", None)
    if isinstance(path, str):
        return path
    name: str = variable.name
    return name.removesuffix(":0")


def read(variable: Any) -> Any:
    """The current value of a Keras 3 variable or a `tf.Variable` (TensorFlow)."""
    import tensorflow as tf

    return tf.convert_to_tensor(variable)


def compiled_loss(model: Any) -> Any:
    """The loss object `compile` builds (None before `compile`).

    A new one per `compile`, so a traced pass that captured it can tell a
    recompiled model.
    """
    if is_tf_keras(model):
        return getattr(model, "compiled_loss", None)
    return getattr(model, "_compile_loss", None)


def metric_variables(model: Any) -> list[Any]:
    if is_tf_keras(model):
        return [v for metric in model.metrics for v in metric.variables]
    return list(model.metrics_variables)


def loss_scale(optimizer: Any) -> Any:
    """The factor training multiplies the loss by, or None where it is 1.

    Read when called, so a dynamic scale (mixed precision) is current. Keras
    3's `LossScaleOptimizer` and `loss_scale_factor` go through
    `scale_loss`; tf_keras' `LossScaleOptimizer` through `get_scaled_loss`.
    """
    if optimizer is None:
        return None
    import tensorflow as tf

    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) or getattr(
        optimizer, "loss_scale_factor", None
    ):
        scale = optimizer.scale_loss(tf.constant(1.0))
    elif hasattr(optimizer, "get_scaled_loss"):
        scale = optimizer.get_scaled_loss(tf.constant(1.0))
    else:
        return None
    return tf.cast(scale, tf.float32)


def should_write(model: Any) -> bool:
    """False on the non-chief workers of a multi-worker strategy, and on
    JAX in every process but the first (`jax.process_index`).

    Every worker runs the callbacks; only the chief writes, so that a log
    directory shared by the workers gets one copy of each run.
    """
    if not is_tf_keras(model) and keras.backend.backend() == "jax":
        import jax

        return bool(jax.process_index() == 0)
    strategy = getattr(model, "distribute_strategy", None)
    extended = getattr(strategy, "extended", None)
    return bool(getattr(extended, "should_save_summary", True))


class LegacyHooks:
    """What tf_keras' `CallbackList` asks of a callback besides the hooks.

    Our callbacks act per epoch and at the ends of training only.
    """

    _supports_tf_logs = False
    _chief_worker_only = None

    def _implements_train_batch_hooks(self) -> bool:
        return False

    def _implements_test_batch_hooks(self) -> bool:
        return False

    def _implements_predict_batch_hooks(self) -> bool:
        return False
