"""A line of progress every few seconds, shared by the examples.

The examples run from 2 epochs (tests) to 500 (the studies they reproduce):
Keras' own ``verbose`` prints every epoch or nothing, so this callback says
at most every couple of seconds that a run is alive, and where its loss is.
"""

from __future__ import annotations

import time

import keras


class Progress(keras.callbacks.Callback):
    """Prints the epoch and training loss at most every `every` seconds (and
    at the last epoch), so a long run shows it is alive without one line per
    epoch."""

    def __init__(self, name: str, epochs: int, every: float = 2.0) -> None:
        super().__init__()
        self.name, self.epochs, self.every = name, epochs, every
        self._last = 0.0

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._last = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        now = time.monotonic()
        if now - self._last >= self.every or epoch + 1 == self.epochs:
            self._last = now
            loss = (logs or {}).get("loss", float("nan"))
            print(
                f"{self.name}: epoch {epoch + 1}/{self.epochs}, train loss {loss:.4f}",
                flush=True,
            )
