"""Vanishing gradients on the two-circles problem, seen in TensorBoard.

Trains two deep, narrow MLPs (5 hidden Dense layers of 5 units) on
scikit-learn's ``make_circles`` data set (bundled, nothing is downloaded):

* ``tanh_uniform``: tanh activations, weights drawn from uniform(0, 1).
  The saturated tanh units pass almost no gradient back to the first layers,
  and test accuracy stays near chance (about 50%).
* ``relu_he``: ReLU activations with He-uniform initialization. Gradients reach
  every layer and test accuracy climbs to about 85%.

The weights are drawn with NumPy and the batches come in the data's own
(random) order, so that every Keras backend trains the same networks:
``KERAS_BACKEND=jax`` or ``torch`` tells the same story as TensorFlow.

Each model writes one TensorBoard run directory, ``<logdir>/<model>/``, with
the ``train`` and ``validation`` loss curves of ``keras.callbacks.TensorBoard``
next to the ``heldout`` gradients of `keras_gradwatch.GradWatch` and the
``weights`` run of `keras_gradwatch.WeightNorms` (each layer's weight L1 norm
and how much it changed per epoch). Both models use the same layer names, so
their ``grad/...`` histograms and ``grad_norm/...`` curves overlay in
TensorBoard.

Run it and open TensorBoard::

    python examples/two_circles.py
    tensorboard --logdir logs/two_circles
"""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from progress import Progress  # noqa: E402
from sklearn.datasets import make_circles  # noqa: E402
from sklearn.preprocessing import MinMaxScaler  # noqa: E402

from keras_gradwatch import GradWatch, WeightNorms  # noqa: E402

Bounds = Callable[[tuple[int, ...]], tuple[float, float]]


def unit(shape: tuple[int, ...]) -> tuple[float, float]:
    return 0.0, 1.0


def he(shape: tuple[int, ...]) -> tuple[float, float]:
    limit = float(np.sqrt(6.0 / shape[0]))
    return -limit, limit


def glorot(shape: tuple[int, ...]) -> tuple[float, float]:
    limit = float(np.sqrt(6.0 / (shape[0] + shape[-1])))
    return -limit, limit


class Drawn(keras.initializers.Initializer):
    """Uniform weights drawn with NumPy, within `bounds(shape)`: the same on
    every backend (Keras' initializers draw with the backend's generator)."""

    def __init__(self, rng: np.random.Generator, bounds: Bounds) -> None:
        self.rng, self.bounds = rng, bounds

    def __call__(self, shape: Any, dtype: Any = None) -> Any:
        shape = tuple(shape)
        low, high = self.bounds(shape)
        values = self.rng.uniform(low, high, shape).astype("float32")
        return keras.ops.convert_to_tensor(values, dtype=dtype or "float32")


# name: (activation, the hidden kernels' bounds).
MODELS: dict[str, tuple[str, Bounds]] = {
    "tanh_uniform": ("tanh", unit),
    "relu_he": ("relu", he),
}


def load_data(seed: int) -> tuple[np.ndarray, ...]:
    """1000 noisy points on two circles, scaled to [-1, 1], split 500/500."""
    x, y = make_circles(n_samples=1000, noise=0.1, random_state=seed)
    x = MinMaxScaler(feature_range=(-1, 1)).fit_transform(x).astype("float32")
    y = y.astype("float32")
    return x[:500], y[:500], x[500:], y[500:]


def build_model(
    activation: str,
    make_initializer: Callable[[], keras.initializers.Initializer],
    output_initializer: Any = "glorot_uniform",
) -> keras.Model:
    """5 hidden Dense(5) layers and a sigmoid output, compiled with SGD."""
    layers = [keras.Input(shape=(2,))]
    for i in range(1, 6):
        layers.append(
            keras.layers.Dense(
                5,
                activation=activation,
                kernel_initializer=make_initializer(),
                name=f"hidden_{i}",
            )
        )
    layers.append(
        keras.layers.Dense(
            1,
            activation="sigmoid",
            kernel_initializer=output_initializer,
            name="output",
        )
    )
    model = keras.Sequential(layers, name="mlp")
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.01, momentum=0.9),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )
    return model


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", default="logs/two_circles")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--gradwatch-only",
        action="store_true",
        help="GradWatch alone: no TensorBoard callback, no WeightNorms",
    )
    args = parser.parse_args(argv)

    x_train, y_train, x_test, y_test = load_data(args.seed)
    results = {}
    for name, (activation, bounds) in MODELS.items():
        keras.utils.set_random_seed(args.seed)
        rng = np.random.default_rng(args.seed)
        model = build_model(
            activation, functools.partial(Drawn, rng, bounds), Drawn(rng, glorot)
        )
        run_dir = os.path.join(args.logdir, name)
        companions = [] if args.gradwatch_only else [WeightNorms(log_dir=run_dir)]
        tensorboard = (
            [] if args.gradwatch_only else [keras.callbacks.TensorBoard(run_dir)]
        )
        history = model.fit(
            x_train,
            y_train,
            validation_data=(x_test, y_test),
            epochs=args.epochs,
            batch_size=args.batch_size,
            shuffle=False,  # the batches alike on every backend (see above)
            verbose=0,
            # TensorBoard first, or it would copy the held-out logs["grad_norm"]
            # into its `train` run as `epoch_grad_norm`.
            callbacks=[
                *tensorboard,
                GradWatch(log_dir=run_dir, held_out=(x_test[:256], y_test[:256])),
                *companions,
                Progress(name, args.epochs),
            ],
        )
        _, accuracy = model.evaluate(x_test, y_test, verbose=0)
        grad_norm = history.history["grad_norm"][-1]
        results[name] = {"accuracy": float(accuracy), "grad_norm": float(grad_norm)}
        print(
            f"{name:>12}: test accuracy {accuracy:.3f}, "
            f"held-out gradient norm {grad_norm:.4g}"
        )
    print(f"tensorboard --logdir {args.logdir}")
    return results


if __name__ == "__main__":
    main()
