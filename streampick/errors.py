"""Error types raised at streampick's edges.

Every fault a user can cause (a bad micrograph, a bad coordinate file, a bad model file, a bad config value)
becomes one of these, carrying a one-line message that names the file or key and the fault, so that the CLI
and the daemon can report it and go on.  An *incomplete* micrograph (still being written: wait and retry) is
kept apart from a *corrupt* one (report once, never retry).
"""
from __future__ import annotations

from pathlib import Path


class StreampickError(Exception):
    """Base class of every error streampick raises on purpose."""


class MicrographError(StreampickError):
    """A micrograph cannot be used.  ``str(err)`` is one line: ``<path>: <reason>``."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # picklable, so that a worker process can hand it back (executor.py)
        return type(self), (self.path, self.reason)


class IncompleteMicrographError(MicrographError):
    """The file is shorter than its header promises: it may still be being written."""


class CorruptMicrographError(MicrographError):
    """The file is whole but unusable (bad header, bad mode, NaN pixels, constant image, ...)."""


class CoordinateFileError(StreampickError):
    """A coordinate (picks) file cannot be read or written."""


class ModelError(StreampickError):
    """A model file or model name cannot be resolved or loaded."""


class ConfigError(StreampickError):
    """A configuration key or value is invalid; the message names the key."""
