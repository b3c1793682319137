"""AutoClip's hook into a Keras 3 optimizer (TensorFlow backend).

Keras has no public gradient-processing hook, and `optimizer.global_clipnorm`
is read once, when the train function is traced, and applied per replica
before the gradients are summed. AutoClip instead wraps the instance's
`apply` (the public method every update passes through: `apply_gradients`
calls it, and `LossScaleOptimizer` calls its inner optimizer's with unscaled
gradients); the callback rebuilds the train function once per `fit` so the
wrapper is traced in. The wrapper sums the gradients across replicas itself,
measures the global norm of the sum, asks `decide`, and hands the clipped
sum to the original `apply`, whose own cross-replica sum (the private
`_all_reduce_sum_gradients`) is made the identity so nothing is summed
twice. A skipped step does not call `apply` at all (like
`LossScaleOptimizer`, through a cross-replica `cond` where the strategy
needs `merge_call`). With zscore's step bound (SGD), the wrapper also
computes each kernel's limit from the summed gradient, the weights and the
learning rate, and scales each gradient by the smaller of the clip factor
and its limit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from keras_gradwatch import _clipping

Decide = Callable[[tf.Tensor, tf.Tensor | None], tuple[tf.Tensor, tf.Tensor]]
"""(norm, smallest step-bound factor or None) -> (scale factor, finite);
updates AutoClip's state."""


def check(optimizer: Any) -> None:
    """Raises unless AutoClip can wrap this Keras 3 optimizer."""
    name = type(optimizer).__name__
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise ValueError(f"AutoClip needs a Keras 3 optimizer. Received: {name}")
    if not hasattr(optimizer, "_all_reduce_sum_gradients"):
        raise ValueError(
            f"AutoClip does not support this Keras release's {name}: it has no "
            "`_all_reduce_sum_gradients` to take over. Please report the "
            f"Keras version ({keras.__version__})."
        )


def install(optimizer: Any, decide: Decide, relative_step: float | None) -> None:
    """Wraps `optimizer.apply` (this instance only) around `decide`, with
    the step bound (`_clipping.step_limits`) when `relative_step` is set."""
    uninstall(optimizer)
    original = optimizer.apply
    # Keras' own loss scaling divides the gradients inside `apply`.
    scale = float(getattr(optimizer, "loss_scale_factor", None) or 1.0)

    def apply(grads: Any, trainable_variables: Any = None) -> None:
        grads = _clipping.dense(grads)
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            grads = _sum_across_replicas(context, grads)
        norm = _clipping.global_norm(grads, "float64") / scale
        limits: list[Any] | None = None
        least: tf.Tensor | None = None
        if relative_step is not None:
            variables = trainable_variables
            if variables is None:
                variables = optimizer._trainable_variables
            # The step SGD takes from the gradient, unscaled.
            rate = tf.cast(optimizer.learning_rate, tf.float64) / scale
            limits = _clipping.step_limits(
                grads, variables, relative_step, rate, "float64"
            )
            least = _clipping.least(limits, "float64")

        def update(grads: Any, factor: tf.Tensor, variables: Any, limits: Any) -> None:
            original(_clipping.scale(grads, factor, limits), variables)

        if tf.__internal__.distribute.strategy_supports_no_merge_call():
            factor, finite = decide(norm, least)
            tf.cond(
                finite,
                lambda: update(grads, factor, trainable_variables, limits),
                _no_op,
            )
            return

        def cross_replica(
            distribution: Any,
            grads: Any,
            norm: Any,
            least: Any,
            variables: Any,
            limits: Any,
        ) -> None:
            # Every replica holds the same summed gradients, hence norm (and
            # the same weights, hence limits).
            first = distribution.experimental_local_results(norm)[0]
            if least is not None:
                least = distribution.experimental_local_results(least)[0]
            factor, finite = decide(first, least)

            def apply_all() -> None:
                # Each replica applies its own copy of the gradients.
                distribution.extended.call_for_each_replica(
                    update, args=(grads, factor, variables, limits)
                )

            # A cond whose branch calls merge_call (as apply does) must
            # be built in a cross-replica context.
            tf.cond(finite, apply_all, _no_op)

        context.merge_call(
            cross_replica, args=(grads, norm, least, trainable_variables, limits)
        )

    optimizer.apply = apply
    # The wrapper has already summed the gradients across replicas.
    optimizer._all_reduce_sum_gradients = _unchanged


def uninstall(optimizer: Any) -> None:
    for name in ("apply", "_all_reduce_sum_gradients"):
        if name in vars(optimizer):
            delattr(optimizer, name)


def _unchanged(grads_and_vars: Any) -> list[Any]:
    return list(grads_and_vars)


def _no_op() -> None:
    return None


def _sum_across_replicas(context: Any, grads: list[Any]) -> list[Any]:
    present = [g for g in grads if g is not None]
    if not present:
        return grads
    summed = iter(context.all_reduce(tf.distribute.ReduceOp.SUM, present))
    return [None if g is None else next(summed) for g in grads]
