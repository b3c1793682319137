"""The independent measurement behind every label of `diagnosis_eval.py`.

Nothing here uses keras_gradwatch: an eager `tf.GradientTape` on the model,
its compiled loss (`keras.losses`) and NumPy. On the held-out batch, with
the weights before training and after it:

``depth_gain``
    ‖∂L/∂h_first‖₂ / ‖∂L/∂h_last‖₂, ``h`` being the outputs of the
    scenario's probe layers (hidden layers, input side first): how much the
    backward signal grows (> 1) or shrinks (< 1) on its way to the input.
``time_gain``
    ‖∂L/∂x_0‖₂ / ‖∂L/∂x_{T-1}‖₂ over the steps of the sequence a recurrent
    layer reads: the same through time.
``dead``
    The largest fraction, over the ReLU probe layers, of units that are not
    positive on any sample of the batch (at any position, for conv and
    sequence outputs).
``saturated``
    The largest fraction, over tanh and sigmoid probe layers, of units within
    0.01 of their bounds on at least 90% of the samples.
``finite``
    Whether every weight after training and every epoch's training loss are
    finite; ``data_finite``: whether the training inputs are.
``loss_change``
    (first epoch's loss − last epoch's) / |first epoch's|.
``accuracy``
    On the held-out batch after training, against ``chance`` (the share of
    its most frequent class). For a regression loss (MSE, MAE, Huber), the
    held-out R² instead, against 0 (predicting the held-out mean).

`label` turns them into kinds (`RULES` says how, in words). Thresholds are
one to two orders of magnitude away from what the healthy scenarios show:
their gains stay within [1e-2, 1e2], their dead fractions below 0.6.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

GAIN_LOW, GAIN_HIGH = 1e-3, 1e2
DEAD = 0.7
NEAR_CHANCE = 0.15
STALL = 1e-2

RULES = (
    f"non_finite: a weight or an epoch's loss is NaN/Inf (exploding is then "
    f"tolerated if the training inputs are finite, the blow-up being one); "
    f"dead_units: >= {DEAD:.0%} of a ReLU layer's units never positive; "
    f"vanishing: not dead_units, depth or time gain < {GAIN_LOW:g} after "
    f"training and held-out accuracy <= chance + {NEAR_CHANCE}; "
    f"exploding: depth or time gain > {GAIN_HIGH:g} after training; "
    f"stalled: none of these and |loss change| < {STALL:g}; "
    "healthy: none of these."
)


@dataclass
class Gains:
    depth: float = math.nan
    time: float = math.nan


@dataclass
class Measurement:
    initial: Gains
    final: Gains
    dead: float
    saturated: float
    finite: bool
    data_finite: bool
    loss_change: float
    accuracy: float
    chance: float
    regression: bool = False

    def summary(self) -> str:
        parts = []
        for name, before, after in (
            ("depth gain", self.initial.depth, self.final.depth),
            ("time gain", self.initial.time, self.final.time),
        ):
            if not (math.isnan(before) and math.isnan(after)):
                parts.append(f"{name} {before:.1e}->{after:.1e}")
        if not math.isnan(self.dead):
            parts.append(f"dead {self.dead:.2f}")
        if not math.isnan(self.saturated):
            parts.append(f"saturated {self.saturated:.2f}")
        if not self.finite:
            parts.append("NaN/Inf" + ("" if self.data_finite else " (in the data)"))
        parts.append(f"loss change {self.loss_change:+.1e}")
        if self.regression:
            parts.append(f"R2 {self.accuracy:.2f}")
        else:
            parts.append(f"acc {self.accuracy:.2f} (chance {self.chance:.2f})")
        return ", ".join(parts)


def _loss_fn(model: keras.Model) -> Any:
    loss = model.loss
    return keras.losses.get(loss) if isinstance(loss, str) else loss


REGRESSION = {"mean_squared_error", "mean_absolute_error", "huber", "log_cosh"}
REGRESSION |= {"mse", "mae", "huber_loss", "logcosh"}


def _regression(model: keras.Model) -> bool:
    loss = model.loss
    name = loss if isinstance(loss, str) else getattr(loss, "name", None)
    return (name or getattr(loss, "__name__", "")) in REGRESSION


def _r2(p: np.ndarray, y: np.ndarray) -> float:
    p = np.asarray(p, dtype=np.float64).reshape(len(y), -1)
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    total = float(np.sum((y - y.mean(axis=0)) ** 2))
    return 1.0 - float(np.sum((y - p) ** 2)) / total if total else math.nan


def _norm(t: Any) -> float:
    return float(np.linalg.norm(np.asarray(t, dtype=np.float64)))


def gains(
    model: keras.Model,
    probes: tuple[str, ...],
    sequence: str | None,
    x: np.ndarray,
    y: np.ndarray,
) -> tuple[Gains, list[np.ndarray]]:
    """The backward gains, and the probe layers' outputs (for `dead`)."""
    outputs = [model.get_layer(n).output for n in probes]
    if sequence not in (None, "input"):
        outputs.append(model.get_layer(sequence).output)
    probe_model = keras.Model(model.inputs, [*outputs, *model.outputs])
    xt = tf.convert_to_tensor(x)
    loss_fn = _loss_fn(model)
    with tf.GradientTape() as tape:
        if sequence == "input":
            tape.watch(xt)
        results = probe_model(xt, training=False)
        if not isinstance(results, list | tuple):
            results = [results]
        yt = tf.convert_to_tensor(y)
        if results[-1].shape[-1] == 1 and len(yt.shape) == len(results[-1].shape) - 1:
            yt = yt[:, None]  # as Keras' compiled loss does
        loss = tf.reduce_mean(loss_fn(yt, results[-1]))
    targets = list(results[:-1]) + ([xt] if sequence == "input" else [])
    grads = tape.gradient(loss, targets)
    g = Gains()
    if len(probes) >= 2:
        g.depth = _ratio(_norm(grads[0]), _norm(grads[len(probes) - 1]))
    if sequence is not None:
        seq = np.asarray(grads[-1], dtype=np.float64)
        g.time = _ratio(_norm(seq[:, 0]), _norm(seq[:, -1]))
    return g, [np.asarray(r) for r in results[: len(probes)]]


def _ratio(a: float, b: float) -> float:
    if b == 0:
        return math.inf if a > 0 else math.nan
    return a / b


def _activation(layer: keras.layers.Layer) -> str:
    fn = getattr(layer, "activation", None)
    return getattr(fn, "__name__", "") if fn is not None else ""


def _per_unit(h: np.ndarray) -> np.ndarray:
    return h.reshape(-1, h.shape[-1])


def dead_fraction(model: keras.Model, probes: tuple[str, ...], hs: list) -> float:
    fractions = [
        float(np.mean(np.max(_per_unit(h), axis=0) <= 0))
        for name, h in zip(probes, hs, strict=True)
        if _activation(model.get_layer(name)) == "relu"
    ]
    return max(fractions) if fractions else math.nan


def saturated_fraction(model: keras.Model, probes: tuple[str, ...], hs: list) -> float:
    fractions = []
    for name, h in zip(probes, hs, strict=True):
        act = _activation(model.get_layer(name))
        if act == "tanh":
            near = np.abs(h) > 0.99
        elif act == "sigmoid":
            near = (h < 0.01) | (h > 0.99)
        else:
            continue
        fractions.append(float(np.mean(np.mean(_per_unit(near), axis=0) >= 0.9)))
    return max(fractions) if fractions else math.nan


def measure(
    model: keras.Model,
    probes: tuple[str, ...],
    sequence: str | None,
    initial: Gains,
    x: np.ndarray,
    history: dict[str, list[float]],
    held_out: tuple[np.ndarray, np.ndarray],
) -> Measurement:
    """Everything `label` needs, on the trained `model`."""
    xh, yh = held_out
    finite = all(np.isfinite(np.asarray(w)).all() for w in model.weights)
    losses = np.asarray(history.get("loss", []), dtype=np.float64)
    finite = finite and bool(np.isfinite(losses).all())
    data_finite = bool(np.isfinite(np.asarray(x, dtype=np.float64)).all())
    if finite:
        final, hs = gains(model, probes, sequence, xh, yh)
        dead = dead_fraction(model, probes, hs)
        saturated = saturated_fraction(model, probes, hs)
    else:
        final, dead, saturated = Gains(), math.nan, math.nan
    change = (losses[0] - losses[-1]) / abs(losses[0]) if losses.size else math.nan
    p = np.asarray(model.predict(xh, verbose=0))
    if _regression(model):
        return Measurement(
            initial, final, dead, saturated, finite, data_finite,
            float(change), _r2(p, yh), 0.0, regression=True,
        )  # fmt: skip
    guess = (p[:, 0] > 0.5).astype(int) if p.shape[-1] == 1 else p.argmax(-1)
    yi = np.asarray(yh).astype(int)
    chance = float(np.bincount(yi).max() / yi.size)
    return Measurement(
        initial, final, dead, saturated, finite, data_finite,
        float(change), float(np.mean(guess == yi)), chance,
    )  # fmt: skip


def label(m: Measurement) -> tuple[frozenset[str], frozenset[str]]:
    """``(kinds measured, kinds tolerated besides them)`` by `RULES`."""
    if not m.finite:
        return frozenset({"non_finite"}), frozenset(
            {"exploding"} if m.data_finite else ()
        )
    kinds = set()
    gains_after = [g for g in (m.final.depth, m.final.time) if not math.isnan(g)]
    if m.dead >= DEAD:
        kinds.add("dead_units")
    elif any(g < GAIN_LOW for g in gains_after) and (
        m.accuracy <= m.chance + NEAR_CHANCE
    ):
        kinds.add("vanishing")
    if any(g > GAIN_HIGH for g in gains_after):
        kinds.add("exploding")
    if not kinds and abs(m.loss_change) < STALL:
        kinds.add("stalled")
    return frozenset(kinds), frozenset()
