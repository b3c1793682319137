"""Spikes in a series of gradient norms, in NumPy only.

Meant for AutoClip's ``autoclip/step_grad_norm`` (see `keras_gradwatch.tags`)
as read from event files, or any per-step norm series: no TensorFlow, no
Keras.

Rule
    A point is a spike when its norm is more than `z` robust standard
    deviations above the median of the `window` finite norms before it:
    ``norm > median + z * scale``, with ``scale = 1.4826 * MAD`` (the median
    absolute deviation, scaled to estimate a normal's standard deviation)
    but at least `floor` times the median, so that a flat series does not
    make every wobble a spike. A point needs `min_points` finite norms
    before it to be judged. Median and MAD rather than mean and standard
    deviation: the spikes themselves would inflate the latter and hide the
    next ones (Leys et al., 2013). Non-finite norms are never spikes (they
    are counted as skipped steps) and do not enter the windows.

References:
    Hampel, "The influence curve and its role in robust estimation", JASA
    1974 (the MAD scaled by 1.4826). Leys, Ley, Klein, Bernard and Licata,
    "Detecting outliers: Do not use standard deviation around the mean, use
    absolute deviation around the median", J. Exp. Soc. Psychol. 2013.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["find_spikes"]

MAD_TO_STD = 1.4826


def find_spikes(
    steps: Sequence[int] | np.ndarray,
    norms: Sequence[float] | np.ndarray,
    *,
    window: int = 50,
    z: float = 6.0,
    floor: float = 0.1,
    min_points: int = 5,
) -> np.ndarray:
    """Returns the steps whose norm spikes above the ones before it.

    Example:

    ```python
    find_spikes([0, 1, 2, 3, 4, 5, 6], [1.0, 1.1, 0.9, 1.0, 1.05, 40.0, 1.0])
    # array([5])
    ```

    Args:
        steps: The step of each norm (any order; sorted here).
        norms: The norms, as many as `steps`.
        window: How many finite norms before a point it is compared with.
            Defaults to 50.
        z: How many robust standard deviations above the median make a
            spike. Defaults to 6.
        floor: The smallest scale, as a fraction of the median. Defaults to
            0.1.
        min_points: Finite norms a point needs before it to be judged.
            Defaults to 5.

    Returns:
        The spiking steps, ascending, as an int64 array (empty if none).

    Raises:
        ValueError: `steps` and `norms` differ in length, or an option is out
            of range.
    """
    steps = np.asarray(steps, dtype=np.int64).ravel()
    norms = np.asarray(norms, dtype=np.float64).ravel()
    if steps.shape != norms.shape:
        raise ValueError(
            "`steps` and `norms` must have the same length. Received: "
            f"{steps.size} steps and {norms.size} norms"
        )
    if not (isinstance(window, int) and window >= 1):
        raise ValueError(f"`window` must be an int >= 1. Received: window={window!r}")
    if not (isinstance(min_points, int) and 1 <= min_points <= window):
        raise ValueError(
            "`min_points` must be an int in [1, window]. Received: "
            f"min_points={min_points!r} with window={window}"
        )
    if not z > 0 or not floor >= 0:
        raise ValueError(f"`z` must be > 0 and `floor` >= 0. Received: z={z}, "
                         f"floor={floor}")  # fmt: skip
    order = np.argsort(steps, kind="stable")
    steps, norms = steps[order], norms[order]
    keep = np.isfinite(norms)
    at, _ = spike_positions(norms[keep], window, z, floor, min_points)
    return steps[keep][at]


_CHUNK = 8192
"""Points judged per vectorized block: ``_CHUNK * window`` floats at a time."""


def spike_positions(
    norms: np.ndarray, window: int, z: float, floor: float, min_points: int
) -> tuple[np.ndarray, np.ndarray]:
    """The rule of this module over finite `norms` in step order.

    Returns:
        The positions of the spikes, ascending (int64), and for each the
        median of the norms before it that it was judged against.
    """
    norms = np.asarray(norms, dtype=np.float64)
    positions, medians = [], []

    def judge(start: int, before: np.ndarray) -> None:
        # before: [points, window] rows of the norms before each point.
        middle = np.median(before, axis=1)
        spread = np.median(np.abs(before - middle[:, None]), axis=1)
        scale = np.maximum(MAD_TO_STD * spread, floor * middle)
        here = norms[start : start + len(before)]
        hit = np.flatnonzero(here > middle + z * scale)
        positions.append(start + hit)
        medians.append(middle[hit])

    # Points with fewer than `window` norms before them, one by one.
    for i in range(min_points, min(window, norms.size)):
        judge(i, norms[None, :i])
    # The rest in blocks of sliding windows: one NumPy pass per block instead
    # of one per point (a run logged every step has hundreds of thousands).
    if norms.size > window:
        rows = np.lib.stride_tricks.sliding_window_view(norms[:-1], window)
        for start in range(0, len(rows), _CHUNK):
            judge(window + start, rows[start : start + _CHUNK])
    if not positions:
        return np.zeros(0, np.int64), np.zeros(0)
    return (
        np.concatenate(positions).astype(np.int64),
        np.concatenate(medians).astype(np.float64),
    )
