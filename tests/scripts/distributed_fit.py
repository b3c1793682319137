"""`fit` with GradWatch (per epoch and, in run ``bystep``, per step),
WeightNorms and AutoClip under a tf.distribute strategy.

Usage: ``python distributed_fit.py STRATEGY LOG_DIR OUT``, where STRATEGY is
``single`` (no strategy), ``mirrored`` (two logical CPU devices in this
process) or ``multiworker``
(`MultiWorkerMirroredStrategy`, one CPU per worker; ``TF_CONFIG`` names the
cluster and this worker). Every worker writes the weights before and after
each epoch and its epoch logs to OUT (``.npz``); the log directory is shared.
The model is built with `tf.keras`: Keras 3, or tf_keras where
``TF_USE_LEGACY_KERAS=1`` (Keras 3's own `fit` fails under
MultiWorkerMirroredStrategy, keras-team/keras#20585).
Used by tests/test_distributed.py, which computes the references.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

keras = tf.keras
LEGACY = os.environ.get("TF_USE_LEGACY_KERAS") == "1"

THRESHOLD = 1e-3
EPOCHS = 3
BATCH = 16  # the global batch: one step per epoch


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, 6)).astype("float32")
    y = rng.normal(size=(BATCH, 1)).astype("float32")
    held_out = (
        rng.normal(size=(40, 6)).astype("float32"),
        rng.normal(size=(40, 1)).astype("float32"),
    )
    return x, y, held_out


def build():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(16, activation="relu", name="hidden"),
            keras.layers.Dense(1, name="out"),
        ],
        name="net",
    )


class Spy(keras.callbacks.Callback):
    """Weights as each epoch begins and ends."""

    def __init__(self):
        super().__init__()
        self.begin, self.end = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.begin.append([w.numpy() for w in self.model.trainable_weights])

    def on_epoch_end(self, epoch, logs=None):
        self.end.append([w.numpy() for w in self.model.trainable_weights])


def main(kind, log_dir, out):
    from keras_gradwatch import AutoClip, GradWatch, WeightNorms, _stats

    if kind == "mirrored" and not LEGACY:
        # The statistics' kernels compiled as for a large model on a CPU
        # (once: each process pays XLA's start-up).
        _stats.COMPILE_FROM = 0

    if kind == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    elif kind == "single":
        strategy = tf.distribute.get_strategy()
    else:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    x, y, held_out = data()
    with strategy.scope():
        model = build()
        # tf_keras: AutoClip needs a legacy optimizer (gradient_transformers).
        sgd = keras.optimizers.legacy.SGD if LEGACY else keras.optimizers.SGD
        model.compile(sgd(1.0), "mse")
    spy = Spy()
    history = model.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=EPOCHS,
        shuffle=False,
        verbose=0,
        callbacks=[
            spy,
            GradWatch(log_dir, held_out=held_out),
            GradWatch(log_dir, held_out=held_out, every_n_steps=1, run="bystep"),
            WeightNorms(log_dir),
            AutoClip("fixed", threshold=THRESHOLD, log_dir=log_dir),
        ],
    ).history
    arrays = {"replicas": strategy.num_replicas_in_sync}
    for name, values in history.items():
        arrays[f"logs/{name}"] = np.array(values, np.float64)
    for when, snapshots in (("begin", spy.begin), ("end", spy.end)):
        for epoch, weights in enumerate(snapshots):
            for i, w in enumerate(weights):
                arrays[f"{when}/{epoch}/{i}"] = w
    np.savez(out, **arrays)


if __name__ == "__main__":
    main(*sys.argv[1:4])
