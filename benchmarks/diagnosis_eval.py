"""How well the diagnosis rules judge trained models: precision and recall.

Trains small models on scikit-learn's two circles (bundled data, nothing is
downloaded) with `GradWatch`, `WeightNorms` and `keras.callbacks.TensorBoard`,
reads each log directory back with the ``gradwatch report`` reader, and
compares the findings with what each scenario is built to show:

- ``sigmoid_deep``: 10 sigmoid layers of 16, Glorot init; expects ``vanishing``.
- ``tanh_uniform``: the brief's 5 tanh layers of 5, ``RandomUniform(0, 1)``
  init; expects ``vanishing``.
- ``relu_he``: the brief's 5 ReLU layers of 5, He init; expects nothing.
- ``large_init``: 6 linear layers of 32, ``RandomNormal(0, 1)`` init;
  expects ``exploding`` or ``non_finite``.
- ``relu_collapse``: 20 ReLU layers of 8, biases initialized at -1; expects
  ``dead_units``.

All train with SGD(0.01, momentum 0.9) on binary cross-entropy, batch 32.

Counting is per kind: a finding of the expected kind is a true positive, a
finding of any other kind a false positive, an expected kind not found a
false negative (for ``large_init`` either kind counts, once). Precision and
recall are over all scenarios together.

Usage::

    python benchmarks/diagnosis_eval.py [--epochs N] [--logdir DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import make_circles  # noqa: E402
from sklearn.preprocessing import MinMaxScaler  # noqa: E402

from keras_gradwatch import GradWatch, WeightNorms, _report  # noqa: E402


@dataclass(frozen=True)
class Scenario:
    build: Callable[[], keras.Model]
    expected: frozenset[str]
    """Kinds the scenario is built to show; one of them is enough."""


def _mlp(
    layers: int,
    width: int,
    activation: str | None,
    kernel: Callable[[], keras.initializers.Initializer],
    bias: float = 0.0,
    lr: float = 0.01,
) -> Callable[[], keras.Model]:
    def build() -> keras.Model:
        model = keras.Sequential(name="mlp")
        model.add(keras.Input((2,)))
        for i in range(1, layers + 1):
            model.add(
                keras.layers.Dense(
                    width,
                    activation=activation,
                    kernel_initializer=kernel(),
                    bias_initializer=keras.initializers.Constant(bias),
                    name=f"hidden_{i}",
                )
            )
        model.add(keras.layers.Dense(1, activation="sigmoid", name="output"))
        model.compile(keras.optimizers.SGD(lr, momentum=0.9), "binary_crossentropy")
        return model

    return build


SCENARIOS = {
    "sigmoid_deep": Scenario(
        _mlp(10, 16, "sigmoid", keras.initializers.GlorotUniform),
        frozenset({"vanishing"}),
    ),
    "tanh_uniform": Scenario(
        _mlp(5, 5, "tanh", lambda: keras.initializers.RandomUniform(0.0, 1.0)),
        frozenset({"vanishing"}),
    ),
    "relu_he": Scenario(_mlp(5, 5, "relu", keras.initializers.HeUniform), frozenset()),
    "large_init": Scenario(
        _mlp(6, 32, None, lambda: keras.initializers.RandomNormal(0.0, 1.0)),
        frozenset({"exploding", "non_finite"}),
    ),
    "relu_collapse": Scenario(
        _mlp(20, 8, "relu", keras.initializers.HeUniform, bias=-1.0),
        frozenset({"dead_units"}),
    ),
}


def two_circles(seed: int = 1) -> tuple[np.ndarray, ...]:
    x, y = make_circles(n_samples=1000, noise=0.1, random_state=seed)
    x = MinMaxScaler(feature_range=(-1, 1)).fit_transform(x).astype("float32")
    y = y.astype("float32")
    return x[:500], y[:500], x[500:], y[500:]


def run(name: str, logdir: str, epochs: int) -> set[str]:
    """Trains one scenario into ``<logdir>/<name>``; returns its finding kinds."""
    x, y, xt, yt = two_circles()
    keras.utils.set_random_seed(0)
    model = SCENARIOS[name].build()
    run_dir = os.path.join(logdir, name)
    model.fit(
        x, y, epochs=epochs, batch_size=32, verbose=0,
        callbacks=[
            keras.callbacks.TensorBoard(run_dir),
            GradWatch(run_dir, held_out=(xt[:256], yt[:256]), diagnose=False),
            WeightNorms(run_dir),
        ],
    )  # fmt: skip
    (data,) = _report.load(run_dir).runs
    return {finding.kind for finding in data.findings}


def score(found: dict[str, set[str]]) -> dict[str, float]:
    tp = fp = fn = 0
    for name, kinds in found.items():
        expected = SCENARIOS[name].expected
        hit = bool(kinds & expected)
        tp += hit
        fn += bool(expected) and not hit
        fp += len(kinds - expected)
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": tp / (tp + fp) if tp + fp else 1.0,
        "recall": tp / (tp + fn) if tp + fn else 1.0,
    }


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--logdir", help="keep the logs here (default: temporary)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    args = parser.parse_args(argv)
    names = args.scenarios.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        logdir = args.logdir or tmp
        found = {name: run(name, logdir, args.epochs) for name in names}
    print(f"{args.epochs} epochs each.")
    print("| scenario | expected | found |")
    print("|---|---|---|")
    for name, kinds in found.items():
        expected = " or ".join(sorted(SCENARIOS[name].expected)) or "nothing"
        print(f"| {name} | {expected} | {', '.join(sorted(kinds)) or 'nothing'} |")
    result = score(found)
    print(
        f"precision {result['precision']:.2f}, recall {result['recall']:.2f} "
        f"(true positives {result['tp']}, false positives {result['fp']}, "
        f"false negatives {result['fn']})"
    )
    return {"found": found, **result}


if __name__ == "__main__":
    main()
