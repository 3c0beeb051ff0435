"""The file I/O edge of the pipeline: micrographs in, pick files out, nothing half-written.

Every fault of a file a user or the microscope gives us becomes a one-line error from
:mod:`streampick.errors`; every file we leave for other programs is written atomically.

Example::

    from streampick.io import read_micrograph, star_path, write_star

    mic = read_micrograph("MotionCorr/job002/mic_001.mrc")   # float32 (H, W), pixel size from the header
    png = read_micrograph("mic_002.png", pixel_size=1.77)    # TIFF, PNG, JPEG: the pixel size must be given
    write_star(star_path(mic.path, "picks"), picks)          # picks/mic_001_autopick.star
"""
from streampick.io.atomic import atomic_open, atomic_write_bytes, atomic_write_text
from streampick.io.coords import (
    format_star,
    read_coordinates,
    star_path,
    write_box,
    write_combined_star,
    write_star,
    write_table,
)
from streampick.io.micrograph import Micrograph, micrograph_shape, mrc_is_complete, read_micrograph
from streampick.io.names import match_name, micrograph_key

__all__ = [
    "Micrograph",
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_text",
    "format_star",
    "match_name",
    "micrograph_key",
    "micrograph_shape",
    "mrc_is_complete",
    "read_coordinates",
    "read_micrograph",
    "star_path",
    "write_box",
    "write_combined_star",
    "write_star",
    "write_table",
]
