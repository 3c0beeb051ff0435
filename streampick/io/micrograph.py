"""Reading motion-corrected micrographs: the first step of every pick, in the CLI and in the daemon.

A micrograph is one motion-corrected sum: a single-section MRC file (``.mrc``, ``.mrcs``), or a single-image
TIFF, PNG or JPEG (:mod:`streampick.io.images`).  :func:`read_micrograph` is the one entry point: it tells the
format by the file's signature (else its suffix), and returns the image as a 2-D float32 array (row = y,
column = x) with its pixel size, or raises a :class:`~streampick.errors.MicrographError` whose one-line
message names the file and the fault.  A file shorter than its header promises raises
:class:`~streampick.errors.IncompleteMicrographError` (it may still be being written: wait and retry);
every other fault of the file raises :class:`~streampick.errors.CorruptMicrographError` (report once).
Movie stacks (MRC with several sections, multi-page TIFF, EER) are refused: streampick picks sums.
:func:`micrograph_shape` reads the shape from the header alone; :func:`micrograph_is_settled_whole` is the
daemon's wholeness test for every format, and :func:`mrc_is_complete` the cheap MRC size test.

Pixel size: an MRC header's (warned about, once per file, when it is 1.0 Å, a common placeholder), or the
one the caller gives, which overrides it.  TIFF, PNG and JPEG files carry none that can be trusted: without
one given they are refused, with a message naming ``--pixel-size`` and ``picking.pixel_size``.

The MRC header is decoded with mrcfile's own header dtype and mode table.  The data block is then mapped (or
read) with numpy at the offset the header names, rather than through ``mrcfile.mmap(permissive=True)``:
in permissive mode mrcfile reports what it finds as ``RuntimeWarning`` (errors under our test settings,
and silencing them needs ``warnings.catch_warnings``, which is not thread-safe), and by then every fact
it would check has been checked here.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from mrcfile.dtypes import HEADER_DTYPE
from mrcfile.utils import byte_order_from_machine_stamp, dtype_from_mode

from streampick.errors import CorruptMicrographError, IncompleteMicrographError, MicrographError
from streampick.io import images
from streampick.io.images import MOVIE_HINT, detect_format

log = logging.getLogger(__name__)

_HEADER_BYTES = HEADER_DTYPE.itemsize  # 1024
_MAP_ID_END = HEADER_DTYPE.fields["map"][1] + 3  # the "MAP" of "MAP " at byte 208
_MIN_DIM = images.MIN_DIM
_MAX_DIM = images.MAX_DIM
_PLACEHOLDER_PIXEL_SIZE = 1.0  # what many programs write when they do not know the pixel size
_PIXEL_SIZE_HINT = "pass the pixel size with --pixel-size or picking.pixel_size in the config"
_SUPPORTED_MODES = (0, 1, 2, 6, 12)  # int8, int16, float32, uint16, float16
# Bytes per voxel of every mode whose size we know, supported or not, so that a whole file in an
# unsupported mode counts as complete (and is then reported once as corrupt, not waited on forever).
_MODE_BYTES = {0: 1, 1: 2, 2: 4, 3: 4, 4: 8, 6: 2, 12: 2}
_KNOWN_MODES = frozenset(_MODE_BYTES) | {101}
_ENDIAN = {"<": "little", ">": "big"}


@dataclass(frozen=True)
class Micrograph:
    """One micrograph in memory.

    For a native-endian float32 file read with ``mmap=True``, ``data`` is a copy-on-write map of the
    file's pages, not a copy: writing to it never changes the file.  It is writable in every case, so that
    ``torch.from_numpy`` takes it without a warning.
    """

    path: Path
    data: np.ndarray  # float32, shape (H, W), row = y
    pixel_size: float  # Å per pixel


@dataclass(frozen=True)
class _Header:
    """The facts of an MRC header that reading and the completeness check need."""

    nx: int
    ny: int
    nz: int
    mode: int
    nsymbt: int
    byte_order: str
    pixel_size: float  # 0.0 when the header does not give one

    @property
    def data_offset(self) -> int:
        return _HEADER_BYTES + self.nsymbt

    def expected_size(self) -> int | None:
        """File size the header promises, or None when it cannot say (unknown mode, negative sizes)."""
        itemsize = _MODE_BYTES.get(self.mode)
        if itemsize is None or min(self.nx, self.ny, self.nz, self.nsymbt) < 0:
            return None
        return self.data_offset + self.nx * self.ny * self.nz * itemsize


def read_micrograph(path: str | Path, pixel_size: float | None = None, *, mmap: bool = True) -> Micrograph:
    """Read a micrograph (MRC, TIFF, PNG or JPEG) as float32 and check that it is usable.

    Args:
        path: The micrograph: an MRC file (modes 0 int8, 1 int16, 2 float32, 6 uint16, 12 float16; 2-D, or
            3-D with one section), or a single-image TIFF, PNG or JPEG (see :mod:`streampick.io.images`).
            The format is told by the file's signature, else by its suffix.
        pixel_size: Pixel size in Å; overrides the MRC header's when given, and is needed for TIFF, PNG and
            JPEG.
        mmap: Map an MRC file rather than read it.  A native-endian float32 file is then returned without a
            copy; other modes are converted to float32 either way.

    Returns:
        The :class:`Micrograph`, with ``data`` of shape ``(height, width)``.

    Raises:
        ValueError: ``pixel_size`` is given and is not a positive finite number.
        IncompleteMicrographError: The file is empty or shorter than its MRC header promises.
        CorruptMicrographError: Not a micrograph file, a movie stack, unsupported mode or pixel type, absurd
            dimensions, longer than its header promises, no pixel size in the file and none given,
            NaN or infinite pixels, or a constant image.
        MicrographError: The file is missing or cannot be read.
    """
    path = Path(path)
    if pixel_size is not None and not (np.isfinite(pixel_size) and pixel_size > 0):
        raise ValueError(f"pixel_size must be a positive number of Å, got {pixel_size!r}")
    kind = micrograph_format(path)
    if kind != "mrc":
        if pixel_size is None and kind != "eer":
            images.image_shape(path, kind)  # a file that is no micrograph at all is reported as such first
            raise CorruptMicrographError(
                path, f"{images.FORMAT_NAMES[kind]} files carry no pixel size; {_PIXEL_SIZE_HINT}")
        data = _as_float32(images.read_image(path, kind))
        _check_pixels(path, data)
        return Micrograph(path=path, data=data, pixel_size=float(pixel_size))
    with _open(path) as stream:
        size = _file_size(path, stream)
        header = _read_header(path, stream, size)
        _check_header(path, header, size)
        if pixel_size is None:
            pixel_size = _header_pixel_size(path, header)
        raw = _read_data(path, stream, header, mmap)
    data = _as_float32(raw)
    _check_pixels(path, data)
    return Micrograph(path=path, data=data, pixel_size=float(pixel_size))


def micrograph_format(path: str | Path) -> str:
    """``mrc``, ``tiff``, ``png``, ``jpeg`` or ``eer``: by the file's first bytes, else by its suffix.

    A missing or unreadable file is told by its suffix (reading it then reports the fault).
    """
    path = Path(path)
    try:
        with open(path, "rb") as stream:
            head = stream.read(16)
    except OSError:
        head = b""
    return detect_format(path, head)


def micrograph_shape(path: str | Path) -> tuple[int, int]:
    """The ``(height, width)`` of a micrograph from its header alone (checked as :func:`read_micrograph`
    checks it, without reading the pixels), for every format :func:`read_micrograph` reads.

    Raises:
        MicrographError: as :func:`read_micrograph`, for the header's faults.
    """
    path = Path(path)
    kind = micrograph_format(path)
    if kind != "mrc":
        return images.image_shape(path, kind)
    with _open(path) as stream:
        size = _file_size(path, stream)
        header = _read_header(path, stream, size)
        _check_header(path, header, size)
    return header.ny, header.nx


def micrograph_is_settled_whole(path: str | Path) -> bool:
    """The daemon's wholeness test, for every format: :func:`mrc_is_settled_whole` for MRC; for TIFF, PNG and
    JPEG, which promise no size in a header, the end of the file is checked instead
    (:func:`streampick.io.images.is_settled_whole`).  Called once the file's size and mtime have settled."""
    path = Path(path)
    kind = micrograph_format(path)
    if kind == "mrc":
        return mrc_is_settled_whole(path)
    return images.is_settled_whole(path, kind)


def mrc_is_complete(path: str | Path) -> bool:
    """Tell whether an MRC file is exactly as long as its header promises.

    Args:
        path: The file to test.

    Returns:
        True when the header parses and 1024 + extended header + nx·ny·nz·bytes-per-voxel equals the
        file size; False otherwise, including for missing, short, garbage and over-long files.
    """
    try:
        with open(path, "rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            header = _parse_header(stream.read(_HEADER_BYTES))
    except OSError:
        return False
    return header is not None and header.expected_size() == size


def mrc_is_settled_whole(path: str | Path) -> bool:
    """Tell whether an MRC file has stopped needing to grow: the daemon's wholeness test.

    True when the file holds at least what its header promises (an over-long file is whole, and reading it
    then reports it corrupt at once), or when a full 1024-byte header is present but is not an MRC header
    and not blank (a garbage file: reading reports it once).  False while the file is shorter than its
    header promises or its header is still blank (pre-allocated and not yet written).

    Args:
        path: The file to test.
    """
    try:
        with open(path, "rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            raw = stream.read(_HEADER_BYTES)
    except OSError:
        return False
    if len(raw) < _HEADER_BYTES:
        return False
    header = _parse_header(raw)
    if header is None:
        return any(raw)
    return size >= header.expected_size()


def _open(path: Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as err:
        raise images.access_error(path, err) from None


def _file_size(path: Path, stream: BinaryIO) -> int:
    try:
        return os.fstat(stream.fileno()).st_size
    except OSError as err:
        raise MicrographError(path, f"cannot stat ({err.strerror or err})") from None


def _parse_header(raw: bytes) -> _Header | None:
    """Decode a 1024-byte header; None when it is short or lacks the ``MAP`` id."""
    if len(raw) < _HEADER_BYTES:
        return None
    fields = np.frombuffer(raw, dtype=HEADER_DTYPE, count=1)[0]
    if bytes(fields["map"])[:3] != b"MAP":  # mrcfile, too, checks only the first three bytes
        return None
    order = _byte_order(fields["machst"], raw[12:16])
    fields = np.frombuffer(raw, dtype=HEADER_DTYPE.newbyteorder(order), count=1)[0]
    mx, cella_x = int(fields["mx"]), float(fields["cella"]["x"])
    pixel = cella_x / mx if mx > 0 and np.isfinite(cella_x) and cella_x > 0 else 0.0
    return _Header(
        nx=int(fields["nx"]),
        ny=int(fields["ny"]),
        nz=int(fields["nz"]),
        mode=int(fields["mode"]),
        nsymbt=int(fields["nsymbt"]),
        byte_order=order,
        # The header stores float32: report the shortest decimal that round-trips it (1.06, not 1.0599999).
        pixel_size=float(str(np.float32(pixel))),
    )


def _byte_order(machine_stamp: np.ndarray, mode_bytes: bytes) -> str:
    """Byte order from the machine stamp, falling back as mrcfile's permissive mode does.

    A missing or wrong machine stamp is common in files from older software; the mode word, which must
    be a small known number, tells the byte order apart.
    """
    try:
        order = byte_order_from_machine_stamp(machine_stamp)
    except ValueError:
        order = "<"
    if int.from_bytes(mode_bytes, _ENDIAN[order]) not in _KNOWN_MODES:
        flipped = ">" if order == "<" else "<"
        if int.from_bytes(mode_bytes, _ENDIAN[flipped]) in _KNOWN_MODES:
            return flipped
    return order


def _read_header(path: Path, stream: BinaryIO, size: int) -> _Header:
    if size == 0:
        raise IncompleteMicrographError(path, "empty file (0 bytes); it may still be being written")
    try:
        raw = stream.read(_HEADER_BYTES)
    except OSError as err:
        raise MicrographError(path, f"cannot read ({err.strerror or err})") from None
    if len(raw) < _HEADER_BYTES:
        if len(raw) >= _MAP_ID_END and raw[_MAP_ID_END - 3:_MAP_ID_END] != b"MAP":
            raise CorruptMicrographError(path, "not an MRC file (no 'MAP' id in the header)")
        raise IncompleteMicrographError(
            path, f"only {len(raw)} bytes, shorter than the {_HEADER_BYTES}-byte MRC header; "
            "it may still be being written")
    header = _parse_header(raw)
    if header is None:
        raise CorruptMicrographError(path, "not an MRC file (no 'MAP' id in the header)")
    return header


def _check_header(path: Path, header: _Header, size: int) -> None:
    """Mode, shape and size checks, most telling fault first."""
    if header.mode not in _SUPPORTED_MODES:
        raise CorruptMicrographError(
            path, f"unsupported MRC mode {header.mode} (supported: 0 int8, 1 int16, 2 float32, "
            "6 uint16, 12 float16)")
    if header.nz > 1:
        raise CorruptMicrographError(
            path, f"{header.nz} sections (a movie stack or volume); {MOVIE_HINT}")
    if not (_MIN_DIM <= header.nx <= _MAX_DIM and _MIN_DIM <= header.ny <= _MAX_DIM and header.nz == 1):
        raise CorruptMicrographError(
            path, f"absurd dimensions nx={header.nx} ny={header.ny} nz={header.nz} "
            f"(nx and ny must be {_MIN_DIM}..{_MAX_DIM}, nz must be 1)")
    if header.nsymbt < 0:
        raise CorruptMicrographError(path, f"negative extended header size {header.nsymbt}")
    expected = header.expected_size()
    assert expected is not None  # mode and sizes were checked above
    if size < expected:
        raise IncompleteMicrographError(
            path, f"file is {size} bytes but its header promises {expected} "
            f"({expected - size} missing); it may still be being written")
    if size > expected:
        raise CorruptMicrographError(
            path, f"file is {size} bytes but its header promises {expected} ({size - expected} extra)")


def _header_pixel_size(path: Path, header: _Header) -> float:
    if header.pixel_size <= 0:
        raise CorruptMicrographError(path, f"MRC header gives no pixel size (0 Å); {_PIXEL_SIZE_HINT}")
    if header.pixel_size == _PLACEHOLDER_PIXEL_SIZE:
        _warn_once(path, f"{path}: MRC header pixel size is 1.0 Å, often a placeholder for 'unknown'; "
                         f"if that is not the real one, {_PIXEL_SIZE_HINT}")
    return header.pixel_size


_warned: set[str] = set()
_warned_lock = threading.Lock()


def _warn_once(path: Path, message: str) -> None:
    """Log ``message`` as a warning the first time it is said of ``path`` in this process."""
    key = os.path.abspath(path)
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    log.warning("%s", message)


def _read_data(path: Path, stream: BinaryIO, header: _Header, mmap: bool) -> np.ndarray:
    dtype = dtype_from_mode(header.mode).newbyteorder(header.byte_order)
    shape = (header.ny, header.nx)
    count = header.nx * header.ny
    try:
        if mmap:
            # Copy-on-write ("c"): writable without touching the file.  np.memmap maps a duplicate of the
            # descriptor, so the array outlives the ``with`` block.
            mapped = np.memmap(stream, dtype=dtype, mode="c", offset=header.data_offset, shape=shape)
            return np.asarray(mapped)
        stream.seek(header.data_offset)
        data = np.fromfile(stream, dtype=dtype, count=count)
    except (OSError, ValueError) as err:  # ValueError: the file shrank below the mapping since fstat
        raise IncompleteMicrographError(path, f"data block could not be read ({err})") from None
    if data.size < count:
        raise IncompleteMicrographError(path, "file shrank while being read; it may still be being written")
    return data.reshape(shape)


def _as_float32(raw: np.ndarray) -> np.ndarray:
    """float32 in native byte order; a view when it already is, else one converted copy."""
    return raw if raw.dtype == np.dtype(np.float32) else raw.astype(np.float32)


def _check_pixels(path: Path, data: np.ndarray) -> None:
    # NaN propagates through min and max and an infinity is an extreme, so two passes find all three
    # faults; the counts are computed only when something is wrong.
    lo, hi = data.min(), data.max()
    if np.isnan(lo) or np.isnan(hi):
        raise CorruptMicrographError(path, f"{np.count_nonzero(np.isnan(data))} NaN pixels")
    if np.isinf(lo) or np.isinf(hi):
        raise CorruptMicrographError(path, f"{np.count_nonzero(np.isinf(data))} infinite pixels")
    if lo == hi:
        raise CorruptMicrographError(path, f"constant image (every pixel is {lo:g})")
