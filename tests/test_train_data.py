"""Training data: labels matched to micrographs by name, label maps, and bad label files reported and
skipped (unknown micrograph, coordinates outside the image, unparsable rows), in the library and the CLI."""
from __future__ import annotations

import logging
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from streampick.cli import main
from streampick.errors import StreampickError
from streampick.io.coords import write_star
from streampick.picks import Picks
from streampick.train.data import NEGATIVE, POSITIVE, UNLABELLED, label_map, load_training_data, match_name


def write_mrc(path: Path, shape=(256, 256), pixel_size=2.0, seed=0) -> Path:
    data = np.random.default_rng(seed).normal(100, 10, shape).astype(np.float32)
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = pixel_size
    return path


@pytest.fixture
def mics(tmp_path) -> list[Path]:
    folder = tmp_path / "mics"
    folder.mkdir()
    return [write_mrc(folder / f"mic_{i:03d}.mrc", seed=i) for i in range(3)]


def table(path: Path, rows: list[str]) -> Path:
    path.write_text("image_name\tx_coord\ty_coord\n" + "".join(r + "\n" for r in rows))
    return path


def test_labels_from_several_formats_are_matched_by_name(mics, tmp_path):
    labels = table(tmp_path / "labels.txt", ["mic_000\t40\t40", "mic_000.mrc\t100\t120", "mic_001\t80\t80"])
    star = tmp_path / "mic_002_manualpick.star"
    write_star(star, Picks.from_arrays([60.0], [64.0]))
    junk = table(tmp_path / "junk.txt", ["mic_001\t200\t200"])
    messages: list[str] = []
    data = load_training_data(mics, [labels, star], [junk], target_pixel_size=8.0, report=messages.append)
    assert messages == []
    by_name = {m.name: m for m in data}
    assert [len(by_name[n].positives) for n in ("mic_000", "mic_001", "mic_002")] == [2, 1, 1]
    assert len(by_name["mic_001"].negatives) == 1
    assert by_name["mic_000"].image.shape == (64, 64)  # 256 px at 2 Å → 64 px at 8 Å


def test_downsampling_factor_instead_of_a_target_pixel_size(mics, tmp_path):
    labels = table(tmp_path / "labels.txt", ["mic_000\t40\t40"])
    data = load_training_data(mics[:1], [labels], downsample=2.0)
    assert data[0].image.shape == (128, 128) and data[0].prepared.scaled_pixel_size == pytest.approx(4.0)


def test_match_name():
    stems = ["mic_1", "mic_10", "other"]
    assert match_name("mic_1", stems) == "mic_1"
    assert match_name("micrographs/mic_10.mrc", stems) == "mic_10"
    assert match_name("mic_10_autopick", stems) == "mic_10"  # the longest stem that the key extends
    assert match_name("nothing", stems) is None


def test_label_map_disks_and_junk(mics, tmp_path):
    labels = table(tmp_path / "labels.txt", ["mic_000\t40\t40", "mic_000\t0\t0"])
    junk = table(tmp_path / "junk.txt", ["mic_000\t200\t120", "mic_000\t48\t40"])
    data = load_training_data(mics[:1], [labels], [junk], target_pixel_size=8.0)
    labels_map = label_map(data[0], 3)
    assert labels_map[10, 10] == POSITIVE  # (x, y) = (40, 40) original px at 4 px per working px → (10, 10)
    assert int((labels_map == POSITIVE).sum()) == 29 + 11  # one whole disk + a quarter-disk in the corner
    assert labels_map[30, 50] == NEGATIVE
    assert labels_map[10, 11] == POSITIVE  # junk at (10, 12) overlaps the particle disk: the particle wins
    assert labels_map[10, 14] == NEGATIVE and labels_map[40, 10] == UNLABELLED


def test_bad_label_files_get_one_line_each_and_are_skipped(mics, tmp_path):
    good = table(tmp_path / "good.txt", ["mic_000\t40\t40", "mic_001\t50\t60"])
    unknown = table(tmp_path / "unknown.txt", ["mic_999\t40\t40", "mic_002\t30\t30"])
    outside = table(tmp_path / "outside.txt", ["mic_001\t300\t40", "mic_001\t-5\t10", "mic_001\t20\t20"])
    broken = table(tmp_path / "broken.txt", ["mic_002\tabc\t40"])
    missing = tmp_path / "missing.txt"
    messages: list[str] = []
    data = load_training_data(mics, [good, unknown, outside, broken, missing], target_pixel_size=8.0,
                              report=messages.append)
    assert len(messages) == 4 and all("\n" not in m for m in messages)
    assert "mic_999" in messages[0] and "not among the micrographs" in messages[0]
    assert "outside.txt" in messages[1] and "2 of 3 picks on 'mic_001' lie outside its 256x256 image" in messages[1]
    assert "broken.txt" in messages[2] and "line 2" in messages[2] and "'abc'" in messages[2]
    assert "missing.txt" in messages[3] and "no such file" in messages[3]
    assert {m.name: len(m.positives) for m in data} == {"mic_000": 1, "mic_001": 2, "mic_002": 1}


def test_nothing_usable_is_a_clear_error(mics, tmp_path):
    broken = table(tmp_path / "broken.txt", ["mic_000\t1\t2\t3"])
    unknown = table(tmp_path / "unknown.txt", ["elsewhere\t40\t40"])
    with pytest.raises(StreampickError, match="no usable labelled particle"):
        load_training_data(mics, [broken, unknown], target_pixel_size=8.0, report=lambda m: None)


def test_cli_reports_bad_labels_and_fails_cleanly_when_nothing_remains(mics, tmp_path, caplog):
    unknown = table(tmp_path / "unknown.txt", ["elsewhere\t40\t40"])
    args = ["train", "--micrographs", *map(str, mics), "--labels", str(unknown), "-o", str(tmp_path / "m.pt"),
            "--target-pixel-size", "8", "--particle-diameter", "100", "--expected-particles", "10"]
    with caplog.at_level(logging.WARNING):
        assert main(args) == 2
    text = caplog.text
    assert "micrograph 'elsewhere' is not among the micrographs given" in text
    assert "no usable labelled particle" in text
    assert not (tmp_path / "m.pt").exists()


def test_cli_needs_a_particle_diameter_from_scratch(mics, tmp_path, caplog):
    labels = table(tmp_path / "labels.txt", ["mic_000\t40\t40"])
    args = ["train", "--micrographs", *map(str, mics), "--labels", str(labels), "-o", str(tmp_path / "m.pt"),
            "--target-pixel-size", "8", "--expected-particles", "10"]
    assert main(args) == 2
    assert "--particle-diameter" in caplog.text
