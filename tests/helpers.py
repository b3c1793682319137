"""Independent references for the tests: TensorBoard's reader and NumPy."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

from keras_gradwatch import tags


def read_run(run_dir) -> dict[str, dict[int, np.ndarray]]:
    """Every tensor summary of a run, read with TensorBoard's own reader."""
    acc = event_accumulator.EventAccumulator(
        str(run_dir), size_guidance={event_accumulator.TENSORS: 0}
    )
    acc.Reload()
    out: dict[str, dict[int, np.ndarray]] = {}
    for tag in acc.Tags()["tensors"]:
        for event in acc.Tensors(tag):
            out.setdefault(tag, {})[event.step] = tensor_util.make_ndarray(
                event.tensor_proto
            )
    return out


def plugin_names(run_dir) -> dict[str, str]:
    acc = event_accumulator.EventAccumulator(str(run_dir))
    acc.Reload()
    return {
        tag: acc.SummaryMetadata(tag).plugin_data.plugin_name
        for tag in acc.Tags()["tensors"]
    }


def eager_gradients(model, x, y, sample_weight=None, loss_fn=None):
    """Dense gradients of the loss on (x, y), with an eager tape.

    `loss_fn(y, y_pred, model)` replaces `model.compute_loss` when given.
    """
    return _as_reference(model, _tape(model, x, y, sample_weight, loss_fn))


def traced_gradients(model, x, y, sample_weight=None, loss_fn=None):
    """As `eager_gradients`, with the tape inside a `tf.function` of its own.

    Use it where the gradient itself depends on the kernels. In graph mode
    TensorFlow may run other kernels than in eager mode: with oneDNN on
    (`TF_ENABLE_ONEDNN_OPTS=1`, the default on CPUs with AVX-512 VNNI/BF16)
    MatMul + BiasAdd + activation become one fused op whose tanh rounds
    differently in saturation and whose ReLU maps NaN to 0, and matrix
    products may sum in another order. The callbacks compute in graph mode,
    so their reference is a traced tape, independent of their code, run on
    the same machine with the same batch and weights.
    """
    import tensorflow as tf

    return _as_reference(model, tf.function(_tape)(model, x, y, sample_weight, loss_fn))


def _tape(model, x, y, sample_weight, loss_fn):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        y_pred = model(x, training=False)
        if loss_fn is None:
            loss = model.compute_loss(
                x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=False
            )
        else:
            loss = loss_fn(y, y_pred, model)
    return tape.gradient(loss, model.trainable_weights)


def _as_reference(model, grads):
    import tensorflow as tf

    return {
        w.path: (tf.convert_to_tensor(g).numpy().astype(np.float64), w.numpy())
        for w, g in zip(model.trainable_weights, grads, strict=True)
        if g is not None
    }


def np_stats(g: np.ndarray, w: np.ndarray) -> dict[str, float]:
    """The documented statistics, keyed by tag prefix, in plain NumPy."""
    g = np.asarray(g, np.float64)
    units = g.shape[-1] if g.ndim else 1
    norm = np.linalg.norm(g.ravel())
    w_norm = np.linalg.norm(np.asarray(w, np.float64).ravel())
    with np.errstate(invalid="ignore", divide="ignore"):
        to_weight = 0.0 if norm == 0 and w_norm == 0 else norm / w_norm
    return {
        "grad_norm": norm,
        "grad_mean_abs": np.abs(g).mean() if g.size else 0.0,
        "grad_max_abs": np.abs(g).max() if g.size else 0.0,
        "grad_to_weight": to_weight,
        "grad_dead_units": np.mean(np.all(g.reshape(-1, units) == 0, axis=0)),
        "grad_nonfinite": float(np.sum(~np.isfinite(g))),
    }


def np_weight_stats(w: np.ndarray, previous: np.ndarray) -> dict[str, float]:
    """WeightNorms' documented scalars, keyed by tag prefix, in plain NumPy."""
    w = np.asarray(w, np.float64).ravel()
    moved = np.abs(w - np.asarray(previous, np.float64).ravel()).sum()
    l1 = np.abs(w).sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        change = 0.0 if moved == 0 else moved / l1
    return {"weight_l1": l1, "weight_l2": np.linalg.norm(w), "weight_change": change}


def np_histogram(g: np.ndarray, buckets: int = 30, dtype=np.float64) -> np.ndarray:
    """TensorBoard's [left, right, count] rows over the finite values.

    Binning follows TensorBoard's own histogram op (`summary_v2._buckets`):
    equal-width buckets over [min, max] of the float32 values, each value's
    offset from the minimum divided by the width in float64, the maximum in
    the last bucket. `dtype` float32: that arithmetic in float32, as JAX
    computes it without ``jax_enable_x64``.
    """
    v = np.asarray(g, np.float32).ravel()
    v = v[np.isfinite(v)].astype(dtype)
    if v.size == 0:
        return np.zeros((buckets, 3))
    lo, hi = v.min(), v.max()
    if lo == hi:
        counts = np.zeros(buckets)
        counts[-1] = v.size
        return np.stack([np.full(buckets, hi), np.full(buckets, hi), counts], 1)
    width = (hi - lo) / dtype(buckets)
    index = np.floor((v - lo) / width)
    index = np.minimum(index, buckets - 1).astype(int)
    counts = np.bincount(index, minlength=buckets).astype(np.float64)
    edges = lo + np.arange(buckets + 1, dtype=dtype) * width
    edges[-1] = hi
    return np.stack([edges[:-1], edges[1:], counts], 1)


def np_time(g, valid):
    """The documented through-time scalars, in NumPy: the ratio and the
    profile at `tags.TIME_QUANTILES` of each sample's valid steps."""
    squares = (g**2).sum(-1)
    rows = []
    for b in range(g.shape[0]):
        steps = np.flatnonzero(valid[b])
        if steps.size:
            rank = [
                math.floor(q / 100 * (steps.size - 1) + 0.5)
                for q in tags.TIME_QUANTILES
            ]
            rows.append(squares[b, steps[rank]])
    profile = np.sqrt(np.mean(rows, axis=0))
    return profile[0] / profile[-1], profile


def np_global_norm(reference) -> float:
    """L2 norm of all gradients of an `eager_gradients` result together."""
    return float(np.sqrt(sum(np.sum(g**2) for g, _ in reference.values())))


def np_step_norm(before, after) -> float:
    """L2 norm of the change between two lists of weight arrays together."""
    return float(
        np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(after, before, strict=True)))
    )


def load_script(path: Path) -> ModuleType:
    """Imports a script that is not in a package (examples/, benchmarks/).

    As when Python runs it, the script's folder comes first on `sys.path`, so
    it can import the modules beside it (examples/progress.py).
    """
    folder = str(Path(path).resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(f"script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class NpAutoClip:
    """AutoClip's documented rules, step by step, in plain Python/NumPy."""

    def __init__(self, mode="zscore", *, z=2.5, warmup=25, percentile=10.0,
                 window=1000, threshold=None, early=3.0, far=3.0):  # fmt: skip
        self.mode, self.z, self.warmup = mode, z, warmup
        self.percentile, self.window, self.threshold = percentile, window, threshold
        self.early, self.far = early, far
        self.norms: list[float] = []  # finite norms, raw, in order
        self.applied = False  # whether a step has been applied yet

    def factor(self, norm: float) -> float | None:
        """Scale for this step's gradients; None when the step is skipped."""
        first = not self.norms
        size = self.warmup if self.mode == "zscore" else self.window
        spike = self.mode != "fixed" and norm > self._early(self.norms[-size:])
        bound, to = self.bound(norm)
        if bound is None:
            return None
        if self.mode != "fixed" and (first or (not self.applied and spike)):
            return 0.0  # measured only: the first step; before any applied
            # step, one above the early bound
        self.applied = True
        return to / norm if norm > bound else 1.0

    def bound(self, norm: float) -> tuple[float | None, float | None]:
        """(the bound this step's norm is held to, the norm it is clipped to
        above it); Nones when the step is skipped."""
        if not np.isfinite(norm):
            return None, None
        if self.mode == "fixed":
            return self.threshold, self.threshold
        if self.mode == "percentile":
            cap = self._early(self.norms[-self.window :])
            self.norms.append(norm)
            bound = min(np.percentile(self.norms[-self.window :], self.percentile), cap)
            return bound, bound
        return self._zscore(norm)

    @staticmethod
    def step_limits(grads, weights, lr, relative=0.016):
        """zscore's step bound with SGD: per gradient, the largest factor
        that keeps ``lr * factor * ||g||`` within ``relative * max(||w||,
        1e-3)``; inf when it already is, and for weights of < 2 dimensions."""
        limits = []
        for g, w in zip(grads, weights, strict=True):
            top = relative * max(float(np.linalg.norm(w)), 1e-3)
            step = lr * float(np.linalg.norm(g))
            limits.append(top / step if np.ndim(w) >= 2 and step > top else np.inf)
        return limits

    @staticmethod
    def _low_median(values) -> float:
        return float(np.sort(values)[(len(values) - 1) // 2]) if len(values) else 0.0

    def _early(self, earlier: list[float]) -> float:
        """`early` x the low median of the earlier norms; inf when there is
        none or it is 0."""
        middle = self._low_median(earlier)
        return self.early * middle if middle > 0 else np.inf

    @staticmethod
    def _reciprocal(center: float, bound: float, norm: float) -> float:
        """ZClip's reciprocal clipping: what a norm above `bound` becomes."""
        if not np.isfinite(bound):
            return bound
        return min(bound, center + (bound - center) ** 2 / max(norm - center, 1e-300))

    def _zscore(self, norm: float) -> tuple[float, float]:
        window = np.array(self.norms[-self.warmup :])
        middle = self._low_median(window)
        if len(self.norms) < self.warmup:  # warm-up: the early bound
            bound = self._early(self.norms)
        else:  # Hampel: median + z robust standard deviations, and no less
            spread = self._low_median(np.abs(window - middle))  # than early
            bound = max(middle + self.z * 1.4826 * spread, self._early(window))
        self.norms.append(norm)  # raw, clipped or not
        to = self._reciprocal(middle, bound, norm)
        if norm > self.far * bound:  # a gross spike: redescending
            to *= self.far * bound / norm
        return bound, to


def get_json(base: str, route: str, **query) -> object:
    """A TensorBoard server's JSON answer to `route`."""
    url = f"{base}{route}?{urllib.parse.urlencode(query)}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@contextlib.contextmanager
def tensorboard_server(logdir, *runs: str) -> Iterator[str]:
    """TensorBoard's own server on 127.0.0.1 over `logdir`, its base URL once
    it lists the histograms of every one of `runs`; stopped on exit."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            f"--logdir={logdir}",
            "--host=127.0.0.1",
            "--port=0",
            "--load_fast=false",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = None
        deadline = time.monotonic() + 90
        while base is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                break
            match = re.search(r"http://127\.0\.0\.1:\d+", line)
            base = match.group(0) if match else None
        assert base, "tensorboard did not start"
        # The first load runs in a background thread: wait for the run.
        while time.monotonic() < deadline:
            listed = get_json(base, "/data/plugin/histograms/tags")
            if all(any(name.endswith(run) for name in listed) for run in runs):
                break
            time.sleep(0.5)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
