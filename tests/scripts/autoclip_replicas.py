"""One AutoClip step on 1 or 2 replicas, float32 or mixed_float16; prints JSON.

Run in its own process: the two logical CPU devices must be configured before
TensorFlow starts. Used by tests/test_autoclip_distributed.py.
"""

import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2
)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_gradwatch import AutoClip  # noqa: E402

THRESHOLD = 1e-3
data = np.random.default_rng(0)
X = data.normal(size=(16, 6)).astype("float32")
Y = data.normal(size=(16, 1)).astype("float32")


def build():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(1),
        ]
    )


def reference_norm():
    """Single device, float32: the norm of the whole batch's gradient."""
    model = build()
    model.compile(keras.optimizers.SGD(1.0), "mse")
    with tf.GradientTape() as tape:
        loss = model.compute_loss(x=X, y=Y, y_pred=model(X, training=True))
    grads = tape.gradient(loss, model.trainable_weights)
    return float(np.sqrt(sum(np.sum(g.numpy().astype(np.float64) ** 2) for g in grads)))


def on(replicas):
    """Two replicas on the two logical CPUs, or the default strategy."""
    if replicas == 2:
        return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    return tf.distribute.get_strategy()


def step(replicas, policy, clipping):
    keras.mixed_precision.set_global_policy(policy)
    with on(replicas).scope():
        model = build()
        options = {"global_clipnorm": THRESHOLD} if clipping == "keras" else {}
        model.compile(keras.optimizers.SGD(1.0, **options), "mse")
    before = [w.numpy().astype(np.float64) for w in model.trainable_weights]
    callbacks = (
        [AutoClip("fixed", threshold=THRESHOLD)] if clipping == "autoclip" else []
    )
    history = model.fit(X, Y, batch_size=16, epochs=1, shuffle=False, verbose=0,
                        callbacks=callbacks).history  # fmt: skip
    after = [w.numpy().astype(np.float64) for w in model.trainable_weights]
    keras.mixed_precision.set_global_policy("float32")
    return {
        "replicas": replicas,
        "policy": policy,
        "clipping": clipping,
        "update_norm": float(
            np.sqrt(
                sum(np.sum((b - a) ** 2) for b, a in zip(before, after, strict=True))
            )
        ),
        "measured_norm": history.get("autoclip_max_norm", [None])[0],
        "skipped": history.get("autoclip_skipped_steps", [None])[0],
    }


def every_step():
    """2 replicas, every_n_steps=1: the step scalars, read back."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from helpers import read_run

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = build()
        model.compile(keras.optimizers.SGD(0.1), "mse")
    log_dir = tempfile.mkdtemp()
    history = model.fit(
        X, Y, batch_size=8, epochs=2, shuffle=False, verbose=0,
        callbacks=[AutoClip(log_dir=log_dir, every_n_steps=1)],
    ).history  # fmt: skip
    logged = read_run(Path(log_dir) / "autoclip")
    norms = logged["autoclip/step_grad_norm"]
    return {
        "steps": sorted(norms),
        "norms": [float(norms[s]) for s in sorted(norms)],
        "max_norm": history["autoclip_max_norm"],
    }


def step_bound(replicas, policy):
    """AutoClip() with SGD(1.0), whose steps are far above the step bound:
    each kernel's update in each step (the first ones are held), against
    its weights before it."""
    keras.mixed_precision.set_global_policy(policy)
    with on(replicas).scope():
        model = build()
        model.compile(keras.optimizers.SGD(1.0), "mse")

    class Steps(keras.callbacks.Callback):
        kernels: list = []

        def on_train_batch_begin(self, batch, logs=None):
            self.before = [w.numpy().astype(np.float64) for w in model.weights]

        def on_train_batch_end(self, batch, logs=None):
            after = [w.numpy().astype(np.float64) for w in model.weights]
            self.kernels.append([
                {"weight": float(np.linalg.norm(b)),
                 "update": float(np.linalg.norm(b - a))}
                for b, a in zip(self.before, after, strict=True) if b.ndim >= 2
            ])  # fmt: skip

    steps = Steps()
    model.fit(X, Y, batch_size=4, epochs=1, shuffle=False, verbose=0,
              callbacks=[AutoClip(), steps])  # fmt: skip
    keras.mixed_precision.set_global_policy("float32")
    return {"replicas": replicas, "policy": policy, "steps": steps.kernels}


if __name__ == "__main__":
    results = [
        step(replicas, policy, clipping)
        for replicas, policy, clipping in [
            (2, "float32", "autoclip"),
            (2, "float32", "keras"),
            (1, "mixed_float16", "autoclip"),
            (2, "mixed_float16", "autoclip"),
        ]
    ]
    print(json.dumps({"threshold": THRESHOLD, "reference_norm": reference_norm(),
                      "results": results, "every_step": every_step(),
                      "step_bound": [step_bound(1, "float32"),
                                     step_bound(2, "float32"),
                                     step_bound(2, "mixed_float16")]}))  # fmt: skip
