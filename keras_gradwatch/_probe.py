"""Held-out batch -> gradients of the compiled loss -> statistics.

The whole path is one `tf.function`, traced once and reused every logged
epoch and across `fit` calls while the model, its trainable variables and
its compiled loss stay the same (`GradientProbe.key`). It returns the
numbers; writing them is the callback's, so the function holds no writer.
One backward pass gives the gradients of the weights and those of the
measured layers' outputs and recurrent inputs (`_signal`).
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import keras
import tensorflow as tf

from keras_gradwatch import _compat, _signal, _stats, tags
from keras_gradwatch._heldout import Batch
from keras_gradwatch._pass import Result, Trace, key, same, unique_paths

logger = logging.getLogger("keras_gradwatch")


class GradientProbe:
    """Computes and returns the gradient statistics of one batch."""

    def __init__(self, model: keras.Model, *, buckets: int, training: bool) -> None:
        self._model = model
        self._buckets = buckets
        self._training = training
        self.key = key(model)
        self._loss_kwargs = {}
        if "training" in inspect.signature(model.compute_loss).parameters:
            self._loss_kwargs["training"] = training
        self.trace = Trace()
        self._present: list[int] = []  # see _run, under a tf_keras strategy
        self._compiled = _stats.compile_by_default()
        self._function = self._new_function()

    def _new_function(self) -> Any:
        # AutoGraph as in Keras' own train function, so that user code (an
        # overridden `call` or `compute_loss`) traces here as it does in fit:
        # tf_keras converts it, Keras 3 does not (`do_not_convert`), which
        # also spares converting every layer's code (~2x the trace time).
        return tf.function(self._run, autograph=_compat.is_tf_keras(self._model))

    def build(self, batch: Batch) -> None:
        """Traces the function for `batch` and runs it once.

        Tracing finds what the graph can see (shapes, missing inputs, a
        missing loss); the run finds what only data shows (strings where
        numbers belong, embedding ids out of range), so both surface here,
        before training, rather than at the end of the first epoch.
        """
        args = (batch.x, batch.y, batch.sample_weight)
        self._function.get_concrete_function(*args)
        try:
            self._function(*args)
        except tf.errors.OpError:
            if not self._compiled:
                raise
            # XLA could not compile the statistics' kernels here: TensorFlow's
            # own ops compute the same numbers, a little slower.
            logger.debug("GradWatch: statistics without XLA", exc_info=True)
            self._compiled = False
            self._function = self._new_function()
            self._function.get_concrete_function(*args)
            self._function(*args)

    def matches(self, model: keras.Model) -> bool:
        """Whether the traced pass still fits `model` as it is now."""
        return same(key(model), self.key)

    def __call__(self, batch: Batch) -> Result:
        """Runs the traced function on `batch`."""
        stats, histograms, global_norm, signal, loss = self._function(
            batch.x, batch.y, batch.sample_weight
        )
        return Result(
            stats.numpy(),
            histograms.numpy(),
            float(global_norm.numpy()),
            signal.numpy(),
            float(loss.numpy()),
        )

    @property
    def tracing_count(self) -> int:
        return int(self._function.experimental_get_tracing_count())

    def _run(self, x: Any, y: Any, sample_weight: Any) -> Any:
        model = self._model
        weights = list(model.trainable_weights)
        strategy = getattr(model, "distribute_strategy", None)
        if (
            _compat.is_tf_keras(model)
            and strategy is not None
            and strategy.num_replicas_in_sync > 1
        ):
            # tf_keras' compute_loss updates its loss metrics, which a
            # strategy allows per replica only, and divides the loss by the
            # number of replicas, as the gradients are summed over them.
            # Each local replica computes the whole batch; one is kept. The
            # backward signal is not measured here.
            def replica(x: Any, y: Any, sample_weight: Any) -> Any:
                return self._gradients(x, y, sample_weight, weights, self._present)

            per_replica, loss = strategy.run(replica, args=(x, y, sample_weight))
            replicas = float(strategy.num_replicas_in_sync)
            grads = [None] * len(weights)
            for i, grad in zip(self._present, per_replica, strict=True):
                grads[i] = strategy.experimental_local_results(grad)[0] * replicas
            loss = strategy.experimental_local_results(loss)[0] * replicas
            capture, signal_grads = None, []
        else:
            capture = _signal.Capture(_signal.measured_layers(model))
            grads, loss = self._gradients(x, y, sample_weight, weights, capture=capture)
            signal_grads = grads[len(weights) :]
            grads = grads[: len(weights)]
        return (
            *self._measure(weights, grads, capture, signal_grads),
            tf.cast(loss, tf.float64),
        )

    def _gradients(
        self,
        x: Any,
        y: Any,
        sample_weight: Any,
        weights: list[Any],
        present: list[int] | None = None,
        capture: _signal.Capture | None = None,
    ) -> tuple[list[Any], tf.Tensor]:
        """Gradients of the compiled loss, and the loss; with `present`, only
        the gradients not None (dense), their indices put in `present`. With
        `capture`, the gradients of its `targets()` follow those of the
        weights (float32, None where the loss does not depend on one)."""
        model = self._model
        # compute_loss updates the per-output loss trackers of a multi-output
        # model, and training=True moves BatchNorm statistics and Dropout
        # seeds: whatever the forward pass may touch is put back afterwards.
        kept = _compat.metric_variables(model)
        if self._training:
            kept += list(model.non_trainable_variables)
        saved = [tf.identity(_compat.read(v)) for v in kept]

        # Mixed precision: float16 gradients underflow unless the loss is
        # scaled as training scales it; the gradients are divided back.
        scale = _compat.loss_scale(getattr(model, "optimizer", None))
        with tf.GradientTape(persistent=scale is not None) as tape:
            if capture is None:
                y_pred = model(x, training=self._training)
            else:
                with capture.installed(tape):
                    y_pred = model(x, training=self._training)
            loss = model.compute_loss(
                x=x,
                y=y,
                y_pred=y_pred,
                sample_weight=sample_weight,
                **self._loss_kwargs,
            )
            if scale is not None:
                scaled = tf.cast(loss, tf.float32) * scale
        sources = list(weights)
        if capture is not None:
            sources += capture.targets()
        if scale is None:
            grads = tape.gradient(loss, sources)
            grads[len(weights) :] = [
                None if g is None else tf.cast(g, tf.float32)
                for g in grads[len(weights) :]
            ]
        else:
            grads = _unscaled_gradients(tape, loss, scaled, scale, sources)
        for variable, value in zip(kept, saved, strict=True):
            variable.assign(value)
        if present is None:
            return grads, loss
        present[:] = [i for i, g in enumerate(grads) if g is not None]
        return [tf.convert_to_tensor(grads[i]) for i in present], loss

    @tf.autograph.experimental.do_not_convert
    def _measure(
        self,
        weights: list[keras.Variable],
        grads: list[Any],
        capture: _signal.Capture | None,
        signal_grads: list[Any],
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        """Our own part of the trace: nothing for AutoGraph to convert."""
        trace = Trace()
        present = []
        for path, weight, grad in zip(
            unique_paths(weights), weights, grads, strict=True
        ):
            if grad is None:
                trace.no_gradient.append(path)
            else:
                trace.paths.append(path)
                present.append((_compat.read(weight), grad))
        if present:
            matrix, histograms = _stats.batch_stats(
                [g for _, g in present],
                [w for w, _ in present],
                self._buckets,
                compiled=self._compiled,
            )
        else:
            matrix = tf.zeros([0, len(tags.STATS_COLUMNS)], tf.float64)
            histograms = tf.zeros([0, self._buckets, 3], tf.float64)
        global_norm = tf.norm(matrix[:, tags.STATS_COLUMNS.index("grad_norm")])
        if capture is None:
            signal = tf.zeros([0], tf.float64)
        else:
            signal, measured = _signal.signal(capture, signal_grads)
            trace.signal_tags = measured.tags
            trace.activations = measured.activations
        self.trace = trace
        return matrix, histograms, global_norm, signal


def _unscaled_gradients(
    tape: tf.GradientTape,
    loss: tf.Tensor,
    scaled: tf.Tensor,
    scale: tf.Tensor,
    weights: list[Any],
) -> list[Any]:
    """Gradients of `scaled` divided by `scale`, as float32, dense.

    Where the scaled gradients overflow (a held-out batch is not a training
    batch), those of the unscaled loss are taken instead, so an Inf is
    reported only when the loss's own gradient has one.
    """
    grads = tape.gradient(scaled, weights)
    index = [i for i, g in enumerate(grads) if g is not None]
    if not index:
        return grads
    unscaled = [
        tf.cast(tf.convert_to_tensor(grads[i]), tf.float32) / scale for i in index
    ]
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in unscaled])

    def plain() -> list[tf.Tensor]:
        again = tape.gradient(loss, [weights[i] for i in index])
        return [tf.cast(tf.convert_to_tensor(g), tf.float32) for g in again]

    chosen = tf.cond(finite, lambda: unscaled, plain)
    out = list(grads)
    for i, grad in zip(index, chosen, strict=True):
        out[i] = grad
    return out
