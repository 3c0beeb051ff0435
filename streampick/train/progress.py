"""Machine-readable training progress: ``streampick train --progress json`` writes one JSON object per line.

This is how a program drives training in another process (the daemon's live fine-tuning,
:mod:`streampick.daemon.trainer`): it reads the child's stdout line by line.  Events, each a JSON object
with an ``"event"`` field:

* ``start``: ``train`` and ``test`` (micrograph names), ``total_steps``;
* ``step``: ``done``, ``total``, ``loss`` (at most every :data:`STEP_INTERVAL_S` seconds, and the last);
* ``epoch``: ``epoch`` (0 is the starting model), ``ap`` (held-out particle AP or null), ``loss``, ``seconds``;
* ``warning``: ``message`` (one line: a skipped label file, micrograph or set of picks);
* ``done``: ``output`` (the model file), ``name``, ``version``, ``start_ap``, ``best_ap``, ``best_epoch``.

Failures are not events: the process exits non-zero and its last stderr line says why.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any, TextIO

STEP_INTERVAL_S = 0.5


class JsonProgress:
    """Training callbacks that write JSON lines (the ``--progress json`` counterpart of the progress bar)."""

    def __init__(self, total_steps: int, stream: TextIO | None = None) -> None:
        self.total = total_steps
        self.stream = stream or sys.stdout
        self._last_step = 0.0
        self._lock = threading.Lock()

    def emit(self, event: str, **fields: Any) -> None:
        """Write one event line and flush it."""
        with self._lock:
            self.stream.write(json.dumps({"event": event, **fields}, allow_nan=False, default=str) + "\n")
            self.stream.flush()

    def warning(self, message: str) -> None:
        self.emit("warning", message=" ".join(str(message).split()))

    def __enter__(self) -> "JsonProgress":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def callbacks(self, fold: int):
        """Hooks for :func:`~streampick.train.loop.train` (``fold`` is accepted for the bar's interface)."""
        from .loop import Callbacks

        def step(done: int, loss: float) -> None:
            now = time.monotonic()
            if now - self._last_step >= STEP_INTERVAL_S or done == self.total:
                self._last_step = now
                self.emit("step", fold=fold, done=done, total=self.total, loss=_finite(loss))

        def epoch(record) -> None:
            self.emit("epoch", fold=fold, epoch=record.epoch, ap=_finite(record.ap), loss=_finite(record.loss),
                      seconds=round(record.seconds, 3))

        return Callbacks(step=step, epoch=epoch)


def _finite(value: float | None) -> float | None:
    return None if value is None or value != value or value in (float("inf"), float("-inf")) else float(value)


def exit_when_stdin_closes() -> None:
    """Exit the process (status 3) as soon as stdin reaches end of file: a child of the daemon must not
    outlive it, even when the daemon is killed with ``kill -9`` and cannot stop it."""
    def watch() -> None:
        try:  # the raw descriptor: a buffered sys.stdin's lock would block the interpreter's own exit
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        os._exit(3)

    threading.Thread(target=watch, name="stdin-watch", daemon=True).start()
