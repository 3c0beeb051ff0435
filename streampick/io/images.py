"""Micrographs in image formats: single-image TIFF (tifffile), PNG and JPEG (Pillow).

These formats carry no pixel size streampick can trust (TIFF and PNG resolution tags are in dots per inch or
per metre, for printing), so the caller must give one.  What is read is one grey-level image:

* TIFF: 8/16/32-bit integers (signed or not), float16/32/64, any compression tifffile decodes (LZW and
  others need the ``imagecodecs`` package).  More than one full-resolution page is a movie stack and is
  refused, as is an EER file (a TIFF of electron events); a colour TIFF is read when its channels are equal.
* PNG: 8 or 16 bit grey (``L``, ``I;16``), grey with alpha (alpha ignored), or RGB(A) with equal channels.
  An animated PNG (several frames) is refused.
* JPEG: 8-bit grey, or RGB with equal channels (as some tools save grey images).

Every fault raises a :class:`~streampick.errors.MicrographError` with a one-line message naming the file.
:func:`is_settled_whole` is the daemon's wholeness test for these formats: they promise no size in a header,
so it looks for the end instead (PNG's ``IEND`` chunk, JPEG's end-of-image marker, TIFF's data extents).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from streampick.errors import CorruptMicrographError, IncompleteMicrographError, MicrographError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk: length 0, type, CRC
_JPEG_END = b"\xff\xd9"
_EER_COMPRESSIONS = (65000, 65001, 65002)
_TAIL_BYTES = 1024
FORMAT_NAMES = {"tiff": "TIFF", "png": "PNG", "jpeg": "JPEG", "eer": "EER", "mrc": "MRC"}
_SUFFIX_FORMATS = {".tif": "tiff", ".tiff": "tiff", ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".eer": "eer"}
MOVIE_HINT = ("streampick picks single motion-corrected sums: motion-correct the movie first (MotionCor2, RELION, "
              "cryoSPARC)")


def detect_format(path: Path, head: bytes) -> str:
    """``tiff``, ``png``, ``jpeg``, ``eer`` or ``mrc`` from the file's first bytes, else from its suffix.

    An ``.eer`` name is EER whatever its content (an EER file is a TIFF); a recognised signature wins over any
    other suffix; anything else is taken for MRC (whose reader reports a file that is not one).
    """
    suffix = path.suffix.lower()
    if suffix == ".eer":
        return "eer"
    if head.startswith(PNG_SIGNATURE):
        return "png"
    if head.startswith(JPEG_SIGNATURE):
        return "jpeg"
    if head[:4] in TIFF_SIGNATURES:
        return "tiff"
    return _SUFFIX_FORMATS.get(suffix, "mrc")


def read_image(path: Path, kind: str) -> np.ndarray:
    """The pixels of a TIFF, PNG or JPEG micrograph as a 2-D array in the file's own dtype (row = y).

    Raises:
        IncompleteMicrographError: the file is empty.
        CorruptMicrographError: not a file of that format, a movie stack, a colour image, an unsupported
            pixel type, or data that cannot be decoded (truncated, unknown compression).
        MicrographError: the file is missing or unreadable.
    """
    if kind == "eer":
        raise CorruptMicrographError(path, f"EER movie (electron events, not an image); {MOVIE_HINT}")
    _check_not_empty(path)
    if kind == "tiff":
        return _read_tiff(path)
    return _read_pillow(path, kind)


def image_shape(path: Path, kind: str) -> tuple[int, int]:
    """``(height, width)`` from the file's header (no pixel data decoded), checked as :func:`read_image` checks.

    Raises:
        MicrographError: as :func:`read_image`, for the faults the header shows.
    """
    if kind == "eer":
        raise CorruptMicrographError(path, f"EER movie (electron events, not an image); {MOVIE_HINT}")
    _check_not_empty(path)
    if kind == "tiff":
        with _open_tiff(path) as tif:
            return _tiff_page(path, tif).shape[:2]
    with _open_pillow(path, kind) as image:
        _check_pillow(path, kind, image)
        return image.size[1], image.size[0]


def is_settled_whole(path: Path, kind: str) -> bool:
    """Whether a TIFF, PNG or JPEG file has all its bytes (the daemon calls this once the size has settled).

    PNG: the ``IEND`` chunk is at the end.  JPEG: the file ends with the end-of-image marker (trailing zero or
    blank padding allowed).  TIFF: the first directory and the first page's image data lie within the file.
    A file without the format's signature (garbage) counts as whole, so that reading reports it once; a file
    whose first bytes are still blank does not.  EER counts as whole (it is refused unread).
    """
    try:
        with open(path, "rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            head = stream.read(16)
            stream.seek(max(0, size - _TAIL_BYTES))
            tail = stream.read()
    except OSError:
        return False
    if len(head) < 16 or not any(head):
        return False
    if kind == "png":
        return not head.startswith(PNG_SIGNATURE) or _PNG_END in tail
    if kind == "jpeg":
        return not head.startswith(JPEG_SIGNATURE) or tail.rstrip(b"\x00 \t\r\n").endswith(_JPEG_END)
    if kind == "tiff":
        return head[:4] not in TIFF_SIGNATURES or _tiff_data_within(path, size, head)
    return True


def never_whole_reason(path: Path, kind: str) -> str:
    """What :func:`is_settled_whole` found missing, for the daemon's give-up message."""
    return {"png": "no IEND chunk at its end", "jpeg": "no end-of-image marker at its end",
            "tiff": "its directory or image data lie past its end"}.get(kind, "incomplete")


def access_error(path: Path, err: OSError) -> MicrographError:
    """The one-line error for a micrograph file that cannot be opened (any format)."""
    if isinstance(err, FileNotFoundError):
        return MicrographError(path, "no such file")
    if isinstance(err, IsADirectoryError):
        return MicrographError(path, "is a directory, not a micrograph file")
    if isinstance(err, PermissionError):
        return MicrographError(path, "not readable (permission denied)")
    return MicrographError(path, f"cannot open ({err.strerror or err})")


# ------------------------------------------------------------------------------------------------- TIFF


def _open_tiff(path: Path):
    try:
        import tifffile
    except ImportError:
        raise MicrographError(path, "reading TIFF needs the 'tifffile' package (pip install tifffile)") from None
    try:
        return tifffile.TiffFile(path)
    except (FileNotFoundError, PermissionError, IsADirectoryError) as err:
        raise access_error(path, err) from None
    except Exception as err:  # noqa: BLE001 - tifffile raises many types for malformed files
        raise CorruptMicrographError(path, f"not a readable TIFF file ({_first_line(err)})") from None


def _tiff_page(path: Path, tif):
    """The one full-resolution page, checked: not EER, not a stack, a supported pixel type and size."""
    page = tif.pages[0]
    if int(page.compression) in _EER_COMPRESSIONS:
        raise CorruptMicrographError(path, f"EER movie (electron events, not an image); {MOVIE_HINT}")
    frames = 0
    for other in tif.pages:
        frames += not getattr(other, "is_reduced", False)
        if frames > 1:
            raise CorruptMicrographError(
                path, f"{len(tif.pages)} frames (a movie stack); {MOVIE_HINT}, or pass one sum per file")
    axes = "".join(a for a, n in zip(page.axes, page.shape) if n > 1 or a in "YX")
    if axes not in ("YX", "YXS", "SYX"):
        raise CorruptMicrographError(path, f"TIFF image of shape {page.shape} (axes {page.axes}); "
                                           "expected one 2-D grey-level image")
    dtype = np.dtype(page.dtype) if page.dtype is not None else None
    if dtype is None or dtype.kind not in "iuf" or dtype.itemsize > 8:
        raise CorruptMicrographError(path, f"unsupported TIFF pixel type ({page.bitspersample}-bit "
                                           f"{dtype if dtype is not None else 'unknown'}); supported: 8/16/32-bit "
                                           "integers and floats")
    height, width = (page.shape[1], page.shape[2]) if axes == "SYX" else page.shape[:2]
    check_dimensions(path, height, width)
    return _Page(page, axes, (height, width))


class _Page:
    """A checked TIFF page and its 2-D shape."""

    def __init__(self, page, axes: str, shape: tuple[int, int]) -> None:
        self.page, self.axes, self.shape = page, axes, shape


def _read_tiff(path: Path) -> np.ndarray:
    with _open_tiff(path) as tif:
        checked = _tiff_page(path, tif)
        try:
            data = checked.page.asarray()
        except Exception as err:  # noqa: BLE001 - truncated data, missing codec, bad strips
            raise CorruptMicrographError(path, f"TIFF data cannot be decoded ({_first_line(err)})") from None
    data = np.asarray(data).reshape([n for n in data.shape if n > 1] or data.shape[-2:])
    if checked.axes == "SYX":
        data = np.moveaxis(data, 0, -1)
    return _grey(path, data, "TIFF")


def _tiff_data_within(path: Path, size: int, head: bytes) -> bool:
    """Whether the first directory and the first page's image data lie within the file's ``size`` bytes.

    Only missing bytes make a TIFF not whole: a first-directory offset past the end, or image data past the
    end.  A directory that is present but does not parse counts as whole (reading reports it once).
    """
    import struct

    order = "<" if head[:2] == b"II" else ">"
    bigtiff = head[2:4] in (b"+\x00", b"\x00+")
    first_ifd = struct.unpack(order + ("Q" if bigtiff else "I"), head[8:16] if bigtiff else head[4:8])[0]
    if first_ifd >= size:
        return False
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            ends = [int(o) + int(n) for o, n in zip(page.dataoffsets, page.databytecounts)]
    except Exception:  # noqa: BLE001 - a directory cut short (not whole yet), a malformed one, no tifffile
        return _ifd_is_cut_short(path, first_ifd, size, order, bigtiff) is False
    return not ends or max(ends) <= size


def _ifd_is_cut_short(path: Path, offset: int, size: int, order: str, bigtiff: bool) -> bool | None:
    """Whether the first directory's entries run past the end of the file (None: cannot tell)."""
    import struct

    count_format, entry_bytes = (("Q", 20) if bigtiff else ("H", 12))
    count_bytes = 8 if bigtiff else 2
    try:
        with open(path, "rb") as stream:
            stream.seek(offset)
            raw = stream.read(count_bytes)
    except OSError:
        return None
    if len(raw) < count_bytes:
        return True
    entries = struct.unpack(order + count_format, raw)[0]
    return offset + count_bytes + entries * entry_bytes > size


# ------------------------------------------------------------------------------------------ PNG and JPEG


def _open_pillow(path: Path, kind: str):
    """Open with the format's own Pillow plugin (lazily: only the header is parsed).

    Pillow's ``Image.open`` would warn, or refuse, above 89 million pixels (its decompression-bomb guard);
    a K3 super-resolution sum is 94 million.  Opening through the plugin skips that guard, and
    :func:`check_dimensions` bounds the size instead.
    """
    from PIL import JpegImagePlugin, PngImagePlugin

    plugin = PngImagePlugin.PngImageFile if kind == "png" else JpegImagePlugin.JpegImageFile
    try:
        return plugin(str(path))
    except (FileNotFoundError, PermissionError, IsADirectoryError) as err:
        raise access_error(path, err) from None
    except Exception as err:  # noqa: BLE001 - Pillow raises SyntaxError, OSError, ValueError for bad headers
        raise CorruptMicrographError(path, f"not a readable {FORMAT_NAMES[kind]} file ({_first_line(err)})") from None


_PILLOW_MODES = {"L", "LA", "I;16", "I;16L", "I;16B", "I", "F", "RGB", "RGBA"}


def _check_pillow(path: Path, kind: str, image) -> None:
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        raise CorruptMicrographError(path, f"{frames} frames (an animated {FORMAT_NAMES[kind]}, a stack); "
                                           f"{MOVIE_HINT}")
    if image.mode not in _PILLOW_MODES:
        raise CorruptMicrographError(path, f"unsupported {FORMAT_NAMES[kind]} pixel mode {image.mode!r} "
                                           "(supported: 8 or 16-bit grey, or colour with equal channels)")
    check_dimensions(path, image.size[1], image.size[0])


def _read_pillow(path: Path, kind: str) -> np.ndarray:
    with _open_pillow(path, kind) as image:
        _check_pillow(path, kind, image)
        try:
            image.load()
            data = np.asarray(image)
        except Exception as err:  # noqa: BLE001 - truncated or corrupt compressed data
            raise CorruptMicrographError(
                path, f"{FORMAT_NAMES[kind]} data cannot be decoded ({_first_line(err)})") from None
    if image.mode == "LA":
        data = data[..., 0]
    return _grey(path, data, FORMAT_NAMES[kind])


# ------------------------------------------------------------------------------------------------ shared


def _grey(path: Path, data: np.ndarray, name: str) -> np.ndarray:
    """A 2-D grey image from 2-D data or from colour data whose first three channels are equal."""
    if data.ndim == 2:
        return data
    if data.ndim == 3 and data.shape[-1] in (3, 4):
        rgb = data[..., :3]
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            return np.ascontiguousarray(rgb[..., 0])
        raise CorruptMicrographError(path, f"colour {name} image (its channels differ); streampick reads "
                                           "grey-level micrographs")
    raise CorruptMicrographError(path, f"{name} image of shape {data.shape}; expected one 2-D grey-level image")


MIN_DIM = 16
MAX_DIM = 32768


def check_dimensions(path: Path, height: int, width: int) -> None:
    if not (MIN_DIM <= width <= MAX_DIM and MIN_DIM <= height <= MAX_DIM):
        raise CorruptMicrographError(path, f"absurd dimensions {width}x{height} (width and height must be "
                                           f"{MIN_DIM}..{MAX_DIM})")


def _check_not_empty(path: Path) -> None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise MicrographError(path, "no such file") from None
    except OSError as err:
        raise MicrographError(path, f"cannot stat ({err.strerror or err})") from None
    if size == 0:
        raise IncompleteMicrographError(path, "empty file (0 bytes); it may still be being written")


def _first_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
