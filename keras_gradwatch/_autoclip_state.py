"""AutoClip's variables, and what one training step does to them.

The state is a saveable attribute of the optimizer, so that weights
checkpoints carry it. `decide` runs inside the train step (in `keras.ops`, on
every backend), once per step, on the global norm of the (summed, unscaled)
gradients: it asks the
clip policy for the bound, updates statistics and counters (among them the
run of consecutive non-finite steps that tells a lost run), and returns the
factor the gradients are to be multiplied by, whether the step is finite,
and the bound. The optimizer hooks (`_autoclip_keras3`, `_autoclip_tf_keras`,
`_autoclip_jax_torch`) call it through the callback.

Its floats are `wide` (`_stats_ops.wide_dtype`: float64, or float32 on JAX
without ``jax_enable_x64``) and its integers int64 (int32 there).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import keras
from keras import ops

from keras_gradwatch import _clipping, _stats_ops
from keras_gradwatch._clipping import _max, _min

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
        wide = self.wide = _stats_ops.wide_dtype()
        count = "int64" if wide == "float64" else "int32"

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

        self.config = add("config", wide, math.nan, (4,))
        self.steps = add("steps", count)
        self.seen = add("seen", count)  # steps with a finite norm
        self.applied = add("applied", count)  # finite steps not held
        self.history = add("history", wide, math.inf, (history_size,))
        self.threshold = add("threshold", wide, math.nan)
        self.clipped = add("clipped", count)
        self.skipped = add("skipped", count)
        self.epoch_max_norm = add("epoch_max_norm", wide)
        self.epoch_clipped = add("epoch_clipped", count)
        self.epoch_skipped = add("epoch_skipped", count)
        self.first_trip_step = add("first_trip_step", count, -1.0)
        self.first_trip_norm = add("first_trip_norm", wide)
        # Non-finite steps in a row, for telling a lost run from a glitch.
        self.consecutive_skipped = add("consecutive_skipped", count)
        self.epoch_steps = add("epoch_steps", count)
        self.built = True

    def reset(self, config: tuple[float, ...]) -> None:
        for variable, init in self._initial:
            variable.assign(ops.full(variable.shape, init, variable.dtype))
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
    norm: Any,
    limit: Any | None = None,
) -> tuple[Any, Any, Any]:
    """Updates the state for one step; returns (scale factor, finite, bound).
    `norm` is in the state's `wide` dtype. `bound` is the bound this step's
    norm was held to (+inf where there was none yet). `limit`, the smallest
    factor the step bound allows a kernel (`_clipping.step_limits`; +inf or
    None: none), counts the step as clipped when it is below the factor; the
    hook applies it.
    """
    int_ = keras.backend.standardize_dtype(s.steps.dtype)
    finite = ops.isfinite(norm)
    safe = ops.where(finite, norm, ops.zeros((), s.wide))
    seen = s.seen.value
    earlier = s.history.value
    memory = _clipping.Memory(earlier)
    bound, to, after, memory = policy(memory, safe, finite, seen)
    trip = ops.logical_and(finite, norm > bound)
    factor = ops.where(trip, to / ops.where(trip, norm, 1.0), 1.0)
    if policy.holds_first:
        # Nothing to compare the first norm with: it is only measured. Until
        # a step has been applied, a step above the early bound is measured
        # too: of a first norm and one far from it, either may be the spike.
        # Before any applied step the optimizer's momentum and moments are
        # zero, so a zero gradient moves nothing (and the iteration counts).
        count = _min(seen, ops.full((), policy.history_size, int_))
        middle = _clipping.low_median(earlier, count)
        spike = norm > _clipping.early_bound(policy.early, middle)
        held = ops.logical_or(
            ops.equal(seen, 0),
            ops.logical_and(
                ops.equal(s.applied.value, 0), ops.logical_and(finite, spike)
            ),
        )
        factor = ops.where(held, ops.zeros((), s.wide), factor)
    s.applied.assign_add(ops.cast(ops.logical_and(finite, factor > 0.0), int_))
    if limit is not None:
        trip = ops.logical_or(trip, ops.logical_and(finite, limit < factor))

    s.history.assign(memory.history)
    steps = s.steps.value + 1
    s.steps.assign(steps)
    s.seen.assign(seen + ops.cast(finite, int_))
    s.threshold.assign(ops.where(finite, after, s.threshold.value))
    s.clipped.assign_add(ops.cast(trip, int_))
    s.skipped.assign_add(ops.cast(ops.logical_not(finite), int_))
    s.epoch_clipped.assign_add(ops.cast(trip, int_))
    s.epoch_skipped.assign_add(ops.cast(ops.logical_not(finite), int_))
    s.epoch_max_norm.assign(_max(s.epoch_max_norm.value, safe))
    s.epoch_steps.assign_add(ops.ones((), int_))
    s.consecutive_skipped.assign(
        ops.where(finite, ops.zeros((), int_), s.consecutive_skipped.value + 1)
    )
    first = ops.logical_and(trip, s.first_trip_step.value < 0)
    s.first_trip_step.assign(ops.where(first, steps, s.first_trip_step.value))
    s.first_trip_norm.assign(ops.where(first, norm, s.first_trip_norm.value))
    return factor, finite, bound
