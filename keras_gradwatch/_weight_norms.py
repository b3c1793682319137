"""WeightNorms: is each layer still learning?"""

from __future__ import annotations

import os
from typing import Any

import keras

from keras_gradwatch import _compat, _summary, _validation, tags
from keras_gradwatch._callback import EpochLogger, logger
from keras_gradwatch._pass import unique_paths


class WeightNorms(EpochLogger):
    """Logs each trainable weight's L1 and L2 norms and how much it moved.

    At the end of every `freq`-th epoch, writes for every trainable weight its
    L1 norm ``weight_l1/<path>``, its L2 norm ``weight_l2/<path>`` and its
    relative change ``weight_change/<path>`` = ‖w − w_prev‖₁ / ‖w‖₁ since the
    previous logged epoch (since the start of the `fit`'s first epoch for
    the first one, so that weights restored in `on_train_begin` by any
    callback count as the start) to ``<log_dir>/<run>``; optionally weight histograms
    ``weight/<path>``. Frozen weights are not logged. Tags, units and edge
    cases are documented in `keras_gradwatch.tags`.

    Next to `GradWatch`, ``grad_to_weight`` times the learning rate is the
    relative step the gradient asks for, and ``weight_change`` the one the
    weights actually took over the logged interval.

    The previous snapshot is one on-device copy of the trainable weights
    (taken when the first epoch of a `fit` begins, refreshed each logged
    epoch): the change
    cannot be recovered from the norms alone, and the optimizer's own state
    does not hold the past weights. Everything runs in one `tf.function`,
    traced once and reused by later `fit` calls while the trainable
    variables stay the same; each `fit` writes its own event file. A failure
    while training is logged and turns the callback off for the rest of
    `fit`; it never stops training.

    Example:

    ```python
    model.fit(x, y, epochs=50,
              callbacks=[GradWatch("logs/run1", held_out=(xv, yv)),
                         WeightNorms("logs/run1")])
    ```

    Args:
        log_dir: Directory of the TensorBoard logs; may be shared with
            `GradWatch` and `keras.callbacks.TensorBoard`.
        freq: Log every `freq` epochs, counting from epoch 0. Defaults to 1.
        histograms: Also write a histogram of every weight. Defaults to False
            (`keras.callbacks.TensorBoard(histogram_freq=1)` writes them too).
        buckets: Number of histogram buckets. Defaults to 30, TensorBoard's.
        run: Name of the run sub-directory. Defaults to ``"weights"``.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: an argument is out of range. `on_train_begin` raises
            ValueError for a model that is not a Keras model or a `log_dir`
            that cannot be written.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike[str],
        *,
        freq: int = 1,
        histograms: bool = False,
        buckets: int = 30,
        run: str = tags.WEIGHTS_RUN,
    ) -> None:
        super().__init__(log_dir, freq=freq, run=run)
        self.histograms = _validation.boolean("histograms", histograms)
        self.buckets = _validation.positive_int("buckets", buckets)
        self._pass: Any = None
        self._snapshot_due = False

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        _validation.keras_model(self.model)
        weights = list(self.model.trainable_weights)
        if not weights:
            logger.warning("WeightNorms: the model has no trainable weights.")
            return
        self._open_writer()
        if self._pass is None or not self._pass.matches(weights):
            self._pass = _new_pass(
                self.model, weights, self.buckets if self.histograms else None
            )
        self._snapshot_due = True
        frozen = _validation.frozen_layers(self.model)
        if frozen:
            logger.info(
                "WeightNorms skips frozen layers (trainable=False): %s.",
                ", ".join(frozen),
            )

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._writer is None or self._pass is None or not self._snapshot_due:
            return
        self._snapshot_due = False
        try:
            self._pass.snapshot()
        except Exception:
            logger.exception(
                "WeightNorms could not take its snapshot and is off for this fit; "
                "training goes on."
            )
            self._close()

    def _log_epoch(self, epoch: int, logs: dict[str, Any] | None) -> None:
        assert self._pass is not None
        assert self._writer is not None
        stats, histograms = self._pass()
        self._writer.write(epoch, self._pass.records.serialize(stats, histograms))


DESCRIPTION = "At the end of the epoch."


def records(weights: list[Any], buckets: int | None) -> _summary.Records:
    """The summaries of one pass over `weights` (histograms unless `buckets`
    is None)."""
    paths = unique_paths(weights)
    histogram_paths = [] if buckets is None else paths
    return _summary.Records(
        scalar_tags=[
            tags.tag(prefix, p) for p in paths for prefix in tags.WEIGHT_SCALARS
        ],
        histogram_tags=[tags.tag(tags.WEIGHT_HISTOGRAM, p) for p in histogram_paths],
        buckets=buckets or 1,
        description=DESCRIPTION,
    )


def _new_pass(model: Any, weights: list[Any], buckets: int | None) -> Any:
    """The pass for the model's backend."""
    if _compat.is_tf_keras(model) or keras.backend.backend() == "tensorflow":
        from keras_gradwatch import _weights_tf

        return _weights_tf.WeightPass(weights, buckets)
    from keras_gradwatch import _probe_ops

    return _probe_ops.WeightPass(weights, buckets)
