"""AutoClip, the callback: arguments, lifecycle and reporting.

The work of a training step is done elsewhere: the optimizer hooks
(`_autoclip_keras3` wraps a Keras 3 optimizer's `apply` on TensorFlow,
`_autoclip_jax_torch` on JAX and PyTorch, `_autoclip_tf_keras` adds a legacy
optimizer's gradient transformer) measure the global norm and call
`_autoclip_state.decide`, which applies the clip policy of `_clipping` (in
`keras.ops`, the same on every backend) and updates the variables this
callback reads per epoch.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_gradwatch import (
    _autoclip_jax_torch,
    _clipping,
    _compat,
    _summary,
    _validation,
    _writer,
    tags,
)
from keras_gradwatch._autoclip_state import STATE_ATTRIBUTE, ClipState, decide

logger = logging.getLogger("keras_gradwatch")

MODES = ("zscore", "percentile", "fixed")
SCALARS = ("threshold", "max_norm", "clipped_steps", "skipped_steps")
"""Reported per epoch as ``autoclip/<name>`` and ``logs["autoclip_<name>"]``."""
STEP_TAGS = (tags.AUTOCLIP_STEP_GRAD_NORM, tags.AUTOCLIP_STEP_THRESHOLD)
"""Written every `every_n_steps` optimizer steps."""
STEP_QUEUE = 1000
"""Summaries the writer holds before a flush, with `every_n_steps`."""
LOST_RUN_STEPS = 100
"""Consecutive non-finite steps after which a run counts as lost."""
BACKENDS = ("tensorflow", "jax", "torch")


class AutoClip(_compat.LegacyHooks, keras.callbacks.Callback):
    """Clips the global gradient norm when it spikes; skips non-finite steps.

    Pass it to `fit` like any callback, on TensorFlow, JAX or PyTorch. Every
    training step, inside the train function, it measures the global norm
    of the gradients (after they are summed across replicas under
    `tf.distribute`, and unscaled under mixed precision, by
    `LossScaleOptimizer` or the optimizer's `loss_scale_factor`) and
    decides:

    - ``mode="zscore"`` (default; ZClip's z-score, 2025, on robust
      statistics): a step whose norm exceeds both ``median + z * 1.4826 *
      MAD`` (Hampel's identifier; the MAD times 1.4826 estimates a standard
      deviation) and 3 times the median, over the last `warmup` finite
      norms, trips and is scaled down to ZClip's reciprocal value,
      ``median + (bound - median)**2 / (norm - median)``: the bound for a
      norm at the bound, near the median for a large spike; a norm more
      than 3 times the bound (a gross spike, often one example's gradient)
      to that value times ``3 * bound / norm``, towards 0 (a redescending
      influence, after Hampel). The window keeps the raw norms: spikes,
      even one step in four, move neither the median nor the MAD much, and
      norms that grow for good carry both with them. During warm-up (the
      first `warmup` finite steps), from the second step, a norm above 3
      times the (low) median of the earlier norms trips, scaled by the same
      rule. With SGD, zscore also holds every step to a bound relative to
      the weights, from the first step: a kernel's (a weight of 2 or more
      dimensions) gradient is scaled down so that ``learning_rate * ||g||``
      stays within `relative_step` times the kernel's norm (at least 1e-3),
      as adaptive gradient clipping (Brock et al. 2021) does per unit and
      LARS (You et al. 2017) per layer. A bound taken from the run's own
      norms follows a learning rate that is too high from the start, or
      norms that grow steadily; this one does not. Healthy SGD runs step
      about 0.1% of their weights; 0.016 is AGC's 0.01 at the learning rate
      of 1.6 it was tuned with. Adaptive optimizers (Adam...) take steps
      that do not scale with the gradient, so with them the bound is off.
    - ``mode="percentile"`` (AutoClip, Seetharaman et al., 2020): every step
      is clipped to the `percentile`-th percentile (NumPy's linear rule) of
      the finite norms of the last `window` steps, this one included, and
      never above 3 times the (low) median of the earlier ones (with few
      norms, the linear rule would put the bound near a spike). The paper
      keeps the whole history; a window bounds the memory and follows the
      norms as training changes them.
    - ``mode="fixed"``: a step whose norm exceeds `threshold` is scaled down
      to it, from the first step.

    In the adaptive modes the very first step (of a fresh state) is measured
    but not applied, as there is nothing to compare its norm with: a spike
    there would otherwise reach the weights unchecked. Until a step has been
    applied, a step whose norm is above 3 times the median of the earlier
    ones is measured and not applied either (of two norms far apart,
    either may be the spike). Such a held step reaches the
    optimizer as a zero gradient: before any applied step its momentum and
    moments are all zero, so it moves neither them nor the weights, and the
    optimizer's iteration still counts one step per step.

    In every mode a step whose gradients hold NaN or Inf is skipped: the
    optimizer is not called, so no update reaches the weights or the
    optimizer's state, and the step is counted. (Under `LossScaleOptimizer`
    such steps are the loss scaler's to skip, and are not counted here.)
    When every step of an epoch (two at least), or the last 100 steps, were
    skipped, the run is lost: AutoClip logs an error that says what to check
    and, with `stop_on_lost_run`, stops training (``model.stop_training``,
    as `keras.callbacks.TerminateOnNaN` does), at the end of that epoch.

    Per epoch it reports ``threshold`` (the bound in force after the epoch's
    last step; NaN before the first finite step), ``max_norm``,
    ``clipped_steps`` and ``skipped_steps`` as ``logs["autoclip_<name>"]``
    and, with `log_dir`, as scalars ``autoclip/<name>`` in
    ``<log_dir>/<run>``; the first trip is logged on the ``keras_gradwatch``
    logger. With `every_n_steps`, ``autoclip/step_grad_norm`` (the global
    norm before clipping) and ``autoclip/step_threshold`` (the bound the
    step was held to; +inf where there was none yet) are written every
    `every_n_steps` optimizer iterations, by iteration, from inside the train
    step (skipped steps are not written: they do not advance the iteration).
    On TensorFlow, summary ops cannot be XLA-compiled, so `every_n_steps` is
    refused for a model compiled with ``jit_compile=True``.

    On JAX and PyTorch the same rules run (`keras.ops`). On JAX they run
    inside the jitted train step: AutoClip's variables join the optimizer's
    for the length of `fit` (the optimizer's own save and load leave them
    out, so its checkpoint layout is Keras'), a non-finite step's update is
    computed and discarded (a select keeps the earlier values), and under
    `keras.distribution`
    the norm is that of the global batch's gradient; `every_n_steps` writes
    through a `jax.debug.callback` on the due steps. On PyTorch a non-finite
    step does not call the optimizer (one host sync per step). Without
    ``jax_enable_x64`` the state is float32 and int32: a finite gradient
    whose global norm exceeds float32's largest value (3.4e38) counts as
    non-finite and is skipped.

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
        z: zscore only: how many robust standard deviations (1.4826 MADs)
            above the median trip. Defaults to 2.5.
        warmup: zscore only: the steps of warm-up, and how many recent
            norms the median and MAD span. Defaults to 25.
        percentile: percentile only: the percentile clipped to, in (0, 100).
            Defaults to 10.
        window: percentile only: how many recent norms the percentile spans.
            Defaults to 1000.
        threshold: fixed only, and required there: the norm clipped to.
        relative_step: zscore only, with SGD: the largest step
            ``learning_rate * ||g||`` of a kernel, relative to its norm;
            None turns the step bound off. Defaults to 0.016.
        log_dir: Directory of TensorBoard logs for the per-epoch scalars.
            Defaults to None (logs only).
        run: Run sub-directory of `log_dir`. Defaults to ``"autoclip"``.
        every_n_steps: Also write each `every_n_steps`-th step's norm and
            bound; needs `log_dir`. Defaults to None (per-epoch scalars
            only).
        stop_on_lost_run: Stop training when a run is lost (see above).
            Defaults to True.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: an argument is out of range or belongs to another mode,
            or `every_n_steps` comes without `log_dir`; `on_train_begin`
            raises it for an optimizer it cannot support, a `log_dir` that
            cannot be written, or `every_n_steps` with ``jit_compile=True``
            on TensorFlow.

    References:
        Kumar et al., "ZClip: Adaptive Spike Mitigation for LLM
        Pre-Training", 2025. Seetharaman et al., "AutoClip: Adaptive
        Gradient Clipping for Source Separation Networks", MLSP 2020.
        Pascanu, Mikolov and Bengio, "On the difficulty of training
        recurrent neural networks", ICML 2013 (clipping by global norm).
        Brock, De, Smith and Simonyan, "High-Performance Large-Scale Image
        Recognition Without Normalization", ICML 2021 (adaptive gradient
        clipping); You, Gitman and Ginsburg, "Large Batch Training of
        Convolutional Networks", 2017 (LARS).
        Hampel, "The influence curve and its role in robust estimation",
        JASA 1974, and Leys et al., "Detecting outliers: Do not use standard
        deviation around the mean, use absolute deviation around the
        median", 2013 (median and MAD).
    """

    def __init__(
        self,
        mode: str = "zscore",
        *,
        z: float | None = None,
        warmup: int | None = None,
        percentile: float | None = None,
        window: int | None = None,
        threshold: float | None = None,
        relative_step: float | None = _clipping.RELATIVE_STEP,
        log_dir: str | os.PathLike[str] | None = None,
        run: str = tags.AUTOCLIP_RUN,
        every_n_steps: int | None = None,
        stop_on_lost_run: bool = True,
    ) -> None:
        super().__init__()
        if keras.backend.backend() not in BACKENDS:
            raise ValueError(
                "AutoClip needs a backend that trains: "
                f"{', '.join(BACKENDS)}. Received: backend="
                f"{keras.backend.backend()!r}"
            )
        if mode not in MODES:
            raise ValueError(
                f"`mode` must be one of {', '.join(map(repr, MODES))}. "
                f"Received: mode={mode!r}"
            )
        self.mode = mode
        given = {
            "z": z,
            "warmup": warmup,
            "percentile": percentile,
            "window": window,
            "threshold": threshold,
        }
        owner = {"z": "zscore", "warmup": "zscore",
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
        if every_n_steps is not None:
            every_n_steps = _validation.positive_int("every_n_steps", every_n_steps)
            if self.log_dir is None:
                raise ValueError(
                    "`every_n_steps` writes to TensorBoard and needs `log_dir`. "
                    f"Received: every_n_steps={every_n_steps} with log_dir=None"
                )
        self.every_n_steps = every_n_steps
        self.stop_on_lost_run = _validation.boolean(
            "stop_on_lost_run", stop_on_lost_run
        )
        if relative_step is not None:
            relative_step = _validation.number("relative_step", relative_step, low=0.0)
            if mode != "zscore" and relative_step != _clipping.RELATIVE_STEP:
                raise ValueError(
                    '`relative_step` applies to mode="zscore" only. Received: '
                    f"relative_step={relative_step!r} with mode={mode!r}"
                )
        # The step bound is part of zscore (the default); other modes clip
        # by their own rule alone.
        self.relative_step = relative_step if mode == "zscore" else None
        self._state: ClipState | None = None
        self._optimizer: Any = None
        self._writer: Any = None  # tf.summary's on TensorFlow, else _writer's
        self._first_epoch = True
        self._known_trip = -1
        self._last_step = -1  # the last step scalars written (JAX, PyTorch)
        self._step_records: _summary.Records | None = None
        self._steps_failed = False

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
        tensorflow = keras.backend.backend() == "tensorflow"
        if legacy and not tensorflow:
            raise ValueError(
                "AutoClip on a tf_keras model needs Keras' TensorFlow backend "
                "(KERAS_BACKEND=tensorflow). Received: backend="
                f"{keras.backend.backend()!r}"
            )
        optimizer = _target(model.optimizer)
        _check_optimizer(optimizer, legacy)
        if (
            tensorflow
            and self.every_n_steps is not None
            and getattr(model, "jit_compile", False)
        ):
            # A summary op has no XLA kernel: the train step would not compile.
            raise ValueError(
                "AutoClip writes every_n_steps' step scalars from inside the "
                "train step, which XLA cannot compile: compile the model with "
                "`jit_compile=False`, or leave `every_n_steps=None` for the "
                f"per-epoch scalars. Received: every_n_steps={self.every_n_steps}"
                " with jit_compile=True"
            )
        if self.log_dir is not None and tensorflow:
            from keras_gradwatch import _tf_summary

            # Step scalars: flush (an fsync, inside the train step) every
            # thousand summaries, not every ten; the writer still flushes
            # every two minutes and when fit ends.
            queue = None if self.every_n_steps is None else STEP_QUEUE
            self._writer = _tf_summary.open_writer(self.log_dir, self.run, model, queue)
        elif self.log_dir is not None:
            self._writer = _writer.open_writer(
                self.log_dir, self.run, _compat.should_write(model)
            )
        self._last_step = -1
        self._steps_failed = False
        try:
            self._attach(optimizer)
            if legacy:
                from keras_gradwatch import _autoclip_tf_keras

                if self.relative_step is not None:
                    logger.info(
                        "AutoClip: the step bound is off under tf_keras; the "
                        "spike test clips alone."
                    )
                _autoclip_tf_keras.install(optimizer, self._decide)
            else:
                if not optimizer.built:
                    optimizer.build(model.trainable_variables)
                bound = self._bound_for(optimizer)
                if tensorflow:
                    from keras_gradwatch import _autoclip_keras3

                    _autoclip_keras3.install(optimizer, self._decide, bound)
                else:
                    assert self._state is not None
                    _autoclip_jax_torch.install(
                        optimizer, self._state, self._decide, bound
                    )
            self._optimizer = optimizer
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
        state.epoch_steps.assign(0)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        state = self._state
        if state is None:
            return
        values = {
            "threshold": float(_read(state.threshold)),
            "max_norm": float(_read(state.epoch_max_norm)),
            "clipped_steps": int(_read(state.epoch_clipped)),
            "skipped_steps": int(_read(state.epoch_skipped)),
        }
        if logs is not None:
            logs.update({f"autoclip_{k}": v for k, v in values.items()})
        self._announce(epoch, values)
        self._check_lost(state, epoch)
        if self._writer is not None:
            try:
                self._write_epoch(epoch, values)
            except Exception:
                logger.exception(
                    "AutoClip could not write its scalars; clipping goes on."
                )
                self._close_writer()

    def _write_epoch(self, epoch: int, values: dict[str, float]) -> None:
        description = f"AutoClip ({self.mode}), per epoch."
        if keras.backend.backend() != "tensorflow":
            records = _summary.Records(
                [f"autoclip/{name}" for name in values], [], 0, description
            )
            scalars = np.array(list(values.values()), np.float64)
            self._writer.write(epoch, records.serialize(scalars, np.zeros((0, 0, 3))))
            return
        import tensorflow as tf

        from keras_gradwatch import _tf_summary

        with self._writer.as_default(step=epoch):
            for name, value in values.items():
                _tf_summary.scalar(
                    f"autoclip/{name}", tf.constant(value, tf.float64), description
                )

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
            _uninstall(self._optimizer, self._state)
            self._optimizer = None
            # The traced train function has AutoClip in it; a later fit
            # without AutoClip must trace a new one.
            self.model.train_function = None

    # -- state and hook ----------------------------------------------------

    def _attach(self, optimizer: Any) -> None:
        size = self._policy.history_size
        state = getattr(optimizer, STATE_ATTRIBUTE, None)
        if isinstance(state, ClipState) and state.history_size != size:
            if int(_read(state.steps)):
                logger.info(
                    "AutoClip: the optimizer's AutoClip state was written with "
                    "other settings; %s starts fresh.",
                    self.mode,
                )
            state = None
        if not isinstance(state, ClipState):
            if keras.backend.backend() == "tensorflow":
                import tensorflow as tf

                strategy = getattr(self.model, "distribute_strategy", None)
                with (strategy or tf.distribute.get_strategy()).scope():
                    state = ClipState(size)
            else:
                state = ClipState(size)
            setattr(optimizer, STATE_ATTRIBUTE, state)
        self._state = state

    def _check_state(self, state: ClipState) -> None:
        """Starts fresh unless the state is this policy's; says why."""
        config = self._policy.config
        stored = tuple(float(c) for c in _read(state.config))
        if stored != tuple(np.asarray(config, state.config.dtype).tolist()):
            if int(_read(state.steps)):
                logger.info(
                    "AutoClip: the optimizer's AutoClip state was written with "
                    "other settings; %s starts fresh.",
                    self.mode,
                )
            state.reset(config)
        iterations = int(_read(self.model.optimizer.iterations))
        if iterations and not int(_read(state.steps)):
            logger.warning(
                "AutoClip starts without statistics on an optimizer that has "
                "taken %d steps. To resume its state from a checkpoint, call "
                "set_model(model) before model.load_weights(...).",
                iterations,
            )
        self._known_trip = int(_read(state.first_trip_step))

    def _bound_for(self, optimizer: Any) -> float | None:
        """The step bound for this optimizer: SGD's update is the learning
        rate times the gradient, so its step is known from the gradient;
        an adaptive optimizer's (Adam...) is not."""
        if self.relative_step is None:
            return None
        if not isinstance(optimizer, keras.optimizers.SGD):
            logger.info(
                "AutoClip: the step bound (relative_step=%g) applies to SGD; "
                "with %s the spike test clips alone.",
                self.relative_step,
                type(optimizer).__name__,
            )
            return None
        return self.relative_step

    def _decide(self, norm: Any, limit: Any | None = None) -> tuple[Any, Any]:
        """Called by the optimizer hook inside the train step."""
        assert self._state is not None
        factor, finite, bound = decide(self._state, self._policy, norm, limit)
        if self.every_n_steps is not None and self._writer is not None:
            backend = keras.backend.backend()
            if backend == "tensorflow":
                self._write_step(norm, bound, finite)
            else:
                step = self._optimizer.iterations.value
                if backend == "torch":
                    self._write_host(step, norm, bound, finite)
                else:
                    self._call_back(step, norm, bound, finite)
        return factor, finite

    def _call_back(self, step: Any, norm: Any, bound: Any, finite: Any) -> None:
        """Under `jax.jit`: a host callback on the due steps only."""
        import jax

        due = ops.logical_and(finite, ops.equal(step % self.every_n_steps, 0))
        jax.lax.cond(
            due,
            lambda: jax.debug.callback(self._write_host, step, norm, bound, finite),
            lambda: None,
        )

    def _write_host(self, step: Any, norm: Any, bound: Any, finite: Any) -> None:
        """Writes a due step's norm and bound, by the optimizer's iteration,
        from the host (PyTorch's eager step; JAX's callback, which may come
        once per device: a step is written once). A failure is logged, and
        the step scalars stop; training goes on."""
        every, writer = self.every_n_steps, self._writer
        if every is None or writer is None or self._steps_failed:
            return
        try:
            step = int(step)
            if step % every or step <= self._last_step or not bool(finite):
                return
            self._last_step = step
            if self._step_records is None:
                self._step_records = _summary.Records(
                    STEP_TAGS,
                    [],
                    0,
                    f"AutoClip ({self.mode}), every {every} step(s).",
                )
            values = np.array([float(norm), float(bound)], np.float64)
            protos = self._step_records.serialize(values, np.zeros((0, 0, 3)))
            writer.write(step, protos)
        except Exception:
            logger.exception(
                "AutoClip could not write its step scalars; clipping goes on."
            )
            self._steps_failed = True

    def _write_step(self, norm: Any, bound: Any, finite: Any) -> None:
        """The step's norm and bound, by the optimizer's iteration, in-graph.

        A skipped step is not written: it does not advance the iteration, so
        the next finite step would write the same TensorBoard step. Under a
        strategy that runs this once per replica only the first writes; the
        norm is the cross-replica one everywhere.
        """
        import tensorflow as tf

        from keras_gradwatch import _tf_summary

        assert self._writer is not None
        assert self.every_n_steps is not None
        step = tf.cast(self._optimizer.iterations, tf.int64)
        due = tf.logical_and(finite, tf.equal(step % self.every_n_steps, 0))
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            first = tf.equal(context.replica_id_in_sync_group, 0)
            due = tf.logical_and(due, first)
        description = f"AutoClip ({self.mode}), every {self.every_n_steps} step(s)."
        with self._writer.as_default(step=step), tf.summary.record_if(due):
            _tf_summary.scalar(tags.AUTOCLIP_STEP_GRAD_NORM, norm, description)
            _tf_summary.scalar(tags.AUTOCLIP_STEP_THRESHOLD, bound, description)

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
        step = int(_read(state.first_trip_step))
        if step >= 0 and step != self._known_trip:
            self._known_trip = step
            logger.warning(
                "AutoClip (%s) first clipped at training step %d: gradient norm "
                "%.4g; %d step(s) clipped in epoch %d, threshold now %.4g.",
                self.mode,
                step,
                float(_read(state.first_trip_norm)),
                values["clipped_steps"],
                epoch,
                values["threshold"],
            )

    def _check_lost(self, state: ClipState, epoch: int) -> None:
        """Says so, and stops training, when a run has only NaN/Inf steps."""
        consecutive = int(_read(state.consecutive_skipped))
        steps = int(_read(state.epoch_steps))
        # Every step of the epoch (two at least), or the last LOST_RUN_STEPS.
        if consecutive < min(LOST_RUN_STEPS, max(2, steps)):
            return
        stop = self.stop_on_lost_run
        logger.error(
            "AutoClip: the last %d training step(s), up to the end of epoch %d, "
            "all had NaN or Inf gradients and were skipped: this run is lost. "
            "%s Check the data (NaN or Inf in inputs or labels), the learning "
            "rate (too high, the weights or activations blew up) and the loss "
            "(a log or a division of 0).",
            consecutive,
            epoch,
            "Training stops (stop_on_lost_run=True)."
            if stop
            else "Training goes on (stop_on_lost_run=False).",
        )
        if stop:
            self.model.stop_training = True

    def _close_writer(self) -> None:
        writer, self._writer = self._writer, None
        _writer.close_writer(writer, "AutoClip")


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def _read(variable: Any) -> Any:
    """A variable's value on the host, as NumPy: a Keras 3 variable's on
    any backend, or a `tf.Variable`'s, mirrored ones included (tf_keras'
    optimizer iterations)."""
    return np.asarray(variable.numpy())


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
    if legacy:
        from keras_gradwatch import _autoclip_tf_keras

        _autoclip_tf_keras.check(optimizer)
    elif keras.backend.backend() == "tensorflow":
        from keras_gradwatch import _autoclip_keras3

        _autoclip_keras3.check(optimizer)
    elif not isinstance(optimizer, keras.optimizers.Optimizer):
        raise ValueError(
            f"AutoClip needs a Keras 3 optimizer. Received: {type(optimizer).__name__}"
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


def _uninstall(optimizer: Any, state: ClipState | None) -> None:
    if keras.backend.backend() != "tensorflow":
        _autoclip_jax_torch.uninstall(optimizer, state)
        return
    from keras_gradwatch import _autoclip_keras3, _autoclip_tf_keras

    _autoclip_keras3.uninstall(optimizer)
    _autoclip_tf_keras.uninstall(optimizer)
