"""What the package's logging callbacks share: arguments, writer, failures."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import keras

from keras_gradwatch import _compat, _validation, _writer

logger = logging.getLogger("keras_gradwatch")


class EpochLogger(_compat.LegacyHooks, keras.callbacks.Callback):
    """Writes to ``<log_dir>/<run>`` every `freq`-th epoch, never failing fit.

    Subclasses build their traced function in `on_train_begin` (after
    `_open_writer`) and implement `_log_epoch`. The writer lives from
    `on_train_begin` to `on_train_end`, so one instance serves several `fit`
    calls, each adding an event file to the run. An exception in
    `_log_epoch` is logged and switches the callback off for the rest of that
    `fit`: monitoring must not cost the user their training.
    """

    def __init__(self, log_dir: str | os.PathLike[str], *, freq: int, run: str) -> None:
        super().__init__()
        self.log_dir = _validation.log_dir(log_dir)
        self.freq = _validation.positive_int("freq", freq)
        self.run = _validation.run_name(run)
        self._writer: _writer.Writer | None = None
        self._run_dir: str | None = None
        self._said_gone = False

    def _open_writer(self) -> _writer.Writer:
        self._close()
        writes = _compat.should_write(self.model)
        self._writer = _writer.open_writer(self.log_dir, self.run, writes)
        self._run_dir = os.path.join(self.log_dir, self.run) if writes else None
        self._said_gone = False
        return self._writer

    def _log_epoch(self, epoch: int, logs: dict[str, Any] | None) -> None:
        raise NotImplementedError

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._writer is None or epoch % self.freq:
            return
        self._guarded(lambda: self._log_epoch(epoch, logs), f"epoch {epoch}")

    def _guarded(self, log: Callable[[], None], where: str) -> None:
        """Runs `log`, then checks the directory; a failure turns the
        callback off for the rest of this fit and is logged, not raised."""
        try:
            log()
            self._check_directory(where)
        except Exception:
            logger.exception(
                "%s failed at %s and is off for the rest of this fit; "
                "training goes on.",
                type(self).__name__,
                where,
            )
            self._close()

    def _check_directory(self, where: str) -> None:
        """Says once if the (local) run directory went away during `fit`:
        the events then go to a file no directory holds."""
        if self._run_dir is None or self._said_gone or "://" in self._run_dir:
            return
        if not os.path.isdir(self._run_dir):
            self._said_gone = True
            logger.warning(
                "%s: the log directory %s disappeared during fit; the events "
                "of %s and later are lost.",
                type(self).__name__,
                self._run_dir,
                where,
            )

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._close()

    def _close(self) -> None:
        """Flushes and closes the writer; subclasses drop their function."""
        writer, self._writer = self._writer, None
        _writer.close_writer(writer, type(self).__name__)
