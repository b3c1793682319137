"""Gradient histograms, norms and diagnosis in TensorBoard for Keras 3."""

from keras_gradwatch._grad_watch import GradWatch
from keras_gradwatch._weight_norms import WeightNorms

__version__ = "0.1.0"

__all__ = ["GradWatch", "WeightNorms", "__version__"]
