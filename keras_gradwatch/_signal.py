"""The backward signal: gradients of the loss at layer outputs and over time.

Backpropagation carries δ = ∂L/∂y from each layer's output y back to its
input; how its size changes from layer to layer, and from time step to time
step inside a recurrent layer, tells vanishing from exploding where the
weight gradients cannot (Pascanu et al. 2013, "On the difficulty of training
recurrent neural networks", measure ‖∂L/∂x_t‖ over t the same way).

The measured layers are the outermost layers that own trainable weights and
are not models: models are walked into (Sequential, Functional, subclassed,
nested), other layers are not (an LSTM is measured as a whole, not its cell).
While the probe's pass is traced, and only then, each measured layer's
`call` is replaced on the instance by one that records its output tensor
(and a recurrent layer's input sequence and mask) and watches it on the
tape; `Capture.installed` puts the instance back exactly as it was, also
when tracing fails. The traced graph then holds the tensors, so later runs
of the pass measure them without any Python. Tags, units and edge cases are
documented in :mod:`keras_gradwatch.tags`.

References:
    Pascanu, Mikolov, Bengio 2013, "On the difficulty of training recurrent
    neural networks" (ICML).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from keras_gradwatch import tags
from keras_gradwatch._layers import (  # noqa: F401 (re-exported)
    MAX_TEXT,
    activation_name,
    calls_wrapped,
    is_recurrent,
    measured_layers,
    sequence_argument,
    unique_layer_paths,
)


@dataclass
class Call:
    """What the first call of one measured layer made, at trace time."""

    layer: Any
    output: tf.Tensor | None = None
    logits: tf.Tensor | None = None
    """What Keras' crossentropies read instead of a sigmoid or softmax
    output (see `_logits`)."""
    sequence: tf.Tensor | None = None
    """A recurrent layer's input ``[batch, time, features]``."""
    mask: tf.Tensor | None = None
    """The ``[batch, time]`` mask a recurrent layer received, if any."""


class Capture:
    """Records the tensors of the measured layers while a pass is traced."""

    def __init__(self, layers: Sequence[Any]) -> None:
        self.layers = list(layers)
        self.calls: dict[int, Call] = {}

    @contextlib.contextmanager
    def installed(self, tape: tf.GradientTape) -> Iterator[None]:
        """Wraps the layers' `call` for the length of the block.

        The wrapper is set on the instance, bypassing Keras' attribute
        tracking; afterwards the instance attribute is removed, or the one
        that was there before is put back.
        """
        self.calls = {}
        with calls_wrapped(
            self.layers,
            lambda i, layer, original: self._wrap(layer, original, tape),
        ):
            yield

    def _wrap(self, layer: Any, original: Any, tape: tf.GradientTape) -> Any:
        recurrent = is_recurrent(layer)
        signature = inspect.signature(original) if recurrent else None

        def call(*args: Any, **kwargs: Any) -> Any:
            # A shared layer is measured at its first call.
            record = id(layer) not in self.calls
            if record:
                self.calls[id(layer)] = entry = Call(layer)
                if signature is not None:
                    entry.sequence, entry.mask = _sequence(signature, args, kwargs)
                    if entry.sequence is not None:
                        # Before the call: the tape must see its consumers.
                        tape.watch(entry.sequence)
            outputs = original(*args, **kwargs)
            if record:
                first = outputs
                while isinstance(first, list | tuple) and first:
                    first = first[0]  # return_state: the output comes first
                if _is_float_tensor(first):
                    tape.watch(first)
                    entry.output = first
                    entry.logits = _logits(first)
            return outputs

        return call

    def recorded(self) -> list[Call]:
        """The calls recorded, in `layers` order."""
        return [self.calls[id(x)] for x in self.layers if id(x) in self.calls]

    def targets(self) -> list[tf.Tensor]:
        """Outputs, then logits, then recurrent input sequences, each in
        `layers` order."""
        calls = self.recorded()
        return (
            [c.output for c in calls if c.output is not None]
            + [c.logits for c in calls if c.logits is not None]
            + [c.sequence for c in calls if c.sequence is not None]
        )


def _sequence(
    signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tf.Tensor | None, tf.Tensor | None]:
    """A recurrent call's input sequence (float, rank 3) and mask."""
    found = sequence_argument(signature, args, kwargs)
    if found is None:
        return None, None
    _, _, sequence, mask = found
    if not _is_float_tensor(sequence) or sequence.shape.rank != 3:
        return None, None
    if not tf.is_tensor(mask) or mask.shape.rank != 2:
        mask = None
    return sequence, mask


def _logits(output: tf.Tensor) -> tf.Tensor | None:
    """The tensor Keras' crossentropies take in place of `output`.

    A sigmoid or softmax output carries its logits (``_keras_logits``), or
    is a graph ``Sigmoid``/``Softmax`` op, and the crossentropy losses then
    compute from the logits: the loss does not depend on the output itself.
    """
    logits = getattr(output, "_keras_logits", None)
    if tf.is_tensor(logits):
        return logits
    op = getattr(output, "op", None)
    if op is not None and op.type in ("Sigmoid", "Softmax") and len(op.inputs) == 1:
        return op.inputs[0]
    return None


def _is_float_tensor(value: Any) -> bool:
    return tf.is_tensor(value) and value.dtype.is_floating


@dataclass
class Measured:
    """The tags of a `signal` vector and the activations, known at trace time."""

    tags: list[str]
    activations: dict[str, str]
    """Layer path -> activation name."""


@tf.autograph.experimental.do_not_convert
def signal(capture: Capture, grads: Sequence[Any]) -> tuple[tf.Tensor, Measured]:
    """The backward-signal scalars of one pass, and their tags.

    Args:
        capture: The capture the pass was traced with.
        grads: The gradients of the loss with respect to
            ``capture.targets()``, float32 (unscaled), None where the loss
            does not depend on the tensor.

    Returns:
        A float64 vector and its tags: per layer whose output has a gradient,
        ``act_grad_norm`` and ``act_grad_rms``; then per recurrent layer
        whose input has one, ``time_grad_ratio`` and the ``time_grad_norm``
        profile.
    """
    layers = capture.layers
    paths = dict(zip(map(id, layers), unique_layer_paths(layers), strict=True))
    calls = capture.recorded()
    outputs = [c for c in calls if c.output is not None]
    with_logits = [c for c in calls if c.logits is not None]
    sequences = [c for c in calls if c.sequence is not None]
    assert len(grads) == len(outputs) + len(with_logits) + len(sequences)
    output_grads = dict(zip(map(id, outputs), grads[: len(outputs)], strict=True))
    grads = grads[len(outputs) :]
    for c, g in zip(with_logits, grads[: len(with_logits)], strict=True):
        # The loss reads the logits only: their gradient stands for the
        # output's, which is None.
        if output_grads[id(c)] is None:
            output_grads[id(c)] = g
    grads = grads[len(with_logits) :]
    activations = {}
    for c in calls:
        name = activation_name(c.layer)
        if name is not None:
            activations[paths[id(c.layer)]] = name
    names: list[str] = []
    parts: list[tf.Tensor] = []
    kept = [(c, output_grads[id(c)]) for c in outputs]
    kept = [(c, g) for c, g in kept if g is not None]
    if kept:
        norms = output_norms([g for _, g in kept])
        for c, _ in kept:
            path = paths[id(c.layer)]
            names.append(tags.tag(tags.ACT_GRAD_NORM, path))
            names.append(tags.tag(tags.ACT_GRAD_RMS, path))
        parts.append(tf.reshape(norms, [-1]))
    for c, g in zip(sequences, grads, strict=True):
        if g is None:
            continue
        path = paths[id(c.layer)]
        names.append(tags.tag(tags.TIME_GRAD_RATIO, path))
        names += [
            tags.tag(tags.TIME_GRAD_NORM, f"{path}/{q}") for q in tags.TIME_QUANTILES
        ]
        parts.append(time_profile(g, c.mask))
    vector = tf.concat(parts, 0) if parts else tf.zeros([0], tf.float64)
    return vector, Measured(names, activations)


def output_norms(grads: Sequence[tf.Tensor]) -> tf.Tensor:
    """``[n, 2]`` float64: ‖g‖₂ and ‖g‖₂ / sqrt(size) of each gradient.

    Sums of squares are taken in float32 by one fused kernel per tensor
    (`tf.nn.l2_loss`: one memory pass, no temporary); if any is not finite
    (NaN, Inf, or a sum beyond float32), all are redone in float64, so a
    norm is Inf or NaN only when NumPy's on the gradient would be.
    """
    grads = [tf.cast(g, tf.float32) for g in grads]
    sums = tf.stack([2.0 * tf.nn.l2_loss(g) for g in grads])

    def exact() -> tf.Tensor:
        return tf.stack(
            [tf.reduce_sum(tf.square(tf.cast(g, tf.float64))) for g in grads]
        )

    squares = tf.cond(
        tf.reduce_all(tf.math.is_finite(sums)),
        lambda: tf.cast(sums, tf.float64),
        exact,
    )
    sizes = tf.cast(tf.stack([tf.size(g, tf.int64) for g in grads]), tf.float64)
    norm = tf.sqrt(squares)
    rms = tf.where(sizes > 0, norm / tf.sqrt(tf.maximum(sizes, 1.0)), 0.0)
    return tf.stack([norm, rms], 1)


def time_profile(grad: tf.Tensor, mask: tf.Tensor | None) -> tf.Tensor:
    """``[1 + len(TIME_QUANTILES)]`` float64: the first/last ratio, then the
    RMS over the batch of ‖∂L/∂x_t‖ at each quantile of the valid steps.

    Each sample's valid steps are those its mask holds (all without one);
    quantile q is its valid step of rank ``round((q / 100) * (n - 1))``
    (halves up), n its number of valid steps. Samples with no valid step
    are left out; with none at all every value is NaN.
    """
    g = tf.cast(grad, tf.float32)
    step32 = tf.reduce_sum(tf.square(g), axis=2)  # [batch, time]
    steps = tf.cond(
        tf.reduce_all(tf.math.is_finite(step32)),
        lambda: tf.cast(step32, tf.float64),
        lambda: tf.reduce_sum(tf.square(tf.cast(g, tf.float64)), axis=2),
    )
    valid = tf.ones_like(steps, tf.bool) if mask is None else tf.cast(mask, tf.bool)
    count = tf.reduce_sum(tf.cast(valid, tf.int32), axis=1)  # [batch]
    rank = tf.cumsum(tf.cast(valid, tf.int32), axis=1) - 1
    fractions = tf.constant([q / 100.0 for q in tags.TIME_QUANTILES], tf.float64)
    wanted = tf.cast(
        tf.floor(fractions[:, None] * tf.cast(count - 1, tf.float64)[None, :] + 0.5),
        tf.int32,
    )  # [quantiles, batch]
    pick = tf.logical_and(valid[None], tf.equal(rank[None], wanted[:, :, None]))
    at = tf.reduce_sum(tf.where(pick, steps[None], 0.0), axis=2)  # [q, batch]
    has = count > 0
    samples = tf.reduce_sum(tf.cast(has, tf.float64))
    mean = tf.reduce_sum(tf.where(has[None], at, 0.0), axis=1) / samples
    profile = tf.sqrt(mean)
    first, last = profile[0], profile[-1]
    both_zero = tf.logical_and(first == 0.0, last == 0.0)
    ratio = tf.where(both_zero, tf.constant(0.0, tf.float64), first / last)
    return tf.concat([ratio[None], profile], 0)
