"""Atomic file writes for every output the pipeline leaves for other programs.

RELION, cryoSPARC and the user's own scripts read pick files while the daemon is still writing new ones, so a
reader must see either the old file or the whole new one, never a half-written one.  Each write goes to a
hidden temporary file in the target's directory (``.<name>.<random>.tmp``), is flushed and fsynced, and is
then renamed onto the target with :func:`os.replace`, which is atomic within one file system.  On any error
the temporary file is removed and the old target is left as it was.
"""
from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO

# Keeps ".<name>.<16 hex>.tmp" within the usual 255-byte limit on a file name.
_MAX_NAME_CHARS = 200


def atomic_write_text(path: str | Path, text: str, *, encoding: str = "utf-8") -> None:
    """Replace ``path`` with ``text`` atomically (newlines written as ``\\n``).

    Args:
        path: The target file; missing parent directories are created.
        text: The whole new content.
        encoding: Text encoding.

    Raises:
        OSError: The directory cannot be created or the file cannot be written (the old target, if any,
            is left intact and no temporary file remains).
    """
    with atomic_open(path, "w", encoding=encoding) as stream:
        stream.write(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically.

    Args:
        path: The target file; missing parent directories are created.
        data: The whole new content.

    Raises:
        OSError: As for :func:`atomic_write_text`.
    """
    with atomic_open(path, "wb") as stream:
        stream.write(data)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", *, encoding: str = "utf-8") -> Iterator[IO]:
    """Open a temporary file that replaces ``path`` when the ``with`` block ends without an error.

    The file is created with mode 0o666 minus the process umask, as :func:`open` would create it.

    Args:
        path: The target file; missing parent directories are created.
        mode: ``"w"`` (text, ``\\n`` newlines) or ``"wb"`` (binary).
        encoding: Text encoding (text mode only).

    Yields:
        The open temporary file.

    Raises:
        ValueError: ``mode`` is neither ``"w"`` nor ``"wb"``.
        OSError: As for :func:`atomic_write_text`.  An exception raised inside the ``with`` block
            propagates after the temporary file is removed; the target is then untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open mode must be 'w' or 'wb', got {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    text_args = {"encoding": encoding, "newline": "\n"} if mode == "w" else {}
    fd, tmp = _create_temp(target)
    try:
        stream = os.fdopen(fd, mode, **text_args)
    except BaseException:  # e.g. an unknown encoding: the descriptor is still ours to close
        os.close(fd)
        _remove(tmp)
        raise
    try:
        with stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, target)
    except BaseException:
        _remove(tmp)
        raise


def _create_temp(target: Path) -> tuple[int, Path]:
    """Create a new hidden temporary file beside ``target``; returns its descriptor and path."""
    while True:
        tmp = target.with_name(f".{target.name[:_MAX_NAME_CHARS]}.{secrets.token_hex(8)}.tmp")
        try:
            # os.open rather than tempfile.mkstemp: mkstemp makes 0o600 files, which other users of a shared
            # processing directory (RELION run by a colleague) could not read once renamed onto the target.
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def _remove(tmp: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(tmp)
