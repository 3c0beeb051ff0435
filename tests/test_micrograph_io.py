"""Reading micrographs: every supported mode, and every fault a file can have, on real MRC files."""
from __future__ import annotations

import os
import struct
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from streampick.errors import CorruptMicrographError, IncompleteMicrographError, MicrographError
from streampick.io.micrograph import Micrograph, mrc_is_complete, read_micrograph

H, W = 40, 64  # not square, so that a transposed read would show
HEADER = 1024
# Byte offsets of header words (MRC2014).
NX, NY, NZ, MODE, NSYMBT, MACHST = 0, 4, 8, 12, 92, 212


def ramp(dtype=np.float32) -> np.ndarray:
    """Values that tell every (row, column) apart and fit every integer mode."""
    rows, cols = np.mgrid[0:H, 0:W]
    return (rows * 2 + cols - 60).astype(dtype)


def write_mrc(path: Path, data: np.ndarray, voxel_size: float = 1.5) -> Path:
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = voxel_size
    return path


def patch_int32(path: Path, offset: int, value: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack("<i", value))


def poke_float32(path: Path, row: int, col: int, value: float) -> None:
    """Set one pixel of a little-endian float32 file without going through mrcfile (which warns on NaN)."""
    with open(path, "r+b") as f:
        f.seek(HEADER + 4 * (row * W + col))
        f.write(struct.pack("<f", value))


def assert_one_line(err: MicrographError, path: Path) -> str:
    message = str(err)
    assert "\n" not in message
    assert path.name in message
    return message


@pytest.fixture
def good(tmp_path: Path) -> Path:
    return write_mrc(tmp_path / "mic_001.mrc", ramp())


# ------------------------------------------------------------------------------------------ good files


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.uint16, np.float16, np.float32])
@pytest.mark.parametrize("mmap", [True, False])
def test_each_mode_reads_as_float32_rows_by_columns(tmp_path, dtype, mmap):
    shift = 100 if dtype == np.uint16 else 0  # ramp() spans -60..81
    data = (ramp(np.int32) + shift).astype(dtype)
    path = write_mrc(tmp_path / "m.mrc", data)

    mic = read_micrograph(path, mmap=mmap)

    assert isinstance(mic, Micrograph)
    assert mic.path == path
    assert mic.data.dtype == np.float32 and mic.data.shape == (H, W)
    np.testing.assert_array_equal(mic.data, data.astype(np.float32))
    np.testing.assert_array_equal(mic.data, mrcfile.read(path).astype(np.float32))
    assert mic.data[1, 0] != mic.data[0, 1]  # row = y, column = x
    assert mic.pixel_size == 1.5


def test_pixel_size_is_the_header_float32_as_written(tmp_path):
    path = write_mrc(tmp_path / "m.mrc", ramp(), voxel_size=1.06)
    assert read_micrograph(path).pixel_size == 1.06


def test_pixel_size_argument_overrides_header(good):
    assert read_micrograph(good, pixel_size=0.83).pixel_size == 0.83


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_pixel_size_argument_is_rejected(good, bad):
    with pytest.raises(ValueError, match="pixel_size"):
        read_micrograph(good, pixel_size=bad)


def test_single_section_volume_is_squeezed(tmp_path):
    path = write_mrc(tmp_path / "m.mrc", ramp()[np.newaxis])
    mic = read_micrograph(path)
    assert mic.data.shape == (H, W)
    np.testing.assert_array_equal(mic.data, ramp())


def test_big_endian_file(tmp_path):
    path = write_mrc(tmp_path / "m.mrc", ramp().astype(">f4"))
    np.testing.assert_array_equal(read_micrograph(path).data, ramp())


def test_missing_machine_stamp_falls_back_to_mode_word(tmp_path):
    path = write_mrc(tmp_path / "m.mrc", ramp().astype(">f4"))
    with open(path, "r+b") as f:
        f.seek(MACHST)
        f.write(b"\0\0\0\0")
    np.testing.assert_array_equal(read_micrograph(path).data, ramp())


def test_extended_header_is_skipped(tmp_path):
    path = tmp_path / "m.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(ramp())
        mrc.set_extended_header(np.arange(100, dtype=np.uint8))
        mrc.voxel_size = 1.5
    np.testing.assert_array_equal(read_micrograph(path).data, ramp())
    assert mrc_is_complete(path)


def test_native_float32_with_mmap_is_a_view_of_the_file(good):
    mic = read_micrograph(good, mmap=True)
    copy = read_micrograph(good, mmap=False)

    poke_float32(good, 0, 0, 12345.0)

    assert mic.data[0, 0] == 12345.0  # the mapped pages, not a copy
    assert copy.data[0, 0] == ramp()[0, 0]


@pytest.mark.parametrize("mmap", [True, False])
def test_data_is_writable_without_touching_the_file(good, mmap):
    before = good.read_bytes()
    data = read_micrograph(good, mmap=mmap).data
    data[:] = 0  # what an in-place normalisation would do
    torch = pytest.importorskip("torch")
    torch.from_numpy(data)  # no "not writable" warning (warnings are errors in this suite)
    assert good.read_bytes() == before


# ------------------------------------------------------------------------------------------ faults


def test_missing_file(tmp_path):
    path = tmp_path / "absent.mrc"
    with pytest.raises(MicrographError) as info:
        read_micrograph(path)
    assert not isinstance(info.value, (IncompleteMicrographError, CorruptMicrographError))
    assert "no such file" in assert_one_line(info.value, path)


def test_directory(tmp_path):
    path = tmp_path / "dir.mrc"
    path.mkdir()
    with pytest.raises(MicrographError) as info:
        read_micrograph(path)
    assert "directory" in assert_one_line(info.value, path)


def test_empty_file_is_incomplete(tmp_path):
    path = tmp_path / "empty.mrc"
    path.touch()
    with pytest.raises(IncompleteMicrographError) as info:
        read_micrograph(path)
    assert "empty" in assert_one_line(info.value, path)


@pytest.mark.parametrize("keep", [500, HEADER + 4 * H * W - 100])
@pytest.mark.parametrize("mmap", [True, False])
def test_truncated_file_is_incomplete(good, keep, mmap):
    os.truncate(good, keep)
    with pytest.raises(IncompleteMicrographError) as info:
        read_micrograph(good, mmap=mmap)
    assert "still be being written" in assert_one_line(info.value, good)


def test_extra_bytes_are_corrupt(good):
    with open(good, "ab") as f:
        f.write(b"\0" * 7)
    with pytest.raises(CorruptMicrographError) as info:
        read_micrograph(good)
    assert "7 extra" in assert_one_line(info.value, good)


@pytest.mark.parametrize("size", [300, 5000])
def test_random_bytes_are_not_mrc(tmp_path, size):
    path = tmp_path / "noise.mrc"
    path.write_bytes(np.random.default_rng(1).integers(0, 255, size, dtype=np.uint8).tobytes())
    with pytest.raises(CorruptMicrographError) as info:
        read_micrograph(path)
    assert "not an MRC file" in assert_one_line(info.value, path)


@pytest.mark.parametrize("value, word", [(np.nan, "NaN"), (np.inf, "infinite"), (-np.inf, "infinite")])
def test_non_finite_pixels_are_corrupt(good, value, word):
    poke_float32(good, 7, 9, value)
    with pytest.raises(CorruptMicrographError) as info:
        read_micrograph(good)
    assert f"1 {word} pixels" in assert_one_line(info.value, good)


def test_nan_beside_inf_is_reported_as_nan(good):
    poke_float32(good, 1, 1, np.inf)
    poke_float32(good, 2, 2, np.nan)
    with pytest.raises(CorruptMicrographError, match="NaN"):
        read_micrograph(good)


def test_constant_image_is_corrupt(tmp_path):
    path = write_mrc(tmp_path / "flat.mrc", np.full((H, W), 3, dtype=np.int16))
    with pytest.raises(CorruptMicrographError) as info:
        read_micrograph(path)
    assert "constant" in assert_one_line(info.value, path)


def test_movie_stack_is_corrupt(tmp_path):
    path = write_mrc(tmp_path / "movie.mrcs", np.stack([ramp()] * 3))
    with pytest.raises(CorruptMicrographError) as info:
        read_micrograph(path)
    message = assert_one_line(info.value, path)
    assert "3 sections" in message and "single motion-corrected sums" in message


@pytest.mark.parametrize("offset, value", [(NX, 8), (NY, 15), (NX, 40000), (NY, -64), (NZ, 0), (NZ, -1)])
def test_absurd_dimensions_are_corrupt(good, offset, value):
    patch_int32(good, offset, value)
    with pytest.raises(CorruptMicrographError) as info:
        read_micrograph(good)
    assert "absurd dimensions" in assert_one_line(info.value, good)


def test_complex_mode_is_unsupported(tmp_path):
    path = write_mrc(tmp_path / "fft.mrc", np.ones((H, W), dtype=np.complex64))
    with pytest.raises(CorruptMicrographError) as info:
        read_micrograph(path)
    assert "unsupported MRC mode 4" in assert_one_line(info.value, path)


@pytest.mark.parametrize("mode", [3, 101, 7])
def test_other_modes_are_unsupported(good, mode):
    patch_int32(good, MODE, mode)
    with pytest.raises(CorruptMicrographError) as info:
        read_micrograph(good)
    assert f"unsupported MRC mode {mode}" in assert_one_line(info.value, good)


def test_negative_extended_header_is_corrupt(good):
    patch_int32(good, NSYMBT, -4)
    with pytest.raises(CorruptMicrographError) as info:
        read_micrograph(good)
    assert "extended header" in assert_one_line(info.value, good)


def test_zero_pixel_size_needs_an_explicit_one(tmp_path):
    path = write_mrc(tmp_path / "m.mrc", ramp(), voxel_size=0.0)
    with pytest.raises(CorruptMicrographError) as info:
        read_micrograph(path)
    assert "pass the pixel size" in assert_one_line(info.value, path)
    assert read_micrograph(path, pixel_size=1.2).pixel_size == 1.2


# ------------------------------------------------------------------------------------------ completeness


def test_complete_file(good):
    assert mrc_is_complete(good)
    assert mrc_is_complete(str(good))


def test_incomplete_and_overlong_files(good):
    size = good.stat().st_size
    os.truncate(good, size - 1)
    assert not mrc_is_complete(good)
    os.truncate(good, size + 1)
    assert not mrc_is_complete(good)
    os.truncate(good, 100)
    assert not mrc_is_complete(good)


def test_complete_but_unsupported_file_counts_as_complete(tmp_path):
    # so that the daemon reads it once and reports it, instead of waiting for it forever
    assert mrc_is_complete(write_mrc(tmp_path / "fft.mrc", np.ones((H, W), dtype=np.complex64)))


def test_garbage_missing_empty_and_directory_are_not_complete(tmp_path):
    garbage = tmp_path / "garbage.mrc"
    garbage.write_bytes(b"x" * 4096)
    empty = tmp_path / "empty.mrc"
    empty.touch()
    directory = tmp_path / "dir.mrc"
    directory.mkdir()
    for path in (garbage, empty, directory, tmp_path / "absent.mrc"):
        assert mrc_is_complete(path) is False
