"""The three models of `overhead.py` and their synthetic data.

(a) the two-circles MLP, (b) a GRU/Conv text model, (c) a ~5.2M-parameter
CNN; see the table in benchmarks/README.md. `autoclip.py` trains (b) too.
Each `data_*` function draws `n` rows from the generator it is given, so a
seed fixes the data; nothing is downloaded.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np

VOCAB = 20000
SEQ_LEN = 100


def build_mlp() -> keras.Model:
    """(a) The 5-layer two-circles MLP."""
    inputs = keras.Input((2,))
    h = inputs
    for _ in range(5):
        h = keras.layers.Dense(5, activation="relu")(h)
    outputs = keras.layers.Dense(1, activation="sigmoid")(h)
    model = keras.Model(inputs, outputs, name="two_circles_mlp")
    model.compile(optimizer=keras.optimizers.SGD(), loss="binary_crossentropy")
    return model


def data_mlp(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Two noisy concentric circles (radius 1 and 0.5), labels 0 / 1."""
    label = rng.integers(0, 2, n)
    angle = rng.uniform(0.0, 2.0 * math.pi, n)
    radius = np.where(label == 1, 0.5, 1.0)
    x = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    x += rng.normal(0.0, 0.1, x.shape)
    return x.astype(np.float32), label.astype(np.float32)[:, None]


def build_text() -> keras.Model:
    """(b) Embedding -> GRU -> 2 x Conv1D -> pooling -> Dense head."""
    inputs = keras.Input((SEQ_LEN,), dtype="int32")
    h = keras.layers.Embedding(VOCAB, 128)(inputs)
    h = keras.layers.GRU(64, return_sequences=True)(h)
    h = keras.layers.Conv1D(64, 5, activation="relu")(h)
    h = keras.layers.Conv1D(64, 5, activation="relu")(h)
    h = keras.layers.GlobalMaxPooling1D()(h)
    h = keras.layers.Dense(64, activation="relu")(h)
    outputs = keras.layers.Dense(1, activation="sigmoid")(h)
    model = keras.Model(inputs, outputs, name="gru_conv_text")
    model.compile(optimizer=keras.optimizers.Adam(), loss="binary_crossentropy")
    return model


def data_text(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Random token ids and random binary labels."""
    x = rng.integers(0, VOCAB, (n, SEQ_LEN)).astype(np.int32)
    y = rng.integers(0, 2, (n, 1)).astype(np.float32)
    return x, y


def build_cnn() -> keras.Model:
    """(c) A ~5.2M-parameter CNN on 32x32x3, 10 classes (logits)."""
    inputs = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(inputs)
    h = keras.layers.MaxPooling2D()(h)  # 16x16
    h = keras.layers.Conv2D(128, 3, padding="same", activation="relu")(h)
    h = keras.layers.MaxPooling2D()(h)  # 8x8
    h = keras.layers.Conv2D(256, 3, padding="same", activation="relu")(h)
    h = keras.layers.Conv2D(256, 3, padding="same", activation="relu")(h)
    h = keras.layers.MaxPooling2D()(h)  # 4x4x256
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(1024, activation="relu")(h)
    outputs = keras.layers.Dense(10)(h)
    model = keras.Model(inputs, outputs, name="cnn_5m")
    model.compile(
        optimizer=keras.optimizers.Adam(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def data_cnn(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Uniform random images and random class ids."""
    x = rng.random((n, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, (n,)).astype(np.int32)
    return x, y


@dataclass(frozen=True)
class Spec:
    """A model of the benchmark: how to build it and draw its data, its `fit`
    batch and held-out rows, and the smaller ones of `--quick`."""

    key: str
    name: str
    build: Callable[[], keras.Model]
    data: Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]
    batch: int
    held_out: int
    quick_batch: int
    quick_held_out: int


SPECS = {
    spec.key: spec
    for spec in (
        Spec("a", "two-circles MLP", build_mlp, data_mlp, 32, 256, 32, 256),
        Spec("b", "GRU/Conv text", build_text, data_text, 256, 256, 64, 64),
        Spec("c", "CNN 32x32x3", build_cnn, data_cnn, 256, 256, 32, 32),
    )
}
