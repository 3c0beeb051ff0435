"""The watcher: the daemon's first stage, which notices micrograph files landing in the watched folder.

It answers one question, *which paths might be new or changed*, and nothing more.  Whether a file is whole
is :mod:`streampick.daemon.completeness`'s job; whether it is new work is the journal's.

:func:`scan_existing` lists the backlog already present at start-up, oldest first.  :func:`start_observer`
then reports every later change through a callback: watchdog's inotify ``Observer`` by default, or its
``PollingObserver`` for network mounts (NFS, SMB/CIFS), where inotify sees nothing.  watchdog calls every
handler on one dispatcher thread, so the callback must only enqueue the path and return (style.md, habit 5).

File names are matched with :func:`fnmatch.fnmatchcase` against ``patterns``; ``ignore_patterns`` win, so
the temporary names that writers use before renaming into place (rsync's ``.name.XXXXXX``, ``*.tmp``,
``*.part``) are never reported: only the final name is, through the rename's destination.
"""
from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from streampick.errors import ConfigError

logger = logging.getLogger(__name__)

# The only events asked of the OS: with inotify this sets the kernel's mask, so our own reads of the
# micrographs (open, close-without-write) do not wake the dispatcher.
_EVENT_FILTER: list[type[FileSystemEvent]] = [
    FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileMovedEvent,
]


@dataclass(frozen=True)
class WatchSettings:
    """What to watch and how.

    Attributes:
        folder: The folder the microscope writes micrographs into.
        patterns: ``fnmatch`` patterns (case-sensitive) a file NAME must match to be reported.
        ignore_patterns: Names matching any of these are never reported, even if they match ``patterns``.
            ``.*`` covers rsync's ``.name.XXXXXX`` temporary files and hidden temporary names.
        recursive: Also watch (and scan) every subfolder.
        polling: Poll the folder instead of using inotify (for NFS, SMB/CIFS and other network mounts).
        poll_interval: Seconds between two polls when ``polling`` is set.
    """

    folder: Path
    patterns: tuple[str, ...] = ("*.mrc",)
    ignore_patterns: tuple[str, ...] = (".*", "*~", "*.tmp", "*.part", "*.partial")
    recursive: bool = False
    polling: bool = False
    poll_interval: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "folder", Path(self.folder))
        for key in ("patterns", "ignore_patterns"):
            value = getattr(self, key)
            if isinstance(value, str):  # a bare string would be read as one pattern per character
                raise ConfigError(f"watch.{key}: expected a list of patterns, got the string {value!r}")
            object.__setattr__(self, key, tuple(value))
        if not self.patterns:
            raise ConfigError("watch.patterns: at least one pattern is needed (e.g. '*.mrc')")
        if not self.poll_interval > 0:
            raise ConfigError(f"watch.poll_interval: must be a positive number of seconds, "
                              f"got {self.poll_interval!r}")


def matches(path: Path, settings: WatchSettings) -> bool:
    """Tell whether a path's file name is one the daemon should look at.

    Args:
        path: Any path; only its final component (the file name) is tested.
        settings: The patterns to match and to ignore.

    Returns:
        True when the name matches one of ``settings.patterns`` and none of ``settings.ignore_patterns``.
    """
    name = Path(path).name
    if any(fnmatchcase(name, pattern) for pattern in settings.ignore_patterns):
        return False
    return any(fnmatchcase(name, pattern) for pattern in settings.patterns)


def scan_existing(settings: WatchSettings) -> list[Path]:
    """List the matching files already in the folder: the backlog to feed in at start-up.

    Args:
        settings: The folder, patterns and recursion to use.

    Returns:
        The matching regular files (in subfolders too when ``settings.recursive``), oldest modification
        time first, ties broken by file name.  A file that vanishes during the scan is left out.

    Raises:
        ConfigError: ``watch.folder`` does not exist or is not a directory.
    """
    check_folder(settings.folder)
    dated = []
    for path in _listing(settings.folder, settings.recursive):
        if not matches(path, settings):
            continue
        try:
            info = path.stat()
        except OSError:  # vanished (or became unreadable) since it was listed
            continue
        if stat.S_ISREG(info.st_mode):
            dated.append((info.st_mtime_ns, path.name, str(path), path))
    dated.sort(key=lambda item: item[:3])
    return [item[3] for item in dated]


def start_observer(settings: WatchSettings, on_path: Callable[[Path], None]) -> BaseObserver:
    """Start watching the folder, reporting each created, written, closed or renamed-in file.

    Args:
        settings: The folder, patterns, recursion and observer kind.
        on_path: Called with the path of every matching file that was created, modified, closed after
            writing, or moved into place (the move's destination).  It runs on watchdog's dispatcher
            thread, so it must only enqueue the path and return.  The same file is usually reported
            several times (created, modified, closed); deciding when it is whole is the caller's job.

    Returns:
        The started watchdog observer.  Stop it with ``observer.stop(); observer.join()``.

    Raises:
        ConfigError: ``watch.folder`` does not exist or is not a directory, or the OS refuses an inotify
            watch (e.g. the ``fs.inotify.max_user_watches`` limit).
    """
    check_folder(settings.folder)
    observer = PollingObserver(timeout=settings.poll_interval) if settings.polling else Observer()
    observer.schedule(_Handler(settings, on_path), str(settings.folder),
                      recursive=settings.recursive, event_filter=_EVENT_FILTER)
    try:
        observer.start()
    except OSError as err:
        raise ConfigError(
            f"watch.folder: cannot watch {settings.folder} ({err.strerror or err}); raise the "
            "fs.inotify.max_user_watches limit or set watch.polling") from None
    return observer


def check_folder(folder: Path) -> None:
    """Raise :class:`ConfigError` unless ``folder`` is an existing directory.

    Args:
        folder: The folder to be watched.

    Raises:
        ConfigError: With a one-line message naming ``watch.folder``.
    """
    if not folder.exists():
        raise ConfigError(f"watch.folder: {folder} does not exist")
    if not folder.is_dir():
        raise ConfigError(f"watch.folder: {folder} is not a directory")


def _listing(folder: Path, recursive: bool) -> Iterator[Path]:
    """Every non-directory entry of ``folder`` (and of its subfolders when ``recursive``)."""
    for root, _dirs, names in os.walk(folder):
        yield from (Path(root, name) for name in names)
        if not recursive:
            return


class _Handler(FileSystemEventHandler):
    """Turns watchdog events into ``on_path(path)`` calls; does no I/O (it runs on the dispatcher thread)."""

    def __init__(self, settings: WatchSettings, on_path: Callable[[Path], None]) -> None:
        super().__init__()
        self._settings = settings
        self._on_path = on_path

    def on_created(self, event: FileSystemEvent) -> None:
        self._offer(event, event.src_path)

    def on_modified(self, event: FileSystemEvent) -> None:
        self._offer(event, event.src_path)

    def on_closed(self, event: FileSystemEvent) -> None:
        self._offer(event, event.src_path)

    def on_moved(self, event: FileSystemEvent) -> None:
        self._offer(event, event.dest_path)

    def _offer(self, event: FileSystemEvent, raw_path: str | bytes) -> None:
        if event.is_directory or not raw_path:
            return
        path = Path(os.fsdecode(raw_path))
        if not matches(path, self._settings):
            return
        try:
            self._on_path(path)
        except Exception:
            # An exception here would end watchdog's dispatcher thread, and with it every later event:
            # report it and keep watching.
            logger.exception("watcher callback failed for %s", path)
