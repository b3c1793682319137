"""GradWatch's held-out pass against a training step, on this run's backend.

For the benchmark models of `overhead.py` (`overhead_models.py`), on the
backend Keras runs on (``KERAS_BACKEND=jax python benchmarks/backend_pass.py``),
and with ``--models tm`` for cost as the weights grow: ``t``, the 12-block
Transformer encoder of `setup_cost.py` (195 weights), and ``m``, its
subclassed model of 500 tiny Dense layers (1,002 weights), each with a
batch and held-out batch of 32:

- ``step``: `model.train_on_batch` on a batch of the held-out size;
- ``pass``: GradWatch's `on_epoch_end` (the held-out pass, writing its
  events and the live diagnosis), after `set_model` and `on_train_begin`;
- ``gradients`` (JAX and PyTorch): the pass's gradients alone, the same
  loss (`keras_gradwatch._probe_ops`' stateless loss) under `jax.jit` or
  `torch.autograd`, so that ``pass - gradients`` is what the statistics,
  the copy to the host and the writing add.

Each is timed in turn in every round (`timing.interleaved`); the table gives
median milliseconds and the medians of the per-round ratios. The one-time
costs: ``setup`` is GradWatch's `on_train_begin` (tracing and compiling its
pass, then running it once), against Keras' own first `train_on_batch`
(tracing and compiling the train step, then running it once), taken first,
on a fresh model.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from overhead_models import SPECS, Spec  # noqa: E402
from setup_cost import many_dense, points, tokens, transformer  # noqa: E402
from timing import interleaved, paired_ratios, timed  # noqa: E402

from keras_gradwatch import GradWatch  # noqa: E402

MODELS = {
    **SPECS,
    "t": Spec(
        "t", "encoder, 12 blocks", lambda: transformer(12),
        lambda rng, n: tokens(n), 32, 32, 32, 32,
    ),
    "m": Spec(
        "m", "500 Dense layers", lambda: many_dense(500),
        lambda rng, n: points(n), 32, 32, 32, 32,
    ),
}  # fmt: skip


def gradients_only(model: keras.Model, x: Any, y: Any) -> Any:
    """A callable computing the held-out gradients and nothing else."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        from keras_gradwatch._probe_ops import _loss

        def loss_of(trainable: list[Any], rest: list[Any]) -> Any:
            return _loss(model, trainable, *rest, x, y, None, False)

        grad = jax.jit(jax.value_and_grad(loss_of))

        def run() -> None:
            rest = [
                [v.value for v in model.non_trainable_variables],
                [v.value for v in model.metrics_variables],
            ]
            loss, grads = grad([v.value for v in model.trainable_variables], rest)
            jax.block_until_ready(grads)

        return run
    if backend == "torch":
        import torch

        from keras_gradwatch._probe_ops import _loss

        def run() -> None:
            params = [v.value for v in model.trainable_variables]
            loss = _loss(
                model,
                params,
                [v.value for v in model.non_trainable_variables],
                [v.value for v in model.metrics_variables],
                x,
                y,
                None,
                False,
            )
            torch.autograd.grad(loss, params, allow_unused=True)

        return run
    return None


def measure(key: str, quick: bool, repeats: int, tmp: str) -> dict[str, float]:
    spec = MODELS[key]
    rows = spec.quick_held_out if quick else spec.held_out
    keras.utils.set_random_seed(0)
    model = spec.build()
    x, y = spec.data(np.random.default_rng(0), rows)
    xs, ys = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)
    out = {"first_step_s": timed(lambda: model.train_on_batch(xs, ys))}
    watch = GradWatch(os.path.join(tmp, key), held_out=(x, y), diagnose=True)
    watch.set_model(model)
    out["setup_s"] = timed(lambda: watch.on_train_begin())
    out["setup_per_trace"] = out["setup_s"] / out["first_step_s"]
    out["first_pass_s"] = timed(lambda: watch.on_epoch_end(0, {"loss": 1.0}))
    calls = {
        "step": lambda i: model.train_on_batch(xs, ys),
        "pass": lambda i: watch.on_epoch_end(i + 1, {"loss": 1.0}),
    }
    grads = gradients_only(model, xs, ys)
    if grads is not None:
        grads()  # traces
        calls["gradients"] = lambda i: grads()
    times = interleaved(calls, repeats)
    watch.on_train_end()
    for name, values in times.items():
        out[f"{name}_ms"] = 1e3 * statistics.median(values)
    out["pass_per_step"] = statistics.median(
        paired_ratios(times["pass"], times["step"])
    )
    if "gradients" in times:
        out["beyond_gradients"] = statistics.median(
            1 - g / p for g, p in zip(times["gradients"], times["pass"], strict=True)
        )
    return out


def _table(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    backend = keras.backend.backend()
    print(f"backend: {backend} (keras {keras.__version__})")
    print(
        f"{'model':<18} {'step ms':>8} {'pass ms':>8} {'pass/step':>9} "
        f"{'grads ms':>9} {'beyond grads':>12} {'setup s':>8} {'setup/trace':>11}"
    )
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.models:
            row = results[key] = measure(key, args.quick, args.repeats, tmp)
            grads = row.get("gradients_ms", float("nan"))
            beyond = row.get("beyond_gradients", float("nan"))
            print(
                f"{MODELS[key].name:<18} {row['step_ms']:>8.1f} {row['pass_ms']:>8.1f} "
                f"{row['pass_per_step']:>9.2f} {grads:>9.1f} {beyond:>12.0%} "
                f"{row['setup_s']:>8.2f} {row['setup_per_trace']:>11.2f}"
            )
    return results


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="abc")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    # The passes judge a made-up loss: their findings are not the point here.
    log = logging.getLogger("keras_gradwatch")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        results = _table(args)
    finally:
        log.setLevel(level)
    return results


if __name__ == "__main__":
    main()
