"""A second fresh held-out ("confirm2") set of labelled runs for `diagnosis_eval.py`.

Twelve scenarios written without seeing any result: no run of the oracle,
of the diagnosis rules or of `diagnosis_eval.py` on them or on any other
set was looked at while writing them. Their causes come from the literature
and from user reports (Stack Overflow questions, GitHub issues, tutorial
pitfalls), and none is a variation of a scenario of
`diagnosis_scenarios.SCENARIOS` or `diagnosis_confirm.CONFIRM`. They were
built and trained for one epoch each (to check that they build and train)
before being frozen: `intended` is the kind each is built for, by the
reasoning in its comment, to be confirmed or not by `diagnosis_oracle.py`
as for the others.

Kinds: 2 vanishing (sign activations without a straight-through estimator,
softmax used as a hidden activation), 2 exploding (a SIREN with Keras'
default init, a graph convolution on the raw adjacency matrix), 1 non_finite
(the square root of a zero distance in a siamese net), 2 dead_units (a deep
narrow ReLU net born dead, a ReLU output layer with negative targets), 1
stalled (a bag-of-embeddings model on a label that only word order tells),
and 4 healthy runs that look close to a failure, each beside a failure
family: a SIREN with its own init (weight gradients ~30x the usual, yet
stable), a learning-rate warmup (the loss sits flat, then drops), a
24-layer tanh net at the edge of chaos (learns slowly but steadily), a deep
ReLU net with a share of units off on the whole batch (still learns).

Data: scikit-learn's bundled digits and its make_regression generator, or
NumPy (a 32x32 synthetic image, random graphs, token sequences); nothing is
downloaded. Each run takes a few seconds on two CPU cores.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
from diagnosis_confirm import CONFIRM, tabular_regression
from diagnosis_scenarios import (
    HEALTHY,
    SCENARIOS,
    VOCAB,
    Data,
    Scenario,
    _adam,
    _compile,
    _k,
    _sgd,
    digits,
    glorot,
    hidden,
    house_prices,
    mlp,
    text,
    tokens,
)
from keras import layers, ops
from sklearn.datasets import make_regression

V, E, N, D, S = "vanishing", "exploding", "non_finite", "dead_units", "stalled"

# ---------------------------------------------------------------- data


def digit_pairs(seed: int = 1) -> Data:
    """Pairs of flat digits, shape (pairs, 2, 64); label 1 when both show the
    same digit (about half the pairs).

    Training: 2,048 pairs from the 1,000 training digits; the partner of a
    same-class pair is drawn with replacement from the anchor's class, the
    anchor included (as ``make_pairs`` of the Keras siamese examples does),
    so ~1% of the same-class pairs (a few to ~10 rows) are an image with
    itself.
    Held out: 512 pairs from the 256 held-out digits, every partner distinct
    from its anchor (a validation set of distinct pairs)."""
    x, y, xh, yh = digits(seed)
    rng = np.random.default_rng(seed)

    def pairs(images: np.ndarray, labels: np.ndarray, count: int, distinct: bool):
        by_class = [np.flatnonzero(labels == c) for c in range(10)]
        anchors = rng.integers(0, len(images), size=count)
        same = rng.random(count) < 0.5
        partners = np.empty(count, dtype=int)
        for row, anchor in enumerate(anchors):
            label = labels[anchor]
            if same[row]:
                pool = by_class[label]
                if distinct:
                    pool = pool[pool != anchor]
            else:
                pool = by_class[(label + rng.integers(1, 10)) % 10]
            partners[row] = rng.choice(pool)
        both = np.stack([images[anchors], images[partners]], axis=1)
        return both.astype("float32"), same.astype("float32")

    x_pairs, y_pairs = pairs(x, y, 2048, distinct=False)
    xh_pairs, yh_pairs = pairs(xh, yh, 512, distinct=True)
    return x_pairs, y_pairs, xh_pairs, yh_pairs


ORDER_LENGTH = 12


def keyword_order(seed: int = 1) -> Data:
    """Sentences of 12 tokens holding the keywords 2 and 3 once each among 10
    filler tokens drawn from 4-63; label 1 when 2 comes before 3. Every
    sentence appears twice, once in each order (the two keywords' places
    swapped), so the bag of tokens of a sentence never tells its label.
    256 sentences (512 rows) for training, 128 (256 rows) held out."""
    rng = np.random.default_rng(seed)

    def rows(count: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.integers(4, VOCAB, size=(count, ORDER_LENGTH))
        for row in range(count):
            first, second = rng.choice(ORDER_LENGTH, 2, replace=False)
            x[row, first], x[row, second] = 2, 3
        twin = x.copy()
        twin[x == 2], twin[x == 3] = 3, 2
        both = np.concatenate([x, twin])
        label = np.argmax(both == 2, axis=1) < np.argmax(both == 3, axis=1)
        order = rng.permutation(len(both))
        return both[order].astype("int32"), label[order].astype("float32")

    x, y = rows(256)
    xh, yh = rows(128)
    return x, y, xh, yh


GRAPH_NODES = 16


def random_graphs(seed: int = 1) -> Data:
    """Erdős-Rényi graphs of 16 nodes, each with its own edge probability
    drawn from U(0.3, 0.7); label 1 when the graph's edge density is above
    0.5. One graph is one row of shape (16, 20): its 0/1 adjacency matrix
    (symmetric, no self-loops) in the first 16 columns, its node features in
    the last 4 (a constant 1, the usual feature of graphs without any, and
    three N(0, 1) features). 512 + 256 graphs."""
    rng = np.random.default_rng(seed)
    n = 768
    p = rng.uniform(0.3, 0.7, size=n)
    upper = np.triu(rng.random((n, GRAPH_NODES, GRAPH_NODES)) < p[:, None, None], 1)
    adjacency = upper | upper.transpose(0, 2, 1)
    features = np.concatenate(
        [np.ones((n, GRAPH_NODES, 1)), rng.normal(size=(n, GRAPH_NODES, 3))], axis=-1
    )
    density = upper.sum(axis=(1, 2)) / (GRAPH_NODES * (GRAPH_NODES - 1) / 2)
    x = np.concatenate([adjacency, features], axis=-1).astype("float32")
    y = (density > 0.5).astype("float32")
    return x[:512], y[:512], x[512:], y[512:]


def image_pixels(seed: int = 1) -> Data:
    """A 32x32 grey image as a function of its pixel coordinates in
    [-1, 1]^2 (an implicit neural representation): a disk (a sharp edge)
    plus a smooth sinusoidal shading, standardized. A random half of the
    1,024 pixels (drawn by `seed`) to fit, the other half held out."""
    u, v = np.meshgrid(np.linspace(-1, 1, 32), np.linspace(-1, 1, 32), indexing="ij")
    disk = ((u - 0.15) ** 2 + (v + 0.1) ** 2 < 0.3).astype("float64")
    image = disk + 0.5 * np.sin(3.0 * u) * np.cos(2.0 * v)
    image = (image - image.mean()) / image.std()
    coords = np.stack([u.ravel(), v.ravel()], axis=1).astype("float32")
    values = image.ravel().astype("float32")
    order = np.random.default_rng(seed).permutation(len(values))
    train, held = order[:512], order[512:]
    return coords[train], values[train], coords[held], values[held]


def log_concentrations(seed: int = 1) -> Data:
    """make_regression's 8 N(0, 1) features and 4 targets (noise 10), each
    standardized with the training rows' statistics (z) and mapped to
    -3 + z / 2: log10 concentrations of ~1e-3, all negative (~-5 to ~-1).
    512 + 256 rows."""
    x, y = make_regression(
        n_samples=768, n_features=8, n_targets=4, noise=10.0, random_state=seed
    )
    z = (y - y[:512].mean(axis=0)) / y[:512].std(axis=0)
    x, y = x.astype("float32"), (-3.0 + 0.5 * z).astype("float32")
    return x[:512], y[:512], x[512:], y[512:]


# ---------------------------------------------------------------- models


def binary_sign(x: object) -> object:
    """sign(x): the binary activation of binarized networks, whose
    derivative is 0 wherever it is defined (TensorFlow's gradient of Sign
    is 0)."""
    return ops.sign(x)


OMEGA = 30.0
"""SIREN's frequency factor omega_0 (Sitzmann et al. 2020)."""


def sine(x: object) -> object:
    """SIREN's activation sin(omega_0 x)."""
    return ops.sin(OMEGA * x)


def siren(
    principled: bool, optimizer: Callable[[], keras.optimizers.Optimizer]
) -> Callable[[], keras.Model]:
    """Pixel coordinates (2) -> 4 Dense(64, sin(30 x)) ``sine_1``... ->
    Dense(1) ``output`` (linear), mean squared error.

    Biases as in the SIREN reference code (PyTorch's default for Linear):
    U(+-1/sqrt(fan_in)). Kernels: with `principled`, SIREN's init,
    U(+-1/fan_in) in the first layer and U(+-sqrt(6/fan_in)/omega_0) in the
    others; without, Keras' default Glorot uniform."""

    def build() -> keras.Model:
        x = keras.Input((2,))
        h, fan_in = x, 2
        for i in range(1, 5):
            kernel: object = "glorot_uniform"
            if principled:
                limit = 1.0 / fan_in if i == 1 else np.sqrt(6.0 / fan_in) / OMEGA
                kernel = keras.initializers.RandomUniform(-limit, limit)
            scale = 1.0 / np.sqrt(fan_in)
            h = layers.Dense(
                64, activation=sine, kernel_initializer=kernel,
                bias_initializer=keras.initializers.RandomUniform(-scale, scale),
                name=f"sine_{i}",
            )(h)  # fmt: skip
            fan_in = 64
        model = keras.Model(x, layers.Dense(1, name="output")(h), name="siren")
        model.compile(optimizer(), "mean_squared_error")
        return model

    return build


class RawAdjacency(layers.Layer):
    """The propagation matrix A + I of a graph row, the adjacency matrix
    with self-loops and without GCN's renormalization D^-1/2 (A + I) D^-1/2."""

    def call(self, x: object) -> object:
        return x[..., :GRAPH_NODES] + ops.eye(GRAPH_NODES)


class NodeFeatures(layers.Layer):
    """The node features of a graph row."""

    def call(self, x: object) -> object:
        return x[..., GRAPH_NODES:]


class GraphConv(layers.Layer):
    """Graph convolution ``P H W + b`` (Kipf & Welling 2017) without a
    nonlinearity (as in SGC, Wu et al. 2019); inputs ``[P, H]``."""

    def __init__(self, units: int, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape: object) -> None:
        _, features = input_shape
        self.kernel = self.add_weight(
            shape=(features[-1], self.units), initializer="glorot_uniform",
            name="kernel",
        )  # fmt: skip
        self.bias = self.add_weight(
            shape=(self.units,), initializer="zeros", name="bias"
        )

    def call(self, inputs: object) -> object:
        propagation, h = inputs
        return ops.matmul(propagation, ops.matmul(h, self.kernel)) + self.bias


def gcn_raw(
    depth: int, optimizer: Callable[[], keras.optimizers.Optimizer]
) -> Callable[[], keras.Model]:
    """Graph rows -> `depth` GraphConv(16) ``gcn_1``... propagating with the
    raw A + I -> mean over the nodes -> sigmoid."""

    def build() -> keras.Model:
        x = keras.Input((GRAPH_NODES, GRAPH_NODES + 4))
        propagation = RawAdjacency(name="adjacency")(x)
        h = NodeFeatures(name="node_features")(x)
        for i in range(1, depth + 1):
            h = GraphConv(16, name=f"gcn_{i}")([propagation, h])
        h = layers.GlobalAveragePooling1D(name="readout")(h)
        out = layers.Dense(1, activation="sigmoid", name="output")(h)
        return _compile(keras.Model(x, out, name="gcn_raw"), optimizer())

    return build


class PairDistance(layers.Layer):
    """The Euclidean distance between the two embeddings of a pair,
    ``sqrt(sum((a - b)^2))``, with no floor under the sum."""

    def call(self, embeddings: object) -> object:
        difference = embeddings[:, 0] - embeddings[:, 1]
        return ops.sqrt(ops.sum(ops.square(difference), axis=-1, keepdims=True))


def siamese(
    optimizer: Callable[[], keras.optimizers.Optimizer],
) -> Callable[[], keras.Model]:
    """Digit pairs (2, 64) -> Dense(64, ReLU, He) ``hidden_1`` -> Dense(16)
    ``embedding`` (both applied to each image of the pair: shared weights)
    -> their Euclidean distance ``distance`` -> Dense(1, sigmoid): the
    probability that both show the same digit (Koch et al. 2015's head on a
    Euclidean distance), binary cross-entropy."""

    def build() -> keras.Model:
        x = keras.Input((2, 64))
        h = layers.Dense(64, activation="relu", kernel_initializer="he_uniform",
                         name="hidden_1")(x)  # fmt: skip
        e = layers.Dense(16, name="embedding")(h)
        d = PairDistance(name="distance")(e)
        out = layers.Dense(1, activation="sigmoid", name="output")(d)
        return _compile(keras.Model(x, out, name="siamese"), optimizer())

    return build


def multi_output_regression(
    outputs: int,
    activation: str | None,
    optimizer: Callable[[], keras.optimizers.Optimizer],
) -> Callable[[], keras.Model]:
    """8 features -> 2 Dense(32, ReLU, He) ``hidden_1``, ``hidden_2`` ->
    Dense(`outputs`, `activation`) ``output`` (Keras' Glorot), MSE."""

    def build() -> keras.Model:
        x = keras.Input((8,))
        h = x
        for i in (1, 2):
            h = layers.Dense(32, activation="relu", name=f"hidden_{i}",
                             kernel_initializer="he_uniform")(h)  # fmt: skip
        out = layers.Dense(outputs, activation=activation, name="output")(h)
        model = keras.Model(x, out, name="multi_output_regression")
        model.compile(optimizer(), "mean_squared_error")
        return model

    return build


class ExponentialWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """From `start` to `peak` geometrically over `steps` optimizer steps,
    then `peak` (the learning-rate range test's ramp, Smith 2017, stopped at
    a sound rate)."""

    def __init__(self, start: float, peak: float, steps: int) -> None:
        self.start, self.peak, self.steps = start, peak, steps

    def __call__(self, step: object) -> object:
        t = ops.minimum(ops.cast(step, "float32") / self.steps, 1.0)
        return self.start * ops.exp(t * float(np.log(self.peak / self.start)))

    def get_config(self) -> dict[str, float]:
        return {"start": self.start, "peak": self.peak, "steps": self.steps}


def orthogonal() -> Callable[[int], keras.initializers.Initializer]:
    return lambda fan_in: keras.initializers.Orthogonal(gain=1.0)


def numbered(prefix: str, count: int) -> tuple[str, ...]:
    return tuple(f"{prefix}_{i}" for i in range(1, count + 1))


# ---------------------------------------------------------------- scenarios

CONFIRM2: dict[str, Scenario] = {
    # ---- vanishing: a derivative that is 0 (binarized activations)
    # Source: Hubara et al. 2016, "Binarized neural networks" (Sec. 1.1:
    # the derivative of sign is zero almost everywhere, hence the
    # straight-through estimator of Bengio, Léonard & Courville 2013); user
    # reports "binary activation in Keras, the weights never update". With
    # sign as the activation and no straight-through estimator, the
    # gradient to every hidden output but the last is exactly 0 (the head
    # still learns on the fixed random binary features, so the loss falls).
    "binary_activation_no_ste": Scenario(
        "binarized", digits,
        mlp(64, 3, 128, binary_sign, glorot(), _adam(), classes=10),
        _k(V), hidden(3),
        "3 Dense(128) with sign activations (no straight-through estimator) on "
        "digits, Adam 1e-3",
        classes=10,
    ),
    # ---- vanishing: an output activation used in the hidden layers
    # Source: Stack Overflow 37588632, "Why use softmax only in the output
    # layer and not in hidden layers?", and beginners' nets with
    # activation="softmax" on every layer; Goodfellow, Bengio & Courville
    # 2016, Sec. 6.2.2.3 (softmax saturation). A softmax over 32 units gives
    # p ~ 1/32 each; its Jacobian diag(p) - p p^T is ~(1/32)(I - 11^T/32), so
    # each layer passes back ~1/32 of the gradient (Glorot's W keeps the
    # rest): ~3e-5 from the 4th hidden layer back to the 1st. SGD does not
    # rescale the tiny gradients of the first layers (Adam would).
    "softmax_hidden": Scenario(
        "mlp", digits,
        mlp(64, 4, 32, "softmax", glorot(), _sgd(0.01), classes=10),
        _k(V), hidden(4),
        "4 Dense(32) with softmax as the hidden activation on digits, SGD 0.01",
        classes=10,
    ),
    # ---- exploding: a periodic activation with an init not made for it
    # Source: Sitzmann et al. 2020, "Implicit neural representations with
    # periodic activation functions" (SIREN), Sec. 3.2: the hidden kernels
    # must be U(+-sqrt(6/n)/omega_0) for sin(omega_0 x) to keep its
    # statistics; users porting SIREN to Keras with the default initializer.
    # With Glorot (Var(W) ~ 1/n), each layer multiplies the backward signal
    # by ~omega_0 x rms(cos) ~ 30 x 0.7 ~ 21: ~1e4 from the 4th sine layer
    # back to the 1st. sin bounds the forward signal, so nothing overflows,
    # and Adam at 1e-4 moves the kernels (~0.1 apart) by at most ~0.05.
    "siren_glorot_init": Scenario(
        "coordinate_mlp", image_pixels,
        siren(principled=False, optimizer=_adam(1e-4)),
        _k(E), numbered("sine", 4),
        "SIREN (4 Dense(64, sin(30x))) fitting a 32x32 image from pixel "
        "coordinates, Keras' Glorot kernels, Adam 1e-4",
        epochs=30, batch_size=32,
    ),
    # ---- exploding: graph convolution with the unnormalized adjacency
    # Source: Kipf & Welling 2017, "Semi-supervised classification with
    # graph convolutional networks", Sec. 2.1: repeated application of an
    # operator with eigenvalues above 1 "can lead to numerical instabilities
    # and exploding/vanishing gradients", hence the renormalization
    # D^-1/2 (A + I) D^-1/2; users writing their own GCN layer with the raw
    # adjacency matrix ("GCN loss explodes, forgot to normalize A"). The
    # backward signal of the mean readout lies along A + I's top eigenvector
    # (eigenvalue ~1 + 15p, 5.5 to 11.5 here), so each layer multiplies it by
    # ~5.5-11.5 (Glorot's W keeps the norm; no nonlinearity, as in SGC):
    # >= ~1e3 from the 5th layer back to the 1st. Adam at 1e-4 keeps the
    # forward blow-up (~1e4-1e5 logits) finite.
    "gcn_raw_adjacency": Scenario(
        "graph", random_graphs,
        gcn_raw(5, _adam(1e-4)),
        _k(E), numbered("gcn", 5),
        "5 linear graph convolutions (16) on random 16-node graphs propagating "
        "with the raw A + I, mean readout, Adam 1e-4",
    ),
    # ---- non_finite: the gradient of sqrt at 0
    # Source: TensorFlow issue #12071 "Numerical instability of gradient
    # calculation of tf.norm (nan at 0 ...)" and #4914 "Keeping gradient of
    # sqrt(x) stable for x = 0"; the Keras siamese example and the
    # PyImageSearch siamese tutorial compute sqrt(max(sum_square, epsilon))
    # for this reason, and user code without the floor reports "siamese
    # network loss becomes NaN". When a pair is an image with itself, both
    # embeddings are equal, d(sqrt)/d(sum) = inf meets d(sum)/d(diff) = 0,
    # and the gradient is NaN; ~10 such rows are in the training pairs, so
    # the weights turn NaN within the first epoch.
    "siamese_sqrt_self_pairs": Scenario(
        "siamese", digit_pairs,
        siamese(_adam()),
        _k(N), ("hidden_1", "embedding"),
        "siamese MLP on digit pairs, Euclidean distance as sqrt(sum sq) with no "
        "epsilon, some positive pairs an image with itself, Adam 1e-3",
    ),
    # ---- dead_units: a deep narrow ReLU net born dead
    # Source: Lu, Shin, Su & Karniadakis 2019, "Dying ReLU and
    # initialization: theory and numerical examples" (a deep ReLU net of
    # bounded width is born dead with a probability that tends to 1 with
    # depth; their examples use width 2) and Rister & Rubin 2020. With width
    # 2, from the 2nd layer on, each layer's inputs lie in a cone of the
    # positive quadrant, and both units are off on every sample with
    # probability 1/16 to 1/4 per layer: ~98% of such nets of depth 20 are
    # born dead, and the others mostly die in training. After the dead
    # layer every hidden output is 0 and no hidden weight moves.
    "narrow_deep_born_dead": Scenario(
        "regression", house_prices(unscaled=False),
        tabular_regression(20, 2, _adam()),
        _k(D), hidden(20),
        "20 ReLU layers of width 2 (He), linear output, MSE on standardized "
        "targets, Adam 1e-3",
    ),
    # ---- dead_units: a ReLU output layer for negative targets
    # Source: user reports "Keras regression model predicts only zeros",
    # answered "remove the relu from the last layer, your targets are
    # negative" (log-transformed concentrations or probabilities, returns,
    # temperatures below 0). Every output is >= 0 > target, so the gradient
    # of every sample a unit is on for pushes that unit down, and since the
    # hidden outputs are >= 0, the step lowers its pre-activation for every
    # sample; once it is off for all of them, it gets no gradient and stays
    # off. With SGD's momentum the bias overshoots past the last sample, so
    # the held-out rows are off too. All 4 output units die within the first
    # epoch, and the hidden layers stop with them.
    "relu_output_negative_targets": Scenario(
        "regression", log_concentrations,
        multi_output_regression(4, "relu", _sgd(0.01)),
        _k(D), (*hidden(2), "output"),
        "2 ReLU layers of 32, ReLU output of 4, MSE on 4 negative targets "
        "(log10 concentrations ~-3), SGD 0.01",
    ),
    # ---- stalled: an order-blind model, a label that only the order tells
    # Source: Joulin et al. 2017, "Bag of tricks for efficient text
    # classification" (fastText: averaged word embeddings ignore word order,
    # hence their n-gram features); Iyyer et al. 2015 (deep averaging
    # networks); users: "GlobalAveragePooling1D text model stuck at 50%". The
    # label is which of two keywords comes first, and every sentence is in
    # the data in both orders: the averaged embeddings of both rows are the
    # same, so no weights can bring the training loss below ln 2, where the
    # model starts (its logits are ~1e-2 from Keras' U(+-0.05) embeddings).
    # Adam keeps moving the weights on the mini-batches' noise; the loss
    # stays at ~0.693.
    "bag_of_words_order_label": Scenario(
        "text", keyword_order,
        text(ORDER_LENGTH, "pool", _adam(3e-3)),
        _k(S), ("embedding", "hidden_1"),
        "Embedding + average pooling + Dense(16, ReLU) on 12-token sentences "
        "labelled by the order of two keywords (each in both orders), Adam 3e-3",
    ),
    # ---- healthy: beside siren_glorot_init
    # Source: Sitzmann et al. 2020, Sec. 3.2 and Fig. 4: with
    # U(+-sqrt(6/n)/omega_0) each layer's gain is ~omega_0 x sqrt(n Var W) x
    # rms(cos) ~ 1, and the net fits the image in a few hundred Adam steps
    # at 1e-4. Every kernel's gradient carries the factor omega_0 = 30: a
    # large but stable gradient norm.
    "siren_principled_init": Scenario(
        "coordinate_mlp", image_pixels,
        siren(principled=True, optimizer=_adam(1e-4)),
        HEALTHY, numbered("sine", 4),
        "SIREN (4 Dense(64, sin(30x))) fitting a 32x32 image, SIREN's own "
        "init, Adam 1e-4",
        epochs=30, batch_size=32,
    ),
    # ---- healthy: beside bag_of_words_order_label
    # Source: Goyal et al. 2017, "Accurate, large minibatch SGD" (gradual
    # warmup), Vaswani et al. 2017 (warmup steps), Smith 2017 (the
    # exponential ramp of the learning-rate range test); users: "with
    # warmup the loss does not move for the first epochs". The rate climbs
    # from 1e-7 to 3e-3 over 10 epochs (80 steps): below ~1e-5 for the first
    # ~5 epochs, where Adam's steps move the weights by < 1e-3 in all and the
    # loss sits at ln 2; then the same model learns the token-presence task
    # of text_pool and the loss drops.
    "bag_of_words_warmup": Scenario(
        "text", tokens(ORDER_LENGTH),
        text(ORDER_LENGTH, "pool",
             lambda: keras.optimizers.Adam(ExponentialWarmup(1e-7, 3e-3, 80))),
        HEALTHY, ("embedding", "hidden_1"),
        "Embedding + average pooling + Dense(16, ReLU) on token presence, Adam "
        "with an exponential warmup from 1e-7 to 3e-3 over 10 epochs",
    ),
    # ---- healthy: deep, beside the vanishing families (softmax_hidden)
    # Source: Saxe, McClelland & Ganguli 2014 (orthogonal init, depth-
    # independent learning times) and Pennington, Schoenholz & Ganguli 2017,
    # "Resurrecting the sigmoid in deep learning through dynamical isometry":
    # tanh with orthogonal weights of gain 1 and no bias sits at the edge of
    # chaos. The activations' variance decays only like 1/(2l), the
    # per-layer gain like 1 - 1/l, so the gradient at the 1st of 24 layers
    # is ~0.4 of the 24th's: the net learns, slowly but steadily.
    "tanh_orthogonal_deep": Scenario(
        "mlp", digits,
        mlp(64, 24, 64, "tanh", orthogonal(), _sgd(0.01), classes=10),
        HEALTHY, hidden(24),
        "24 tanh layers of 64 on digits, orthogonal init (gain 1), SGD 0.01",
        classes=10,
    ),
    # ---- healthy: beside narrow_deep_born_dead (same data, depth, optimizer)
    # Source: Lu et al. 2019 and Rister & Rubin 2020 (the probability of a
    # dead layer falls fast with width: 2^-32 per layer of 32 here); Poole
    # et al. 2016 / Schoenholz et al. 2017 (the correlation map of zero-bias
    # ReLU layers drives every pair of inputs towards correlation 1 with
    # depth). In the deepest layers the batch lies in a narrow cone, so a
    # unit is on for every sample or off for every sample: ~20-30% of them
    # are off on the whole batch, yet the net (He init) learns the
    # regression.
    "wide_deep_relu_partly_dead": Scenario(
        "regression", house_prices(unscaled=False),
        tabular_regression(20, 32, _adam()),
        HEALTHY, hidden(20),
        "20 ReLU layers of width 32 (He), linear output, MSE on standardized "
        "targets, Adam 1e-3",
    ),
}  # fmt: skip

assert not set(CONFIRM2) & (set(SCENARIOS) | set(CONFIRM)), "names must be new"
