"""Gradient histograms, norms, clipping and diagnosis for Keras 3.

The callbacks are imported on first use, so that `keras_gradwatch.diagnosis`
and the ``gradwatch`` command load without Keras.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keras_gradwatch._autoclip import AutoClip
    from keras_gradwatch._grad_watch import GradWatch
    from keras_gradwatch._weight_norms import WeightNorms

__version__ = "0.1.0"

__all__ = ["AutoClip", "GradWatch", "WeightNorms", "__version__"]

_CALLBACKS = {
    "AutoClip": "keras_gradwatch._autoclip",
    "GradWatch": "keras_gradwatch._grad_watch",
    "WeightNorms": "keras_gradwatch._weight_norms",
}


def __getattr__(name: str) -> Any:
    if name not in _CALLBACKS:
        raise AttributeError(f"module 'keras_gradwatch' has no attribute {name!r}")
    try:
        module = importlib.import_module(_CALLBACKS[name])
    except ModuleNotFoundError as error:
        if error.name != "tensorflow":
            raise
        raise ImportError(
            f"{name} imported TensorFlow, which is not installed: set "
            "KERAS_BACKEND to 'jax' or 'torch', on which every callback runs "
            "without it, or pip install 'keras_gradwatch[tensorflow]'."
        ) from error
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_CALLBACKS])
