"""The report never joins two trainings' values into one run.

The README's three snippets all write into ``logs/run1``: TensorBoard +
GradWatch, then GradWatch + WeightNorms, then AutoClip. Each is a training
of its own. The report must read each value it uses from the training that
the kept GradWatch session belongs to, and say what it left out.
"""

from __future__ import annotations

import time

import keras
import numpy as np
import pytest

from keras_gradwatch import AutoClip, GradWatch, WeightNorms, _report, tags

EPOCHS = (6, 4)
"""Epochs of the first two snippets: the second's steps overlap the first's."""


def data(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(64, 3)).astype("float32")
    return x, (x.sum(axis=1) > 0).astype("float32")


def model(seed):
    keras.utils.set_random_seed(seed)
    # The same names in every training, as when each is a script of its own.
    m = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4, activation="tanh", name="hidden"),
         keras.layers.Dense(1, activation="sigmoid", name="output")],
        name="net",
    )  # fmt: skip
    m.compile(optimizer=keras.optimizers.SGD(0.05), loss="binary_crossentropy")
    return m


def fit(m, epochs, callbacks):
    """One training; trainings are further apart in time than one round of
    callbacks (`_report.SAME_ROUND_S`), as any real two are."""
    time.sleep(1.2 * _report.SAME_ROUND_S)
    x, y = data(0)
    history = m.fit(x, y, epochs=epochs, batch_size=16, verbose=0, callbacks=callbacks)
    return np.array(history.history["loss"])


@pytest.fixture(scope="module")
def snippets(tmp_path_factory):
    """The three README snippets, in order, into one log directory."""
    root = tmp_path_factory.mktemp("snippets")
    logdir = str(root / "run1")
    held = data(1)
    first = fit(
        model(1),
        EPOCHS[0],
        [keras.callbacks.TensorBoard(logdir), GradWatch(logdir, held_out=held)],
    )
    norms = WeightNorms(logdir)
    second = fit(model(2), EPOCHS[1], [GradWatch(logdir, held_out=held), norms])
    fit(model(3), 3, [AutoClip(log_dir=logdir)])
    return logdir, first, second


def test_readme_snippets_into_one_directory_are_not_spliced(snippets):
    logdir, first, second = snippets
    report = _report.load(logdir)
    (run,) = report.runs
    s = run.series
    # The second training's GradWatch session is the newest: it is kept,
    # over the epochs it logged, and the first one's is left out.
    assert s.epochs.tolist() == list(range(EPOCHS[1]))
    assert any("the newest wins" in note for note in report.notes)
    # Its loss is its own training's, never the first one's epoch_loss.
    assert s.loss_source == "training"
    np.testing.assert_allclose(s.loss, second, rtol=1e-6)
    assert not np.allclose(s.loss, first[: EPOCHS[1]], rtol=1e-3)
    # Its weight changes are those of the WeightNorms of the same training.
    assert s.weight_change is not None
    assert np.isfinite(s.weight_change).all()


def test_other_trainings_values_are_left_out_and_said(tmp_path):
    """WeightNorms ran with the first training only: its weight changes
    must not be joined to the second training's epochs."""
    logdir = str(tmp_path / "run1")
    held = data(1)
    fit(model(1), 3, [GradWatch(logdir, held_out=held), WeightNorms(logdir)])
    fit(model(2), 5, [GradWatch(logdir, held_out=held)])
    report = _report.load(logdir)
    (run,) = report.runs
    assert run.series.epochs.tolist() == list(range(5))
    assert run.series.weight_change is None
    (note,) = [n for n in report.notes if "not joined" in n]
    assert "weight_change in weights at epochs 0-2" in note
    assert "another training wrote them" in note


def test_old_logs_without_own_loss_use_the_same_trainings_epoch_loss(tmp_path):
    """Logs of an older GradWatch (no ``train_loss``): the training loss
    comes from TensorBoard's ``train`` run, and only from the same
    training; the other training's epochs get the held-out loss."""
    logdir = str(tmp_path / "run1")
    held = data(1)
    losses = fit(
        model(1),
        3,
        [keras.callbacks.TensorBoard(logdir), _Old(logdir, held_out=held)],
    )
    fit(model(2), 5, [_Old(logdir, held_out=held)])
    report = _report.load(logdir)
    (run,) = report.runs
    assert run.series.epochs.tolist() == list(range(5))
    assert run.series.loss_source == "held-out"
    assert any("the training loss in train" in n for n in report.notes)
    # The same training alone: its epoch_loss is joined.
    alone = str(tmp_path / "alone")
    losses = fit(
        model(1),
        3,
        [keras.callbacks.TensorBoard(alone), _Old(alone, held_out=held)],
    )
    (run,) = _report.load(alone).runs
    assert run.series.loss_source == "training"
    np.testing.assert_allclose(run.series.loss, losses, rtol=1e-6)


class _Old(GradWatch):
    """GradWatch as it wrote before ``train_loss``: without that tag."""

    def _build_probe(self, batch):
        super()._build_probe(batch)
        records = self._records
        index = records_index(records, tags.TRAIN_LOSS)
        self._records = _Dropping(records, index)


def records_index(records, tag):
    heads = [head for head, _ in records._scalars]
    (index,) = [i for i, head in enumerate(heads) if tag.encode() in head]
    return index


class _Dropping:
    def __init__(self, records, index):
        self.records, self.index = records, index

    def serialize(self, scalars, histograms):
        protos = self.records.serialize(scalars, histograms)
        del protos[len(self.records._histograms) + self.index]
        return protos
