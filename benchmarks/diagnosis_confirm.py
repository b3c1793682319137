"""A fresh held-out ("confirm") set of labelled runs for `diagnosis_eval.py`.

Twelve scenarios written after the rules of `keras_gradwatch.diagnosis` were
tuned on `diagnosis_scenarios.DESIGN`, from causes that the literature and
user reports (Stack Overflow questions, GitHub issues, tutorial pitfalls)
name, none a variation of a scenario of `diagnosis_scenarios.SCENARIOS`.
They were built and trained for one epoch each (to check that they build
and train), never run through the oracle or the diagnosis before being
frozen: `intended` is the kind each is built for, by the reasoning in its
comment, to be confirmed or not by `diagnosis_oracle.py` as for the others.

Kinds: 3 stalled (two where Adam keeps moving the weights while the loss
barely moves, one frozen by a tiny learning rate on a model already above
chance), 2 vanishing, 1 exploding, 1 non_finite, 1 dead_units, and 4
healthy runs that look close to a failure (slow learning, a share of dead
ReLUs, a deep residual net, a deep plain net without residuals).

Data: scikit-learn's bundled digits and its make_moons, make_regression and
make_classification generators, or NumPy; nothing is downloaded. Each run
takes a few seconds on two CPU cores.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
from diagnosis_scenarios import (
    HEALTHY,
    SCENARIOS,
    VOCAB,
    Data,
    Scenario,
    _adam,
    _compile,
    _head,
    _k,
    _sgd,
    blocks,
    digits,
    glorot,
    he,
    hidden,
    mlp,
)
from keras import layers
from sklearn.datasets import make_classification, make_moons, make_regression

V, E, N, D, S = "vanishing", "exploding", "non_finite", "dead_units", "stalled"

# ---------------------------------------------------------------- data

# make_moons' points have mean ~(0.5, 0.25) and standard deviations
# ~(0.87, 0.5) whatever the draw: one fixed affine map standardizes every
# draw alike (the pretraining draw of `resumed` included).
MOONS_CENTER = np.array([0.5, 0.25], dtype="float32")
MOONS_SCALE = np.array([0.87, 0.5], dtype="float32")
PRETRAIN_SEED = 1000
"""The moons drawn for `resumed`'s pretraining: no evaluation seed."""


def moons(seed: int = 1) -> Data:
    """500 training and 500 held-out points of scikit-learn's two moons
    (noise 0.2), standardized."""
    x, y = make_moons(n_samples=1000, noise=0.2, random_state=seed)
    x = ((x - MOONS_CENTER) / MOONS_SCALE).astype("float32")
    y = y.astype("float32")
    return x[:500], y[:500], x[500:], y[500:]


def tabular(seed: int = 1) -> Data:
    """make_classification: 20 features (8 informative, 4 redundant), 4
    classes, standardized with the training rows' statistics; 768 + 256."""
    x, y = make_classification(
        n_samples=1024, n_features=20, n_informative=8, n_redundant=4,
        n_classes=4, random_state=seed,
    )  # fmt: skip
    x = ((x - x[:768].mean(axis=0)) / x[:768].std(axis=0)).astype("float32")
    y = y.astype("int32")
    return x[:768], y[:768], x[768:], y[768:]


def daily_sales(seed: int = 1) -> Data:
    """make_regression's 8 N(0, 1) features (noise 10); the target is in
    units sold, 500 + 100 x the standardized target (~200 to ~800)."""
    x, y = make_regression(n_samples=768, n_features=8, noise=10.0, random_state=seed)
    x, y = x.astype("float32"), y.astype("float32")
    y = 500.0 + 100.0 * (y - y[:512].mean()) / y[:512].std()
    return x[:512], y[:512], x[512:], y[512:]


def counts(seed: int = 1) -> Data:
    """Poisson counts: make_regression's 8 features, rate 2 exp(z / 2) for
    the standardized noiseless target z (mean count ~2.3)."""
    x, y = make_regression(n_samples=768, n_features=8, noise=0.0, random_state=seed)
    z = (y - y[:512].mean()) / y[:512].std()
    c = np.random.default_rng(seed).poisson(2.0 * np.exp(0.5 * z))
    x, c = x.astype("float32"), c.astype("float32")
    return x[:512], c[:512], x[512:], c[512:]


def raw_digit_images(seed: int = 1) -> Data:
    """The flat digits as 8-bit pixels, 0 to 255, as both input and target
    (an autoencoder's ``fit(x, x)``)."""
    x, _, xh, _ = digits(seed)
    return 255.0 * x, 255.0 * x, 255.0 * xh, 255.0 * xh


def post_padded(length: int) -> Callable[[int], Data]:
    """Sentences of 4 to 8 tokens padded with 0 at the end to `length`
    (``pad_sequences(..., padding="post")``). Class 1 sentences are drawn
    from tokens 2-32, class 0 from 33-63: any of their tokens tells the
    class; the padding tells nothing."""

    def data(seed: int = 1) -> Data:
        rng = np.random.default_rng(seed)
        n = 768
        y = rng.integers(0, 2, size=n)
        x = np.zeros((n, length), dtype="int32")
        for row in range(n):
            size = rng.integers(4, 9)
            low = 2 if y[row] else 33
            x[row, :size] = rng.integers(low, low + 31, size=size)
        y = y.astype("float32")
        return x[:512], y[:512], x[512:], y[512:]

    return data


# ---------------------------------------------------------------- models


def tabular_regression(
    depth: int,
    width: int,
    optimizer: Callable[[], keras.optimizers.Optimizer],
    *,
    output: str | None = None,
    loss: str = "mean_squared_error",
) -> Callable[[], keras.Model]:
    """8 features -> `depth` Dense(`width`, ReLU, He) ``hidden_1``... ->
    Dense(1, `output` activation) ``output``, compiled with `loss`."""

    def build() -> keras.Model:
        x = keras.Input((8,))
        h = x
        for i in range(1, depth + 1):
            h = layers.Dense(width, activation="relu", name=f"hidden_{i}",
                             kernel_initializer="he_uniform")(h)  # fmt: skip
        out = layers.Dense(1, activation=output, name="output")(h)
        model = keras.Model(x, out, name="tabular_regression")
        model.compile(optimizer(), loss)
        return model

    return build


def rescaled_autoencoder(
    widths: tuple[int, ...], optimizer: Callable[[], keras.optimizers.Optimizer]
) -> Callable[[], keras.Model]:
    """Flat 8-bit digits -> Rescaling(1/255) -> Dense(ReLU, He) layers of
    `widths` ``hidden_1``... -> Dense(64, sigmoid), mean squared error."""

    def build() -> keras.Model:
        x = keras.Input((64,))
        h = layers.Rescaling(1.0 / 255.0, name="rescale")(x)
        for i, width in enumerate(widths, 1):
            h = layers.Dense(width, activation="relu", name=f"hidden_{i}",
                             kernel_initializer="he_uniform")(h)  # fmt: skip
        out = layers.Dense(64, activation="sigmoid", name="output")(h)
        model = keras.Model(x, out, name="rescaled_autoencoder")
        model.compile(optimizer(), "mean_squared_error")
        return model

    return build


def resumed(
    optimizer: Callable[[], keras.optimizers.Optimizer],
) -> Callable[[], keras.Model]:
    """Moons -> 2 Dense(16, ReLU, He) ``hidden_1``, ``hidden_2`` -> sigmoid,
    first trained 3 epochs with Adam 1e-2 on an independent draw of the moons
    (the checkpoint), then compiled afresh with `optimizer` (the resumed
    run): the model starts the evaluated training well above chance."""

    def build() -> keras.Model:
        model = mlp(2, 2, 16, "relu", he(), _adam(1e-2))()
        x, y, _, _ = moons(PRETRAIN_SEED)
        model.fit(x, y, epochs=3, batch_size=32, verbose=0)
        return _compile(model, optimizer())

    return build


def padded_lstm(
    length: int, optimizer: Callable[[], keras.optimizers.Optimizer]
) -> Callable[[], keras.Model]:
    """Tokens -> Embedding(64, 16) ``embedding`` (no ``mask_zero``) ->
    LSTM(16) ``rnn`` (Keras defaults: forget-gate bias 1) -> sigmoid."""

    def build() -> keras.Model:
        x = keras.Input((length,), dtype="int32")
        e = layers.Embedding(VOCAB, 16, name="embedding")(x)
        h = layers.LSTM(16, name="rnn")(e)
        model = keras.Model(x, _head(h, 2), name="padded_lstm")
        return _compile(model, optimizer())

    return build


def residual_mlp(
    count: int,
    optimizer: Callable[[], keras.optimizers.Optimizer],
    *,
    pre_norm: bool,
) -> Callable[[], keras.Model]:
    """Digits -> linear Dense(32) ``stem`` -> `count` residual blocks, each
    ``h + F(h)`` named ``block_1``... -> softmax over 10.

    Without `pre_norm`, F is Dense(32, ReLU, He) -> Dense(32, He) and nothing
    normalizes (a ResNet with its BatchNorm removed). With it, F is
    LayerNorm -> Dense(64, GELU) -> Dense(32) (Keras' Glorot), the pre-LN
    block of transformers, and a final LayerNorm precedes the head."""

    def build() -> keras.Model:
        x = keras.Input((64,))
        h = layers.Dense(32, name="stem")(x)
        for i in range(1, count + 1):
            if pre_norm:
                r = layers.LayerNormalization(name=f"block_{i}_ln")(h)
                r = layers.Dense(64, activation="gelu", name=f"block_{i}_a")(r)
                r = layers.Dense(32, name=f"block_{i}_b")(r)
            else:
                r = layers.Dense(32, activation="relu", name=f"block_{i}_a",
                                 kernel_initializer="he_uniform")(h)  # fmt: skip
                r = layers.Dense(32, name=f"block_{i}_b",
                                 kernel_initializer="he_uniform")(r)  # fmt: skip
            h = layers.Add(name=f"block_{i}")([h, r])
        if pre_norm:
            h = layers.LayerNormalization(name="final_ln")(h)
        name = "resnet_pre_ln" if pre_norm else "resnet_no_norm"
        model = keras.Model(x, _head(h, 10), name=name)
        return _compile(model, optimizer(), "sparse_categorical_crossentropy")

    return build


def zeros() -> Callable[[int], keras.initializers.Initializer]:
    return lambda fan_in: keras.initializers.Zeros()


def lecun_normal() -> Callable[[int], keras.initializers.Initializer]:
    return lambda fan_in: keras.initializers.LecunNormal()


# ---------------------------------------------------------------- scenarios

CONFIRM: dict[str, Scenario] = {
    # ---- stalled: Adam keeps moving the weights, the loss barely moves
    # Source: user reports "regression model predicts the same value for
    # everything" / "all predictions are 1.0", a sigmoid left on the output
    # layer of a regression (copied from a classifier). Adam pushes the
    # output towards 1 at ~1e-3 a weight a step for ever, but the loss
    # (~500^2) can fall by at most ~0.2% while the prediction is in (0, 1).
    "sales_sigmoid_output": Scenario(
        "regression", daily_sales,
        tabular_regression(2, 32, _adam(), output="sigmoid"),
        _k(S), hidden(2),
        "2 ReLU layers of 32, sigmoid output, MSE on targets of ~500, Adam 1e-3",
    ),
    # Source: user reports "autoencoder loss huge and not decreasing" on
    # 8-bit images, here with the inputs normalized inside the model (a
    # Rescaling(1/255) layer, as the Keras preprocessing guide suggests) but
    # `fit(x, x)` passing the same 0-255 array as the target: a sigmoid
    # reconstruction cannot pass 1, Adam keeps moving every weight and the
    # loss (~1e4) can fall by at most ~0.6%.
    "ae_rescaled_raw_target": Scenario(
        "autoencoder", raw_digit_images,
        rescaled_autoencoder((32, 16, 32), _adam()),
        _k(S), hidden(3),
        "64-32-16-32-64 ReLU autoencoder, Rescaling(1/255) in, 0-255 targets, "
        "sigmoid out, Adam",
    ),
    # ---- stalled: weights frozen by a tiny rate, the model above chance
    # Source: user reports "resumed training from a checkpoint, loss and
    # accuracy do not change at all": the learning-rate schedule (or
    # ReduceLROnPlateau) had decayed the rate to ~1e-7 before the restart.
    # The restored model is already ~85% accurate, so an accuracy-near-chance
    # test cannot see the stall.
    "resumed_tiny_lr": Scenario(
        "mlp", moons,
        resumed(lambda: keras.optimizers.Adam(1e-7)),
        _k(S), hidden(2),
        "moons MLP 2x16 ReLU restored after 3 epochs of pretraining, resumed "
        "with Adam at 1e-7",
    ),
    # ---- vanishing
    # Source: He et al. 2015, "Delving deep into rectifiers" (Fig. 3): a
    # 30-layer plain ReLU net with Xavier/Glorot init, Keras' default, does
    # not learn; users: "deep Dense stack with relu, accuracy stays at 10%".
    # Glorot gives each ReLU layer a backward gain of ~1/sqrt(2): ~4e-5 over
    # 30 layers.
    "relu_glorot_plain_30": Scenario(
        "mlp", digits,
        mlp(64, 30, 64, "relu", glorot(), _sgd(0.01), classes=10),
        _k(V), hidden(30),
        "30 ReLU layers of 64 on digits, Keras' default Glorot init, SGD 0.01",
        classes=10,
    ),
    # Source: Dwarampudi & Subba Reddy 2019, "Effects of padding on LSTMs and
    # CNNs" (arXiv:1903.07288), and user reports "LSTM accuracy stuck at 50%
    # with padding='post'": without masking, the LSTM reads ~95 padding
    # steps after the sentence, and the gradient from the last state to the
    # words decays through ~95 forget gates.
    "lstm_post_padding": Scenario(
        "text", post_padded(100),
        padded_lstm(100, _adam()),
        _k(V), (), sequence="embedding",
        what="Embedding + LSTM(16), 4-8 token sentences post-padded to 100 "
        "without mask_zero, Adam",
        epochs=15,
    ),
    # ---- exploding
    # Source: Zhang, Dauphin & Ma 2019, "Fixup initialization" (Sec. 2) and
    # Hanin & Rolnick 2018: without normalization, each standard-initialized
    # residual block multiplies the variance (here by ~3: He in both layers),
    # so the backward gain over 12 blocks is ~3^6; users: "removed
    # BatchNorm from my ResNet and the loss explodes".
    "resnet_no_norm": Scenario(
        "residual", digits,
        residual_mlp(12, _adam(1e-4), pre_norm=False),
        _k(E), blocks(12),
        "stem + 12 residual blocks Dense(ReLU, He)-Dense(He) + skip, no "
        "normalization, Adam 1e-4",
        classes=10,
    ),
    # ---- non_finite
    # Source: user reports and Keras issues "poisson loss is nan": the
    # Poisson loss y_pred - y log(y_pred + eps) takes the log of a linear
    # output, negative for about half the rows at initialization, so the
    # first batch's loss is NaN (the remedy: an exponential or softplus
    # output).
    "poisson_linear_output": Scenario(
        "regression", counts,
        tabular_regression(2, 32, _adam(), loss="poisson"),
        _k(N), hidden(2),
        "2 ReLU layers of 32, linear output, Poisson loss on counts, Adam",
    ),
    # ---- dead_units
    # Source: "all-zero initialization" (CS231n notes, "Pitfall: all zero
    # initialization"; user reports "kernel_initializer='zeros', accuracy
    # stays at 25%"): every hidden ReLU outputs exactly 0 on every sample,
    # and ReLU's gradient at 0 is 0, so no hidden weight ever moves.
    "zero_init_relu": Scenario(
        "mlp", tabular,
        mlp(20, 3, 64, "relu", zeros(), _adam(), classes=4),
        _k(D), hidden(3),
        "3 ReLU layers of 64, all kernels initialized to 0, 4-class tabular, "
        "Adam",
        classes=4,
    ),
    # ---- healthy, looking close to a failure
    # Source: Golik, Doetsch & Ney 2013, "Cross-entropy vs. squared error
    # training"; Nielsen, "Neural Networks and Deep Learning" ch. 3 (the
    # learning slowdown of a sigmoid output under squared error); users
    # asking why "binary classifier with MSE learns so slowly". Slower than
    # with cross-entropy, but it learns.
    "mse_sigmoid_classifier": Scenario(
        "mlp", moons,
        mlp(2, 2, 16, "relu", he(), _sgd(0.01), loss="mean_squared_error"),
        HEALTHY, hidden(2),
        "moons, 2 ReLU layers of 16, sigmoid output trained with MSE, SGD 0.01",
    ),
    # Source: CS231n notes ("as much as 40% of your network can be dead" at
    # a high learning rate) and Lu et al. 2019, "Dying ReLU and
    # initialization": Adam at 10x its default rate on non-negative pixel
    # inputs pushes a share of the ReLUs below zero for good, and the rest
    # still learn the digits.
    "relu_adam_partly_dead": Scenario(
        "mlp", digits,
        mlp(64, 2, 128, "relu", he(), _adam(1e-2), classes=10),
        HEALTHY, hidden(2),
        "2 ReLU layers of 128 on digits, He init, Adam at 1e-2",
        classes=10,
    ),
    # Source: Xiong et al. 2020, "On layer normalization in the transformer
    # architecture": pre-LN residual blocks keep the gradient well-behaved
    # at depth; the same 12-block depth as resnet_no_norm.
    "resnet_pre_ln": Scenario(
        "residual", digits,
        residual_mlp(12, _adam(), pre_norm=True),
        HEALTHY, blocks(12),
        "stem + 12 pre-LN residual blocks LN-Dense(64, GELU)-Dense(32) + skip, "
        "Adam 1e-3",
        classes=10,
    ),
    # Source: Klambauer et al. 2017, "Self-normalizing neural networks": a
    # 30-layer plain net (no residuals, no normalization layers) with SELU
    # and LeCun-normal init keeps its activations and gradients at unit
    # scale; the same depth as relu_glorot_plain_30.
    "selu_plain_30": Scenario(
        "modern_act", moons,
        mlp(2, 30, 32, "selu", lecun_normal(), _sgd(0.01)),
        HEALTHY, hidden(30),
        "30 SELU layers of 32, LeCun-normal init, moons, SGD 0.01",
        batch_size=32,
    ),
}  # fmt: skip

assert not set(CONFIRM) & set(SCENARIOS), "confirm names must be new"
