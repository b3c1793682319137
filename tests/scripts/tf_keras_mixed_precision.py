"""tf_keras under mixed_float16: one epoch with GradWatch; saves the weights.

Usage: ``TF_USE_LEGACY_KERAS=1 python tf_keras_mixed_precision.py LOG_DIR OUT``.
The loss weight is small enough for unscaled float16 gradients to underflow.
Used by tests/test_scaling.py, which computes the float32 reference; its
`build` and `data` are also the Keras 3 model of tests/test_precision_and_xla.py
(in a process without the variable, `tf.keras` is Keras 3).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

keras = tf.keras
# tf_keras applies loss weights in float16: 2**-20 (about 1e-6) is exact there.
LOSS_WEIGHT = 2.0**-20


def data():
    rng = np.random.default_rng(0)
    return (
        rng.normal(size=(64, 8)).astype("float32"),
        rng.normal(size=(64, 1)).astype("float32"),
    )


def build():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="tanh", name="hidden"),
            keras.layers.Dense(1, name="out"),
        ],
        name="net",
    )


def main(log_dir, out):
    from keras_gradwatch import GradWatch

    keras.mixed_precision.set_global_policy("mixed_float16")
    x, y = data()
    model = build()
    model.compile(keras.optimizers.SGD(1e-3), "mse", loss_weights=[LOSS_WEIGHT])
    assert isinstance(model.optimizer, keras.mixed_precision.LossScaleOptimizer)
    model.fit(x, y, epochs=1, verbose=0,
              callbacks=[GradWatch(log_dir, held_out=(x, y))])  # fmt: skip
    np.savez(out, *[w.numpy() for w in model.trainable_weights])


if __name__ == "__main__":
    main(*sys.argv[1:3])
