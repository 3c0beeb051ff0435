"""The completeness check: the daemon stage between the watcher and the journal that decides when a file is whole.

The watcher reports paths as they are created, written, closed and renamed into place; a micrograph may be
written in place over many seconds (header first, data appended in chunks), copied, or written to a
temporary name and renamed (the final name then appears whole at once).  :class:`CompletenessTracker`
turns that stream of paths into three kinds of news, returned by :meth:`CompletenessTracker.poll`:

* **ready**: the file is whole (for MRC files: as long as its header promises; for TIFF, PNG and JPEG,
  which promise no size, its end is there: see :func:`~streampick.io.micrograph.micrograph_is_settled_whole`)
  and its size and modification time have not changed for ``settle_seconds``;
* **given up**: the file has stayed not whole for ``give_up_seconds`` since its last change, reported
  once with a one-line reason (a write that keeps progressing, however slowly, is never given up);
* **vanished**: the file is gone (a temporary file renamed away is normal).

Each of these ends the tracking of the file; a later :meth:`~CompletenessTracker.touch` starts it again
(whether that is new work is for the journal to say).  The clock, ``stat`` and the wholeness test are
injected, so that tests drive real files with a fake clock.  The daemon's intake thread calls
:meth:`~CompletenessTracker.touch` for each path taken off the watcher's queue, then
:meth:`~CompletenessTracker.poll`, then waits on the queue for at most
:meth:`~CompletenessTracker.next_check` seconds.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import mrcfile
from mrcfile.utils import dtype_from_mode

from streampick.io import images
from streampick.io.micrograph import micrograph_format, micrograph_is_settled_whole

_MRC_SUFFIXES = frozenset({".mrc", ".mrcs"})
_HEADER_BYTES = 1024
# A file that has settled but is not whole is looked at again this often (at most), in case the events
# that would report its growth were missed; an event brings the next look forward to the next poll.
_RECHECK_SECONDS = 1.0

Signature = tuple[int, int]  # (size in bytes, mtime in ns)


def default_is_whole(path: Path) -> bool:
    """The default wholeness test, for every micrograph format streampick reads.

    Args:
        path: The file to test.

    Returns:
        For MRC (told by the signature, else the suffix): at least as long as its header promises.  For TIFF,
        PNG and JPEG, which promise no size in a header, their end is present (TIFF's data extents within the
        file, PNG's ``IEND`` chunk, JPEG's end-of-image marker); together with the settled size and mtime that
        the tracker requires first.  A file with blank first bytes is not whole; garbage is (reading reports
        it once).
    """
    return micrograph_is_settled_whole(path)


@dataclass
class CompletenessReport:
    """What one :meth:`CompletenessTracker.poll` found; every file listed here is no longer tracked."""

    ready: list[Path] = field(default_factory=list)
    given_up: list[tuple[Path, str]] = field(default_factory=list)  # (path, one-line reason)
    vanished: list[Path] = field(default_factory=list)


@dataclass
class _Tracked:
    """The tracker's memory of one file."""

    changed_at: float  # clock time of the last observed change (of the tracking, before the first look)
    due: float  # clock time at which poll() should next look at the file
    signature: Signature | None = None  # at the last look; None: not looked at since the last touch
    whole: bool | None = None  # is_whole's answer for this signature, once asked


class CompletenessTracker:
    """Decides when each tracked file is whole, has been given up on, or has vanished.

    Thread-safe (one lock; :meth:`poll` holds it while it looks at files), so that a worker that finds a
    queued file incomplete after all may :meth:`touch` it while the intake thread polls.
    """

    def __init__(
        self,
        *,
        settle_seconds: float = 0.5,
        give_up_seconds: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        stat: Callable[[Path], os.stat_result] = os.stat,
        is_whole: Callable[[Path], bool] = default_is_whole,
    ) -> None:
        """Create an empty tracker.

        Args:
            settle_seconds: How long a file's size and mtime must stay unchanged before it is ready.
            give_up_seconds: How long a file may stay not whole after its last change before it is
                given up on; at least ``settle_seconds``.
            clock: Monotonic seconds (injected for tests).
            stat: ``os.stat`` or a stand-in (injected for tests).
            is_whole: Tells whether a file is whole; called at most once per file per poll, and only
                once the file has settled.

        Raises:
            ValueError: ``settle_seconds`` is negative, or ``give_up_seconds`` is below it.
        """
        if not settle_seconds >= 0:
            raise ValueError(f"settle_seconds must be >= 0, got {settle_seconds!r}")
        if not give_up_seconds >= settle_seconds:
            raise ValueError(f"give_up_seconds ({give_up_seconds!r}) must be >= settle_seconds "
                             f"({settle_seconds!r})")
        self._settle = settle_seconds
        self._give_up = give_up_seconds
        self._clock = clock
        self._stat = stat
        self._is_whole = is_whole
        self._tracked: dict[Path, _Tracked] = {}
        self._lock = threading.Lock()

    def touch(self, path: Path) -> None:
        """Start tracking a file, or note that a tracked one has had an event.

        Cheap (no I/O): the file is looked at by the next :meth:`poll`.  For a tracked file, the event
        counts as a change: its settle time starts again from that look.

        Args:
            path: A file reported by the watcher, or found by the start-up scan.
        """
        path = Path(path)
        with self._lock:
            now = self._clock()
            entry = self._tracked.get(path)
            if entry is None:
                self._tracked[path] = _Tracked(changed_at=now, due=now)
            else:
                entry.signature = entry.whole = None
                entry.due = now

    def poll(self) -> CompletenessReport:
        """Look at every tracked file that is due: one ``stat`` each, and ``is_whole`` once it has settled.

        Returns:
            The files that became ready, were given up on (with a one-line reason) or vanished, in the
            order they were first tracked.  All of them stop being tracked.
        """
        report = CompletenessReport()
        with self._lock:
            now = self._clock()
            for path, entry in list(self._tracked.items()):
                if entry.due <= now and self._look(path, entry, now, report):
                    del self._tracked[path]
        return report

    def pending(self) -> int:
        """Count the files being tracked.

        Returns:
            The number of files that are neither ready, given up on nor vanished yet.
        """
        with self._lock:
            return len(self._tracked)

    def next_check(self) -> float | None:
        """Say how long the caller may wait for new paths before calling :meth:`poll` again.

        Returns:
            Seconds until :meth:`poll` has something to look at (0.0 when it has already), or None
            when nothing is tracked.
        """
        with self._lock:
            if not self._tracked:
                return None
            return max(0.0, min(entry.due for entry in self._tracked.values()) - self._clock())

    def _look(self, path: Path, entry: _Tracked, now: float, report: CompletenessReport) -> bool:
        """Update one file's state; True when it goes into the report (and stops being tracked)."""
        try:
            info = self._stat(path)
        except (FileNotFoundError, NotADirectoryError):
            report.vanished.append(path)
            return True
        except OSError as err:
            report.given_up.append((path, f"{path}: cannot stat ({err.strerror or err})"))
            return True
        signature = (info.st_size, info.st_mtime_ns)
        if signature != entry.signature:
            entry.signature, entry.whole, entry.changed_at = signature, None, now
        if now < entry.changed_at + self._settle:
            entry.due = entry.changed_at + self._settle
            return False
        if entry.whole is None:
            entry.whole = bool(self._is_whole(path))
        if entry.whole:
            report.ready.append(path)
            return True
        give_up_at = entry.changed_at + self._give_up
        if now >= give_up_at:
            report.given_up.append((path, _never_whole_reason(path, info.st_size, self._give_up)))
            return True
        entry.due = min(now + max(self._settle, _RECHECK_SECONDS), give_up_at)
        return False


def _never_whole_reason(path: Path, size: int, seconds: float) -> str:
    """One line saying why a file is given up on."""
    after = f"after {seconds:g} s without a change"
    kind = micrograph_format(path)
    if kind != "mrc":
        name = images.FORMAT_NAMES.get(kind, kind)
        return f"{path}: never became a whole {name} ({images.never_whole_reason(path, kind)}; file has {size} " \
               f"bytes) {after}"
    if path.suffix.lower() not in _MRC_SUFFIXES and not _looks_like_mrc(path):
        return f"{path}: never became whole (file has {size} bytes) {after}"
    promised = _promised_size(path)
    if promised is None:
        return f"{path}: never became a whole MRC (no readable MRC header; file has {size} bytes) {after}"
    return f"{path}: never became a whole MRC (header promises {promised} bytes, file has {size}) {after}"


def _looks_like_mrc(path: Path) -> bool:
    try:
        with open(path, "rb") as stream:
            stream.seek(208)
            return stream.read(3) == b"MAP"
    except OSError:
        return False


def _promised_size(path: Path) -> int | None:
    """The file size an MRC header promises, or None when the header cannot be read or makes no sense.

    Read through mrcfile (header only, strict mode, which raises rather than warns); run once per
    given-up file, never in the normal flow.
    """
    try:
        with mrcfile.open(path, header_only=True) as mrc:
            header = mrc.header
            itemsize = dtype_from_mode(header.mode).itemsize
            dims = [int(header.nx), int(header.ny), int(header.nz), int(header.nsymbt)]
    except (OSError, ValueError):
        return None
    if min(dims) < 0:
        return None
    nx, ny, nz, nsymbt = dims
    return _HEADER_BYTES + nsymbt + nx * ny * nz * itemsize
