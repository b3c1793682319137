"""AutoClip's variables, and what one training step does to them.

The state is a saveable attribute of the optimizer, so that weights
checkpoints carry it. `decide` runs inside the compiled train step, once per
step, on the global norm of the (summed, unscaled) gradients: it asks the
clip policy for the bound, updates statistics and counters (among them the
run of consecutive non-finite steps that tells a lost run), and returns the
factor the gradients are to be multiplied by, whether the step is finite,
and the bound. Both optimizer hooks (`_autoclip_keras3`,
`_autoclip_tf_keras`) call it through the callback.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import keras
import tensorflow as tf

from keras_gradwatch import _clipping

logger = logging.getLogger("keras_gradwatch")

STATE_ATTRIBUTE = "_keras_gradwatch_autoclip"
"""Attribute of the optimizer that holds AutoClip's state (checkpointed)."""


class ClipState(keras.layers.Layer):
    """AutoClip's variables, an attribute of the optimizer.

    Keras saves every saveable attribute of the optimizer with the model's
    weights, so `model.save_weights`, `ModelCheckpoint` and `BackupAndRestore`
    carry this state. A checkpoint written before AutoClip was added loads
    without it (the state starts fresh). `config` records the mode and its
    parameters, so that a state written under other settings is not reused.
    """

    def __init__(self, history_size: int) -> None:
        super().__init__(name="keras_gradwatch_autoclip")
        self.history_size = history_size
        self._initial: list[tuple[Any, float]] = []

        def add(name: str, dtype: str, init: float = 0.0, shape: Any = ()) -> Any:
            variable = self.add_weight(
                shape=shape,
                dtype=dtype,
                initializer=keras.initializers.Constant(init),
                trainable=False,
                name=name,
                aggregation="only_first_replica",
            )
            self._initial.append((variable, init))
            return variable

        self.config = add("config", "float64", math.nan, (4,))
        self.steps = add("steps", "int64")
        self.seen = add("seen", "int64")  # steps with a finite norm
        self.applied = add("applied", "int64")  # finite steps not held
        self.history = add("history", "float64", math.inf, (history_size,))
        self.threshold = add("threshold", "float64", math.nan)
        self.clipped = add("clipped", "int64")
        self.skipped = add("skipped", "int64")
        self.epoch_max_norm = add("epoch_max_norm", "float64")
        self.epoch_clipped = add("epoch_clipped", "int64")
        self.epoch_skipped = add("epoch_skipped", "int64")
        self.first_trip_step = add("first_trip_step", "int64", -1.0)
        self.first_trip_norm = add("first_trip_norm", "float64")
        # Non-finite steps in a row, for telling a lost run from a glitch.
        self.consecutive_skipped = add("consecutive_skipped", "int64")
        self.epoch_steps = add("epoch_steps", "int64")
        self.built = True

    def reset(self, config: tuple[float, ...]) -> None:
        for variable, init in self._initial:
            variable.assign(tf.fill(variable.shape, tf.cast(init, variable.dtype)))
        self.config.assign(config)

    def load_own_variables(self, store: Any) -> None:
        if len(store.keys()) == 0:
            logger.info(
                "AutoClip: the checkpoint has no AutoClip state; starting fresh."
            )
            return
        super().load_own_variables(store)


def decide(
    s: ClipState,
    policy: _clipping.Policy,
    norm: tf.Tensor,
    limit: tf.Tensor | None = None,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Updates the state for one step; returns (scale factor, finite, bound).
    `bound` is the bound this step's norm was held to (+inf where there was
    none yet). `limit`, the smallest factor the step bound allows a kernel
    (`_clipping.step_limits`; +inf or None: none), counts the step as
    clipped when it is below the factor; the hook applies it.
    """
    finite = tf.math.is_finite(norm)
    safe = tf.where(finite, norm, tf.constant(0.0, tf.float64))
    seen = s.seen.value
    earlier = s.history.value
    memory = _clipping.Memory(earlier)
    bound, to, after, memory = policy(memory, safe, finite, seen)
    trip = tf.logical_and(finite, norm > bound)
    factor = tf.where(trip, to / tf.where(trip, norm, 1.0), 1.0)
    if policy.holds_first:
        # Nothing to compare the first norm with: it is only measured. Until
        # a step has been applied, a step above the early bound is measured
        # too: of a first norm and one far from it, either may be the spike.
        # Before any applied step the optimizer's momentum and moments are
        # zero, so a zero gradient moves nothing (and the iteration counts).
        count = tf.minimum(seen, policy.history_size)
        middle = _clipping.low_median(earlier, count)
        spike = norm > _clipping.early_bound(policy.early, middle)
        held = tf.logical_or(
            tf.equal(seen, 0),
            tf.logical_and(tf.equal(s.applied.value, 0), tf.logical_and(finite, spike)),
        )
        factor = tf.where(held, tf.constant(0.0, tf.float64), factor)
    s.applied.assign_add(tf.cast(tf.logical_and(finite, factor > 0.0), tf.int64))
    if limit is not None:
        trip = tf.logical_or(trip, tf.logical_and(finite, limit < factor))

    s.history.assign(memory.history)
    steps = s.steps.value + 1
    s.steps.assign(steps)
    s.seen.assign(seen + tf.cast(finite, tf.int64))
    s.threshold.assign(tf.where(finite, after, s.threshold.value))
    s.clipped.assign_add(tf.cast(trip, tf.int64))
    s.skipped.assign_add(tf.cast(tf.logical_not(finite), tf.int64))
    s.epoch_clipped.assign_add(tf.cast(trip, tf.int64))
    s.epoch_skipped.assign_add(tf.cast(tf.logical_not(finite), tf.int64))
    s.epoch_max_norm.assign(tf.maximum(s.epoch_max_norm.value, safe))
    s.epoch_steps.assign_add(1)
    s.consecutive_skipped.assign(
        tf.where(finite, tf.constant(0, tf.int64), s.consecutive_skipped.value + 1)
    )
    first = tf.logical_and(trip, s.first_trip_step.value < 0)
    s.first_trip_step.assign(tf.where(first, steps, s.first_trip_step.value))
    s.first_trip_norm.assign(tf.where(first, norm, s.first_trip_norm.value))
    return factor, finite, bound
