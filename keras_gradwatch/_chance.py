"""What the held-out labels say about a task: its chance level (the loss of
the best constant prediction), and which labels the output cannot reach.

For the losses below the loss is linear in the label, so the constant
prediction that minimizes it on a batch is the mean label (the label
frequencies for cross-entropy) and its loss has a closed form:

- binary cross-entropy: ``H(p)`` per output, ``p`` the mean label (ln 2 for
  balanced binary labels), averaged over the last axis as Keras does;
- categorical cross-entropy: the entropy of the mean one-hot label;
- sparse categorical cross-entropy: the entropy of the label frequencies;
- mean squared error: the variance of the label, averaged over the last
  axis.

Label smoothing ``s`` moves each label toward the uniform one first, as the
loss does. Anything else (other losses, several outputs, sample weights,
labels the formula does not fit) has no chance level here: NaN.

`outside_range` is the share of label values outside what the output
activation can produce (a sigmoid's 0 to 1, a tanh's -1 to 1, a ReLU's 0
and above): an output chasing them saturates (or, for a ReLU, dies), and no
learning rate or initialization fixes that.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

_BINARY = {"binary_crossentropy", "BinaryCrossentropy", "bce"}
_CATEGORICAL = {"categorical_crossentropy", "CategoricalCrossentropy", "cce"}
_SPARSE = {"sparse_categorical_crossentropy", "SparseCategoricalCrossentropy"}
_SQUARED = {"mean_squared_error", "MeanSquaredError", "mse"}


def chance_loss(loss: Any, y: Any, sample_weight: Any = None) -> float:
    """The loss of the best constant prediction of labels `y` under the
    compiled `loss` (a name, a Keras loss or its function); NaN where not
    known (see the module docstring)."""
    if y is None or sample_weight is not None:
        return math.nan
    name, smoothing = _identify(loss)
    try:
        labels = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError):
        return math.nan
    if labels.size == 0 or not np.isfinite(labels).all():
        return math.nan
    if name in _SPARSE:
        return _sparse(labels)
    if labels.ndim == 1:
        labels = labels[:, None]
    if name in _BINARY:
        if labels.min() < 0 or labels.max() > 1:
            return math.nan
        p = labels.mean(axis=0) * (1 - smoothing) + smoothing / 2
        return float(np.mean(_entropy(p) + _entropy(1 - p)))
    if name in _CATEGORICAL:
        if labels.min() < 0 or labels.shape[-1] < 2:
            return math.nan
        flat = labels.reshape(-1, labels.shape[-1])
        k = flat.shape[-1]
        p = flat.mean(axis=0) * (1 - smoothing) + smoothing / k
        return float(np.sum(_entropy(p)))
    if name in _SQUARED:
        return float(np.mean(labels.reshape(len(labels), -1).var(axis=0)))
    return math.nan


def _sparse(labels: np.ndarray) -> float:
    flat = labels.ravel()
    if flat.min() < 0 or (flat != np.round(flat)).any():
        return math.nan
    p = np.bincount(flat.astype(np.int64)) / flat.size
    return float(np.sum(_entropy(p)))


def _entropy(p: np.ndarray) -> np.ndarray:
    """``-p ln p`` element-wise, 0 at ``p = 0``."""
    p = np.asarray(p, dtype=np.float64)
    return -np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)


def _identify(loss: Any) -> tuple[str, float]:
    """The loss' name (string, class or function name) and label smoothing."""
    if isinstance(loss, str):
        return loss, 0.0
    smoothing = 0.0
    config = getattr(loss, "get_config", None)
    if callable(config):
        try:
            smoothing = float(config().get("label_smoothing", 0.0) or 0.0)
        except Exception:
            return "", 0.0
    name = type(loss).__name__
    if name == "function":
        name = getattr(loss, "__name__", "")
    elif name == "LossFunctionWrapper":
        name = getattr(getattr(loss, "fn", None), "__name__", "")
    return name, smoothing


RANGES = {
    "sigmoid": (0.0, 1.0),
    "hard_sigmoid": (0.0, 1.0),
    "tanh": (-1.0, 1.0),
    "softsign": (-1.0, 1.0),
    "relu": (0.0, math.inf),
    "relu6": (0.0, 6.0),
    "softplus": (0.0, math.inf),
    "exponential": (0.0, math.inf),
}
"""What an output activation can produce (its closure: a sigmoid tends to 0
and 1 without reaching them, and labels of 0 and 1 are its to fit)."""


_COMPARED = {
    *_BINARY,
    *_SQUARED,
    "mean_absolute_error", "MeanAbsoluteError", "mae",
    "huber", "Huber", "log_cosh", "LogCosh",
    "mean_squared_logarithmic_error", "MeanSquaredLogarithmicError", "msle",
}  # fmt: skip
"""Losses that compare each label with the output value as it is, so that a
label outside the output's range is one it cannot fit."""


def outside_range(
    activation: str | None,
    y: Any,
    units: tuple[int | None, ...],
    *,
    loss: Any,
    sample_weight: Any = None,
) -> float:
    """The share of the label values `y` that `activation` cannot output,
    for an output of `units` values per sample (None: any size) under
    `loss`; NaN where not known: an activation of unbounded or unknown
    range, a loss that does not compare labels with outputs as they are
    (custom, cosine, cross-entropy over classes), labels that are not one
    per output value (class indices), non-finite labels, sample weights
    (a weight of 0 marks labels that do not count)."""
    if activation not in RANGES or y is None or sample_weight is not None:
        return math.nan
    if _identify(loss)[0] not in _COMPARED:
        return math.nan
    if isinstance(y, dict | list | tuple) and len(y) == 1:
        y = next(iter(y.values())) if isinstance(y, dict) else y[0]
    try:
        labels = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError):
        return math.nan
    if labels.ndim == 1 and tuple(units) in ((1,), (None,)):
        labels = labels[:, None]
    shape = labels.shape[1:]
    if labels.size == 0 or len(shape) != len(units):
        return math.nan
    if any(u is not None and u != n for u, n in zip(units, shape, strict=True)):
        return math.nan
    if not np.isfinite(labels).all():
        return math.nan
    low, high = RANGES[activation]
    return float(np.mean((labels < low) | (labels > high)))


def range_text(activation: str) -> str:
    """``"0 to 1"``, ``"0 and above"``: what `activation` can output."""
    low, high = RANGES[activation]
    return f"{low:g} and above" if math.isinf(high) else f"{low:g} to {high:g}"


def outside_text(share: float, activation: str, layer: str) -> str:
    """The sentence on labels an output cannot produce, live and in the
    report alike."""
    shown = f"{share:.0%}" if share >= 0.01 else f"{share:.2%}"
    return (
        f"{shown} of the held-out label values lie outside the range of the "
        f"output layer's {activation} ({layer}: {range_text(activation)}), "
        "which it cannot produce."
    )
