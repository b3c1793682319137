"""GradWatch: the callback that brings `write_grads` back to TensorFlow 2."""

from __future__ import annotations

import math
import os
import re
from typing import Any

import keras
import numpy as np

from keras_gradwatch import (
    _chance,
    _compat,
    _heldout,
    _layers,
    _rules,
    _summary,
    _validation,
    tags,
)
from keras_gradwatch._callback import EpochLogger, logger
from keras_gradwatch._pass import Result


class GradWatch(EpochLogger):
    """Logs per-weight gradient histograms and norms to TensorBoard.

    At the end of every `freq`-th epoch (or every `every_n_steps` optimizer
    steps), computes the gradients of the model's compiled loss
    (`model.compute_loss`: losses, `loss_weights`, `sample_weight`,
    regularization and `add_loss` terms) with respect to every trainable
    weight on one fixed held-out batch, and writes a histogram and seven
    scalars per weight, the global norm and the loss to ``<log_dir>/<run>``.
    The same backward pass measures the signal backpropagation carries: the
    gradient of the loss at each layer's output, and through time at each
    recurrent layer's input, with each layer's activation written once per
    `fit` (Keras 3 models; see `keras_gradwatch.tags`).
    The global norm also goes into the epoch logs as ``logs["grad_norm"]``,
    so History, CSVLogger and EarlyStopping placed after this callback see it
    (place `keras.callbacks.TensorBoard` before it, or that callback logs the
    held-out norm as a training metric).
    Tags, units and edge cases are documented in `keras_gradwatch.tags`.

    With ``every_n_steps=N`` the pass runs after each training step that
    brings the optimizer's iteration count to a multiple of N (to the next
    multiple or past it, with ``steps_per_execution``), and that count is
    the TensorBoard step; each pass also writes the epoch it fell in, and
    ``logs["grad_norm"]`` at the end of an epoch is the latest pass's. The
    live diagnosis then judges each pass, with the held-out loss in place
    of the training loss. Checking the count is one variable read per
    step, in `on_train_batch_end`: Keras 3's TensorFlow backend dispatches
    every step synchronously and converts the batch logs anyway, so the
    hook adds no wait (see the benchmarks' README for its cost). On JAX and
    PyTorch the hook counts batches and reads the count only when a
    multiple may have been reached.

    The forward pass, tape, statistics and histograms of all weights run in
    one `tf.function`, traced in the first `on_train_begin` and reused, also
    by later `fit` calls, until the model's trainable variables or its
    compiled loss change; each `fit` writes its own event file. Each logged
    epoch is fed to the rules of `keras_gradwatch.diagnosis` (with the
    training loss from the epoch logs; they keep running state, so this
    costs the same every epoch) and every finding new in this `fit` is
    logged as one warning on the ``keras_gradwatch`` logger, with the
    remedy to try. A failure
    while training (a full disk, say) is logged and turns the callback off
    for the rest of `fit`; it never stops training.

    Example:

    ```python
    model.fit(x, y, epochs=50, validation_data=(xv, yv),
              callbacks=[GradWatch("logs/run1", held_out=(xv, yv))])
    # tensorboard --logdir logs/run1
    ```

    Args:
        log_dir: Directory of the TensorBoard logs; may be shared with
            `keras.callbacks.TensorBoard`.
        held_out: The data the gradients are computed on: `(x, y)`,
            `(x, y, sample_weight)`, or a batched `tf.data.Dataset` whose
            first batch is taken once. Use data the model does not train on.
        freq: Log every `freq` epochs, counting from epoch 0. Defaults to 1.
        every_n_steps: Log every `every_n_steps` optimizer steps instead of
            per epoch. Defaults to None (per epoch).
        training: Run the forward pass in training mode (Dropout on,
            BatchNorm on batch statistics). The model's non-trainable state
            is restored afterwards, which copies it once per logged epoch.
            Defaults to False.
        max_samples: Use at most this many held-out samples (the first ones),
            bounding the memory and time of the extra forward/backward pass.
            Defaults to 512.
        buckets: Number of histogram buckets. Defaults to 30, TensorBoard's.
        run: Name of the run sub-directory. Defaults to ``"heldout"``.
        diagnose: Run the diagnosis rules live and log new findings.
            Defaults to True.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: an argument is out of range, `held_out` is malformed, or
            both `freq` and `every_n_steps` are given.
            `on_train_begin` raises ValueError for a model that is not
            compiled, held-out data that does not fit the model, or a
            `log_dir` that cannot be written.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike[str],
        held_out: Any,
        *,
        freq: int = 1,
        training: bool = False,
        max_samples: int = 512,
        buckets: int = 30,
        run: str = tags.DEFAULT_RUN,
        diagnose: bool = True,
        every_n_steps: int | None = None,
    ) -> None:
        super().__init__(log_dir, freq=freq, run=run)
        if every_n_steps is not None:
            every_n_steps = _validation.positive_int("every_n_steps", every_n_steps)
            if self.freq != 1:
                raise ValueError(
                    "`freq` counts epochs and `every_n_steps` optimizer steps: "
                    f"give one of them. Received: freq={freq}, "
                    f"every_n_steps={every_n_steps}"
                )
        self.every_n_steps = every_n_steps
        if every_n_steps is not None:
            self.on_train_batch_end = self._on_train_batch_end
        _heldout.check(held_out)
        self.held_out = held_out
        self.training = _validation.boolean("training", training)
        self.max_samples = _validation.positive_int("max_samples", max_samples)
        self.buckets = _validation.positive_int("buckets", buckets)
        self.diagnose = _validation.boolean("diagnose", diagnose)
        self._batch: _heldout.Batch | None = None
        self._diagnoser: _rules.Diagnoser | None = None
        self._signal_columns: dict[str, int] = {}
        self._diagnosing = diagnose
        self._nonfinite: set[str] = set()
        self._probe: Any = None
        self._records: _summary.Records | None = None
        self._texts: list[bytes] = []
        self._texts_due = False
        self._iterations: Any = None
        self._last_step = self._bound = 0
        self._end = -1
        self._epoch = 0
        self._last_norm: float | None = None
        self._chance = math.nan
        self._outside: dict[str, float] = {}
        self._description = ""

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        _validation.compiled(self.model)
        if self._batch is None:
            self._batch = _heldout.take(
                self.held_out, self.max_samples, _converter(self.model)
            )
            self._say_capped(self._batch)
        self._diagnosing = self.diagnose
        self._nonfinite = set()
        self._open_writer()
        if self._probe is None or not self._probe.matches(self.model):
            self._build_probe(self._batch)
        self._texts_due = True  # once per fit, at its first logged epoch
        self._chance = self._chance_loss(self._batch)
        self._outside = self._targets_outside(self._batch)
        self._diagnoser = self._new_diagnoser()
        if self.every_n_steps is not None:
            self._iterations = self.model.optimizer.iterations
            self._last_step = self._bound = self._iteration()
            self._last_norm = None
        self._say_skipped()
        if not self.model.trainable_weights:
            logger.warning(
                "GradWatch: the model has no trainable weights, so there are "
                "no gradients to log (grad_norm stays 0)."
            )
        if getattr(self.model, "jit_compile", False) is True:
            logger.info(
                "GradWatch: the model trains with XLA (jit_compile=True); the "
                "held-out pass is not compiled as a whole (its statistics have "
                "shapes XLA cannot compile)."
            )

    def _build_probe(self, batch: _heldout.Batch) -> None:
        """Traces the pass for the model as it is now; model errors surface here."""
        self._probe = self._records = None
        probe = _new_probe(self.model, buckets=self.buckets, training=self.training)
        try:
            probe.build(batch)
        except Exception as error:
            self._close()
            raise ValueError(self._cannot_evaluate(error)) from error
        paths = probe.trace.paths
        when = (
            "at the end of the epoch"
            if self.every_n_steps is None
            else f"after every {self.every_n_steps} optimizer step(s)"
        )
        description = self._description = (
            f"On the held-out batch ({batch.rows} samples, "
            f"training={self.training}), {when}."
        )
        self._records = _summary.Records(
            scalar_tags=[
                *(tags.tag(prefix, p) for p in paths for prefix in tags.STATS_COLUMNS),
                tags.GLOBAL_NORM_TAG,
                *probe.trace.signal_tags,
                tags.HELDOUT_LOSS,
                tags.TRAIN_LOSS if self.every_n_steps is None else tags.EPOCH_TAG,
            ],
            histogram_tags=[tags.tag(tags.GRAD_HISTOGRAM, path) for path in paths],
            buckets=self.buckets,
            description=description,
        )
        self._texts = _summary.text_protos(
            {
                tags.tag(tags.ACTIVATION, path): name
                for path, name in probe.trace.activations.items()
            },
            "Written once per fit.",
        )
        self._probe = probe

    @property
    def _unit(self) -> str:
        return "epoch" if self.every_n_steps is None else "step"

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch
        self._end = -1  # the last batch index seen in this epoch

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.every_n_steps is None:
            super().on_epoch_end(epoch, logs)
        elif logs is not None and self._last_norm is not None:
            logs[tags.LOGS_GRAD_NORM] = self._last_norm

    def _on_train_batch_end(
        self, batch: int, logs: dict[str, Any] | None = None
    ) -> None:
        """`on_train_batch_end` with ``every_n_steps`` (set in `__init__`
        then only: on JAX and PyTorch a callback that defines the hook turns
        Keras' asynchronous batch dispatch off)."""
        n = self.every_n_steps
        assert n is not None
        if self._writer is None:
            return
        if self._counted:
            # Steps since the last read: an upper bound of the count (a
            # skipped step does not count), so a multiple is never missed.
            self._bound += batch - self._end
            self._end = batch
            if self._bound // n == self._last_step // n:
                return
        step = self._bound = self._iteration()
        if step // n == self._last_step // n:
            return
        self._last_step = step
        self._guarded(lambda: self._log_step(step), f"step {step}")

    def _implements_train_batch_hooks(self) -> bool:
        return self.every_n_steps is not None  # tf_keras calls the hook then

    @property
    def _counted(self) -> bool:
        """Whether batches are counted between reads of the iteration count:
        on JAX (whose trainer keeps the optimizer's state off the variables
        during an epoch: a read syncs it back) and PyTorch. TensorFlow reads
        the count every step (one variable read)."""
        return _backend(self.model) != "tensorflow"

    def _iteration(self) -> int:
        """The optimizer's iteration count now."""
        if _backend(self.model) == "tensorflow":
            return int(_compat.read(self._iterations).numpy())
        sync = getattr(self.model, "jax_state_sync", None)
        if sync is not None:
            sync()  # JAX: the state back on the variables, as Keras allows
        return int(keras.ops.convert_to_numpy(self._iterations.value))

    def _log_epoch(self, epoch: int, logs: dict[str, Any] | None) -> None:
        loss = _training_loss(logs)
        result = self._write_pass(
            epoch, (math.nan if loss is None else loss,), unreported=loss is None
        )
        if logs is not None:
            logs[tags.LOGS_GRAD_NORM] = result.global_norm
        self._judge(epoch, result, loss)

    def _log_step(self, step: int) -> None:
        result = self._write_pass(step, (float(self._epoch),))
        self._last_norm = result.global_norm
        self._judge(step, result, result.loss)  # the held-out loss, by step

    def _write_pass(
        self, step: int, extra: tuple[float, ...], unreported: bool = False
    ) -> Result:
        """Runs the pass and writes it, with the `extra` scalars, at `step`;
        with `unreported`, the last (the training loss Keras did not report)
        is left out, so readers do not take it for a loss that went NaN."""
        assert self._probe is not None
        assert self._batch is not None
        assert self._records is not None
        assert self._writer is not None
        result = self._probe(self._batch)
        protos = self._records.serialize(
            np.concatenate(
                [
                    result.stats.ravel(),
                    [result.global_norm],
                    result.signal,
                    [result.loss, *extra],
                ]
            ),
            result.histograms,
        )
        if unreported:
            protos.pop()  # the last scalar
        if self._texts_due:
            protos += self._texts
            once = {
                tags.tag(tags.TARGET_OUTSIDE, k): v for k, v in self._outside.items()
            }
            if math.isfinite(self._chance):
                once[tags.CHANCE_LOSS] = self._chance
            if once:
                protos += _summary.Records(
                    list(once), [], 1, self._description
                ).serialize(np.array(list(once.values())), np.zeros((0, 1, 3)))
            self._texts_due = False
        self._writer.write(step, protos)
        return result

    def _judge(self, step: int, result: Result, loss: Any) -> None:
        """The diagnosis, with `loss` as the row's loss; or, without it, a
        line about non-finite gradients."""
        if self._diagnosing:
            self._diagnose(step, result.stats, result.signal, loss)
        if not self._diagnosing:  # off, or just turned off by a failure
            self._say_nonfinite(step, result.stats)

    def _say_nonfinite(self, step: int, stats: np.ndarray) -> None:
        """Without the diagnosis (whose non_finite finding says it once): a
        line whenever the set of weights with NaN/Inf gradients changes."""
        assert self._probe is not None
        column = stats[:, tags.GRAD_SCALARS.index("grad_nonfinite")]
        nonfinite = {
            path: int(count)
            for path, count in zip(self._probe.trace.paths, column, strict=True)
            if count
        }
        if nonfinite.keys() == self._nonfinite:
            return
        if nonfinite:
            listed = ", ".join(f"{p} ({n})" for p, n in nonfinite.items())
            logger.warning(
                "GradWatch: non-finite gradient values at %s %d in %s.",
                self._unit,
                step,
                listed,
            )
        self._nonfinite = set(nonfinite)

    def _new_diagnoser(self) -> _rules.Diagnoser:
        """The rules' state for this fit, with the layers the pass measures."""
        assert self._probe is not None
        trace = self._probe.trace
        layers, self._signal_columns = [], {}
        for i, tag in enumerate(trace.signal_tags):
            prefix, _, path = tag.partition("/")
            if prefix == tags.ACT_GRAD_NORM:
                layers.append(path)
            if prefix in (tags.ACT_GRAD_NORM, tags.TIME_GRAD_RATIO):
                self._signal_columns[tag] = i
        return _rules.Diagnoser(
            trace.paths,
            layers=layers,
            activations=trace.activations,
            axis=self._unit,
            chance_loss=self._chance,
            target_outside=self._outside,
        )

    @property
    def _where(self) -> str:
        """Where this callback writes, as the user gave it."""
        return os.path.join(os.fspath(self.log_dir), self.run)

    def _chance_loss(self, batch: _heldout.Batch) -> float:
        """The held-out labels' chance level under the compiled loss, or
        NaN (see `keras_gradwatch._chance`); never fails the fit."""
        try:
            return _chance.chance_loss(self.model.loss, batch.y, batch.sample_weight)
        except Exception:
            return math.nan

    def _targets_outside(self, batch: _heldout.Batch) -> dict[str, float]:
        """{output layer path: the share of held-out label values its
        activation cannot output} for a functional or Sequential model with
        one output whose layer has a bounded activation, under a loss that
        compares labels with outputs (`keras_gradwatch._chance.outside_range`),
        else empty; warns once when that share is not 0. Never fails the
        fit. The rules join it to the layer where the backward signal is
        measured (not under tf_keras, nor for a weightless Activation layer:
        there it is the warning and the tag only)."""
        try:
            outputs = getattr(self.model, "outputs", None) or []
            if len(outputs) != 1:
                return {}
            history = outputs[0]._keras_history  # (layer, node, tensor index)
            layer = getattr(history, "operation", None) or history.layer  # tf_keras
            layers = _layers.measured_layers(self.model)
            # The backward signal's name for the layer where it measures it
            # (not under tf_keras), so that the rules can join the two.
            path = dict(
                zip(map(id, layers), _layers.unique_layer_paths(layers), strict=True)
            ).get(id(layer)) or (getattr(layer, "path", None) or layer.name)
            # A Bidirectional layer's merge (a sum, a concatenation...) sets
            # its range, not its forward layer's activation.
            activation = (
                None
                if type(layer).__name__ == "Bidirectional"  # Keras 3 or tf_keras
                else _layers.activation_name(layer)
            )
            share = _chance.outside_range(
                activation,
                batch.y,
                tuple(outputs[0].shape[1:]),
                loss=self.model.loss,
                sample_weight=batch.sample_weight,
            )
        except Exception:
            return {}
        if activation is None or not math.isfinite(share):
            return {}
        if share > 0:
            logger.warning(
                "GradWatch: %s Bring the labels into that range, or use "
                "another output activation (linear for regression).",
                _chance.outside_text(share, activation, path),
            )
        return {path: share}

    def _signal_row(self, signal: np.ndarray, prefix: str) -> np.ndarray | None:
        """One per-layer scalar of this epoch's pass, NaN where not measured."""
        assert self._diagnoser is not None
        layers = self._diagnoser.layers
        if not layers:
            return None
        columns = [self._signal_columns.get(tags.tag(prefix, p), -1) for p in layers]
        index = np.array(columns)
        return np.where(index >= 0, signal[np.maximum(index, 0)], np.nan)

    def _diagnose(
        self, step: int, stats: np.ndarray, signal: np.ndarray, loss: Any
    ) -> None:
        """Feeds the pass to the rules; logs the findings new with it. The
        rules keep running state, so this costs the same every pass."""
        assert self._diagnoser is not None
        column = {name: stats[:, i] for i, name in enumerate(tags.GRAD_SCALARS)}
        try:
            row = _rules.Row(
                epoch=step,
                grad_norm=column["grad_norm"],
                grad_to_weight=column["grad_to_weight"],
                grad_dead_units=column["grad_dead_units"],
                grad_nonfinite=column["grad_nonfinite"],
                weight_nonfinite=stats[:, tags.STATS_COLUMNS.index("weight_nonfinite")],
                loss=math.nan if loss is None else float(loss),
                loss_logged=loss is not None,
                act_grad_norm=self._signal_row(signal, tags.ACT_GRAD_NORM),
                time_grad_ratio=self._signal_row(signal, tags.TIME_GRAD_RATIO),
            )
            findings = self._diagnoser.update(row)
        except Exception:
            logger.exception("GradWatch's diagnosis failed; it is off for this fit.")
            self._diagnosing = False
            return
        about = f"GradWatch diagnosis of {self.model.name!r} ({self._where})"
        for finding in findings:
            logger.warning(
                "%s, %s %d: %s Try: %s",
                about,
                self._unit,
                step,
                finding.message,
                finding.remedy,
            )
        for finding in self._diagnoser.ended:
            logger.warning(
                "%s, %s %d: %s no longer holds (%s).",
                about,
                self._unit,
                step,
                finding.kind,
                finding.when(self._unit),
            )

    def _cannot_evaluate(self, error: Exception) -> str:
        """One message for a held-out batch the model cannot take: the cause
        first, and the likely fix."""
        cause = _cause(error)
        if getattr(self.model, "loss", None) is None and "loss" in cause.lower():
            return (
                "GradWatch needs the model's loss, and the model was compiled "
                "without one: call `model.compile(optimizer, loss=...)`. "
                f"Computing it on `held_out` gave {cause}"
            )
        hint = (
            " A tf.data.Dataset is read one element at a time: pass "
            "`held_out=dataset.batch(n)` if it is not batched."
            if _heldout.is_dataset(self.held_out)
            else ""
        )
        return (
            "GradWatch could not compute the model's loss on `held_out`: "
            f"{cause}. Do its x and y fit the model's inputs and outputs "
            "(shapes, numeric dtypes, ids below the embedding's input_dim)?"
            f"{hint}"
        )

    def _say_capped(self, batch: _heldout.Batch) -> None:
        if batch.available is not None and batch.available > batch.rows:
            logger.warning(
                "GradWatch uses the first %d of %d held-out samples (max_samples=%d).",
                batch.rows,
                batch.available,
                self.max_samples,
            )

    def _say_skipped(self) -> None:
        assert self._probe is not None
        frozen = _validation.frozen_layers(self.model)
        if frozen:
            logger.info(
                "GradWatch skips frozen layers (trainable=False): %s.",
                ", ".join(frozen),
            )
        missing = self._probe.trace.no_gradient
        if missing:
            logger.warning(
                "GradWatch skips weights the loss does not depend on "
                "(gradient is None): %s.",
                ", ".join(missing),
            )


def _backend(model: Any) -> str:
    """The backend the model computes with (tf_keras: TensorFlow)."""
    return "tensorflow" if _compat.is_tf_keras(model) else keras.backend.backend()


def _converter(model: Any) -> Any:
    """How the held-out arrays become the backend's tensors."""
    if _backend(model) == "tensorflow":
        import tensorflow as tf

        return tf.convert_to_tensor
    return keras.ops.convert_to_tensor


def _new_probe(model: Any, *, buckets: int, training: bool) -> Any:
    """The held-out pass for the model's backend."""
    backend = _backend(model)
    if backend == "jax":
        from keras_gradwatch._probe_ops import JaxProbe

        return JaxProbe(model, buckets=buckets, training=training)
    if backend == "torch":
        from keras_gradwatch._probe_ops import TorchProbe

        return TorchProbe(model, buckets=buckets, training=training)
    from keras_gradwatch._probe import GradientProbe

    return GradientProbe(model, buckets=buckets, training=training)


def _training_loss(logs: dict[str, Any] | None) -> float | None:
    """The epoch's training loss from Keras' `logs`; None if not there."""
    try:
        return None if logs is None or "loss" not in logs else float(logs["loss"])
    except (TypeError, ValueError):
        return None


def _cause(error: Exception) -> str:
    """The line of an error that says what went wrong, without the graph's
    stack of "File ..." lines that TensorFlow puts around it."""
    skipped = ("File ", "[[", "Detected at node", "Graph execution error", "in user")
    lines = [line.strip() for line in str(error).splitlines()]
    kept = [line for line in lines if line and not line.startswith(skipped)]
    text = re.sub(r"\s*\[Op:[^\]]*\]$", "", kept[-1]) if kept else ""
    name = type(error).__name__
    if text.startswith(f"{name}: "):
        return text
    return f"{name}: {text}" if text else name
