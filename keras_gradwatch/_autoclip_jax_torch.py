"""AutoClip's hook into a Keras 3 optimizer on JAX and PyTorch.

As on TensorFlow (`_autoclip_keras3`), the instance's `apply` is wrapped:
it measures the global norm of the gradients it is given, asks `decide`, and
hands the scaled gradients to the original `apply`, or skips the step. Under
`keras.distribution` (JAX), the gradients of the jitted step are already
those of the global batch, so there is nothing to sum.

- **JAX.** The train step is a pure function of the state Keras threads
  through it, and `stateless_apply` maps only the optimizer's `variables`.
  AutoClip's variables join that list (at its end) for the length of `fit`,
  and the instance's `save_own_variables` and `load_own_variables` leave
  them out, so the optimizer saves and loads the count and order of
  variables it has without AutoClip (Keras matches them by position and
  skips them all when the count differs); the state is saved on its own, as
  the optimizer's attribute (`ClipState`). Under `jit` a step cannot be
  skipped by not calling `apply`: the wrapper calls it and keeps the earlier
  values of the weights and optimizer variables where the step is not
  finite, as Keras' JAX optimizer does for gradient accumulation.
- **PyTorch.** The step runs eagerly: a non-finite step does not call
  `apply`. Deciding reads the step's finiteness on the host, one sync per
  step, as Keras' own `LossScaleOptimizer` does on PyTorch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import keras
from keras import ops

from keras_gradwatch import _clipping

Decide = Callable[[Any, Any], tuple[Any, Any]]
"""(norm, smallest step-bound factor or None) -> (scale factor, finite);
updates AutoClip's state."""

_SAVED = ("apply", "save_own_variables", "load_own_variables")


def install(
    optimizer: Any,
    state: Any,
    decide: Decide,
    relative_step: float | None,
) -> None:
    """Wraps `optimizer.apply` (this instance only) around `decide`, with
    the step bound (`_clipping.step_limits`) when `relative_step` is set;
    on JAX, `state`'s variables join the optimizer's."""
    uninstall(optimizer, state)
    original = optimizer.apply
    scale = float(getattr(optimizer, "loss_scale_factor", None) or 1.0)
    wide = state.wide
    jax = keras.backend.backend() == "jax"
    ours = {id(v) for v in state.variables}

    def apply(grads: Any, trainable_variables: Any = None) -> None:
        grads = list(grads)
        variables = (
            optimizer._trainable_variables
            if trainable_variables is None
            else list(trainable_variables)
        )
        norm = _clipping.global_norm(grads, wide) / scale
        limits: list[Any] | None = None
        least: Any = None
        if relative_step is not None:
            # The step SGD takes from the gradient, unscaled.
            rate = ops.cast(optimizer.learning_rate, wide) / scale
            limits = _clipping.step_limits(grads, variables, relative_step, rate, wide)
            least = _clipping.least(limits, wide)
        factor, finite = decide(norm, least)
        if not jax:
            if bool(finite):
                original(_clipping.scale(grads, factor, limits), trainable_variables)
            return
        kept = [v for v in optimizer.variables if id(v) not in ours]
        kept += [v for v in variables if all(v is not k for k in kept)]
        before = [v.value for v in kept]
        original(_clipping.scale(grads, factor, limits), trainable_variables)
        for v, old in zip(kept, before, strict=True):
            v.assign(ops.where(finite, v.value, old))

    optimizer.apply = apply
    if not jax:
        return
    for v in state.variables:
        if all(v is not k for k in optimizer._variables):
            optimizer._variables.append(v)

    def save_own_variables(store: Any) -> None:
        with _without(optimizer, ours):
            type(optimizer).save_own_variables(optimizer, store)

    def load_own_variables(store: Any) -> None:
        with _without(optimizer, ours):
            type(optimizer).load_own_variables(optimizer, store)

    optimizer.save_own_variables = save_own_variables
    optimizer.load_own_variables = load_own_variables


def uninstall(optimizer: Any, state: Any) -> None:
    for name in _SAVED:
        if name in vars(optimizer):
            delattr(optimizer, name)
    if state is not None:
        ours = {id(v) for v in state.variables}
        optimizer._variables[:] = [v for v in optimizer._variables if id(v) not in ours]


@contextlib.contextmanager
def _without(optimizer: Any, ours: set[int]) -> Iterator[None]:
    """The optimizer's variables without AutoClip's, for the duration."""
    full = optimizer._variables
    own = [v for v in full if id(v) not in ours]
    # Past the optimizer's tracker, which would track the list anew.
    object.__setattr__(optimizer, "_variables", own)
    try:
        yield
    finally:
        object.__setattr__(optimizer, "_variables", full)
