"""Gradients of a GRU + Conv1D sentiment classifier, seen in TensorBoard.

The model is Embedding -> GRU -> Conv1D -> Conv1D -> GlobalMaxPooling1D ->
Dense -> Dense(sigmoid). It trains on synthetic "reviews" (nothing is
downloaded): sequences of random token ids in which a few "positive" and
"negative" token ids are planted; the label is 1 exactly when the positive
tokens outnumber the negative ones.

`keras_gradwatch.GradWatch` and ``keras.callbacks.TensorBoard`` share one log
directory, so the ``heldout`` gradient histograms and norms of every weight
(embedding, GRU, both conv kernels, dense layers) sit next to the ``train``
and ``validation`` loss curves, and `keras_gradwatch.WeightNorms` adds how
much each weight moved per epoch (``weights`` run). After training the script
prints the global gradient norm of every epoch (from
``history.history["grad_norm"]``) and, for each conv kernel, the last logged
gradient norm, gradient-to-weight ratio and weight change, read back from the
event files: the step the gradient asks for next to the one Adam took.

Run it and open TensorBoard::

    python examples/sentiment_gru_conv.py
    tensorboard --logdir logs/sentiment
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from progress import Progress  # noqa: E402
from tensorboard.backend.event_processing import event_accumulator  # noqa: E402
from tensorboard.util import tensor_util  # noqa: E402

from keras_gradwatch import GradWatch, WeightNorms  # noqa: E402

SENTIMENT_TOKENS = 20
"""Token ids 1..20 are positive, 21..40 negative, the rest neutral (0 unused)."""
CONV_STATS = ("grad_norm", "grad_to_weight")
"""GradWatch scalars printed for each conv kernel at the end."""


def make_data(
    samples: int, vocab: int, length: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Random token sequences with 3, 5, 7 or 9 planted sentiment tokens.

    The label's side gets a strict majority of the planted tokens, so
    ``label == (count(positive) > count(negative))`` holds for every sequence.
    """
    first_neutral = 1 + 2 * SENTIMENT_TOKENS
    if vocab <= first_neutral or length < 9:
        raise ValueError(f"need vocab > {first_neutral} and length >= 9")
    rng = np.random.default_rng(seed)
    x = rng.integers(first_neutral, vocab, size=(samples, length))
    y = rng.integers(0, 2, size=samples)
    planted = rng.choice([3, 5, 7, 9], size=samples)
    majority = rng.integers(planted // 2 + 1, planted + 1)
    slots = rng.random((samples, length)).argsort(axis=1)[:, :9]
    rows = np.arange(samples)
    for j in range(9):
        # Slots [0, majority) hold the label's side, [majority, planted) the other.
        positive = np.where(j < majority, y == 1, y == 0)
        token = 1 + rng.integers(0, SENTIMENT_TOKENS, size=samples)
        token = np.where(positive, token, token + SENTIMENT_TOKENS)
        keep = j < planted
        x[rows[keep], slots[keep, j]] = token[keep]
    return x.astype("int32"), y.astype("float32")


def build_model(vocab: int, length: int) -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input(shape=(length,), dtype="int32"),
            keras.layers.Embedding(vocab, 32, name="embedding"),
            keras.layers.GRU(32, return_sequences=True, name="gru"),
            keras.layers.Conv1D(32, 5, activation="relu", name="conv_1"),
            keras.layers.Conv1D(32, 5, activation="relu", name="conv_2"),
            keras.layers.GlobalMaxPooling1D(name="pool"),
            keras.layers.Dense(32, activation="relu", name="dense"),
            keras.layers.Dense(1, activation="sigmoid", name="output"),
        ],
        name="sentiment",
    )
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return model


def last_values(run_dir: str, tags: list[str]) -> dict[str, float]:
    """The last logged value of each scalar tag, read with TensorBoard's reader.

    Event files of earlier runs in the same directory are read too; TensorBoard
    drops their steps that a later run writes again, so the last event is
    this run's.
    """
    reader = event_accumulator.EventAccumulator(
        run_dir, size_guidance={event_accumulator.TENSORS: 0}
    )
    reader.Reload()
    return {
        tag: float(tensor_util.make_ndarray(reader.Tensors(tag)[-1].tensor_proto))
        for tag in tags
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", default="logs/sentiment")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--vocab", type=int, default=2000)
    parser.add_argument("--length", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    x, y = make_data(args.samples, args.vocab, args.length, args.seed)
    split = int(0.8 * len(x))
    x_train, y_train, x_test, y_test = x[:split], y[:split], x[split:], y[split:]

    model = build_model(args.vocab, args.length)
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
            keras.callbacks.TensorBoard(log_dir=args.logdir),
            GradWatch(log_dir=args.logdir, held_out=(x_test[:256], y_test[:256])),
            WeightNorms(log_dir=args.logdir),
            Progress("sentiment", args.epochs),
        ],
    )
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    grad_norms = [float(g) for g in history.history["grad_norm"]]
    print(f"test accuracy {accuracy:.3f}")
    print("held-out global gradient norm per epoch:")
    for epoch, norm in enumerate(grad_norms):
        print(f"  epoch {epoch}: {norm:.4g}")

    conv_kernels = [model.get_layer(n).kernel.path for n in ("conv_1", "conv_2")]
    last = last_values(
        os.path.join(args.logdir, "heldout"),
        [f"{stat}/{path}" for path in conv_kernels for stat in CONV_STATS],
    )
    moved = last_values(
        os.path.join(args.logdir, "weights"),
        [f"weight_change/{path}" for path in conv_kernels],
    )
    conv = {
        path: {stat: last[f"{stat}/{path}"] for stat in CONV_STATS}
        | {"weight_change": moved[f"weight_change/{path}"]}
        for path in conv_kernels
    }
    for path, stats in conv.items():
        print(
            f"{path}: last gradient norm {stats['grad_norm']:.4g}, "
            f"gradient/weight {stats['grad_to_weight']:.4g}, "
            f"weight change over the epoch {stats['weight_change']:.4g}"
        )
    print(f"tensorboard --logdir {args.logdir}")
    return {"accuracy": float(accuracy), "grad_norm": grad_norms, "conv": conv}


if __name__ == "__main__":
    main()
