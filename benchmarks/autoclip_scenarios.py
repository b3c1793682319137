"""The clipping evaluation's scenarios, each with its criterion.

Written, criteria and halves included, before any clipping configuration
was run on them (commit history: this file came first). A scenario is a
training run a user could have: a model, data, an optimizer, and what the
run must reach to count as a success. Its **reference** is the same run
without clipping made careful (clean data, or a careful learning rate), or,
where no careful variant exists (label noise), the run itself without
clipping.

Criteria (fixed here, per scenario; `ref` is the reference's validation
metric on the same seed, `none` the run without clipping):

- regression, a failure scenario: clean-target validation mse
  ``<= ratio * ref + 0.01`` (targets have unit variance, so 0.01 is 1% of
  the variance), finite weights;
- classification, a failure scenario: validation accuracy ``>= ref - 0.03``;
- healthy run: validation accuracy within 0.02 of ``none`` (either way, as
  the issue states it) and, for AutoClip, under 5% of steps clipped;
- label noise (clipping is not expected to help, Menon et al. 2020, "Can
  gradient clipping mitigate label noise?"): accuracy ``>= none - 0.02``.

Halves: ``"design"`` scenarios are the ones any rule is designed on; the
``"heldout"`` ones are run once, with the final rules, and reported as they
come out. Each family of failure has one scenario in each half.

Sources of the scenarios: Pascanu, Mikolov and Bengio 2013 (exploding
gradients of recurrent nets under SGD; the adding problem of Hochreiter and
Schmidhuber 1997); Le, Jaitly and Hinton 2015 (IRNN: ReLU recurrent nets
with identity init, trained with clipping); Goyal et al. 2017 (a large
learning rate without warm-up diverges early); Zhang et al. 2020, "Why are
adaptive methods good for attention models?" and Gorbunov et al. 2020
(heavy-tailed gradient noise, clipping); Menon et al. 2020 (label noise);
the user reports of BRIEF.md (a pipeline glitch hours into a run,
mixed precision, `steps_per_execution`, `tf.data` with `repeat`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

# -- the scenario record ----------------------------------------------------


@dataclass(frozen=True)
class Run:
    """What one training run needs. `optimizer(**clip)` makes the optimizer
    with the configuration's clip arguments (``clipnorm=...`` or none)."""

    model: Callable[[], keras.Model]
    optimizer: Callable[..., keras.optimizers.Optimizer]
    loss: str
    train: Any  # (x, y) arrays, a PyDataset or a tf.data.Dataset
    val: tuple[np.ndarray, np.ndarray]
    fit: dict[str, Any] = field(default_factory=dict)
    compile: dict[str, Any] = field(default_factory=dict)
    policy: str = "float32"  # Keras' dtype policy while the run trains


@dataclass(frozen=True)
class Scenario:
    name: str
    half: str  # "design" or "heldout"
    kind: str  # "failure", "healthy" or "label_noise"
    metric: str  # "mse" (lower is better) or "accuracy"
    source: str
    make: Callable[[int], Run]  # seed -> the run
    reference: Callable[[int], Run] | None = None  # None: the run itself
    ratio: float = 1.25  # regression failures: mse <= ratio * ref + 0.01

    def criterion(self) -> str:
        if self.kind == "healthy":
            return "acc within 0.02 of none; AutoClip clips < 5% of steps"
        if self.kind == "label_noise":
            return "acc >= none - 0.02"
        if self.metric == "mse":
            return f"mse <= {self.ratio:g} x ref + 0.01"
        return "acc >= ref - 0.03"

    def passes(
        self, value: float, ref: float, none: float, clipped: float | None
    ) -> bool:
        if not np.isfinite(value):
            return False
        if self.kind == "healthy":
            ok = abs(value - none) <= 0.02
            return ok and (clipped is None or clipped < 0.05)
        if self.kind == "label_noise":
            return value >= none - 0.02
        if self.metric == "mse":
            return value <= self.ratio * ref + 0.01
        return value >= ref - 0.03


# -- data ---------------------------------------------------------------------


def adding_problem(seed: int, n: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Hochreiter and Schmidhuber's adding problem: a random value and a
    marker channel; the target is the sum of the two marked values, scaled
    to unit variance."""
    rng = np.random.default_rng(seed)
    values = rng.uniform(0, 1, (n, steps))
    markers = np.zeros((n, steps))
    first = rng.integers(0, steps // 2, n)
    second = rng.integers(steps // 2, steps, n)
    markers[np.arange(n), first] = 1.0
    markers[np.arange(n), second] = 1.0
    x = np.stack([values, markers], axis=-1).astype("float32")
    y = (values * markers).sum(axis=1, keepdims=True)
    y = (y - 1.0) / np.sqrt(1.0 / 6.0)  # sum of two U(0, 1): mean 1, var 1/6
    return x, y.astype("float32")


def digits(seed: int) -> tuple[np.ndarray, ...]:
    """scikit-learn's 8x8 digits (shipped with the package), scaled to
    [0, 1], split 1200 / 597 by a seeded permutation."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype("float32")
    y = data.target.astype("int32")
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    return x[:1200], y[:1200], x[1200:], y[1200:]


def regression(
    seed: int, noise: str, n: int = 2048, features: int = 10
) -> tuple[np.ndarray, ...]:
    """A smooth nonlinear target of unit variance plus noise of scale 0.5
    on the training rows only: ``"gauss"``, ``"t1.5"`` (Student-t, 1.5
    degrees of freedom: infinite variance) or ``"cauchy"``. Validation rows
    have clean targets."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(features, 8)) / np.sqrt(features)
    v = rng.normal(size=(8, 1)) / np.sqrt(8)

    def target(x: np.ndarray) -> np.ndarray:
        return np.tanh(x @ w) @ v

    x = rng.normal(size=(n + 1024, features))
    y = target(x)
    y = (y - y.mean()) / y.std()
    if noise == "gauss":
        eps = rng.normal(size=(n, 1))
    elif noise == "t1.5":
        eps = rng.standard_t(1.5, size=(n, 1))
    else:
        eps = rng.standard_cauchy(size=(n, 1))
    train_y = y[:n] + 0.5 * eps
    f = "float32"
    return x[:n].astype(f), train_y.astype(f), x[n:].astype(f), y[n:].astype(f)


class Glitch(keras.utils.PyDataset):
    """Batches of (x, y) in a fixed shuffled order per epoch; at epoch
    `epoch`, batch `batch`, the rows are corrupted by `corrupt` (a
    pipeline glitch hours into a run)."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        batch_size: int,
        seed: int,
        at: tuple[int, int] | None,
        corrupt: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    ) -> None:
        super().__init__()
        self.x, self.y, self.batch_size, self.at = x, y, batch_size, at
        self.corrupt = corrupt
        self.rng = np.random.default_rng(seed)
        self.epoch = 0
        self.order = self.rng.permutation(len(x))

    def __len__(self) -> int:
        return len(self.x) // self.batch_size

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        x, y = self.x[rows], self.y[rows]
        if self.at == (self.epoch, index):
            x, y = self.corrupt(x.copy(), y.copy())
        return x, y

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = self.rng.permutation(len(self.x))


def scale_targets(factor: float, rows: int = 8) -> Callable[..., Any]:
    def corrupt(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        y[:rows] *= factor
        return x, y

    return corrupt


def nan_and_scale(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y[0] = np.nan
    y[1:5] *= 1e4
    return x, y


def scale_inputs(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x[:4] *= 1e3
    return x, y


# -- models -------------------------------------------------------------------


def mlp(inputs: int, widths: list[int], outputs: int, act: str = "relu") -> Any:
    def make() -> keras.Model:
        init = "he_uniform" if act == "relu" else "glorot_uniform"
        layers: list[Any] = [keras.Input((inputs,))]
        layers += [
            keras.layers.Dense(w, activation=act, kernel_initializer=init)
            for w in widths
        ]
        head = "softmax" if outputs > 1 else None
        layers.append(keras.layers.Dense(outputs, activation=head, dtype="float32"))
        return keras.Sequential(layers)

    return make


def flat_digits_mlp() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((8, 8)),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu", kernel_initializer="he_uniform"),
            keras.layers.Dense(64, activation="relu", kernel_initializer="he_uniform"),
            keras.layers.Dense(10, activation="softmax", dtype="float32"),
        ]
    )


def cnn() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((8, 8)),
            keras.layers.Reshape((8, 8, 1)),
            keras.layers.Conv2D(16, 3, activation="relu", padding="same"),
            keras.layers.Conv2D(16, 3, activation="relu", padding="same"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


def rnn(units: int, activation: str, recurrent: str) -> Callable[[], keras.Model]:
    """`recurrent` names the initializer, made when the model is: an
    initializer object made at import would carry a seed drawn then, and
    the runs would differ from one invocation to the next."""

    def make() -> keras.Model:
        return keras.Sequential(
            [
                keras.Input((None, 2)),
                keras.layers.SimpleRNN(
                    units,
                    activation=activation,
                    recurrent_initializer=keras.initializers.get(recurrent),
                ),
                keras.layers.Dense(1),
            ]
        )

    return make


def transformer() -> keras.Model:
    """One encoder block (4 heads, width 32) over 16 tokens of a 20-word
    vocabulary, mean-pooled to a binary head."""
    tokens = keras.Input((16,), dtype="int32")
    h = keras.layers.Embedding(20, 32)(tokens)
    h = h + keras.layers.Embedding(16, 32)(keras.ops.arange(16))
    a = keras.layers.MultiHeadAttention(4, 8)(h, h)
    h = keras.layers.LayerNormalization()(h + a)
    f = keras.layers.Dense(64, activation="relu")(h)
    h = keras.layers.LayerNormalization()(h + keras.layers.Dense(32)(f))
    out = keras.layers.Dense(2, activation="softmax")(
        keras.layers.GlobalAveragePooling1D()(h)
    )
    return keras.Model(tokens, out)


def order_task(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Sequences of 16 tokens holding a 1 and a 2 once each; the label is
    whether the 1 comes first (needs attention across positions)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(3, 20, (n, 16))
    for row in x:
        i, j = rng.choice(16, 2, replace=False)
        row[i], row[j] = 1, 2
    y = (np.argmax(x == 1, axis=1) < np.argmax(x == 2, axis=1)).astype("int32")
    return x.astype("int32"), y


def sgd(lr: float) -> Callable[..., keras.optimizers.Optimizer]:
    return lambda **clip: keras.optimizers.SGD(lr, momentum=0.9, **clip)


def adam(lr: float) -> Callable[..., keras.optimizers.Optimizer]:
    return lambda **clip: keras.optimizers.Adam(lr, **clip)


# -- the scenarios --------------------------------------------------------------

SCE = "sparse_categorical_crossentropy"


def rnn_explode(
    activation: str, recurrent: str, lr: float, careful: float
) -> tuple[Callable[[int], Run], Callable[[int], Run]]:
    def make(seed: int, rate: float = lr) -> Run:
        x, y = adding_problem(seed, 1024 + 512, 20)
        return Run(
            rnn(32, activation, recurrent),
            sgd(rate),
            "mse",
            (x[:1024], y[:1024]),
            (x[1024:], y[1024:]),
            {"epochs": 15, "batch_size": 32},
        )

    return make, lambda seed: make(seed, careful)


def finetune(
    lr: float, careful: float
) -> tuple[Callable[[int], Run], Callable[[int], Run]]:
    """An MLP trained with a careful learning rate on digits 0-4, then
    fine-tuned on all ten digits with a new head at `lr`, no warm-up."""

    def make(seed: int, rate: float = lr) -> Run:
        x, y, vx, vy = digits(seed)

        def model() -> keras.Model:
            base = flat_digits_mlp()
            base.compile(keras.optimizers.SGD(0.01, momentum=0.9), SCE)
            low = y < 5
            base.fit(x[low], y[low], epochs=10, batch_size=32, verbose=0)
            features = keras.Model(base.inputs, base.layers[-2].output)
            head = keras.layers.Dense(10, activation="softmax")
            return keras.Sequential([features, head])

        return Run(model, sgd(rate), SCE, (x, y), (vx, vy),
                   {"epochs": 10, "batch_size": 32})  # fmt: skip

    return make, lambda seed: make(seed, careful)


def nowarmup(
    lr: float, careful: float
) -> tuple[Callable[[int], Run], Callable[[int], Run]]:
    """The CNN from scratch on digits at a learning rate too high for a
    start without warm-up."""

    def make(seed: int, rate: float = lr) -> Run:
        x, y, vx, vy = digits(seed)
        return Run(cnn, sgd(rate), SCE, (x, y), (vx, vy),
                   {"epochs": 10, "batch_size": 32})  # fmt: skip

    return make, lambda seed: make(seed, careful)


def heavy_tail(
    noise: str, widths: list[int]
) -> tuple[Callable[[int], Run], Callable[[int], Run]]:
    def make(seed: int, kind: str = noise) -> Run:
        x, y, vx, vy = regression(seed, kind)
        return Run(mlp(10, widths, 1), sgd(0.01), "mse", (x, y), (vx, vy),
                   {"epochs": 15, "batch_size": 32})  # fmt: skip

    return make, lambda seed: make(seed, "gauss")


def glitch_run(
    seed: int,
    corrupt: Callable[..., Any] | None,
    at: tuple[int, int],
    compile: dict[str, Any] | None = None,
) -> Run:
    x, y, vx, vy = regression(seed, "gauss")
    data = Glitch(x, y, 32, seed, at if corrupt else None, corrupt or scale_targets(1))
    return Run(mlp(10, [64, 64, 64], 1), sgd(0.01), "mse", data, (vx, vy),
               {"epochs": 10}, compile or {})  # fmt: skip


def mixed_glitch(seed: int, clean: bool = False) -> Run:
    x, y, vx, vy = digits(seed)
    data = Glitch(x, y, 32, seed, None if clean else (5, 17), scale_inputs)
    return Run(flat_digits_mlp, sgd(0.01), SCE, data, (vx, vy),
               {"epochs": 10}, policy="mixed_float16")  # fmt: skip


def repeat_run(seed: int, clean: bool = False) -> Run:
    """tf.data with `repeat`: 2048 rows in a fixed order, 4 of them with
    targets x1e3 (a corrupted record met every pass), 64 steps per epoch."""
    import tensorflow as tf

    x, y, vx, vy = regression(seed, "gauss")
    if not clean:
        y = y.copy()
        y[np.random.default_rng(seed).choice(len(y), 4, replace=False)] *= 1e3
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(32).repeat()
    return Run(mlp(10, [64, 64, 64], 1), sgd(0.01), "mse", data, (vx, vy),
               {"epochs": 10, "steps_per_epoch": 64})  # fmt: skip


def label_noise(seed: int, share: float, optimizer: Any) -> Run:
    x, y, vx, vy = digits(seed)
    rng = np.random.default_rng(seed + 1000)
    flip = rng.random(len(y)) < share
    y = np.where(flip, rng.integers(0, 10, len(y)), y).astype("int32")
    return Run(flat_digits_mlp, optimizer, SCE, (x, y), (vx, vy),
               {"epochs": 20, "batch_size": 32})  # fmt: skip


def circles(seed: int) -> Run:
    from sklearn.datasets import make_circles

    x, y = make_circles(1000, noise=0.1, random_state=seed)
    x = (2 * (x - x.min(0)) / (x.max(0) - x.min(0)) - 1).astype("float32")
    y = y.astype("int32")
    return Run(mlp(2, [5, 5, 5, 5, 5], 2), sgd(0.01), SCE, (x[:500], y[:500]),
               (x[500:], y[500:]), {"epochs": 100, "batch_size": 32})  # fmt: skip


def order(seed: int) -> Run:
    x, y = order_task(seed, 2048 + 512)
    return Run(transformer, adam(1e-3), SCE, (x[:2048], y[:2048]),
               (x[2048:], y[2048:]), {"epochs": 10, "batch_size": 32})  # fmt: skip


def digits_run(
    model: Callable[[], keras.Model], optimizer: Any
) -> Callable[[int], Run]:
    def make(seed: int) -> Run:
        x, y, vx, vy = digits(seed)
        return Run(model, optimizer, SCE, (x, y), (vx, vy),
                   {"epochs": 15, "batch_size": 32})  # fmt: skip

    return make


def _scenarios() -> list[Scenario]:
    # Orthogonal's gain is 1 by default.
    rnn_a = rnn_explode("tanh", "orthogonal", 0.1, 0.01)
    rnn_b = rnn_explode("relu", "identity", 0.05, 0.005)
    tune_a = finetune(0.5, 0.01)
    warm_b = nowarmup(0.5, 0.02)
    tail_a = heavy_tail("t1.5", [64, 64])
    tail_b = heavy_tail("cauchy", [32, 32, 32])
    late = (8, 20)
    return [
        # design half
        Scenario("rnn_tanh_sgd_explodes", "design", "failure", "mse",
                 "Pascanu et al. 2013; adding problem", *rnn_a),
        Scenario("finetune_lr_too_high", "design", "failure", "accuracy",
                 "fine-tuning without warm-up, Goyal et al. 2017", *tune_a),
        Scenario("heavy_tail_t15_sgd", "design", "failure", "mse",
                 "Zhang et al. 2020; Gorbunov et al. 2020", *tail_a, ratio=1.5),
        Scenario("late_glitch", "design", "failure", "mse",
                 "BRIEF user 4: a glitch hours into a run",
                 lambda s: glitch_run(s, scale_targets(1e4), late),
                 lambda s: glitch_run(s, None, late)),
        Scenario("mixed_precision_glitch", "design", "failure", "accuracy",
                 "mixed_float16, inputs x1e3 in one batch", mixed_glitch,
                 lambda s: mixed_glitch(s, clean=True)),
        Scenario("label_noise_30_sgd", "design", "label_noise", "accuracy",
                 "Menon et al. 2020",
                 lambda s: label_noise(s, 0.3, sgd(0.01))),
        Scenario("healthy_digits_adam", "design", "healthy", "accuracy",
                 "an Adam classifier", digits_run(flat_digits_mlp, adam(1e-3))),
        Scenario("healthy_cnn_sgd", "design", "healthy", "accuracy",
                 "a CNN with SGD", digits_run(cnn, sgd(0.02))),
        # held-out half
        Scenario("irnn_relu_sgd_explodes", "heldout", "failure", "mse",
                 "Le, Jaitly and Hinton 2015 (IRNN)", *rnn_b),
        Scenario("nowarmup_cnn_lr_too_high", "heldout", "failure", "accuracy",
                 "Goyal et al. 2017", *warm_b),
        Scenario("heavy_tail_cauchy_sgd", "heldout", "failure", "mse",
                 "Zhang et al. 2020; Gorbunov et al. 2020", *tail_b, ratio=1.5),
        Scenario("steps_per_execution_glitch", "heldout", "failure", "mse",
                 "NaN and x1e4 rows, steps_per_execution=8",
                 lambda s: glitch_run(s, nan_and_scale, late,
                                      {"steps_per_execution": 8}),
                 lambda s: glitch_run(s, None, late, {"steps_per_execution": 8})),
        Scenario("tf_data_repeat_corrupt", "heldout", "failure", "mse",
                 "tf.data repeat, a corrupted record every pass", repeat_run,
                 lambda s: repeat_run(s, clean=True)),
        Scenario("label_noise_40_adam", "heldout", "label_noise", "accuracy",
                 "Menon et al. 2020",
                 lambda s: label_noise(s, 0.4, adam(1e-3))),
        Scenario("healthy_circles_sgd", "heldout", "healthy", "accuracy",
                 "an SGD classifier (BRIEF user 2, ReLU/He)", circles),
        Scenario("healthy_transformer_adam", "heldout", "healthy", "accuracy",
                 "a small transformer with Adam", order),
    ]  # fmt: skip


SCENARIOS = {s.name: s for s in _scenarios()}
