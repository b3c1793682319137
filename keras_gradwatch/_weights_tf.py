"""WeightNorms' pass on TensorFlow: one `tf.function`, the snapshot laid out."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import tensorflow as tf

from keras_gradwatch import _compat, _stats
from keras_gradwatch._pass import same
from keras_gradwatch._weight_norms import records

logger = logging.getLogger("keras_gradwatch")


class WeightPass:
    """The traced pass over one list of weights, and its snapshot.

    Traced once, and reused by later `fit` calls while the trainable
    variables are the same objects in the same order.
    """

    def __init__(self, weights: list[Any], buckets: int | None) -> None:
        self.weights = weights
        # The snapshot is kept laid out as the statistics read it: comparing
        # with it, and refreshing it, then takes no copy and one assign.
        self._layout = tf.function(self._read_layout)
        self.previous = tf.Variable(self._layout(), trainable=False, name="previous")
        self._buckets = buckets
        self.records = records(weights, buckets)
        self._compiled = _stats.compile_by_default()
        self._function = tf.function(self._run)
        self._function.get_concrete_function()
        if self._compiled and buckets is not None:
            self._compile()

    def _compile(self) -> None:
        """Compiles the histogram kernel now, with a pass over the weights
        as they are (the snapshot, the same weights, stays as it was); where
        XLA cannot, TensorFlow's own ops compute the same numbers."""
        try:
            self._function()
        except tf.errors.OpError:
            logger.debug("WeightNorms: histograms without XLA", exc_info=True)
            self._compiled = False
            self._function = tf.function(self._run)
            self._function.get_concrete_function()

    def matches(self, weights: list[Any]) -> bool:
        return same(weights, self.weights)

    @property
    def tracing_count(self) -> int:
        return int(self._function.experimental_get_tracing_count())

    def snapshot(self) -> None:
        """Makes the weights as they are now the previous ones."""
        self.previous.assign(self._layout())

    @tf.autograph.experimental.do_not_convert
    def _read_layout(self) -> tf.Tensor:
        return _stats.block_layout([_compat.read(w) for w in self.weights])

    def __call__(self) -> tuple[np.ndarray, np.ndarray]:
        stats, histograms = self._function()
        return stats.numpy(), histograms.numpy()

    @tf.autograph.experimental.do_not_convert
    def _run(self) -> tuple[tf.Tensor, tf.Tensor]:
        values = [_compat.read(w) for w in self.weights]
        stats, histograms, layout = _stats.weight_stats_laid_out(
            values, self.previous.value(), self._buckets, compiled=self._compiled
        )
        if histograms is None:
            histograms = tf.zeros([0, 1, 3], tf.float64)
        with tf.control_dependencies([stats, histograms]):
            self.previous.assign(layout)
        return tf.identity(stats), tf.identity(histograms)
