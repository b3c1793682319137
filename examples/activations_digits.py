"""Sigmoid, ReLU and leaky ReLU side by side: gradients of a deep narrow net.

Trains the same 6-hidden-layer, 10-unit-wide MLP three times on scikit-learn's
bundled ``load_digits`` images (8x8 handwritten digits; nothing is
downloaded), once per hidden activation: ``sigmoid``, ``relu`` and
``leaky_relu``. Each training writes one TensorBoard run directory,
``<logdir>/<activation>/``, holding the ``train`` and ``validation`` curves of
``keras.callbacks.TensorBoard`` and the ``heldout`` gradients of
`keras_gradwatch.GradWatch`. The three networks share layer names, so
TensorBoard overlays their ``grad_norm/mlp/hidden_1/kernel`` curves (how much
gradient reaches the first layer) and shows their ``grad/...`` histograms
side by side; ``grad_dead_units/...`` shows ReLU units that stopped learning.

Run it and open TensorBoard::

    python examples/activations_digits.py
    tensorboard --logdir logs/activations
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from progress import Progress  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from keras_gradwatch import GradWatch  # noqa: E402

ACTIVATIONS = ("sigmoid", "relu", "leaky_relu")


def load_data(seed: int) -> list[np.ndarray]:
    """The 1797 digit images as 64 features in [0, 1]; 75% train, 25% test."""
    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target.astype("int32")
    return train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)


def build_model(activation: str, learning_rate: float) -> keras.Model:
    """6 hidden Dense(10) layers and a softmax output, compiled with Adam."""
    layers = [keras.Input(shape=(64,))]
    for i in range(1, 7):
        layers.append(keras.layers.Dense(10, activation=activation, name=f"hidden_{i}"))
    layers.append(keras.layers.Dense(10, activation="softmax", name="output"))
    model = keras.Sequential(layers, name="mlp")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", default="logs/activations")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    x_train, x_test, y_train, y_test = load_data(args.seed)
    results = {}
    for activation in ACTIVATIONS:
        keras.utils.set_random_seed(args.seed)
        model = build_model(activation, args.learning_rate)
        run_dir = os.path.join(args.logdir, activation)
        history = model.fit(
            x_train,
            y_train,
            validation_data=(x_test, y_test),
            epochs=args.epochs,
            batch_size=args.batch_size,
            verbose=0,
            # TensorBoard first, or it would copy the held-out logs["grad_norm"]
            # into its `train` run as `epoch_grad_norm`.
            callbacks=[
                keras.callbacks.TensorBoard(log_dir=run_dir),
                GradWatch(log_dir=run_dir, held_out=(x_test[:256], y_test[:256])),
                Progress(activation, args.epochs),
            ],
        )
        _, accuracy = model.evaluate(x_test, y_test, verbose=0)
        grad_norm = history.history["grad_norm"][-1]
        results[activation] = {
            "accuracy": float(accuracy),
            "grad_norm": float(grad_norm),
        }
        print(
            f"{activation:>10}: test accuracy {accuracy:.3f}, "
            f"held-out gradient norm {grad_norm:.4g}"
        )
    print(f"tensorboard --logdir {args.logdir}")
    return results


if __name__ == "__main__":
    main()
