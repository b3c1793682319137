"""Timing helpers shared by the benchmarks.

Standard library only: `setup_cost.py` times in child processes and keeps
TensorFlow out of the parent, which imports this module too.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any


def timed(fn: Callable[[], Any]) -> float:
    """Seconds `fn()` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


STALL_S = 1.0
"""Seconds between the last `on_train_end` and `fit` returning that count
as a stall: on our 2-core machine `fit` sometimes returns ~7 s late, with
or without callbacks."""


def timed_fit(
    fit: Callable[[list[Any]], Any], callbacks: list[Any]
) -> tuple[float, bool]:
    """Seconds from calling ``fit(callbacks + [clock])`` to the end of the
    last callback's `on_train_end`, and whether `fit` returned a stall later.

    Keras is imported here, when called, so that importing this module
    stays free of it.
    """
    import keras

    class Clock(keras.callbacks.Callback):
        end = 0.0

        def on_train_end(self, logs: Any = None) -> None:
            self.end = time.perf_counter()

    clock = Clock()
    start = time.perf_counter()
    fit([*callbacks, clock])
    return clock.end - start, time.perf_counter() - clock.end > STALL_S


def median(values: list[float]) -> float:
    """The median, or NaN for no values (a 1-epoch fit has no later epoch)."""
    return statistics.median(values) if values else float("nan")


def paired_ratios(
    numerators: Iterable[float], denominators: Iterable[float]
) -> list[float]:
    """`a / b` for each pair measured in the same round.

    A round's figures share the load of the moment, so their ratio is less
    noisy than a ratio of medians taken over all rounds.
    """
    return [a / b for a, b in zip(numerators, denominators, strict=True)]


def interleaved(
    calls: dict[str, Callable[[int], Any]], repeats: int
) -> dict[str, list[float]]:
    """Times each call in turn, `repeats` times: ``{name: [seconds]}``.

    Each call gets the repeat's index. Taking them in turn, rather than one
    after the other, lets load from elsewhere hit all of them alike.
    """
    times: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(repeats):
        for name, call in calls.items():
            times[name].append(timed(functools.partial(call, i)))
    return times


def time_hooks(callback: Any, names: Iterable[str]) -> dict[str, list[float]]:
    """Times the listed hooks of `callback`, wherever they are called from.

    Instance attributes shadow the class methods, so `fit`'s CallbackList
    calls the wrappers. Returns ``{hook: [seconds per call]}``, filled as the
    hooks run.
    """
    record: dict[str, list[float]] = {}
    for name in names:
        method = getattr(callback, name)
        record[name] = []

        @functools.wraps(method)
        def wrapper(
            *args: Any, _method: Any = method, _times: Any = record[name], **kwargs: Any
        ) -> Any:
            start = time.perf_counter()
            try:
                return _method(*args, **kwargs)
            finally:
                _times.append(time.perf_counter() - start)

        setattr(callback, name, wrapper)
    return record
