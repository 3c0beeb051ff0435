"""A simulated microscope: writes micrographs into a folder on a fixed schedule, the way real ones arrive.

For the demo, the benchmarks and the daemon's tests.  :func:`run_microscope` writes ``mic_00000.mrc``,
``mic_00001.mrc``, … one every ``interval_s`` seconds (slot ``i`` starts ``i · interval_s`` after the
first, so a slow write does not shift the rate), each one rendered by
:func:`streampick.simulate.simulate_micrograph` *before* its slot so that rendering never delays a write.
Files arrive the three ways a watcher meets in practice, in turn:

* ``in-place``: the header (with the final dimensions) is written first, then the data in 8 chunks over
  ``slow_write_s`` seconds, flushed after each, as a detector or a network copy writes: for a while the
  file exists and is shorter than its header promises.
* ``temp-rename``: the same slow write into a hidden ``.mic_00000.mrc.XXXXXX`` (rsync's temporary name)
  in the same folder, then :func:`os.rename` onto the final name: the final name appears whole.
* ``copy``: :func:`shutil.copyfile` of a file rendered in a private temporary folder (fast, but not
  atomic).

Each file's header label records the write mode (``streampick microscope <mode>``).  The ground truth
(particle centres, RELION STAR) goes to ``truth_dir``, never into the watched folder.

Example::

    stop = threading.Event()
    thread = threading.Thread(target=run_microscope, args=(Path("session"), 20),
                              kwargs={"interval_s": 5.0, "truth_dir": Path("truth"), "stop": stop})
"""
from __future__ import annotations

import os
import secrets
import shutil
import string
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

WRITE_MODES = ("in-place", "temp-rename", "copy")
_CHUNKS = 8
_TEMP_ALPHABET = string.ascii_letters + string.digits


def run_microscope(out_dir: Path, n: int, *, interval_s: float = 5.0, size: int = 4096,
                   pixel_size: float = 1.0, seed: int = 0, write_modes: Sequence[str] = WRITE_MODES,
                   slow_write_s: float = 2.0,
                   particle_diameter_a: float = 150.0, truth_dir: Path | None = None,
                   stop: threading.Event | None = None,
                   on_written: Callable[[Path, float], None] | None = None) -> list[Path]:
    """Write ``n`` simulated micrographs into ``out_dir``, one every ``interval_s`` seconds.

    Args:
        out_dir: The watched folder (created).  Only the micrographs (and, briefly, the hidden temporary
            files of ``temp-rename``) are written there.
        n: Number of micrographs.
        interval_s: Seconds between the starts of two writes.  A write that takes longer than this (render
            plus ``slow_write_s``) makes the next one late; the schedule then catches up.
        size: Edge of the square micrographs in pixels (float32; a 4096² file is 64 MiB).
        pixel_size: Å per pixel, written in the header.
        seed: Random seed; micrograph ``i`` depends only on ``seed`` and ``i``.
        write_modes: Modes used in turn (see the module docstring).
        slow_write_s: Duration of an ``in-place`` or ``temp-rename`` write.
        particle_diameter_a: Particle diameter, Å.
        truth_dir: Folder for ``<stem>.star`` ground-truth files (written after each micrograph); None
            writes none.
        stop: Set it to stop early: a write in progress is finished at once (no half file is left), and
            nothing more is written.
        on_written: Called as ``on_written(path, t_complete)`` once the file is whole at its final name;
            ``t_complete`` is ``time.time()`` then.  Runs on the caller's thread: keep it short.

    Returns:
        The paths written, in order.

    Raises:
        ValueError: ``n``, ``interval_s``, ``slow_write_s`` negative, ``size`` < 16, or an unknown or
            empty ``write_modes``.
    """
    _check(n, interval_s, slow_write_s, size, write_modes)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stop = stop if stop is not None else threading.Event()
    seeds = np.random.SeedSequence(seed).spawn(n)
    written: list[Path] = []
    start = None
    with tempfile.TemporaryDirectory(prefix="streampick-microscope-") as private:
        for i, micrograph_seed in enumerate(seeds):
            mode = write_modes[i % len(write_modes)]
            path = out_dir / f"mic_{i:05d}.mrc"
            staged = Path(private) / path.name
            truth = _render(staged, micrograph_seed, size, pixel_size, particle_diameter_a, mode)
            start = time.monotonic() if start is None else start
            if stop.wait(max(0.0, start + i * interval_s - time.monotonic())):
                break
            _WRITERS[mode](staged, path, slow_write_s, stop)
            t_complete = time.time()
            staged.unlink()
            written.append(path)
            if truth_dir is not None:
                _write_truth(Path(truth_dir) / f"{path.stem}.star", truth)
            if on_written is not None:
                on_written(path, t_complete)
    return written


def _check(n: int, interval_s: float, slow_write_s: float, size: int, write_modes: Sequence[str]) -> None:
    if n < 0 or interval_s < 0 or slow_write_s < 0:
        raise ValueError("n, interval_s and slow_write_s must be >= 0")
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    unknown = [mode for mode in write_modes if mode not in WRITE_MODES]
    if not write_modes or unknown:
        raise ValueError(f"write_modes must be a non-empty sequence of {', '.join(WRITE_MODES)}; "
                         f"got {list(write_modes)}")


def _render(path: Path, seed: np.random.SeedSequence, size: int, pixel_size: float, diameter_a: float,
            mode: str) -> np.ndarray:
    """Simulate one micrograph into ``path`` (float32 MRC, voxel size set); return its truth (N, 2) x, y."""
    import mrcfile

    from .simulate import simulate_micrograph

    image, truth = simulate_micrograph(np.random.default_rng(seed), (size, size), pixel_size, diameter_a)
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.asarray(image, dtype=np.float32))
        mrc.voxel_size = pixel_size
        mrc.header.label[0] = f"streampick microscope {mode}".encode()
        mrc.header.nlabl = 1
    return np.asarray(truth, dtype=np.float64).reshape(-1, 2)


def _write_truth(path: Path, truth: np.ndarray) -> None:
    from .io.coords import write_star
    from .picks import Picks

    write_star(path, Picks.from_arrays(truth[:, 0], truth[:, 1]))


def _slow_copy(source: Path, target: Path, duration: float, stop: threading.Event) -> None:
    """Write ``source``'s header, then its data in chunks, flushing and waiting ``duration / 8`` between."""
    import mrcfile

    with mrcfile.open(source, header_only=True) as mrc:
        data_offset = 1024 + int(mrc.header.nsymbt)
    raw = source.read_bytes()
    bounds = np.linspace(data_offset, len(raw), _CHUNKS + 1).astype(int)
    with open(target, "wb") as stream:
        stream.write(raw[:data_offset])
        stream.flush()
        for begin, end in zip(bounds[:-1], bounds[1:]):
            stop.wait(duration / _CHUNKS)  # returns at once when stopping: finish the file, fast
            stream.write(raw[begin:end])
            stream.flush()


def _write_in_place(staged: Path, path: Path, duration: float, stop: threading.Event) -> None:
    _slow_copy(staged, path, duration, stop)


def _write_temp_rename(staged: Path, path: Path, duration: float, stop: threading.Event) -> None:
    suffix = "".join(secrets.choice(_TEMP_ALPHABET) for _ in range(6))
    temp = path.with_name(f".{path.name}.{suffix}")
    try:
        _slow_copy(staged, temp, duration, stop)
        os.rename(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _write_copy(staged: Path, path: Path, duration: float, stop: threading.Event) -> None:
    shutil.copyfile(staged, path)


_WRITERS: dict[str, Callable[[Path, Path, float, threading.Event], None]] = {
    "in-place": _write_in_place,
    "temp-rename": _write_temp_rename,
    "copy": _write_copy,
}
