"""The held-out pass, and WeightNorms' pass, on the JAX and PyTorch backends.

The same `Result` as TensorFlow's `keras_gradwatch._probe`: the gradients of
the compiled loss (the way Keras' own trainer computes it: a stateless
forward pass, then `stateless_compute_loss`, so metrics and non-trainable
state are left as they were) and those at the measured layers
(`keras_gradwatch._signal_ops`), then `keras_gradwatch._stats_ops`.

JAX: one `jax.jit` function of the variables' values, the signal's zero
probes and the batch, traced in `build` and reused while
`keras_gradwatch._pass.key` holds. JAX gives a weight (or a layer output)
the loss does not depend on a zero gradient, not None; which ones those are
is read once from the loss's jaxpr (an input no equation on the way to the
loss reads), so that they are skipped as on TensorFlow rather than judged
as dead.

PyTorch: eager, with `torch.autograd.grad` (None for those); the statistics
run under `torch.no_grad`. Keras 3's PyTorch variables are updated in
place, but the pass reads them only between steps.

Mixed precision: float16 gradients underflow unless the loss is scaled as
training scales it (`loss_scale`), so the pass differentiates the scaled
loss and divides the gradients back (`_unscaled`), as TensorFlow's does.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from keras_gradwatch import _signal_ops, _stats_ops
from keras_gradwatch._heldout import Batch
from keras_gradwatch._pass import Result, Trace, key, same, unique_paths


def _loss(
    model: Any,
    trainable: list[Any],
    non_trainable: list[Any],
    metrics: list[Any],
    x: Any,
    y: Any,
    sample_weight: Any,
    training: bool,
) -> Any:
    """The compiled loss, as Keras' JAX trainer computes it, stateless."""
    kwargs = {"training": training} if model._call_has_training_arg else {}
    y_pred, _, losses = model.stateless_call(
        trainable, non_trainable, x, return_losses=True, **kwargs
    )
    if losses:
        model._losses_override = losses  # add_loss() terms, as the trainer does
    try:
        loss, _ = model.stateless_compute_loss(
            trainable,
            non_trainable,
            metrics,
            x=x,
            y=y,
            y_pred=y_pred,
            sample_weight=sample_weight,
            training=training,
        )
    finally:
        if losses:
            model._losses_override = []
    return loss


def loss_scale(model: keras.Model) -> float | None:
    """The factor training multiplies the loss by (the `LossScaleOptimizer`'s
    current scale, or `loss_scale_factor`), or None where it is 1. Read on
    the host between steps, where the optimizer's variables hold values."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or not hasattr(optimizer, "scale_loss"):
        return None
    scale = float(np.asarray(keras.ops.convert_to_numpy(optimizer.scale_loss(1.0))))
    return None if scale == 1.0 else scale


def _unscaled(grads: list[Any], scale: float, plain: Any) -> list[Any]:
    """`grads` (of the loss times `scale`, None where the loss does not
    depend on one) divided by `scale`, in float32. Where any is not finite,
    `plain()`'s (the unscaled loss's, as float32) instead: a held-out batch
    is not a training batch, and an Inf is reported only where the loss's
    own gradient has one."""
    present = [i for i, g in enumerate(grads) if g is not None]
    divided = [keras.ops.cast(grads[i], "float32") / scale for i in present]
    if not divided:
        return grads
    finite = keras.ops.all(
        keras.ops.stack([keras.ops.all(keras.ops.isfinite(g)) for g in divided])
    )

    def again() -> list[Any]:
        return [keras.ops.cast(g, "float32") for g in plain()]

    chosen = _stats_ops.cond(finite, lambda: divided, again)
    out = list(grads)
    for i, g in zip(present, chosen, strict=True):
        out[i] = g
    return out


def _values(variables: list[Any]) -> list[Any]:
    return [v.value for v in variables]


class _Probe:
    """What both backends' passes hold: the model as traced, the settings."""

    def __init__(self, model: keras.Model, *, buckets: int, training: bool) -> None:
        self._model = model
        self._buckets = buckets
        self._training = training
        self.key = key(model)
        self.trace = Trace()

    def matches(self, model: keras.Model) -> bool:
        """Whether the pass still fits `model` as it is now."""
        return same(key(model), self.key)


class JaxProbe(_Probe):
    """The held-out pass on JAX (see the module's docstring)."""

    def __init__(self, model: keras.Model, *, buckets: int, training: bool) -> None:
        super().__init__(model, buckets=buckets, training=training)
        self._probes: dict[str, Any] = {}
        self._function: Any = None
        self._traces = 0

    def build(self, batch: Batch) -> None:
        import jax

        model = self._model
        weights = list(model.trainable_weights)
        args = self._args(batch)
        probes = _signal_ops.Probes(model)

        def loss_of(
            trainable: list[Any],
            probed: dict[str, Any] | None,
            non_trainable: list[Any],
            metrics: list[Any],
            x: Any,
            y: Any,
            sample_weight: Any,
        ) -> Any:
            with probes.installed(probed):
                loss = _loss(
                    model,
                    trainable,
                    non_trainable,
                    metrics,
                    x,
                    y,
                    sample_weight,
                    self._training,
                )
            return loss, probes.masks

        jax.eval_shape(loss_of, args[0], None, *args[1:])  # records the probes
        self._probes = _signal_ops.zeros(probes.spec)
        closed = jax.make_jaxpr(loss_of)(args[0], self._probes, *args[1:])
        count = len(jax.tree_util.tree_leaves(args[0]))
        used = _used_inputs(closed.jaxpr, count + len(self._probes))
        paths = unique_paths(weights)
        present = [i for i, u in enumerate(used[:count]) if u]
        # Dicts flatten in sorted key order.
        measured = [
            k for k, u in zip(sorted(self._probes), used[count:], strict=True) if u
        ]
        wide, buckets = _stats_ops.wide_dtype(), self._buckets
        self.trace = Trace(
            paths=[paths[i] for i in present],
            no_gradient=[p for p, u in zip(paths, used[:count], strict=True) if not u],
            signal_tags=_signal_ops.signal_tags(probes, measured),
            activations=probes.activations(),
        )

        def run(
            trainable: list[Any],
            probed: dict[str, Any],
            scale: float | None,
            *rest: Any,
        ) -> Any:
            self._traces += 1
            gradient = jax.value_and_grad(loss_of, argnums=(0, 1), has_aux=True)
            if scale is None:  # static: a scale traces its own program
                (loss, masks), (grads, at_probes) = gradient(trainable, probed, *rest)
            else:

                def scaled_of(*args: Any) -> Any:
                    loss, masks = loss_of(*args)
                    return keras.ops.cast(loss, "float32") * scale, (loss, masks)

                (_, (loss, masks)), (grads, at_probes) = jax.value_and_grad(
                    scaled_of, argnums=(0, 1), has_aux=True
                )(trainable, probed, *rest)
                keys = sorted(at_probes)

                def plain() -> list[Any]:
                    g, p = gradient(trainable, probed, *rest)[1]
                    return [*g, *(p[k] for k in keys)]

                both = _unscaled([*grads, *(at_probes[k] for k in keys)], scale, plain)
                grads = both[: len(grads)]
                at_probes = dict(zip(keys, both[len(grads) :], strict=True))
            probes.masks = masks
            stats, histograms = _stats_ops.batch_stats(
                [grads[i] for i in present],
                [trainable[i] for i in present],
                buckets,
                wide,
            )
            kept = {k: at_probes[k] for k in measured}
            return stats, histograms, loss, _signal_ops.signal(probes, kept, wide)

        self._function = jax.jit(run)
        self(batch)

    def _args(self, batch: Batch) -> tuple[Any, ...]:
        model = self._model
        return (
            _values(model.trainable_variables),
            _values(model.non_trainable_variables),
            _values(model.metrics_variables),
            batch.x,
            batch.y,
            batch.sample_weight,
        )

    def __call__(self, batch: Batch) -> Result:
        trainable, *rest = self._args(batch)
        stats, histograms, loss, signal = self._function(
            trainable, self._probes, loss_scale(self._model), *rest
        )
        return _result(stats, histograms, loss, signal)

    @property
    def tracing_count(self) -> int:
        return self._traces


def _used_inputs(jaxpr: Any, count: int) -> list[bool]:
    """Whether the first output of `jaxpr` (the loss) depends on each of its
    first `count` inputs: backwards from it, an equation any of whose
    outputs is needed needs all its inputs (conservative inside nested
    jaxprs)."""
    from jax.extend.core import Var

    needed = {v for v in jaxpr.outvars[:1] if isinstance(v, Var)}
    for equation in reversed(jaxpr.eqns):
        if any(v in needed for v in equation.outvars):
            needed.update(v for v in equation.invars if isinstance(v, Var))
    return [v in needed for v in jaxpr.invars[:count]]


class TorchProbe(_Probe):
    """The held-out pass on PyTorch (see the module's docstring)."""

    def __init__(self, model: keras.Model, *, buckets: int, training: bool) -> None:
        super().__init__(model, buckets=buckets, training=training)
        self._paths = unique_paths(list(model.trainable_weights))
        self._signal = _signal_ops.Probes(model)
        self.tracing_count = 1

    def build(self, batch: Batch) -> None:
        self(batch)

    def __call__(self, batch: Batch) -> Result:
        import torch

        model = self._model
        params = _values(list(model.trainable_variables))
        made: dict[str, Any] = {}

        def probe(tensor: Any) -> Any:
            # autograd differentiates with respect to any tensor of the graph:
            # a zero probe only where the graph does not reach (a model input).
            if tensor.requires_grad:
                return tensor
            return torch.zeros_like(tensor, requires_grad=True)

        with torch.enable_grad():
            with self._signal.installed(made, make=probe):
                loss = _loss(
                    model,
                    params,
                    _values(model.non_trainable_variables),
                    _values(model.metrics_variables),
                    batch.x,
                    batch.y,
                    batch.sample_weight,
                    self._training,
                )
            sources = [*params, *made.values()]
            scale = loss_scale(model)
            if scale is None:
                grads = torch.autograd.grad(loss, sources, allow_unused=True)
            else:
                grads = _unscaled(
                    list(
                        torch.autograd.grad(
                            loss.float() * scale,
                            sources,
                            allow_unused=True,
                            retain_graph=True,
                        )
                    ),
                    scale,
                    lambda: [
                        g
                        for g in torch.autograd.grad(loss, sources, allow_unused=True)
                        if g is not None
                    ],
                )
        at_probes = {
            k: g
            for k, g in zip(made, grads[len(params) :], strict=True)
            if g is not None
        }
        grads = grads[: len(params)]
        present = [i for i, g in enumerate(grads) if g is not None]
        wide = _stats_ops.wide_dtype()
        with torch.no_grad():
            stats, histograms = _stats_ops.batch_stats(
                [grads[i] for i in present],
                [params[i] for i in present],
                self._buckets,
                wide,
            )
            signal = _signal_ops.signal(self._signal, at_probes, wide)
        self.trace = Trace(
            paths=[self._paths[i] for i in present],
            no_gradient=[self._paths[i] for i, g in enumerate(grads) if g is None],
            signal_tags=_signal_ops.signal_tags(self._signal, at_probes),
            activations=self._signal.activations(),
        )
        return _result(stats, histograms, loss.detach(), signal)


def _result(stats: Any, histograms: Any, loss: Any, signal: Any) -> Result:
    def host(x: Any) -> np.ndarray:
        return np.asarray(keras.ops.convert_to_numpy(x), np.float64)

    stats = host(stats)
    return Result(
        stats,
        _stats_ops.host_rows(*histograms),
        float(np.sqrt(np.sum(np.square(stats[:, 0])))),  # of the grad_norm column
        host(signal),
        float(keras.ops.convert_to_numpy(loss)),
    )


class WeightPass:
    """WeightNorms' pass on JAX and PyTorch: `_stats_ops.weight_stats`
    against a snapshot of copies (JAX's train step donates the variables'
    buffers, and PyTorch updates them in place, so a reference would not
    keep the old values); jitted on JAX."""

    def __init__(self, weights: list[Any], buckets: int | None) -> None:
        # Imported here: _weight_norms imports this module when it is used.
        from keras_gradwatch._weight_norms import records

        self.weights = weights
        self._buckets = buckets
        self.records = records(weights, buckets)
        self.previous = self._copies()
        self.tracing_count = 0
        wide = _stats_ops.wide_dtype()

        def run(values: list[Any], previous: list[Any]) -> Any:
            self.tracing_count += 1
            return _stats_ops.weight_stats(values, previous, buckets, wide)

        if keras.backend.backend() == "jax":
            import jax

            run = jax.jit(run)
        self._function = run

    def _copies(self) -> list[Any]:
        return [keras.ops.copy(v.value) for v in self.weights]

    def matches(self, weights: list[Any]) -> bool:
        return same(weights, self.weights)

    def snapshot(self) -> None:
        """Makes the weights as they are now the previous ones."""
        self.previous = self._copies()

    def __call__(self) -> tuple[np.ndarray, np.ndarray]:
        now = self._copies()
        if keras.backend.backend() == "torch":
            import torch

            with torch.no_grad():
                stats, histograms = self._function(now, self.previous)
        else:
            stats, histograms = self._function(now, self.previous)
        self.previous = now
        return (
            np.asarray(keras.ops.convert_to_numpy(stats), np.float64),
            np.zeros([0, 1, 3])
            if histograms is None
            else _stats_ops.host_rows(*histograms),
        )
