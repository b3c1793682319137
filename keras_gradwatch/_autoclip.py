"""AutoClip: gradient clipping that trips by itself, inside the train step.

How it hooks in (Keras 3, TensorFlow backend). Keras has no public
gradient-processing hook, and `optimizer.global_clipnorm` is read once, when
the train function is traced, and applied per replica before the gradients
are summed. AutoClip instead wraps the instance's `apply` (the public method
every update passes through: `apply_gradients` calls it, and
`LossScaleOptimizer` calls its inner optimizer's with unscaled gradients),
and rebuilds the train function once per `fit` so the wrapper is traced in.
The wrapper sums the gradients across replicas itself, measures the global
norm of the sum, decides, and hands the clipped sum to the original `apply`,
whose own cross-replica sum (the private `_all_reduce_sum_gradients`) is made
the identity so nothing is summed twice. The decision lives in variables, so
no step retraces; a skipped step does not call `apply` at all (like
`LossScaleOptimizer`, through a cross-replica `cond` where the strategy
needs `merge_call`).
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import keras
import tensorflow as tf

from keras_gradwatch import _clipping, _compat, _summary, _validation

logger = logging.getLogger("keras_gradwatch")

MODES = ("zscore", "percentile", "fixed")
STATE_ATTRIBUTE = "_keras_gradwatch_autoclip"
"""Attribute of the optimizer that holds AutoClip's state (checkpointed)."""
SCALARS = ("threshold", "max_norm", "clipped_steps", "skipped_steps")
"""Reported per epoch as ``autoclip/<name>`` and ``logs["autoclip_<name>"]``."""


class _ClipState(keras.layers.Layer):
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
        self.mean = add("mean", "float64")
        self.var = add("var", "float64")
        self.history = add("history", "float64", math.inf, (history_size,))
        self.threshold = add("threshold", "float64", math.nan)
        self.clipped = add("clipped", "int64")
        self.skipped = add("skipped", "int64")
        self.epoch_max_norm = add("epoch_max_norm", "float64")
        self.epoch_clipped = add("epoch_clipped", "int64")
        self.epoch_skipped = add("epoch_skipped", "int64")
        self.first_trip_step = add("first_trip_step", "int64", -1.0)
        self.first_trip_norm = add("first_trip_norm", "float64")
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


class AutoClip(_compat.LegacyHooks, keras.callbacks.Callback):
    """Clips the global gradient norm when it spikes; skips non-finite steps.

    Pass it to `fit` like any callback. Every training step, inside the
    compiled train function, it measures the global norm of the gradients
    (after they are summed across replicas under `tf.distribute`, and
    unscaled under mixed precision, by `LossScaleOptimizer` or the
    optimizer's `loss_scale_factor`) and decides:

    - ``mode="zscore"`` (default, after ZClip, 2025): an exponential moving
      average of the norm and of its variance (factor `alpha`), started from
      the mean and variance of the first `warmup` finite steps. A step whose
      norm exceeds ``mean + z * std`` trips and is scaled down to that bound;
      the statistics are updated with the clipped norm. No clipping during
      warm-up.
    - ``mode="percentile"`` (AutoClip, Seetharaman et al., 2020): every step
      is clipped to the `percentile`-th percentile (NumPy's linear rule) of
      the finite norms of the last `window` steps, this one included. The
      paper keeps the whole history; a window bounds the memory and follows
      the norms as training changes them.
    - ``mode="fixed"``: a step whose norm exceeds `threshold` is scaled down
      to it.

    In every mode a step whose gradients hold NaN or Inf is skipped: the
    optimizer is not called, so no update reaches the weights or the
    optimizer's state, and the step is counted. (Under `LossScaleOptimizer`
    such steps are the loss scaler's to skip, and are not counted here.)

    Per epoch it reports ``threshold`` (the bound in force after the epoch's
    last step; NaN during warm-up), ``max_norm``, ``clipped_steps`` and
    ``skipped_steps`` as ``logs["autoclip_<name>"]`` and, with `log_dir`,
    as scalars ``autoclip/<name>`` in ``<log_dir>/<run>``; the first trip is
    logged on the ``keras_gradwatch`` logger.

    Its state (statistics, threshold, counters) is a saveable attribute of
    the optimizer, created when `fit` hands it the model: weights
    checkpoints written during `fit` carry it, and `BackupAndRestore` brings
    it back. To restore it outside `fit`, call ``clip.set_model(model)``
    before ``model.load_weights(path)``. A state written with another mode or
    other parameters is not reused.

    The optimizer's `apply` is wrapped for the length of `fit`, and the
    train function is rebuilt at its start (one trace) and dropped at its
    end. Keras skips `on_train_end` when `fit` stops with an exception; call
    `detach` then before training without AutoClip. The optimizer must not
    clip by itself (`clipnorm`, `clipvalue`, `global_clipnorm`) nor
    accumulate gradients. Sparse (embedding) gradients reach the optimizer
    dense: their norm needs duplicate rows summed.

    With tf_keras (Keras 2), AutoClip needs a legacy optimizer
    (``tf.keras.optimizers.legacy.*``) and is one of its
    `gradient_transformers`, which run after the cross-replica sum. A
    transformer cannot skip a step, so there a non-finite step is applied
    as a zero gradient, and the state is not saved in checkpoints.

    Example:

    ```python
    model.fit(x, y, epochs=100, callbacks=[AutoClip(log_dir="logs/run1")])
    ```

    Args:
        mode: ``"zscore"``, ``"percentile"`` or ``"fixed"``. Defaults to
            ``"zscore"``.
        alpha: zscore only: smoothing factor of the moving averages, in
            (0, 1). Defaults to 0.97.
        z: zscore only: how many standard deviations above the mean trip.
            Defaults to 2.5.
        warmup: zscore only: steps that only gather statistics. Defaults to
            25.
        percentile: percentile only: the percentile clipped to, in (0, 100).
            Defaults to 10.
        window: percentile only: how many recent norms the percentile spans.
            Defaults to 1000.
        threshold: fixed only, and required there: the norm clipped to.
        log_dir: Directory of TensorBoard logs for the per-epoch scalars.
            Defaults to None (logs only).
        run: Run sub-directory of `log_dir`. Defaults to ``"autoclip"``.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: an argument is out of range or belongs to another mode;
            `on_train_begin` raises it for an optimizer it cannot support or
            a `log_dir` that cannot be written.

    References:
        Kumar et al., "ZClip: Adaptive Spike Mitigation for LLM
        Pre-Training", 2025. Seetharaman et al., "AutoClip: Adaptive
        Gradient Clipping for Source Separation Networks", MLSP 2020.
        Pascanu, Mikolov and Bengio, "On the difficulty of training
        recurrent neural networks", ICML 2013 (clipping by global norm).
    """

    def __init__(
        self,
        mode: str = "zscore",
        *,
        alpha: float | None = None,
        z: float | None = None,
        warmup: int | None = None,
        percentile: float | None = None,
        window: int | None = None,
        threshold: float | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        run: str = "autoclip",
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(
                f"`mode` must be one of {', '.join(map(repr, MODES))}. "
                f"Received: mode={mode!r}"
            )
        self.mode = mode
        given = {
            "alpha": alpha,
            "z": z,
            "warmup": warmup,
            "percentile": percentile,
            "window": window,
            "threshold": threshold,
        }
        owner = {"alpha": "zscore", "z": "zscore", "warmup": "zscore",
                 "percentile": "percentile", "window": "percentile",
                 "threshold": "fixed"}  # fmt: skip
        for name, value in given.items():
            if value is not None and owner[name] != mode:
                raise ValueError(
                    f'`{name}` applies to mode="{owner[name]}" only. '
                    f"Received: {name}={value!r} with mode={mode!r}"
                )
        self._policy: _clipping.Policy
        if mode == "zscore":
            self._policy = _clipping.ZScore(
                _validation.number("alpha", _or(alpha, 0.97), low=0.0, high=1.0),
                _validation.number("z", _or(z, 2.5), low=0.0),
                _validation.positive_int("warmup", _or(warmup, 25)),
            )
        elif mode == "percentile":
            self._policy = _clipping.Percentile(
                _validation.number(
                    "percentile", _or(percentile, 10.0), low=0.0, high=100.0
                ),
                _validation.positive_int("window", _or(window, 1000)),
            )
        else:
            if threshold is None:
                raise ValueError(
                    '`threshold` is required with mode="fixed". Received: '
                    "threshold=None"
                )
            self._policy = _clipping.Fixed(
                _validation.number("threshold", threshold, low=0.0)
            )
        self.log_dir = None if log_dir is None else _validation.log_dir(log_dir)
        self.run = _validation.run_name(run)
        self._state: _ClipState | None = None
        self._optimizer: Any = None
        self._writer: tf.summary.SummaryWriter | None = None
        self._first_epoch = True
        self._known_trip = -1

    # -- lifecycle ---------------------------------------------------------

    def set_model(self, model: keras.Model) -> None:
        super().set_model(model)
        # Before any on_train_begin, so that BackupAndRestore, wherever it is
        # in the callback list, restores into this state.
        if _compat.is_model(model) and getattr(model, "optimizer", None):
            self._attach(_target(model.optimizer))

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        model = self.model
        _validation.compiled(model)
        legacy = _compat.is_tf_keras(model)
        if not legacy and keras.backend.backend() != "tensorflow":
            raise ValueError(
                "AutoClip needs the TensorFlow backend. Received: backend="
                f"{keras.backend.backend()!r}"
            )
        optimizer = _target(model.optimizer)
        _check_optimizer(optimizer, legacy)
        if self.log_dir is not None:
            self._writer = _summary.open_writer(self.log_dir, self.run, model)
        try:
            self._attach(optimizer)
            if legacy:
                self._install_transformer(optimizer)
            else:
                if not optimizer.built:
                    optimizer.build(model.trainable_variables)
                self._install(optimizer)
            model.make_train_function(force=True)
        except Exception:
            self.detach()
            raise
        self._first_epoch = True

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        state = self._state
        if state is None:
            return
        if self._first_epoch:
            # After every on_train_begin, so checkpoints are loaded by now.
            self._first_epoch = False
            self._check_state(state)
        state.epoch_max_norm.assign(0.0)
        state.epoch_clipped.assign(0)
        state.epoch_skipped.assign(0)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        state = self._state
        if state is None:
            return
        values = {
            "threshold": float(state.threshold.numpy()),
            "max_norm": float(state.epoch_max_norm.numpy()),
            "clipped_steps": int(state.epoch_clipped.numpy()),
            "skipped_steps": int(state.epoch_skipped.numpy()),
        }
        if logs is not None:
            logs.update({f"autoclip_{k}": v for k, v in values.items()})
        self._announce(epoch, values)
        if self._writer is not None:
            try:
                with self._writer.as_default(step=epoch):
                    for name, value in values.items():
                        _summary.scalar(
                            f"autoclip/{name}",
                            tf.constant(value, tf.float64),
                            f"AutoClip ({self.mode}), per epoch.",
                        )
            except Exception:
                logger.exception(
                    "AutoClip could not write its scalars; clipping goes on."
                )
                self._close_writer()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.detach()

    def detach(self) -> None:
        """Takes AutoClip out of the model's optimizer and train function.

        `fit` does this at its end. Call it yourself after a `fit` that
        stopped with an exception, before training without AutoClip; its
        state stays with the optimizer for a later `fit` with AutoClip.
        """
        self._close_writer()
        if self._optimizer is not None:
            _uninstall(self._optimizer)
            self._optimizer = None
            # The traced train function has AutoClip in it; a later fit
            # without AutoClip must trace a new one.
            self.model.train_function = None

    # -- state and hook ----------------------------------------------------

    def _attach(self, optimizer: Any) -> None:
        size = self._policy.history_size
        state = getattr(optimizer, STATE_ATTRIBUTE, None)
        if not isinstance(state, _ClipState) or state.history_size != size:
            strategy = getattr(self.model, "distribute_strategy", None)
            with (strategy or tf.distribute.get_strategy()).scope():
                state = _ClipState(size)
            setattr(optimizer, STATE_ATTRIBUTE, state)
        self._state = state

    def _check_state(self, state: _ClipState) -> None:
        """Starts fresh unless the state is this policy's; says why."""
        config = self._policy.config
        if tuple(state.config.numpy().tolist()) != config:
            if int(state.steps.numpy()):
                logger.info(
                    "AutoClip: the optimizer's AutoClip state was written with "
                    "other settings; %s starts fresh.",
                    self.mode,
                )
            state.reset(config)
        iterations = int(self.model.optimizer.iterations.numpy())
        if iterations and not int(state.steps.numpy()):
            logger.warning(
                "AutoClip starts without statistics on an optimizer that has "
                "taken %d steps. To resume its state from a checkpoint, call "
                "set_model(model) before model.load_weights(...).",
                iterations,
            )
        self._known_trip = int(state.first_trip_step.numpy())

    def _install(self, optimizer: Any) -> None:
        _uninstall(optimizer)
        original = optimizer.apply
        # Keras' own loss scaling divides the gradients inside `apply`.
        scale = float(getattr(optimizer, "loss_scale_factor", None) or 1.0)

        def apply(grads: Any, trainable_variables: Any = None) -> None:
            grads = _dense(grads)
            context = tf.distribute.get_replica_context()
            if context is not None and context.num_replicas_in_sync > 1:
                grads = _sum_across_replicas(context, grads)
            norm = _global_norm(grads) / scale

            def update(grads: Any, factor: tf.Tensor, variables: Any) -> None:
                original(_scale(grads, factor), variables)

            if tf.__internal__.distribute.strategy_supports_no_merge_call():
                factor, finite = self._decide(norm)
                tf.cond(
                    finite,
                    lambda: update(grads, factor, trainable_variables),
                    _no_op,
                )
                return

            def cross_replica(
                distribution: Any, grads: Any, norm: Any, variables: Any
            ) -> None:
                # Every replica holds the same summed gradients, hence norm.
                first = distribution.experimental_local_results(norm)[0]
                factor, finite = self._decide(first)

                def apply_all() -> None:
                    # Each replica applies its own copy of the gradients.
                    distribution.extended.call_for_each_replica(
                        update, args=(grads, factor, variables)
                    )

                # A cond whose branch calls merge_call (as apply does) must
                # be built in a cross-replica context.
                tf.cond(finite, apply_all, _no_op)

            context.merge_call(cross_replica, args=(grads, norm, trainable_variables))

        optimizer.apply = apply
        # The wrapper has already summed the gradients across replicas.
        optimizer._all_reduce_sum_gradients = _unchanged
        self._optimizer = optimizer

    def _install_transformer(self, optimizer: Any) -> None:
        """tf_keras: a gradient transformer, run after the cross-replica sum.

        A transformer cannot skip the update, so a non-finite step applies a
        zero gradient instead (momentum, if any, still moves the weights).
        """
        _uninstall(optimizer)

        def transform(grads_and_vars: Any) -> list[Any]:
            grads_and_vars = list(grads_and_vars)
            grads = _dense([g for g, _ in grads_and_vars])
            factor, finite = self._decide(_global_norm(grads))
            present = [i for i, g in enumerate(grads) if g is not None]
            if present:
                kept = tf.cond(
                    finite,
                    lambda: _scale([grads[i] for i in present], factor),
                    lambda: [tf.zeros_like(grads[i]) for i in present],
                )
                for i, grad in zip(present, kept, strict=True):
                    grads[i] = grad
            return [(g, v) for g, (_, v) in zip(grads, grads_and_vars, strict=True)]

        transform.keras_gradwatch_autoclip = True  # type: ignore[attr-defined]
        optimizer.gradient_transformers = [*optimizer.gradient_transformers, transform]
        self._optimizer = optimizer

    def _decide(self, norm: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Updates the state for one step; returns (scale factor, finite)."""
        s = self._state
        assert s is not None
        finite = tf.math.is_finite(norm)
        safe = tf.where(finite, norm, tf.constant(0.0, tf.float64))
        seen = s.seen.value
        memory = _clipping.Memory(s.mean.value, s.var.value, s.history.value)
        bound, after, memory = self._policy(memory, safe, finite, seen)
        trip = tf.logical_and(finite, norm > bound)
        factor = tf.where(trip, bound / tf.where(trip, norm, 1.0), 1.0)

        s.mean.assign(memory.mean)
        s.var.assign(memory.var)
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
        first = tf.logical_and(trip, s.first_trip_step.value < 0)
        s.first_trip_step.assign(tf.where(first, steps, s.first_trip_step.value))
        s.first_trip_norm.assign(tf.where(first, norm, s.first_trip_norm.value))
        return factor, finite

    # -- reporting ---------------------------------------------------------

    def _announce(self, epoch: int, values: dict[str, float]) -> None:
        state = self._state
        assert state is not None
        if values["skipped_steps"]:
            logger.warning(
                "AutoClip skipped %d step(s) with non-finite gradients in epoch %d.",
                values["skipped_steps"],
                epoch,
            )
        step = int(state.first_trip_step.numpy())
        if step >= 0 and step != self._known_trip:
            self._known_trip = step
            logger.warning(
                "AutoClip (%s) first clipped at training step %d: gradient norm "
                "%.4g; %d step(s) clipped in epoch %d, threshold now %.4g.",
                self.mode,
                step,
                float(state.first_trip_norm.numpy()),
                values["clipped_steps"],
                epoch,
                values["threshold"],
            )

    def _close_writer(self) -> None:
        writer, self._writer = self._writer, None
        _summary.close_writer(writer, "AutoClip")


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def _target(optimizer: Any) -> Any:
    """The optimizer that sees unscaled gradients (inside a loss scaler)."""
    legacy = _compat.tf_keras()
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) or (
        legacy is not None
        and isinstance(optimizer, legacy.mixed_precision.LossScaleOptimizer)
    ):
        return optimizer.inner_optimizer
    return optimizer


def _check_optimizer(optimizer: Any, legacy: bool) -> None:
    name = type(optimizer).__name__
    if legacy:
        if not isinstance(getattr(optimizer, "gradient_transformers", None), list):
            raise ValueError(
                "With tf_keras, AutoClip clips through the `gradient_transformers` "
                "of the legacy optimizers: compile with "
                f"`tf_keras.optimizers.legacy.{name}` (or another legacy "
                f"optimizer). Received: {type(optimizer).__module__}.{name}"
            )
    elif not isinstance(optimizer, keras.optimizers.Optimizer):
        raise ValueError(f"AutoClip needs a Keras 3 optimizer. Received: {name}")
    elif not hasattr(optimizer, "_all_reduce_sum_gradients"):
        raise ValueError(
            f"AutoClip does not support this Keras release's {name}: it has no "
            "`_all_reduce_sum_gradients` to take over. Please report the "
            f"Keras version ({keras.__version__})."
        )
    for option in ("clipnorm", "clipvalue", "global_clipnorm"):
        if getattr(optimizer, option, None):
            raise ValueError(
                f"AutoClip replaces the optimizer's own clipping; create the "
                f"optimizer without `{option}`. Received: {option}="
                f"{getattr(optimizer, option)!r}"
            )
    if getattr(optimizer, "gradient_accumulation_steps", None):
        raise ValueError(
            "AutoClip does not support gradient accumulation. Received: "
            f"gradient_accumulation_steps={optimizer.gradient_accumulation_steps}"
        )


def _uninstall(optimizer: Any) -> None:
    for name in ("apply", "_all_reduce_sum_gradients"):
        if name in vars(optimizer):
            delattr(optimizer, name)
    transformers = getattr(optimizer, "gradient_transformers", None)
    if isinstance(transformers, list):
        optimizer.gradient_transformers = [
            t for t in transformers if not getattr(t, "keras_gradwatch_autoclip", False)
        ]


def _unchanged(grads_and_vars: Any) -> list[Any]:
    return list(grads_and_vars)


def _no_op() -> None:
    return None


def _dense(grads: Any) -> list[Any]:
    """Sparse (embedding) gradients made dense: their norm needs duplicate
    rows summed, and the optimizers that keep moments (momentum, Adam...)
    densify them anyway."""
    return [
        tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads
    ]


def _sum_across_replicas(context: Any, grads: list[Any]) -> list[Any]:
    present = [g for g in grads if g is not None]
    if not present:
        return grads
    summed = iter(context.all_reduce(tf.distribute.ReduceOp.SUM, present))
    return [None if g is None else next(summed) for g in grads]


def _global_norm(grads: list[Any]) -> tf.Tensor:
    """L2 norm of all (dense) gradients together, as float64."""
    values = [tf.reshape(g, [-1]) for g in grads if g is not None]
    if not values:
        return tf.constant(0.0, tf.float64)
    fast = tf.sqrt(
        tf.add_n([2.0 * tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in values])
    )

    def exact() -> tf.Tensor:
        squares = [tf.reduce_sum(tf.square(tf.cast(v, tf.float64))) for v in values]
        return tf.sqrt(tf.add_n(squares))

    # A float32 sum of squares can overflow for finite gradients: redo it.
    return tf.cond(tf.math.is_finite(fast), lambda: tf.cast(fast, tf.float64), exact)


def _scale(grads: list[Any], factor: tf.Tensor) -> list[Any]:
    """Gradients times `factor`, without a pass over them when it is 1."""
    present = [g for g in grads if g is not None]
    if not present:
        return grads
    scaled = iter(
        tf.cond(
            factor < 1.0,
            lambda: [g * tf.cast(factor, g.dtype) for g in present],
            lambda: [tf.identity(g) for g in present],
        )
    )
    return [None if g is None else next(scaled) for g in grads]
