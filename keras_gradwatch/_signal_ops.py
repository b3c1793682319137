"""The backward signal on JAX and PyTorch: ∂L/∂y at each measured layer.

The same tags, units and edge cases as TensorFlow's `keras_gradwatch._signal`
(see `keras_gradwatch.tags`). There a tape watches the layers' outputs; here
each measured layer's first call adds a zero "probe" to its output (and a
recurrent layer's to its input sequence), and the gradient of the loss with
respect to a probe is the gradient at that tensor. `Probes.installed` wraps
the layers' `call` on the instance for the length of a block and puts them
back, as `_signal.Capture` does.

JAX traces twice: once under `jax.eval_shape` to learn the probes' shapes
(`Probes.spec`), then in the pass, which takes zeros of those shapes as an
argument it differentiates. PyTorch needs no probe where the tensor is in
autograd's graph (`torch.autograd.grad` differentiates with respect to it
itself: no zeros, no addition); elsewhere (a model input) it makes a zero
probe when the layer runs.

Logits. TensorFlow's crossentropies read a sigmoid or softmax output
through its logits, so there the signal at such a layer is the gradient at
its logits. The other backends' crossentropies read the output itself; for
the same numbers on every backend, the probe of a sigmoid or softmax layer
whose output is the model's, under binary, categorical or sparse
categorical cross-entropy (not from logits), goes on its activation's input.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterable, Iterator
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_gradwatch import _chance, _layers, _stats_ops, tags

_CROSSENTROPIES = {
    "binary_crossentropy", "BinaryCrossentropy",
    "categorical_crossentropy", "CategoricalCrossentropy",
    "sparse_categorical_crossentropy", "SparseCategoricalCrossentropy",
}  # fmt: skip


def _reads_logits(model: Any) -> Any:
    """The output layer whose logits TensorFlow's loss would read, or None."""
    outputs = getattr(model, "outputs", None) or []
    if len(outputs) != 1:
        return None
    layer = getattr(outputs[0]._keras_history, "operation", None)
    if _layers.activation_name(layer) not in ("sigmoid", "softmax"):
        return None
    loss = getattr(model, "loss", None)
    config = getattr(loss, "get_config", None)
    from_logits = (
        bool(config().get("from_logits", False)) if callable(config) else False
    )
    if _chance._identify(loss)[0] not in _CROSSENTROPIES or from_logits:
        return None
    return layer


def _is_float(value: Any) -> bool:
    return (
        hasattr(value, "shape")
        and hasattr(value, "dtype")
        and keras.backend.is_float_dtype(keras.backend.standardize_dtype(value.dtype))
    )


class Probes:
    """Where the signal is measured, and the wrapper that measures it.

    Keys are ``"<layer index>/<kind>"``, kind ``out`` (the output, or the
    logits of `_reads_logits`' layer) or ``seq`` (a recurrent input).
    """

    def __init__(self, model: Any) -> None:
        self.layers = _layers.measured_layers(model)
        self.paths = _layers.unique_layer_paths(self.layers)
        self._logits = _reads_logits(model)
        self.spec: dict[str, tuple[tuple[int, ...], str]] = {}
        """Key -> (shape, dtype), in call order; filled by a recording block."""
        self.masks: dict[str, Any] = {}
        """Key of a ``seq`` probe -> the ``[batch, time]`` mask (or None)."""
        self._values: dict[str, Any] | None = None
        self._make: Any = None
        self._seen: set[int] = set()

    @contextlib.contextmanager
    def installed(
        self, values: dict[str, Any] | None = None, make: Any = None
    ) -> Iterator[None]:
        """Wraps the layers' calls for the block. Without `values` or
        `make`, records `spec`; with `values`, adds them; with `make` (a
        function of a tensor, PyTorch), adds what it makes of each, into
        `values` (a tensor it returns as it is is kept, unchanged)."""
        self._values, self._make, self._seen = values, make, set()
        self.masks = {}
        if values is None and make is None:
            self.spec = {}
        with _layers.calls_wrapped(self.layers, self._wrap):
            yield

    def _probe(self, key: str, tensor: Any) -> Any:
        """`tensor` plus its probe (or recorded, and returned as it is)."""
        if self._make is not None:
            probe = self._make(tensor)
            assert self._values is not None
            self._values[key] = probe
            return tensor if probe is tensor else tensor + probe
        if self._values is None:
            self.spec[key] = (tuple(tensor.shape), str(tensor.dtype))
            return tensor
        return tensor + ops.cast(self._values[key], tensor.dtype)

    def _wrap(self, i: int, layer: Any, original: Any) -> Any:
        recurrent = _layers.is_recurrent(layer)
        signature = inspect.signature(original) if recurrent else None
        logits = layer is self._logits

        def call(*args: Any, **kwargs: Any) -> Any:
            if id(layer) in self._seen:  # a shared layer: its first call
                return original(*args, **kwargs)
            self._seen.add(id(layer))
            if signature is not None:
                args, kwargs = self._sequence(i, signature, args, kwargs)
            if logits:
                activation = layer.activation
                object.__setattr__(
                    layer,
                    "activation",
                    lambda z: activation(self._probe(f"{i}/out", z)),
                )
                try:
                    return original(*args, **kwargs)
                finally:
                    object.__setattr__(layer, "activation", activation)
            outputs = original(*args, **kwargs)
            return self._output(i, outputs)

        return call

    def _output(self, i: int, outputs: Any) -> Any:
        """`outputs` with its first tensor probed (return_state: lists)."""
        if isinstance(outputs, list | tuple) and outputs:
            first = self._output(i, outputs[0])
            return type(outputs)([first, *outputs[1:]])
        if _is_float(outputs):
            return self._probe(f"{i}/out", outputs)
        return outputs

    def _sequence(
        self,
        i: int,
        signature: inspect.Signature,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The call's arguments with its input sequence probed."""
        found = _layers.sequence_argument(signature, args, kwargs)
        if found is None:
            return args, kwargs
        bound, name, sequence, mask = found
        if not _is_float(sequence) or len(sequence.shape) != 3:
            return args, kwargs
        key = f"{i}/seq"
        self.masks[key] = (
            mask if hasattr(mask, "shape") and len(mask.shape) == 2 else None
        )
        bound.arguments[name] = self._probe(key, sequence)
        return bound.args, bound.kwargs

    def activations(self) -> dict[str, str]:
        """Measured layer path -> its activation's name."""
        names = {}
        for path, layer in zip(self.paths, self.layers, strict=True):
            name = _layers.activation_name(layer)
            if name is not None:
                names[path] = name
        return names


def signal_tags(probes: Probes, keys: Iterable[str]) -> list[str]:
    """The tags of `signal`'s vector for gradients at the probes `keys`."""
    names = []
    for i, path in enumerate(probes.paths):
        if f"{i}/out" in keys:
            names += [
                tags.tag(tags.ACT_GRAD_NORM, path),
                tags.tag(tags.ACT_GRAD_RMS, path),
            ]
    for i, path in enumerate(probes.paths):
        if f"{i}/seq" in keys:
            names.append(tags.tag(tags.TIME_GRAD_RATIO, path))
            names += [
                tags.tag(tags.TIME_GRAD_NORM, f"{path}/{q}")
                for q in tags.TIME_QUANTILES
            ]
    return names


def signal(probes: Probes, grads: dict[str, Any], wide: str) -> Any:
    """The signal vector (in `wide`), tagged by `signal_tags(probes, grads)`,
    from the gradients at the probes (absent where the loss does not depend
    on one)."""
    outputs = [
        ops.cast(grads[f"{i}/out"], "float32")
        for i in range(len(probes.paths))
        if grads.get(f"{i}/out") is not None
    ]
    norms = _stats_ops.norms(outputs, wide)[0]
    roots = [float(np.prod(g.shape)) ** 0.5 or 1.0 for g in outputs]  # RMS; 0 for none
    rms = norms / ops.convert_to_tensor(roots, wide)
    parts = [ops.reshape(ops.stack([norms, rms], axis=1), [-1])] if outputs else []
    for i in range(len(probes.paths)):
        g = grads.get(f"{i}/seq")
        if g is not None:
            parts.append(time_profile(g, probes.masks.get(f"{i}/seq"), wide))
    return ops.concatenate(parts, 0) if parts else ops.zeros([0], wide)


def time_profile(grad: Any, mask: Any, wide: str) -> Any:
    """`keras_gradwatch._signal.time_profile` in `keras.ops`: the first/last
    ratio, then the RMS over the batch of ‖∂L/∂x_t‖ at each quantile of
    each sample's valid steps."""
    steps = ops.sum(ops.square(ops.cast(grad, wide)), axis=2)  # [batch, time]
    valid = (
        ops.ones_like(steps, dtype="bool") if mask is None else ops.cast(mask, "bool")
    )
    count = ops.sum(ops.cast(valid, "int32"), axis=1)
    rank = ops.cumsum(ops.cast(valid, "int32"), axis=1) - 1
    fractions = ops.convert_to_tensor([q / 100.0 for q in tags.TIME_QUANTILES], wide)
    wanted = ops.cast(
        ops.floor(fractions[:, None] * ops.cast(count - 1, wide)[None, :] + 0.5),
        "int32",
    )
    pick = ops.logical_and(valid[None], ops.equal(rank[None], wanted[:, :, None]))
    at = ops.sum(ops.where(pick, steps[None], 0.0), axis=2)  # [q, batch]
    has = count > 0
    samples = ops.sum(ops.cast(has, wide))
    profile = ops.sqrt(ops.sum(ops.where(has[None], at, 0.0), axis=1) / samples)
    first, last = profile[0], profile[-1]
    both_zero = ops.logical_and(first == 0.0, last == 0.0)
    ratio = ops.where(both_zero, 0.0, first / last)
    return ops.concatenate([ops.reshape(ratio, [1]), profile], 0)


def zeros(spec: dict[str, tuple[tuple[int, ...], str]]) -> dict[str, Any]:
    """A zero probe per recorded key, as the backend's tensors (float32, or
    the tensor's float dtype)."""
    return {key: ops.zeros(shape, dtype) for key, (shape, dtype) in spec.items()}
