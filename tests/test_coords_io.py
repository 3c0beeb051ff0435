"""Pick files and atomic writes: written by us, read back by starfile / csv / numpy and by our reader."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import starfile

from streampick.errors import CoordinateFileError
from streampick.io import (
    atomic_open,
    atomic_write_bytes,
    atomic_write_text,
    format_star,
    read_coordinates,
    star_path,
    write_box,
    write_combined_star,
    write_star,
    write_table,
)
from streampick.picks import Picks

X, Y, FOM, NAME = "rlnCoordinateX", "rlnCoordinateY", "rlnAutopickFigureOfMerit", "rlnMicrographName"


@pytest.fixture
def picks() -> Picks:
    return Picks.from_arrays([100.4, 2000.256, 31.0], [200.6, 10.0, 4000.0], [0.5, 2.123456789, -1.125])


def assert_one_line(err: CoordinateFileError, path: Path) -> str:
    message = str(err)
    assert "\n" not in message
    assert path.name in message
    return message


def assert_same(actual: Picks, expected: Picks, scores: bool = True) -> None:
    np.testing.assert_allclose(actual.x, expected.x, atol=0.005)
    np.testing.assert_allclose(actual.y, expected.y, atol=0.005)
    if scores:
        np.testing.assert_allclose(actual.score, expected.score, rtol=1e-15, atol=0)  # exact but for pandas
    else:
        assert np.isnan(actual.score).all()


def only_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ------------------------------------------------------------------------------------------ atomic writes


def test_atomic_write_replaces_content_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out" / "deep" / "picks.star"
    atomic_write_text(target, "old\n")
    atomic_write_text(target, "new\n")
    assert target.read_text() == "new\n"
    assert only_files(target.parent) == ["picks.star"]

    atomic_write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert only_files(target.parent) == ["picks.star"]


def test_failure_midway_keeps_old_content_and_removes_temp(tmp_path):
    target = tmp_path / "picks.star"
    target.write_text("old\n")

    with pytest.raises(RuntimeError, match="serializer"), atomic_open(target) as stream:
        stream.write("half a fi")
        assert len(only_files(tmp_path)) == 2  # the temp file exists while writing
        raise RuntimeError("serializer failed")

    assert target.read_text() == "old\n"
    assert only_files(tmp_path) == ["picks.star"]


def test_wrong_data_type_keeps_old_content(tmp_path):
    target = tmp_path / "picks.box"
    target.write_text("old\n")
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_text() == "old\n"
    assert only_files(tmp_path) == ["picks.box"]


def test_parent_that_is_a_file_raises_oserror_and_leaves_nothing(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    with pytest.raises(OSError):
        atomic_write_text(blocker / "picks.star", "x")
    with pytest.raises(OSError):
        write_star(blocker / "sub" / "picks.star", Picks.empty())
    assert only_files(tmp_path) == ["blocker"]


def test_temp_file_is_hidden_and_new_file_follows_umask(tmp_path):
    target = tmp_path / "picks.txt"
    with atomic_open(target, "wb") as stream:
        stream.write(b"data")
        names = only_files(tmp_path)
    assert len(names) == 1 and names[0].startswith(".picks.txt.") and names[0].endswith(".tmp")
    assert only_files(tmp_path) == ["picks.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_atomic_open_rejects_other_modes(tmp_path):
    with pytest.raises(ValueError, match="mode"), atomic_open(tmp_path / "x", "a"):
        pass
    assert only_files(tmp_path) == []


# ------------------------------------------------------------------------------------------ STAR


def test_star_path():
    assert star_path("/data/Movies/mic_001.mrc", Path("picks")) == Path("picks/mic_001_autopick.star")
    assert star_path("mic_001.mrc", "out", suffix="streampick") == Path("out/mic_001_streampick.star")


def test_format_star_layout(picks):
    lines = format_star(picks).splitlines()
    assert lines[:7] == [
        "", "data_", "", "loop_", "_rlnCoordinateX #1", "_rlnCoordinateY #2", "_rlnAutopickFigureOfMerit #3",
    ]
    assert lines[7].split() == ["2000.26", "10.00", "2.123456789"]  # best score first; 2 decimals, exact score
    assert len(lines) == 10


def test_star_round_trip(tmp_path, picks):
    path = star_path("mic_001.mrc", tmp_path)
    write_star(path, picks)

    table = starfile.read(path)
    assert list(table.columns) == [X, Y, FOM]
    np.testing.assert_allclose(table[X], [2000.26, 100.40, 31.00])
    np.testing.assert_allclose(table[Y], [10.00, 200.60, 4000.00])
    np.testing.assert_allclose(table[FOM], [2.123456789, 0.5, -1.125], rtol=1e-15)  # pandas may miss the last bit

    back = read_coordinates(path)
    assert list(back) == ["mic_001_autopick"]
    assert_same(back["mic_001_autopick"], picks)


def test_empty_star_is_valid(tmp_path):
    path = tmp_path / "mic_002_autopick.star"
    write_star(path, Picks.empty())
    table = starfile.read(path)
    assert list(table.columns) == [X, Y, FOM] and len(table) == 0
    assert len(read_coordinates(path)["mic_002_autopick"]) == 0


def test_scoreless_picks_write_nan_scores(tmp_path):
    path = tmp_path / "m.star"
    write_star(path, Picks.from_arrays([50.0], [60.0]))
    assert np.isnan(starfile.read(path)[FOM]).all()
    assert not read_coordinates(path)["m"].has_scores


def test_combined_star_round_trip(tmp_path, picks):
    other = Picks.from_arrays([5.5], [6.5], [9.0])
    path = tmp_path / "all.star"
    write_combined_star(path, [("MotionCorr/mic_001.mrc", picks), ("MotionCorr/mic_002.mrc", Picks.empty()),
                               ("MotionCorr/mic_003.mrc", other)])

    table = starfile.read(path)
    assert list(table.columns) == [NAME, X, Y, FOM]
    assert table[NAME].tolist() == ["MotionCorr/mic_001.mrc"] * 3 + ["MotionCorr/mic_003.mrc"]
    np.testing.assert_allclose(table[X], [2000.26, 100.40, 31.00, 5.5])

    back = read_coordinates(path)
    assert list(back) == ["mic_001", "mic_003"]  # no rows, no entry
    assert_same(back["mic_001"], picks)
    assert_same(back["mic_003"], other)


def test_combined_star_rejects_names_with_whitespace(tmp_path, picks):
    path = tmp_path / "all.star"
    with pytest.raises(CoordinateFileError) as info:
        write_combined_star(path, [("my mic.mrc", picks)])
    assert "whitespace" in assert_one_line(info.value, path)
    assert not path.exists()


# ------------------------------------------------------------------------------------------ table and box


def test_table_round_trip(tmp_path, picks):
    path = tmp_path / "picks.txt"
    write_table(path, [("a/b/mic_001.mrc", picks), ("mic_002.mrc", Picks.from_arrays([1.0], [2.0], [3.0]))])

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert list(rows[0]) == ["image_name", "x_coord", "y_coord", "score"]
    assert rows[0] == {"image_name": "mic_001", "x_coord": "2000.26", "y_coord": "10.00", "score": "2.123456789"}
    assert [r["image_name"] for r in rows] == ["mic_001"] * 3 + ["mic_002"]

    back = read_coordinates(path)
    assert list(back) == ["mic_001", "mic_002"]
    assert_same(back["mic_001"], picks)


def test_scores_read_back_exactly_so_a_threshold_at_a_pick_selects_the_same_picks(tmp_path):
    # float32 logits, as the network gives them; the automatic threshold is often one pick's score exactly
    scores = np.float32([-2.5082571506500244, -2.5082605, 0.1, -6.0]).astype(np.float64)
    picks = Picks.from_arrays([10.0, 20.0, 30.0, 40.0], [5.0, 6.0, 7.0, 8.0], scores)
    threshold = float(scores[0])
    write_table(tmp_path / "c.txt", [("mic.mrc", picks)])
    (back,) = read_coordinates(tmp_path / "c.txt").values()  # our own parser: correctly rounded
    np.testing.assert_array_equal(np.sort(back.score), np.sort(scores))
    assert len(back.above(threshold)) == len(picks.above(threshold)) == 2
    # STAR files are read with starfile, i.e. pandas, whose default float parser may miss the last bit
    write_star(tmp_path / "mic.star", picks)
    (back,) = read_coordinates(tmp_path / "mic.star").values()
    np.testing.assert_allclose(np.sort(back.score), np.sort(scores), rtol=1e-15, atol=0)


def test_box_corner_arithmetic(tmp_path, picks):
    path = tmp_path / "mic_001.box"
    write_box(path, picks, box_size=64)

    rows = np.loadtxt(path, delimiter="\t", ndmin=2)
    # centre (2000.256, 10.0) -> corner (1968, -22); (100.4, 200.6) -> (68, 169); (31, 4000) -> (-1, 3968)
    np.testing.assert_array_equal(rows, [[1968, -22, 64, 64], [68, 169, 64, 64], [-1, 3968, 64, 64]])

    back = read_coordinates(path)["mic_001"]
    np.testing.assert_array_equal(back.x, [2000, 100, 31])
    np.testing.assert_array_equal(back.y, [10, 201, 4000])
    assert not back.has_scores


@pytest.mark.parametrize("bad", [0, -10, 1.5, True])
def test_box_rejects_bad_box_size(tmp_path, picks, bad):
    with pytest.raises(ValueError, match="box_size"):
        write_box(tmp_path / "m.box", picks, bad)


@pytest.mark.parametrize("writer", ["star", "combined", "table", "box"])
def test_every_writer_round_trips_through_read_coordinates(tmp_path, picks, writer):
    """One suite over every writer: the centres come back (boxes to the nearest pixel)."""
    names = {"star": "mic.star", "combined": "all.star", "table": "all.txt", "box": "mic.box"}
    path = tmp_path / names[writer]
    {
        "star": lambda: write_star(path, picks),
        "combined": lambda: write_combined_star(path, [("mic.mrc", picks)]),
        "table": lambda: write_table(path, [("mic.mrc", picks)]),
        "box": lambda: write_box(path, picks, 100),
    }[writer]()
    back = read_coordinates(path)["mic"]
    tolerance = 0.5 if writer == "box" else 0.005
    np.testing.assert_allclose(np.sort(back.x), np.sort(picks.x), atol=tolerance)
    np.testing.assert_allclose(np.sort(back.y), np.sort(picks.y), atol=tolerance)
    assert only_files(tmp_path) == [path.name]


# ------------------------------------------------------------------------------------ reading others' files


@pytest.mark.parametrize("text, scores", [
    ("x,y,score\n10.5,20,0.9\n30,40.25,0.1\n", [0.9, 0.1]),
    ("X-Coordinate,Y-Coordinate\n10.5,20\n\n30,40.25\n", None),
    ("Y-Coordinate, X-Coordinate , Score\n20,10.5,0.9\n40.25,30,0.1\n", [0.9, 0.1]),
])
def test_csv_header_styles(tmp_path, text, scores):
    path = tmp_path / "mic_009.csv"
    path.write_text(text)
    back = read_coordinates(path)
    assert list(back) == ["mic_009"]
    expected = Picks.from_arrays([10.5, 30], [20, 40.25], scores)
    assert_same(back["mic_009"], expected, scores=scores is not None)


def test_topaz_table_whitespace_separated_without_scores(tmp_path):
    path = tmp_path / "topaz.txt"
    path.write_text("image_name  x_coord  y_coord\nmic_1  10  20\nmic_2 30 40\nmic_1 50 60\n")
    back = read_coordinates(path)
    assert list(back) == ["mic_1", "mic_2"]
    assert_same(back["mic_1"], Picks.from_arrays([10, 50], [20, 60]), scores=False)


def test_eman_box_with_extra_columns_and_no_extension(tmp_path):
    path = tmp_path / "mic_004.coords"
    path.write_text("10 20 64 64 -3\n100\t200\t32\t32\n")
    back = read_coordinates(path)["mic_004"]
    np.testing.assert_array_equal(back.x, [42, 116])
    np.testing.assert_array_equal(back.y, [52, 216])


def test_star_named_by_content(tmp_path, picks):
    path = tmp_path / "mic_005.txt"
    path.write_text(format_star(picks))
    assert_same(read_coordinates(path)["mic_005"], picks)


@pytest.mark.parametrize("name, text, expected", [
    ("bad.star", "data_\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n1 2\nabc 3\n",
     "loop row 2, column _rlnCoordinateX: 'abc' is not a number"),
    ("nocoords.star", "data_\nloop_\n_rlnDefocusU #1\n1000\n", "no STAR loop with _rlnCoordinateX"),
    ("garbage.star", "hello\nworld\n", "no STAR loop"),
    ("bad.txt", "image_name\tx_coord\ty_coord\tscore\nm\t1\t2\t0.5\nm\tone\t2\t0.5\n",
     "line 3, column x_coord: 'one' is not a number"),
    ("short.txt", "image_name\tx_coord\ty_coord\nm\t1\n", "line 2: expected 3 columns, found 2"),
    ("noy.txt", "image_name x_coord score\nm 1 2\n", "line 1: table header lacks y_coord"),
    ("bad.box", "1 2 64 64\n3 4 64\n", "line 2: expected at least 4 columns"),
    ("nan.box", "1 2 64 64\n\n3 nan 64 64\n", "line 3, column 2 (y0): 'nan' is not a finite coordinate"),
    ("noxy.csv", "a,b\n1,2\n", "line 1: CSV header names no x/y columns"),
    ("bad.csv", "x,y\n1,2\n3,\n", "line 3, column y: '' is not a number"),
    ("ragged.csv", "x,y,score\n1,2\n", "line 2: expected 3 columns, found 2"),
    ("empty.csv", "", "empty CSV file"),
    ("empty.txt", "\n\n", "empty file"),
    ("prose.txt", "these are not coordinates\n", "unrecognised coordinate format"),
])
def test_bad_files_raise_one_line_errors(tmp_path, name, text, expected):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(CoordinateFileError) as info:
        read_coordinates(path)
    assert expected in assert_one_line(info.value, path)


def test_missing_and_binary_files(tmp_path):
    missing = tmp_path / "absent.star"
    with pytest.raises(CoordinateFileError) as info:
        read_coordinates(missing)
    assert "no such file" in assert_one_line(info.value, missing)

    binary = tmp_path / "mic.box"
    binary.write_bytes(b"\xff\xfe\x00\x81" * 10)
    with pytest.raises(CoordinateFileError) as info:
        read_coordinates(binary)
    assert "not a text file" in assert_one_line(info.value, binary)
