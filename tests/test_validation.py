"""Must show 3: bad input fails early, naming the argument and the value."""

import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_gradwatch import GradWatch

X = np.zeros((8, 4), "float32")
Y = np.zeros((8, 1), "float32")


def model(compiled=True):
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    if compiled:
        m.compile("sgd", "mse")
    return m


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"log_dir": None}, TypeError, r"`log_dir` must be a str .* log_dir=None"),
        ({"log_dir": ""}, ValueError, r"`log_dir` must be a non-empty path"),
        ({"freq": 0}, ValueError, r"`freq` must be >= 1. Received: freq=0"),
        ({"freq": 1.5}, TypeError, r"`freq` must be an int. Received: freq=1.5"),
        ({"freq": True}, TypeError, r"`freq` must be an int. Received: freq=True"),
        ({"training": "yes"}, TypeError, r"`training` must be a bool.*'yes'"),
        ({"diagnose": 1}, TypeError, r"`diagnose` must be a bool.*=1"),
        ({"max_samples": 0}, ValueError, r"`max_samples` must be >= 1.*=0"),
        ({"buckets": -3}, ValueError, r"`buckets` must be >= 1.*=-3"),
        ({"run": "a/b"}, ValueError, r"`run` must be .*separators.*'a/b'"),
        ({"held_out": X}, TypeError, r"`held_out` must be a tuple .*ndarray"),
        ({"held_out": (X,)}, ValueError, r"`held_out` must be `\(x, y\)`.*length 1"),
        ({"held_out": (X, Y, Y, Y)}, ValueError, r"length 4"),
        ({"held_out": (None, Y)}, ValueError, r"needs inputs `x`. Received: x=None"),
        ({"held_out": (X[:0], Y[:0])}, ValueError, r"`held_out` is empty"),
        (
            {"held_out": (X, Y[:5])},
            ValueError,
            r"same number of samples.*x: \[8\], y: \[5\]",
        ),
        ({"held_out": (X, 1.0)}, ValueError, r"y must have a batch dimension"),
    ],
)
def test_construction_errors(kwargs, error, message, tmp_path):
    arguments = {"log_dir": tmp_path, "held_out": (X, Y)} | kwargs
    with pytest.raises(error, match=message):
        GradWatch(**arguments)


class EpochCounter(keras.callbacks.Callback):
    epochs = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs += 1


def fit_fails(m, watch, match):
    """fit raises in on_train_begin: before any epoch, weights untouched."""
    counter = EpochCounter()
    before = [w.numpy().copy() for w in m.weights]
    with pytest.raises(ValueError, match=match):
        m.fit(X, Y, epochs=3, verbose=0, callbacks=[watch, counter])
    assert counter.epochs == 0
    for old, new in zip(before, m.weights, strict=True):
        np.testing.assert_array_equal(old, new.numpy())


def test_held_out_shape_not_fitting_the_model(tmp_path):
    watch = GradWatch(tmp_path, held_out=(np.zeros((8, 7)), Y))
    fit_fails(model(), watch, r"could not compute the model.s loss on `held_out`")


def test_held_out_missing_an_input_of_a_multi_input_model(tmp_path):
    a, b = keras.Input((4,), name="a"), keras.Input((4,), name="b")
    m = keras.Model([a, b], keras.layers.Dense(1)(keras.layers.Add()([a, b])))
    m.compile("sgd", "mse")
    watch = GradWatch(tmp_path, held_out=(X, Y))
    with pytest.raises(
        ValueError, match=r"could not compute the model.s loss on `held_out`"
    ):
        m.fit([X, X], Y, epochs=1, verbose=0, callbacks=[watch])


def test_unwritable_log_dir(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    watch = GradWatch(blocker / "logs", held_out=(X, Y))
    fit_fails(model(), watch, r"`log_dir` must be a writable directory.*a_file")


def test_uncompiled_model(tmp_path):
    watch = GradWatch(tmp_path, held_out=(X, Y))
    watch.set_model(model(compiled=False))
    with pytest.raises(ValueError, match=r"The model must be compiled"):
        watch.on_train_begin()


def test_model_without_loss(tmp_path):
    m = model(compiled=False)
    m.compile("sgd")  # an optimizer, no loss
    watch = GradWatch(tmp_path, held_out=(X, Y))
    watch.set_model(m)
    with pytest.raises(
        ValueError,
        match=r"(?s)needs the model's loss, and the model was compiled without "
        r"one: call `model.compile\(optimizer, loss=...\)`.*No loss to compute",
    ):
        watch.on_train_begin()


def test_empty_dataset(tmp_path):
    empty = tf.data.Dataset.from_tensor_slices((X, Y)).take(0).batch(4)
    fit_fails(model(), GradWatch(tmp_path, held_out=empty), r"dataset is empty")


def test_dataset_of_inputs_only(tmp_path):
    inputs_only = tf.data.Dataset.from_tensor_slices(X).batch(4)
    fit_fails(
        model(),
        GradWatch(tmp_path, held_out=inputs_only),
        r"must yield `\(x, y\)`.*EagerTensor",
    )


def test_held_out_strings_fail_before_the_first_epoch(tmp_path):
    strings = np.full((8, 4), "a")
    watch = GradWatch(tmp_path, held_out=(strings, Y))
    fit_fails(
        model(),
        watch,
        r"could not compute the model.s loss on `held_out`: \w+Error: Cast string",
    )


def test_held_out_embedding_ids_out_of_range_fail_before_the_first_epoch(tmp_path):
    m = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Embedding(10, 2),
            keras.layers.Flatten(),
            keras.layers.Dense(1),
        ]
    )
    m.compile("sgd", "mse")
    ids = np.full((8, 4), 50)
    watch = GradWatch(tmp_path, held_out=(ids, Y))
    fit_fails(
        m,
        watch,
        r"`held_out`: InvalidArgumentError: indices\[0,0\] = 50 is not in "
        r"\[0, 10\)\. .*ids below the embedding's input_dim",
    )


def test_unbatched_dataset_gets_the_batch_hint(tmp_path):
    unbatched = tf.data.Dataset.from_tensor_slices((X, Y))
    fit_fails(
        model(),
        GradWatch(tmp_path, held_out=unbatched),
        r"must be a batch: pass `held_out=dataset.batch\(n\)`",
    )


@pytest.mark.filterwarnings("ignore:The model does not have any trainable weights")
def test_model_without_trainable_weights_is_said_once(tmp_path, caplog):
    m = model()
    m.trainable = False
    m.compile("sgd", "mse")
    m.fit(X, Y, epochs=2, verbose=0, callbacks=[GradWatch(tmp_path, held_out=(X, Y))])
    said = [r for r in caplog.records if "no trainable weights" in r.getMessage()]
    assert len(said) == 1


def test_log_dir_deleted_during_fit_is_said_once(tmp_path, caplog):
    logs = tmp_path / "logs"

    def delete(epoch, logs_=None):
        if epoch == 1:
            shutil.rmtree(logs)

    counter = EpochCounter()
    model().fit(
        X,
        Y,
        epochs=4,
        verbose=0,
        callbacks=[
            keras.callbacks.LambdaCallback(on_epoch_begin=delete),
            GradWatch(logs, held_out=(X, Y)),
            counter,
        ],
    )
    assert counter.epochs == 4  # training went on
    said = [r.getMessage() for r in caplog.records if "disappeared" in r.getMessage()]
    assert said == [
        f"GradWatch: the log directory {logs / 'heldout'} disappeared during fit; "
        "the events of epoch 1 and later are lost."
    ]
