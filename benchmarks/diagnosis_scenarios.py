"""The labelled training runs of `diagnosis_eval.py`: data, models, intent.

Every scenario is a small Keras model built functionally, so that the
oracle (`diagnosis_oracle.py`) can reach its hidden outputs, on data that is
either bundled with scikit-learn (two circles, 8x8 digits) or synthetic
NumPy; nothing is downloaded. A scenario names:

- ``family``: mlp, cnn, recurrent, residual_bn, text, attention;
- ``intended``: the kinds it is built to show (empty: healthy). The oracle
  measures whether each run shows them; where it does not, the run is scored
  against what was measured and the table says "label not confirmed";
- ``probes``: the layers whose outputs carry the backward signal through
  depth, input side first; ``sequence``: the layer whose output is the
  sequence a recurrent layer reads (``"input"``: the model's input), for the
  backward signal through time.

Each builds and trains in a few seconds on two CPU cores, for at least 15
epochs: below 14, AUTOTRAINER's judgment point (0.3 x epochs - 3 epochs
seen) falls on the first epoch, where its accuracy checks take the one-epoch
history for a flat one and flag any run that starts below 70% accuracy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
from keras import layers
from sklearn.datasets import load_digits, make_circles, make_regression
from sklearn.preprocessing import MinMaxScaler

Data = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""``(x, y, x_held_out, y_held_out)``."""


@dataclass(frozen=True)
class Scenario:
    family: str
    data: Callable[[int], Data]
    build: Callable[[], keras.Model]
    intended: frozenset[str]
    probes: tuple[str, ...]
    what: str
    sequence: str | None = None
    epochs: int = 20
    batch_size: int = 64
    classes: int = 2


# ---------------------------------------------------------------- data


def two_circles(seed: int = 1) -> Data:
    """500 training and 500 held-out points of scikit-learn's two circles."""
    x, y = make_circles(n_samples=1000, noise=0.1, random_state=seed)
    x = MinMaxScaler(feature_range=(-1, 1)).fit_transform(x).astype("float32")
    y = y.astype("float32")
    return x[:500], y[:500], x[500:], y[500:]


def digits(seed: int = 1) -> Data:
    """scikit-learn's 8x8 digits, scaled to [0, 1], flat: 1,000 + 256."""
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(x))
    x = (x[order] / 16.0).astype("float32")
    y = y[order].astype("int32")
    return x[:1000], y[:1000], x[1000:1256], y[1000:1256]


def digits_images(seed: int = 1) -> Data:
    x, y, xh, yh = digits(seed)
    return x.reshape(-1, 8, 8, 1), y, xh.reshape(-1, 8, 8, 1), yh


def digits_nan_feature(seed: int = 1) -> Data:
    """Digits with pixel 20 missing (NaN) in one training row in ten; the
    held-out batch is clean, as a validation split usually is."""
    x, y, xh, yh = digits(seed)
    x = x.copy()
    x[::10, 20] = np.nan
    return x, y, xh, yh


def first_step(length: int) -> Callable[[int], Data]:
    """Sequences of N(0, 1) steps; the label is the sign of the first step."""

    def data(seed: int = 1) -> Data:
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(768, length, 1)).astype("float32")
        y = (x[:, 0, 0] > 0).astype("float32")
        return x[:512], y[:512], x[512:], y[512:]

    return data


def step_sum(length: int) -> Callable[[int], Data]:
    """Sequences of N(0, 1) steps; the label is the sign of their sum, so
    every step matters."""

    def data(seed: int = 1) -> Data:
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(768, length, 1)).astype("float32")
        y = (x.sum(axis=(1, 2)) > 0).astype("float32")
        return x[:512], y[:512], x[512:], y[512:]

    return data


def house_prices(unscaled: bool) -> Callable[[int], Data]:
    """scikit-learn's linear regression problem (8 N(0, 1) features, noise
    10): 512 training and 256 held-out rows. With `unscaled`, the targets are
    in dollars as a user's house prices are, 200,000 + 1,000 x y (standard
    deviation ~1e5); otherwise standardized with the training rows' mean and
    standard deviation."""

    def data(seed: int = 1) -> Data:
        x, y = make_regression(
            n_samples=768, n_features=8, noise=10.0, random_state=seed
        )
        x, y = x.astype("float32"), y.astype("float32")
        y = 2e5 + 1e3 * y if unscaled else (y - y[:512].mean()) / y[:512].std()
        return x[:512], y[:512], x[512:], y[512:]

    return data


def digits_autoencoded(seed: int = 1) -> Data:
    """The flat digits as both input and target."""
    x, _, xh, _ = digits(seed)
    return x, x, xh, xh


def waves(seed: int = 1) -> Data:
    """64-step signals, N(0, 0.5^2) noise plus a 16-step sine burst at a
    random place: period 4 steps (class 1) or 8 (class 0)."""
    rng = np.random.default_rng(seed)
    n, length = 768, 64
    y = rng.integers(0, 2, size=n)
    x = rng.normal(0.0, 0.5, size=(n, length))
    start = rng.integers(0, length - 16, size=n)
    t = np.arange(16)
    for row in range(n):
        period = 4 if y[row] else 8
        x[row, start[row] : start[row] + 16] += np.sin(2 * np.pi * t / period)
    x, y = x[..., None].astype("float32"), y.astype("float32")
    return x[:512], y[:512], x[512:], y[512:]


VOCAB = 64


def tokens(length: int, first: bool = False) -> Callable[[int], Data]:
    """Token ids in [1, 64). Class 1 rows hold three tokens of 2-9, class 0
    rows three of 10-17, the rest is noise from 18-63. With ``first``, only
    the first token tells the class (the rest is noise)."""

    def data(seed: int = 1) -> Data:
        rng = np.random.default_rng(seed)
        n = 768
        y = rng.integers(0, 2, size=n)
        x = rng.integers(18, VOCAB, size=(n, length))
        signal = np.where(y[:, None] == 1, 2, 10) + rng.integers(0, 8, size=(n, 3))
        if first:
            x[:, 0] = signal[:, 0]
        else:
            for row in range(n):
                x[row, rng.choice(length, 3, replace=False)] = signal[row]
        x, y = x.astype("int32"), y.astype("float32")
        return x[:512], y[:512], x[512:], y[512:]

    return data


# ---------------------------------------------------------------- models


def _compile(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    loss: object = "binary_crossentropy",
) -> keras.Model:
    model.compile(optimizer, loss, metrics=["accuracy"])
    return model


def _head(h: keras.KerasTensor, classes: int) -> keras.KerasTensor:
    if classes == 2:
        return layers.Dense(1, activation="sigmoid", name="output")(h)
    return layers.Dense(classes, activation="softmax", name="output")(h)


def _loss(classes: int) -> str:
    return "binary_crossentropy" if classes == 2 else "sparse_categorical_crossentropy"


def mlp(
    inputs: int,
    depth: int,
    width: int,
    activation: str | None,
    kernel: Callable[[int], keras.initializers.Initializer],
    optimizer: Callable[[], keras.optimizers.Optimizer],
    *,
    classes: int = 2,
    bias: float = 0.0,
    batch_norm: bool = False,
    loss: object = None,
) -> Callable[[], keras.Model]:
    """`depth` hidden Dense layers ``hidden_1``...; `kernel(fan_in)` gives
    each layer's kernel initializer. With `batch_norm`, each hidden output is
    ``Dense -> BatchNormalization -> activation`` (probe: the activation)."""

    def build() -> keras.Model:
        x = keras.Input((inputs,))
        h, fan_in = x, inputs
        for i in range(1, depth + 1):
            dense = layers.Dense(
                width,
                activation=None if batch_norm else activation,
                kernel_initializer=kernel(fan_in),
                bias_initializer=keras.initializers.Constant(bias),
                name=f"dense_{i}" if batch_norm else f"hidden_{i}",
            )
            h = dense(h)
            if batch_norm:
                h = layers.BatchNormalization(name=f"bn_{i}")(h)
                h = layers.Activation(activation, name=f"hidden_{i}")(h)
            fan_in = width
        model = keras.Model(x, _head(h, classes), name="mlp")
        return _compile(model, optimizer(), loss or _loss(classes))

    return build


def hidden(depth: int) -> tuple[str, ...]:
    return tuple(f"hidden_{i}" for i in range(1, depth + 1))


def he() -> Callable[[int], keras.initializers.Initializer]:
    return lambda fan_in: keras.initializers.HeUniform()


def glorot() -> Callable[[int], keras.initializers.Initializer]:
    return lambda fan_in: keras.initializers.GlorotUniform()


def normal(sigma: float, scaled: bool = True) -> Callable[[int], object]:
    """N(0, sigma^2 / fan_in), or N(0, sigma^2) with ``scaled=False``."""
    return lambda fan_in: keras.initializers.RandomNormal(
        0.0, sigma / np.sqrt(fan_in) if scaled else sigma
    )


class OneHugeStep(keras.optimizers.schedules.LearningRateSchedule):
    """`huge` for the first optimizer step, `rate` after it."""

    def __init__(self, huge: float, rate: float) -> None:
        self.huge, self.rate = huge, rate

    def __call__(self, step: object) -> object:
        return keras.ops.where(keras.ops.less(step, 1), self.huge, self.rate)

    def get_config(self) -> dict[str, float]:
        return {"huge": self.huge, "rate": self.rate}


def tiny_bce(y_true: object, y_pred: object) -> object:
    """Binary cross-entropy times 1e-6: gradients a millionth of the usual."""
    return 1e-6 * keras.losses.binary_crossentropy(y_true, y_pred)


def cnn(
    depth: int,
    activation: str | None,
    optimizer: Callable[[], keras.optimizers.Optimizer],
    *,
    filters: int = 8,
    bias: float = 0.0,
    kernel: Callable[[], object] = keras.initializers.HeUniform,
) -> Callable[[], keras.Model]:
    """`depth` 3x3 'same' Conv2D layers ``conv_1``... on 8x8 digits."""

    def build() -> keras.Model:
        x = keras.Input((8, 8, 1))
        h = x
        for i in range(1, depth + 1):
            h = layers.Conv2D(
                filters, 3, padding="same", activation=activation,
                kernel_initializer=kernel(),
                bias_initializer=keras.initializers.Constant(bias),
                name=f"conv_{i}",
            )(h)  # fmt: skip
        h = layers.Flatten()(h)
        model = keras.Model(x, _head(h, 10), name="cnn")
        return _compile(model, optimizer(), "sparse_categorical_crossentropy")

    return build


def convs(depth: int) -> tuple[str, ...]:
    return tuple(f"conv_{i}" for i in range(1, depth + 1))


def recurrent(
    length: int,
    cell: Callable[[], layers.Layer],
    optimizer: Callable[[], keras.optimizers.Optimizer],
) -> Callable[[], keras.Model]:
    """Input (length, 1) -> `cell()` (named ``rnn``) -> sigmoid output."""

    def build() -> keras.Model:
        x = keras.Input((length, 1))
        h = cell()(x)
        model = keras.Model(x, _head(h, 2), name="rnn")
        return _compile(model, optimizer())

    return build


def residual(
    blocks: int, optimizer: Callable[[], keras.optimizers.Optimizer]
) -> Callable[[], keras.Model]:
    """Digits -> Dense(32) -> `blocks` x [Dense-BN-ReLU-Dense-BN + skip, ReLU]."""

    def build() -> keras.Model:
        x = keras.Input((64,))
        h = layers.Dense(32, activation="relu", name="stem")(x)
        for i in range(1, blocks + 1):
            r = layers.Dense(32, name=f"block_{i}_a")(h)
            r = layers.BatchNormalization(name=f"block_{i}_bn_a")(r)
            r = layers.Activation("relu")(r)
            r = layers.Dense(32, name=f"block_{i}_b")(r)
            r = layers.BatchNormalization(name=f"block_{i}_bn_b")(r)
            h = layers.Activation("relu", name=f"block_{i}")(layers.Add()([h, r]))
        model = keras.Model(x, _head(h, 10), name="resnet")
        return _compile(model, optimizer(), "sparse_categorical_crossentropy")

    return build


def blocks(count: int) -> tuple[str, ...]:
    return ("stem", *(f"block_{i}" for i in range(1, count + 1)))


def text(
    length: int,
    body: str,
    optimizer: Callable[[], keras.optimizers.Optimizer],
    embeddings: object = "uniform",
) -> Callable[[], keras.Model]:
    """Tokens -> Embedding(64, 16) (``embedding``) -> `body` -> sigmoid.

    `body`: ``pool`` (global average pooling then Dense(16, relu)
    ``hidden_1``), ``rnn`` (SimpleRNN(16) ``rnn``), ``transformer`` (one
    block: two-head self-attention + residual + LayerNorm ``attention``,
    feed-forward + residual + LayerNorm ``ffn``, then pooling).
    """

    def build() -> keras.Model:
        x = keras.Input((length,), dtype="int32")
        e = layers.Embedding(
            VOCAB, 16, embeddings_initializer=embeddings, name="embedding"
        )(x)
        if body == "pool":
            h = layers.GlobalAveragePooling1D()(e)
            h = layers.Dense(16, activation="relu", name="hidden_1")(h)
        elif body == "rnn":
            h = layers.SimpleRNN(16, name="rnn")(e)
        else:
            a = layers.MultiHeadAttention(2, 8, name="mha")(e, e)
            a = layers.LayerNormalization(name="attention")(layers.Add()([e, a]))
            f = layers.Dense(32, activation="relu", name="ffn_1")(a)
            f = layers.Dense(16, name="ffn_2")(f)
            f = layers.LayerNormalization(name="ffn")(layers.Add()([a, f]))
            h = layers.GlobalAveragePooling1D()(f)
        model = keras.Model(x, _head(h, 2), name=f"text_{body}")
        return _compile(model, optimizer())

    return build


def regression(
    depth: int,
    width: int,
    optimizer: Callable[[], keras.optimizers.Optimizer],
) -> Callable[[], keras.Model]:
    """8 features -> `depth` Dense(`width`, ReLU, He) ``hidden_1``... ->
    Dense(1) (linear), mean squared error."""

    def build() -> keras.Model:
        x = keras.Input((8,))
        h = x
        for i in range(1, depth + 1):
            h = layers.Dense(width, activation="relu", name=f"hidden_{i}",
                             kernel_initializer="he_uniform")(h)  # fmt: skip
        model = keras.Model(x, layers.Dense(1, name="output")(h), name="regression")
        model.compile(optimizer(), "mean_squared_error")
        return model

    return build


def autoencoder(
    widths: tuple[int, ...],
    activation: str,
    kernel: Callable[[], object],
    optimizer: Callable[[], keras.optimizers.Optimizer],
) -> Callable[[], keras.Model]:
    """Flat digits -> Dense layers of `widths` ``hidden_1``... (encoder and
    decoder) -> Dense(64, sigmoid) reconstruction, mean squared error."""

    def build() -> keras.Model:
        x = keras.Input((64,))
        h = x
        for i, width in enumerate(widths, 1):
            h = layers.Dense(width, activation=activation, name=f"hidden_{i}",
                             kernel_initializer=kernel())(h)  # fmt: skip
        out = layers.Dense(64, activation="sigmoid", name="output")(h)
        model = keras.Model(x, out, name="autoencoder")
        model.compile(optimizer(), "mean_squared_error")
        return model

    return build


def conv1d(
    depth: int,
    activation: str | None,
    optimizer: Callable[[], keras.optimizers.Optimizer],
    *,
    kernel: Callable[[], object] = keras.initializers.HeUniform,
    dilated: bool = False,
    filters: int = 8,
) -> Callable[[], keras.Model]:
    """`depth` Conv1D(`filters`, 3) ``conv_1``... on the 64-step waves, then
    global average pooling. With `dilated`, causal convolutions dilated
    1, 2, 4, ... as in a temporal convolutional network."""

    def build() -> keras.Model:
        x = keras.Input((64, 1))
        h = x
        for i in range(1, depth + 1):
            h = layers.Conv1D(
                filters, 3, activation=activation,
                padding="causal" if dilated else "same",
                dilation_rate=2 ** (i - 1) if dilated else 1,
                kernel_initializer=kernel(), name=f"conv_{i}",
            )(h)  # fmt: skip
        h = layers.GlobalAveragePooling1D()(h)
        model = keras.Model(x, _head(h, 2), name="conv1d")
        return _compile(model, optimizer())

    return build


def regularized(
    depth: int,
    optimizer: Callable[[], keras.optimizers.Optimizer],
    *,
    l2: float = 0.0,
    dropout: float = 0.0,
) -> Callable[[], keras.Model]:
    """Digits -> `depth` Dense(64, ReLU, He) ``hidden_1``..., each with an L2
    penalty `l2` on its kernel and followed by Dropout(`dropout`)."""

    def build() -> keras.Model:
        x = keras.Input((64,))
        h = x
        for i in range(1, depth + 1):
            h = layers.Dense(
                64, activation="relu", kernel_initializer="he_uniform",
                kernel_regularizer=keras.regularizers.L2(l2) if l2 else None,
                name=f"hidden_{i}",
            )(h)  # fmt: skip
            if dropout:
                h = layers.Dropout(dropout)(h)
        model = keras.Model(x, _head(h, 10), name="regularized")
        return _compile(model, optimizer(), "sparse_categorical_crossentropy")

    return build


# ---------------------------------------------------------------- scenarios

SGD = keras.optimizers.SGD


def _sgd(rate: float, momentum: float = 0.9) -> Callable[[], object]:
    return lambda: SGD(rate, momentum=momentum)


def _adam(rate: float = 1e-3) -> Callable[[], object]:
    return lambda: keras.optimizers.Adam(rate)


V, E, N, D, S = "vanishing", "exploding", "non_finite", "dead_units", "stalled"
HEALTHY: frozenset[str] = frozenset()


def _k(*kinds: str) -> frozenset[str]:
    return frozenset(kinds)


SCENARIOS: dict[str, Scenario] = {
    # ---- MLP
    "relu_he": Scenario(
        "mlp", two_circles,
        mlp(2, 5, 5, "relu", he(), _sgd(0.01)),
        HEALTHY, hidden(5),
        "the brief's 5 ReLU layers of 5, He init, SGD 0.01 (momentum 0.9)",
        epochs=60, batch_size=32,
    ),
    "sigmoid_deep": Scenario(
        "mlp", two_circles,
        mlp(2, 10, 16, "sigmoid", glorot(), _sgd(0.01)),
        _k(V), hidden(10),
        "10 sigmoid layers of 16, Glorot, SGD 0.01",
        epochs=30, batch_size=32,
    ),
    "tanh_saturated": Scenario(
        "mlp", two_circles,
        mlp(2, 5, 16, "tanh", lambda f: keras.initializers.RandomUniform(0.0, 1.0),
            _sgd(0.01), bias=2.0),
        _k(V), hidden(5),
        "5 tanh layers of 16, U(0, 1) kernels, biases at 2: the units saturate",
        epochs=30, batch_size=32,
    ),
    "tanh_chaotic_deep": Scenario(
        "mlp", two_circles,
        mlp(2, 30, 32, "tanh", normal(3.0), _sgd(1e-4)),
        _k(E), hidden(30),
        "30 tanh layers of 32, N(0, 9/fan_in) (chaotic), SGD 1e-4",
        epochs=15,
    ),
    "linear_deep_adam": Scenario(
        "mlp", two_circles,
        mlp(2, 10, 32, None, normal(1.0, scaled=False), _adam()),
        _k(E), hidden(10),
        "10 linear layers of 32, N(0, 1) init, Adam 1e-3",
    ),
    "relu_huge_step": Scenario(
        "mlp", digits,
        mlp(64, 3, 64, "relu", he(),
            lambda: SGD(OneHugeStep(50.0, 0.01), momentum=0.0), classes=10),
        _k(D), hidden(3),
        "3 ReLU layers of 64 on digits, one SGD step at rate 50, then 0.01",
        classes=10,
    ),
    "relu_negative_bias": Scenario(
        "mlp", two_circles,
        mlp(2, 12, 8, "relu", he(), _sgd(0.01), bias=-1.0),
        _k(D), hidden(12),
        "12 ReLU layers of 8, biases at -1",
        epochs=15,
    ),
    "nan_feature": Scenario(
        "mlp", digits_nan_feature,
        mlp(64, 3, 64, "relu", he(), _adam(), classes=10),
        _k(N), hidden(3),
        "3 ReLU layers of 64 on digits, pixel 20 NaN in one row in ten",
        classes=10, epochs=15,
    ),
    "mlp_huge_lr": Scenario(
        "mlp", digits,
        mlp(64, 3, 64, None, glorot(), _sgd(1.0), classes=10),
        _k(N), hidden(3),
        "3 linear layers of 64 on digits, SGD at rate 1",
        classes=10,
    ),
    "adam_tiny_loss": Scenario(
        "mlp", two_circles,
        mlp(2, 4, 16, "relu", he(), lambda: keras.optimizers.Adam(3e-3, epsilon=1e-12),
            loss=tiny_bce),
        HEALTHY, hidden(4),
        "4 ReLU layers of 16, Adam 3e-3 (epsilon 1e-12), loss times 1e-6",
    ),
    "sgd_tiny_lr": Scenario(
        "mlp", digits,
        mlp(64, 2, 32, "relu", he(), _sgd(1e-6, 0.0), classes=10),
        _k(S), hidden(2),
        "2 ReLU layers of 32 on digits, SGD at rate 1e-6: the loss barely moves",
        classes=10,
    ),
    # ---- CNN
    "cnn_healthy": Scenario(
        "cnn", digits_images,
        cnn(2, "relu", _adam()),
        HEALTHY, convs(2),
        "2 Conv2D(8, 3x3, ReLU) on digits, Adam 1e-3",
        classes=10,
    ),
    "cnn_sigmoid_deep": Scenario(
        "cnn", digits_images,
        cnn(8, "sigmoid", _sgd(0.01), kernel=keras.initializers.GlorotUniform),
        _k(V), convs(8),
        "8 Conv2D(8, 3x3, sigmoid), Glorot, SGD 0.01",
        classes=10, epochs=15,
    ),
    "cnn_negative_bias": Scenario(
        "cnn", digits_images,
        cnn(3, "relu", _sgd(0.01), bias=-3.0),
        _k(D), convs(3),
        "3 Conv2D(8, 3x3, ReLU), biases at -3",
        classes=10,
    ),
    "cnn_huge_lr": Scenario(
        "cnn", digits_images,
        cnn(2, None, _sgd(1.0)),
        _k(N), convs(2),
        "2 linear Conv2D(8, 3x3), SGD at rate 1",
        classes=10,
    ),
    "cnn_tiny_lr": Scenario(
        "cnn", digits_images,
        cnn(2, "relu", _sgd(1e-6, 0.0)),
        _k(S), convs(2),
        "2 Conv2D(8, 3x3, ReLU), SGD at rate 1e-6",
        classes=10,
    ),
    # ---- recurrent through time
    "rnn_long_first_step": Scenario(
        "recurrent", first_step(200),
        recurrent(200, lambda: layers.SimpleRNN(16, name="rnn"), _sgd(0.01)),
        _k(V), (), sequence="input",
        what="SimpleRNN(16, tanh) over 200 steps, label = sign of step 0, SGD 0.01",
        epochs=15,
    ),
    "rnn_exploding_time": Scenario(
        "recurrent", step_sum(40),
        recurrent(
            40,
            lambda: layers.SimpleRNN(
                16, activation=None, name="rnn",
                recurrent_initializer=keras.initializers.Orthogonal(1.4),
            ),  # fmt: skip
            _adam(1e-4),
        ),
        _k(E), (), sequence="input",
        what="linear SimpleRNN(16) over 40 steps, recurrent kernel 1.4 x "
        "orthogonal (spectral radius 1.4), Adam 1e-4",
        epochs=15,
    ),
    "lstm_short": Scenario(
        "recurrent", step_sum(10),
        recurrent(10, lambda: layers.LSTM(16, name="rnn"), _adam(3e-3)),
        HEALTHY, (), sequence="input",
        what="LSTM(16) over 10 steps, label = sign of the sum, Adam 3e-3",
    ),
    "gru_bidirectional": Scenario(
        "recurrent", step_sum(12),
        recurrent(
            12,
            lambda: layers.Bidirectional(layers.GRU(8), name="rnn"),
            _adam(3e-3),
        ),
        HEALTHY, (), sequence="input",
        what="Bidirectional(GRU(8)) over 12 steps, sign of the sum, Adam 3e-3",
    ),
    "gru_tiny_lr": Scenario(
        "recurrent", step_sum(10),
        recurrent(10, lambda: layers.GRU(16, name="rnn"), _sgd(1e-6, 0.0)),
        _k(S), (), sequence="input",
        what="GRU(16) over 10 steps, SGD at rate 1e-6",
    ),
    # ---- residual + BatchNorm
    "sigmoid_deep_bn": Scenario(
        "residual_bn", two_circles,
        mlp(2, 10, 16, "sigmoid", glorot(), _adam(3e-3), batch_norm=True),
        HEALTHY, hidden(10),
        "sigmoid_deep with BatchNormalization before each sigmoid, Adam 3e-3",
        epochs=20, batch_size=32,
    ),
    "resnet_deep": Scenario(
        "residual_bn", digits,
        residual(6, _sgd(0.01)),
        HEALTHY, blocks(6),
        "stem + 6 residual blocks (Dense-BN-ReLU-Dense-BN + skip), SGD 0.01",
        classes=10, epochs=15,
    ),
    "resnet_huge_lr": Scenario(
        "residual_bn", digits,
        residual(4, _sgd(100.0)),
        _k(N), blocks(4),
        "stem + 4 residual blocks, SGD at rate 100",
        classes=10,
    ),
    # ---- embeddings / text
    "text_pool": Scenario(
        "text", tokens(20),
        text(20, "pool", _adam(3e-3)),
        HEALTHY, ("embedding", "hidden_1"),
        "Embedding(64, 16) + average pooling + Dense(16, ReLU), Adam 3e-3",
    ),
    "text_rnn_long": Scenario(
        "text", tokens(150, first=True),
        text(150, "rnn", _adam(), keras.initializers.RandomNormal(0.0, 1.0)),
        _k(V), (), sequence="embedding",
        what="Embedding N(0, 1) + SimpleRNN(16) over 150 tokens, class in token 0",
        epochs=15,
    ),
    "text_tiny_lr": Scenario(
        "text", tokens(20),
        text(20, "pool", _sgd(1e-5, 0.0)),
        _k(S), ("embedding", "hidden_1"),
        "the text_pool model with SGD at rate 1e-5",
    ),
    # ---- attention
    "transformer": Scenario(
        "attention", tokens(20),
        text(20, "transformer", _adam(3e-3)),
        HEALTHY, ("embedding", "attention", "ffn"),
        "Embedding + one transformer block (2-head attention, LayerNorm), Adam",
    ),
    "transformer_huge_lr": Scenario(
        "attention", tokens(20),
        text(20, "transformer", _sgd(1e3)),
        _k(N), ("embedding", "attention", "ffn"),
        "the transformer with SGD at rate 1000",
    ),
    "transformer_tiny_lr": Scenario(
        "attention", tokens(20),
        text(20, "transformer", _sgd(1e-7, 0.0)),
        _k(S), ("embedding", "attention", "ffn"),
        "the transformer with SGD at rate 1e-7",
    ),
    # ---- regression with MSE: target scale (user reports: "house prices in
    # dollars, SGD, loss NaN after a few steps", "loss huge and barely moves
    # with Adam"; the remedy is to standardize the targets)
    "reg_scaled": Scenario(
        "regression", house_prices(unscaled=False),
        regression(3, 32, _sgd(0.01)),
        HEALTHY, hidden(3),
        "3 ReLU layers of 32, MSE, standardized targets, SGD 0.01",
    ),
    "reg_unscaled_sgd": Scenario(
        "regression", house_prices(unscaled=True),
        regression(3, 32, _sgd(0.01)),
        _k(N), hidden(3),
        "reg_scaled on targets in dollars (~2e5): the first steps overflow",
    ),
    "reg_unscaled_adam": Scenario(
        "regression", house_prices(unscaled=True),
        regression(3, 32, _adam()),
        _k(S), hidden(3),
        "targets in dollars, Adam 1e-3: steps of ~1e-3 cannot reach 2e5",
    ),
    # ---- deep autoencoders (Hinton & Salakhutdinov 2006: deep sigmoid
    # autoencoders trained by backpropagation from small random weights
    # learn only the mean image)
    "ae_sigmoid_deep": Scenario(
        "autoencoder", digits_autoencoded,
        autoencoder((32, 16, 16, 8, 8, 16, 16, 32), "sigmoid",
                    keras.initializers.GlorotUniform, _sgd(0.1)),
        _k(V), hidden(8),
        "64-32-16-16-8-8-16-16-32-64 sigmoid autoencoder on digits, MSE, SGD 0.1",
    ),
    "ae_relu": Scenario(
        "autoencoder", digits_autoencoded,
        autoencoder((32, 16, 32), "relu", keras.initializers.HeUniform, _adam(3e-3)),
        HEALTHY, hidden(3),
        "64-32-16-32-64 ReLU autoencoder (He), MSE, Adam 3e-3",
    ),
    # ---- Conv1D on signals (temporal convolutional networks, Bai, Kolter &
    # Koltun 2018, vs deep sigmoid and large-init linear stacks)
    "conv1d_tcn": Scenario(
        "conv1d", waves,
        conv1d(4, "relu", _adam(3e-3), dilated=True),
        HEALTHY, convs(4),
        "4 causal Conv1D(8, 3, ReLU) dilated 1-8 on sine bursts, Adam 3e-3",
    ),
    "conv1d_sigmoid_deep": Scenario(
        "conv1d", waves,
        conv1d(10, "sigmoid", _sgd(0.01), kernel=keras.initializers.GlorotUniform),
        _k(V), convs(10),
        "10 Conv1D(8, 3, sigmoid), Glorot, SGD 0.01",
        epochs=15,
    ),
    "conv1d_linear_large_init": Scenario(
        "conv1d", waves,
        conv1d(8, None, _adam(1e-4),
               kernel=lambda: keras.initializers.RandomNormal(0.0, 1.0)),
        _k(E), convs(8),
        "8 linear Conv1D(8, 3), N(0, 1) kernels (gain ~sqrt(24) a layer), Adam 1e-4",
        epochs=15,
    ),
    # ---- regularization strength (Srivastava et al. 2014's dropout vs an
    # L2 penalty so strong that the weights collapse, as users report:
    # "with kernel_regularizer the accuracy stays at 10%")
    "dropout_heavy": Scenario(
        "regularization", digits,
        regularized(3, _adam(), dropout=0.5),
        HEALTHY, hidden(3),
        "3 ReLU layers of 64 on digits, Dropout(0.5) after each, Adam 1e-3",
        classes=10,
    ),
    "l2_collapse": Scenario(
        "regularization", digits,
        regularized(3, _sgd(0.05), l2=1.0),
        _k(V), hidden(3),
        "3 ReLU layers of 64 on digits, L2(1.0) on every kernel, SGD 0.05",
        classes=10,
    ),
    # ---- modern activations (GELU, Hendrycks & Gimpel 2016; swish,
    # Ramachandran et al. 2017) in deep nets; below the edge of chaos
    # (Hayou et al. 2019) the backward signal decays exponentially
    "gelu_deep": Scenario(
        "modern_act", two_circles,
        mlp(2, 12, 32, "gelu", he(), _adam()),
        HEALTHY, hidden(12),
        "12 GELU layers of 32, He init, Adam 1e-3",
        epochs=20, batch_size=32,
    ),
    "swish_small_init": Scenario(
        "modern_act", two_circles,
        mlp(2, 16, 32, "silu", normal(0.5), _sgd(0.01)),
        _k(V), hidden(16),
        "16 swish layers of 32, N(0, 0.25/fan_in) (below the edge of chaos), "
        "SGD 0.01",
        epochs=20, batch_size=32,
    ),
}  # fmt: skip


# ---------------------------------------------------------------- halves
# Split before any rule of issue 23 changed (stratified by the kind each
# scenario is built for, shuffled with random.Random(23) within a kind, odd
# counts alternating between the halves): rules are tuned on DESIGN only;
# HELDOUT is run once, with the final rules, and reported as it comes out.

DESIGN: tuple[str, ...] = (
    "text_rnn_long", "tanh_saturated", "tanh_chaotic_deep", "rnn_exploding_time",
    "mlp_huge_lr", "resnet_huge_lr", "relu_huge_step", "cnn_negative_bias",
    "transformer_tiny_lr", "text_tiny_lr", "cnn_healthy", "text_pool",
    "resnet_deep", "gru_bidirectional", "lstm_short",
    # the 12 of the five families added for issue 23, split by the same
    # recipe in a draw of their own (random.Random(23), kinds in sorted
    # order), before any of them was run
    "conv1d_linear_large_init", "reg_scaled", "conv1d_tcn", "reg_unscaled_sgd",
    "ae_sigmoid_deep", "l2_collapse",
)  # fmt: skip
HELDOUT: tuple[str, ...] = (
    "rnn_long_first_step", "sigmoid_deep", "cnn_sigmoid_deep", "linear_deep_adam",
    "nan_feature", "cnn_huge_lr", "transformer_huge_lr", "relu_negative_bias",
    "gru_tiny_lr", "cnn_tiny_lr", "sgd_tiny_lr", "sigmoid_deep_bn",
    "transformer", "adam_tiny_loss", "relu_he",
    # the 12 added for issue 23 (see DESIGN)
    "gelu_deep", "ae_relu", "dropout_heavy", "reg_unscaled_adam",
    "conv1d_sigmoid_deep", "swish_small_init",
)  # fmt: skip
HALVES = {"design": DESIGN, "heldout": HELDOUT}
assert sorted(DESIGN + HELDOUT) == sorted(SCENARIOS), "the halves split SCENARIOS"
