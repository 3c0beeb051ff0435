"""Micrographs in TIFF, PNG and JPEG (written here with tifffile and Pillow), the refusals (movie stacks,
EER, missing pixel size, colour), the MRC placeholder-pixel-size warning, header-only shapes, the daemon's
wholeness test for each format, the GMM fallback on quantized 8-bit images, and the real images."""
from __future__ import annotations

import logging
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import torch
from PIL import Image

from streampick.errors import CorruptMicrographError, IncompleteMicrographError, MicrographError
from streampick.io.micrograph import (
    micrograph_format,
    micrograph_is_settled_whole,
    micrograph_shape,
    read_micrograph,
)
from streampick.pick import PickResult, PickSettings, pick_micrographs, prepare
from streampick.preprocess import normalize

tifffile = pytest.importorskip("tifffile", reason="TIFF support needs tifffile (pip install tifffile)")

H, W = 40, 64  # not square, so that a transposed read would show


def ramp(dtype) -> np.ndarray:
    """Values that tell every (row, column) apart and fit every dtype used here (0..166)."""
    rows, cols = np.mgrid[0:H, 0:W]
    return (rows * 2 + cols + 24).astype(dtype)


def noise(dtype) -> np.ndarray:
    """Incompressible values, so that cutting a file cuts its pixel data."""
    return np.random.default_rng(7).integers(0, 200, (H, W)).astype(dtype)


def one_line(err: MicrographError, path: Path) -> str:
    message = str(err)
    assert "\n" not in message and path.name in message
    return message


# ------------------------------------------------------------------------------------------ reading


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.float16,
                                   np.float32, np.float64])
def test_tiff_of_each_pixel_type(tmp_path, dtype):
    data = ramp(dtype)
    path = tmp_path / "mic.tif"
    tifffile.imwrite(path, data)
    mic = read_micrograph(path, pixel_size=1.5)
    assert mic.data.dtype == np.float32 and mic.data.shape == (H, W)
    np.testing.assert_array_equal(mic.data, data.astype(np.float32))
    assert mic.pixel_size == 1.5 and micrograph_format(path) == "tiff"


def test_compressed_big_endian_and_single_frame_stack_tiffs(tmp_path):
    data = ramp(np.uint16)
    for name, kwargs in [("zlib.tif", {"compression": "zlib"}), ("big.tiff", {"byteorder": ">"})]:
        tifffile.imwrite(tmp_path / name, data, **kwargs)
        np.testing.assert_array_equal(read_micrograph(tmp_path / name, 1.0).data, data)
    tifffile.imwrite(tmp_path / "one.tif", data[np.newaxis], photometric="minisblack")  # (1, H, W)
    np.testing.assert_array_equal(read_micrograph(tmp_path / "one.tif", 1.0).data, data)


@pytest.mark.parametrize("dtype, mode", [(np.uint8, "L"), (np.uint16, "I;16")])
def test_png_of_each_bit_depth(tmp_path, dtype, mode):
    data = ramp(dtype) * (300 if dtype == np.uint16 else 1)  # 16-bit values beyond 255
    path = tmp_path / "mic.png"
    Image.fromarray(data).save(path)
    with Image.open(path) as image:
        assert image.mode == mode
    mic = read_micrograph(path, pixel_size=2.0)
    np.testing.assert_array_equal(mic.data, data.astype(np.float32))
    assert mic.data[1, 0] != mic.data[0, 1]  # row = y


def test_jpeg_and_grey_stored_as_colour(tmp_path):
    data = ramp(np.uint8)
    Image.fromarray(data).save(tmp_path / "mic.jpg", quality=100)
    mic = read_micrograph(tmp_path / "mic.jpg", pixel_size=1.0)
    assert mic.data.shape == (H, W) and np.abs(mic.data - data).max() <= 4  # lossy, but close
    Image.fromarray(np.stack([data] * 3, axis=-1)).save(tmp_path / "rgb.png")
    Image.fromarray(np.stack([data, data // 2], axis=-1), mode="LA").save(tmp_path / "la.png")
    for name in ("rgb.png", "la.png"):
        np.testing.assert_array_equal(read_micrograph(tmp_path / name, 1.0).data, data)


def test_format_is_told_by_content_before_suffix(tmp_path):
    data = ramp(np.uint8)
    path = tmp_path / "really_a_png.mrc"
    Image.fromarray(data).save(path, format="PNG")
    assert micrograph_format(path) == "png"
    np.testing.assert_array_equal(read_micrograph(path, 1.0).data, data)


def test_shape_from_the_header_alone_and_without_a_pixel_size(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", ramp(np.float32))
    Image.fromarray(ramp(np.uint16)).save(tmp_path / "b.png")
    Image.fromarray(ramp(np.uint8)).save(tmp_path / "c.jpeg")
    with mrcfile.new(tmp_path / "d.mrc") as mrc:
        mrc.set_data(ramp(np.float32))
    for name in ("a.tif", "b.png", "c.jpeg", "d.mrc"):
        assert micrograph_shape(tmp_path / name) == (H, W)


# ------------------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize("name, save", [
    ("m.tif", lambda p: tifffile.imwrite(p, ramp(np.uint16))),
    ("m.png", lambda p: Image.fromarray(ramp(np.uint8)).save(p)),
    ("m.jpg", lambda p: Image.fromarray(ramp(np.uint8)).save(p)),
])
def test_a_format_without_pixel_size_needs_one(tmp_path, name, save):
    path = tmp_path / name
    save(path)
    with pytest.raises(CorruptMicrographError) as info:
        read_micrograph(path)
    message = one_line(info.value, path)
    assert "carry no pixel size" in message and "--pixel-size" in message and "picking.pixel_size" in message


def test_movie_stacks_are_refused(tmp_path):
    stack = tmp_path / "movie.tif"
    tifffile.imwrite(stack, np.stack([ramp(np.uint8)] * 5), photometric="minisblack")
    appended = tmp_path / "frames.tiff"
    for _ in range(3):
        tifffile.imwrite(appended, ramp(np.uint8), append=True)
    eer = tmp_path / "movie.eer"
    eer.write_bytes(b"II*\0" + bytes(100))
    eer_in_tiff = tmp_path / "eer_named_tif.tif"
    tifffile.imwrite(eer_in_tiff, ramp(np.uint16))
    with tifffile.TiffFile(eer_in_tiff, mode="r+b") as tif:
        tif.pages[0].tags["Compression"].overwrite(65001)  # EER's compression code
    animated = tmp_path / "anim.png"
    frames = [Image.fromarray(ramp(np.uint8)) for _ in range(3)]
    frames[0].save(animated, save_all=True, append_images=frames[1:])
    for path, fault in [(stack, "5 frames (a movie stack)"), (appended, "3 frames (a movie stack)"),
                        (eer, "EER movie"), (eer_in_tiff, "EER movie"), (animated, "3 frames")]:
        for call, kwargs in ((read_micrograph, {"pixel_size": 1.0}), (read_micrograph, {}), (micrograph_shape, {})):
            with pytest.raises(CorruptMicrographError) as info:
                call(path, **kwargs)
            message = one_line(info.value, path)
            assert fault in message and "picks single motion-corrected sums" in message, message


@pytest.mark.parametrize("name, make, fault", [
    ("colour.png", lambda p: Image.fromarray(np.stack([ramp(np.uint8), ramp(np.uint8) // 2, ramp(np.uint8)], -1))
     .save(p), "colour PNG image"),
    ("bits.tif", lambda p: tifffile.imwrite(p, ramp(np.uint8) > 50), "unsupported TIFF pixel type (1-bit"),
    ("complex.tif", lambda p: tifffile.imwrite(p, ramp(np.float32).astype(np.complex64)), "unsupported TIFF pixel"),
    ("tiny.png", lambda p: Image.fromarray(np.zeros((8, 64), np.uint8)).save(p), "absurd dimensions 64x8"),
    ("flat.png", lambda p: Image.fromarray(np.full((H, W), 7, np.uint8)).save(p), "constant image"),
    ("garbage.tif", lambda p: p.write_bytes(b"not a tiff at all" * 10), "not a readable TIFF file"),
    ("garbage.png", lambda p: p.write_bytes(b"not a png at all" * 10), "not a readable PNG file"),
    ("cut.png", lambda p: (Image.fromarray(noise(np.uint16)).save(p), p.write_bytes(p.read_bytes()[:3000])),
     "PNG data cannot be decoded"),
])
def test_bad_image_files_get_one_line(tmp_path, name, make, fault):
    path = tmp_path / name
    make(path)
    with pytest.raises(CorruptMicrographError) as info:
        read_micrograph(path, pixel_size=1.0)
    assert fault in one_line(info.value, path)


def test_empty_and_missing_image_files(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(IncompleteMicrographError):
        read_micrograph(empty, pixel_size=1.0)
    with pytest.raises(MicrographError, match="no such file"):
        read_micrograph(tmp_path / "absent.tif", pixel_size=1.0)


def write_mrc(path: Path, voxel_size: float) -> Path:
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(ramp(np.float32))
        mrc.voxel_size = voxel_size
    return path


def test_placeholder_mrc_pixel_size_is_warned_about_once_per_file(tmp_path, caplog):
    first, second = write_mrc(tmp_path / "one.mrc", 1.0), write_mrc(tmp_path / "two.mrc", 1.0)
    fine = write_mrc(tmp_path / "fine.mrc", 1.06)
    with caplog.at_level(logging.WARNING, logger="streampick.io.micrograph"):
        for _ in range(3):
            assert read_micrograph(first).pixel_size == 1.0
        read_micrograph(second, pixel_size=1.0)  # given explicitly: no warning
        read_micrograph(fine)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "one.mrc" in warnings[0] and "1.0 Å" in warnings[0]
    assert "--pixel-size" in warnings[0]
    zero = write_mrc(tmp_path / "zero.mrc", 0.0)
    with pytest.raises(CorruptMicrographError) as info:
        read_micrograph(zero)
    assert "no pixel size (0 Å)" in one_line(info.value, zero) and "--pixel-size" in str(info.value)


# ------------------------------------------------------------------------------------------ wholeness


def test_wholeness_of_each_format(tmp_path):
    png, jpg, tif = tmp_path / "a.png", tmp_path / "b.jpg", tmp_path / "c.tif"
    Image.fromarray(ramp(np.uint16)).save(png)
    Image.fromarray(ramp(np.uint8)).save(jpg)
    tifffile.imwrite(tif, ramp(np.float32))
    for path in (png, jpg, tif):
        assert micrograph_is_settled_whole(path), path
        size = path.stat().st_size
        for keep in (size - 1, size // 2, 20):
            assert not micrograph_is_settled_whole(_copy_cut(path, tmp_path / f"cut_{keep}_{path.name}", keep))
    padded = tmp_path / "padded.jpg"
    padded.write_bytes(jpg.read_bytes() + b"\0\0\0")
    assert micrograph_is_settled_whole(padded)
    blank = tmp_path / "blank.png"
    blank.write_bytes(bytes(4096))  # pre-allocated, not yet written
    garbage = tmp_path / "garbage.tif"
    garbage.write_bytes(b"this is no image" * 100)
    assert not micrograph_is_settled_whole(blank) and micrograph_is_settled_whole(garbage)
    assert micrograph_is_settled_whole(tmp_path / "absent.png") is False


def _copy_cut(source: Path, target: Path, keep: int) -> Path:
    target.write_bytes(source.read_bytes()[:keep])
    return target


def test_tiff_with_its_directory_at_the_end(tmp_path):
    """Writers that put the directory after the data: a file cut before the directory is not whole."""
    source = tmp_path / "src.tif"
    tifffile.imwrite(source, ramp(np.uint16))
    raw = bytearray(source.read_bytes())
    with tifffile.TiffFile(source) as tif:
        offset, count = tif.pages[0].dataoffsets[0], tif.pages[0].databytecounts[0]
    assert offset < 1024 and count == H * W * 2  # tifffile writes the directory first: the data lie after it
    assert micrograph_is_settled_whole(source)
    cut_data = _copy_cut(source, tmp_path / "cut.tif", offset + count // 2)
    assert not micrograph_is_settled_whole(cut_data)
    ifd_later = tmp_path / "late.tif"  # first-directory offset past the end: the directory is not written yet
    raw[4:8] = (len(raw) + 100).to_bytes(4, "little")
    ifd_later.write_bytes(bytes(raw))
    assert not micrograph_is_settled_whole(ifd_later)


# ------------------------------------------------------------------------------------------ quantized images


def test_gmm_fallback_on_a_quantized_8bit_image():
    """An 8-bit image with ~10 grey levels: too few for the GMM, and more than half the ice on one level, so the
    plain MAD is 0; the fallback must still give the ice about zero mean and unit spread."""
    rng = np.random.default_rng(0)
    image = rng.normal(120.0, 0.5, (256, 256))
    image[:, :40] = rng.normal(110.0, 0.5, (256, 40))  # 15 % carbon, darker
    quantized = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    assert len(np.unique(quantized)) < 16 and np.median(np.abs(quantized[:, 40:] - 120.0)) == 0
    normalized, fit = normalize(quantized)
    assert fit.method == "affine-fallback" and fit.minor_weight == 0.0
    ice = normalized[:, 40:].numpy()
    assert abs(float(ice.mean())) < 0.3 and 0.6 < float(ice.std()) < 1.3
    assert float(normalized[:, :40].mean()) < -8  # the carbon stays far below


def test_gmm_on_an_8bit_image_with_enough_levels():
    rng = np.random.default_rng(1)
    image = rng.normal(120.0, 4.0, (256, 256))
    image[:, :40] -= 30.0
    normalized, fit = normalize(np.clip(np.rint(image), 0, 255).astype(np.uint8))
    assert fit.method == "gmm" and fit.minor_weight == pytest.approx(40 / 256, abs=0.03)
    ice = normalized[:, 40:].numpy()
    assert abs(float(ice.mean())) < 0.05 and float(ice.std()) == pytest.approx(1.0, abs=0.05)


# ------------------------------------------------------------------------------------------ picking


@pytest.fixture(scope="module")
def tiny_model():
    from streampick.nets import Model, ModelCard, build

    torch.manual_seed(0)
    card = ModelCard(name="tiny", architecture="resnet8", units=32, pixel_size=4.0, particle_diameter=40.0)
    return Model(build("resnet8", 32).eval(), card)


def test_pick_reads_every_format(tmp_path, tiny_model):
    rng = np.random.default_rng(2)
    image = rng.normal(100, 10, (128, 160))
    paths = [tmp_path / "a.tif", tmp_path / "b.png", tmp_path / "c.jpg", tmp_path / "d.mrc"]
    tifffile.imwrite(paths[0], image.astype(np.float32))
    Image.fromarray(np.clip(image * 100, 0, 65535).astype(np.uint16)).save(paths[1])
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(paths[2])
    with mrcfile.new(paths[3]) as mrc:
        mrc.set_data(image.astype(np.float32))
        mrc.voxel_size = 2.0
    settings = PickSettings(target_pixel_size=4.0, pixel_size=2.0)
    outcomes = list(pick_micrographs(paths, tiny_model, settings, torch.device("cpu")))
    assert all(isinstance(o, PickResult) for o in outcomes), [getattr(o, "error", None) for o in outcomes]
    assert [o.shape for o in outcomes] == [(128, 160)] * 4 and {o.scaled_pixel_size for o in outcomes} == {4.0}
    failures = list(pick_micrographs(paths[:1], tiny_model, PickSettings(target_pixel_size=4.0), torch.device("cpu")))
    assert "carry no pixel size" in str(failures[0].error)


# ------------------------------------------------------------------------------------------ real images


@pytest.mark.real_data
@pytest.mark.parametrize("relative, shape, levels", [
    ("empiar10017_bgal_cryosegnet/micrographs/Falcon_2012_06_12-14_33_35_0.jpg", (4096, 4096), 200),
    ("empiar10146_apoferritin_autocryopicker/micrographs/May08_03.05.02.bin_avg.png", (1200, 1240), 10000),
    ("empiar10028_80s_promptsam/micrographs/061_10028.png", (1024, 1024), 70),
    ("micrograph_cleaner_ucsf_stack_1142/micrograph/Ucsf_stack_1142_DW.mrc", (927, 959), 10000),
])
def test_real_images_read_and_normalize(real_data, relative, shape, levels):
    path = real_data / relative
    assert micrograph_shape(path) == shape and micrograph_is_settled_whole(path)
    mic = read_micrograph(path, pixel_size=5.0)
    assert mic.data.shape == shape and len(np.unique(mic.data[::7, ::7])) >= min(levels, 70)
    prepared = prepare(mic, 10.0, torch.device("cpu"))
    image = prepared.image.numpy()
    assert prepared.gmm.method == "gmm" and abs(float(np.median(image))) < 0.5
    assert 0.5 < float(np.median(np.abs(image - np.median(image)))) * 1.4826 < 2.0


@pytest.mark.real_data
def test_real_quantized_png_without_downsampling(real_data):
    """EMPIAR-10028's PNGs use ~100 grey levels: normalized as they are (no downsampling), the GMM fits."""
    mic = read_micrograph(real_data / "empiar10028_80s_promptsam/micrographs/061_10028.png", pixel_size=5.4)
    normalized, fit = normalize(mic.data)
    image = normalized.numpy()
    assert fit.method == "gmm" and abs(float(np.median(image))) < 0.3
    assert 0.7 < 1.4826 * float(np.median(np.abs(image - np.median(image)))) < 1.3
