"""WeightNorms: is each layer still learning?"""

from __future__ import annotations

import os
from typing import Any

import tensorflow as tf

from keras_gradwatch import _compat, _stats, _summary, _validation, tags
from keras_gradwatch._callback import EpochLogger, logger
from keras_gradwatch._probe import unique_paths


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
    traced once per `fit`. A failure while training is logged and turns the
    callback off for the rest of `fit`; it never stops training.

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
        self._function: Any = None
        self._snapshot: list[tuple[tf.Variable, Any]] = []
        self._snapshot_due = False

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        _validation.keras_model(self.model)
        weights = list(self.model.trainable_weights)
        if not weights:
            logger.warning("WeightNorms: the model has no trainable weights.")
            return
        writer = self._open_writer()
        paths = unique_paths(weights)
        previous = [
            tf.Variable(_compat.read(w), trainable=False, name="previous")
            for w in weights
        ]
        buckets = self.buckets if self.histograms else None
        description = (
            "Trainable weights at the end of the epoch; weight_change is "
            "relative to the previous logged epoch."
        )

        @tf.autograph.experimental.do_not_convert
        def log(step: tf.Tensor) -> tf.Tensor:
            values = [_compat.read(w) for w in weights]
            stats, histograms = _stats.weight_stats(
                values, [p.value() for p in previous], buckets
            )
            with writer.as_default(step=step):
                for row, path in enumerate(paths):
                    if histograms is not None:
                        _summary.histogram(
                            tags.tag(tags.WEIGHT_HISTOGRAM, path),
                            histograms[row],
                            description,
                        )
                    for column, prefix in enumerate(tags.WEIGHT_SCALARS):
                        _summary.scalar(
                            tags.tag(prefix, path), stats[row, column], description
                        )
            with tf.control_dependencies([stats]):
                for p, v in zip(previous, values, strict=True):
                    p.assign(v)
            return stats

        self._snapshot = list(zip(previous, weights, strict=True))
        self._snapshot_due = True
        self._function = tf.function(log)
        self._function.get_concrete_function(tf.TensorSpec([], tf.int64))
        frozen = _validation.frozen_layers(self.model)
        if frozen:
            logger.info(
                "WeightNorms skips frozen layers (trainable=False): %s.",
                ", ".join(frozen),
            )

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._function is None or not self._snapshot_due:
            return
        self._snapshot_due = False
        try:
            for previous, weight in self._snapshot:
                previous.assign(_compat.read(weight))
        except Exception:
            logger.exception(
                "WeightNorms could not take its snapshot and is off for this fit; "
                "training goes on."
            )
            self._close()

    def _log_epoch(self, epoch: int, logs: dict[str, Any] | None) -> None:
        self._function(tf.constant(epoch, tf.int64))

    def _close(self) -> None:
        super()._close()
        self._function = None
        self._snapshot = []
