"""Reference and label picks in every form users hand us (written here, and the real files under
../shared/data/real): RELION STAR 3.0 and 3.1, cryoSPARC .cs, crYOLO .cbox and .box, Topaz tables, CSV; name
matching with extra suffixes and dotted names; --flip-y; score-less pick sets; unknown micrographs and
out-of-image rows reported and skipped; and the evaluate and train commands on them."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from streampick.cli import build_parser, main
from streampick.errors import CoordinateFileError
from streampick.evaluate import evaluate_sets
from streampick.io.coords import read_coordinates
from streampick.io.names import match_candidates, match_name, micrograph_key
from streampick.io.picksets import read_pick_sets
from streampick.picks import Picks


def one_line(err: Exception, path: Path) -> str:
    message = str(err)
    assert "\n" not in message and path.name in message
    return message


# ------------------------------------------------------------------------------------------ RELION STAR

STAR_30 = """
# version 30001 (RELION 3.0 autopick)

data_

loop_
_rlnCoordinateX #1
_rlnCoordinateY #2
_rlnClassNumber #3
_rlnAutopickFigureOfMerit #4
_rlnAnglePsi #5
  100.5   200.25  0  0.90  -999.0
  300.0    40.0   0  0.10  -999.0
"""

STAR_31 = """
# version 30001

data_optics

loop_
_rlnOpticsGroupName #1
_rlnOpticsGroup #2
_rlnMicrographPixelSize #3
_rlnImagePixelSize #4
_rlnImageSize #5
_rlnImageDimensionality #6
opticsGroup1 1 1.06 1.06 256 2

# version 30001

data_particles

loop_
_rlnCoordinateX #1
_rlnCoordinateY #2
_rlnAutopickFigureOfMerit #3
_rlnMicrographName #4
_rlnOpticsGroup #5
10.0 20.0 1.5 MotionCorr/job002/Movies/mic_001.mrc 1
30.0 40.0 0.5 MotionCorr/job002/Movies/May08_03.15.02.mrc 1
50.0 60.0 2.5 MotionCorr/job002/Movies/mic_001.mrc 1
70.0 80.0 0.7 MotionCorr/job002/Movies/May08_03.15.02 1
"""


def test_star_30_per_micrograph(tmp_path):
    path = tmp_path / "mic_001_autopick.star"
    path.write_text(STAR_30)
    picks = read_coordinates(path)["mic_001_autopick"]
    np.testing.assert_allclose(picks.x, [100.5, 300.0])
    np.testing.assert_allclose(picks.y, [200.25, 40.0])
    np.testing.assert_allclose(picks.score, [0.9, 0.1])


def test_star_31_with_optics_block_and_micrograph_names(tmp_path):
    path = tmp_path / "particles.star"
    path.write_text(STAR_31)
    groups = read_coordinates(path)
    assert list(groups) == ["mic_001", "May08_03.15.02"]  # folder and image suffix dropped, dots kept
    np.testing.assert_allclose(groups["mic_001"].x, [50.0, 10.0])  # sorted by descending score
    np.testing.assert_allclose(groups["mic_001"].score, [2.5, 1.5])
    np.testing.assert_allclose(np.sort(groups["May08_03.15.02"].y), [40.0, 80.0])


def test_star_figure_of_merit_minus_999_means_no_scores(tmp_path):
    path = tmp_path / "cryolo.star"
    path.write_text("\ndata_\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n_rlnClassNumber #3\n"
                    "_rlnAnglePsi #4\n_rlnAutopickFigureOfMerit  #5\n428.5\t3943.0\t-999\t-999.0\t-999.0\n"
                    "560.0\t3931.5\t-999\t-999.0\t-999.0\n")
    picks = read_coordinates(path)["cryolo"]
    assert len(picks) == 2 and not picks.has_scores


def test_relion_coordinate_file_list_is_named_for_what_it_is(tmp_path):
    path = tmp_path / "autopick.star"
    path.write_text("data_coordinate_files\n\nloop_\n_rlnMicrographName #1\n_rlnMicrographCoordinates #2\n"
                    "mics/a.mrc AutoPick/job006/mics/a_autopick.star\n")
    with pytest.raises(CoordinateFileError) as info:
        read_coordinates(path)
    assert "list of coordinate files" in one_line(info.value, path)


# ------------------------------------------------------------------------------------------ cryoSPARC .cs


def write_cs(path: Path, rows: list[tuple[str, float, float, tuple[int, int]]], score: bool = True) -> Path:
    fields = [("uid", "<u8"), ("location/micrograph_uid", "<u8"), ("location/micrograph_path", "S120"),
              ("location/micrograph_shape", "<u4", (2,)), ("location/center_x_frac", "<f4"),
              ("location/center_y_frac", "<f4")]
    if score:
        fields.append(("pick_stats/ncc_score", "<f4"))
    data = np.zeros(len(rows), dtype=fields)
    for i, (name, fx, fy, shape) in enumerate(rows):
        data[i]["uid"] = i
        data[i]["location/micrograph_path"] = name.encode()
        data[i]["location/micrograph_shape"] = shape
        data[i]["location/center_x_frac"], data[i]["location/center_y_frac"] = fx, fy
        if score:
            data[i]["pick_stats/ncc_score"] = 0.1 * (i + 1)
    with open(path, "wb") as stream:  # np.save on a path would add ".npy"
        np.save(stream, data)
    return path


def test_cryosparc_cs_fractions_times_width_and_height(tmp_path):
    path = write_cs(tmp_path / "P1_J5_picked_particles.cs", [
        ("J3/imported/012345678901234567890_mic_001.mrc", 0.25, 0.5, (4000, 3000)),  # (height, width)
        ("J3/imported/012345678901234567890_mic_001.mrc", 0.5, 0.25, (4000, 3000)),
        ("J4/motioncorrected/123456789012345678901_May08_03.15.02_patch_aligned_doseweighted.mrc", 0.1, 0.9,
         (1200, 1240)),
    ])
    groups = read_coordinates(path)
    assert list(groups) == ["mic_001", "May08_03.15.02_patch_aligned_doseweighted"]  # uid prefix dropped
    mic = groups["mic_001"]
    np.testing.assert_allclose(np.sort(mic.x), [750.0, 1500.0])  # x = frac_x * width (3000)
    np.testing.assert_allclose(np.sort(mic.y), [1000.0, 2000.0])  # y = frac_y * height (4000)
    np.testing.assert_allclose(groups["May08_03.15.02_patch_aligned_doseweighted"].x, [124.0], rtol=1e-6)
    assert mic.has_scores
    assert match_name("May08_03.15.02_patch_aligned_doseweighted", ["May08_03.15.02"]) == "May08_03.15.02"


def test_cryosparc_cs_without_scores_or_locations(tmp_path):
    scoreless = write_cs(tmp_path / "a.cs", [("mic.mrc", 0.5, 0.5, (100, 100))], score=False)
    assert not read_coordinates(scoreless)["mic"].has_scores
    other = tmp_path / "ctf.cs"
    with open(other, "wb") as stream:
        np.save(stream, np.zeros(3, dtype=[("uid", "<u8"), ("ctf/df1_A", "<f4")]))
    with pytest.raises(CoordinateFileError) as info:
        read_coordinates(other)
    assert "without particle locations" in one_line(info.value, other)
    garbage = tmp_path / "garbage.cs"
    garbage.write_bytes(b"not numpy")
    with pytest.raises(CoordinateFileError) as info:
        read_coordinates(garbage)
    assert "not a readable cryoSPARC .cs file" in one_line(info.value, garbage)


# ------------------------------------------------------------------------------------------ crYOLO, EMAN


CBOX = """
data_global

_cbox_format_version 1.0

data_cryolo

loop_
_CoordinateX #1
_CoordinateY #2
_CoordinateZ #3
_Width #4
_Height #5
_Depth #6
_EstWidth #7
_EstHeight #8
_Confidence #9
_NumBoxes #10
_Angle #11
100.0 200.0 <NA> 64.0 64.0 <NA> 60.0 62.0 0.83 <NA> <NA>
300.5 400.0 <NA> 64.0 80.0 <NA> 60.0 62.0 0.31 <NA> <NA>

data_cryolo_include

loop_
_slice_index #1
"""


def test_cryolo_cbox_corner_plus_half_the_box(tmp_path):
    path = tmp_path / "mic_007.cbox"
    path.write_text(CBOX)
    picks = read_coordinates(path)["mic_007"]
    np.testing.assert_allclose(picks.x, [132.0, 332.5])
    np.testing.assert_allclose(picks.y, [232.0, 440.0])
    np.testing.assert_allclose(picks.score, [0.83, 0.31])


def test_old_cbox_columns_and_3d_cbox(tmp_path):
    old = tmp_path / "mic_008.cbox"
    old.write_text("10\t20\t64\t64\t0.5\t60\t60\n30\t40\t64\t64\t0.9\t60\t60\n")
    picks = read_coordinates(old)["mic_008"]
    np.testing.assert_allclose(picks.x, [62.0, 42.0]) and np.testing.assert_allclose(picks.score, [0.9, 0.5])
    tomo = tmp_path / "tomo.cbox"
    tomo.write_text(CBOX.replace("<NA> 64.0 64.0", "12 64.0 64.0"))
    with pytest.raises(CoordinateFileError) as info:
        read_coordinates(tomo)
    assert "3-D (tomogram) picks" in one_line(info.value, tomo)


def test_cryolo_box_and_topaz_table_and_csv(tmp_path):
    box = tmp_path / "May08_03.15.02.box"
    box.write_text("100\t200\t64\t64\n")
    assert list(read_coordinates(box)) == ["May08_03.15.02"]  # dotted stem kept whole
    np.testing.assert_allclose(read_coordinates(box)["May08_03.15.02"].x, [132.0])
    table = tmp_path / "topaz.txt"
    table.write_text("image_name\tx_coord\ty_coord\tscore\nMay08_03.15.02.bin_avg\t5\t6\t1.5\nmic_1.mrc\t7\t8\t-2\n")
    assert list(read_coordinates(table)) == ["May08_03.15.02.bin_avg", "mic_1"]
    for header in ("x,y,diameter_px", "X-Coordinate,Y-Coordinate,Diameter"):
        csv = tmp_path / "061_10028.csv"
        csv.write_text(f"{header}\n148,52,56\n923,59,56\n")
        picks = read_coordinates(csv)["061_10028"]
        np.testing.assert_allclose(picks.x, [148, 923]) and not picks.has_scores


# ------------------------------------------------------------------------------------------ name matching


def test_micrograph_key_keeps_dots_and_drops_image_suffixes():
    assert micrograph_key("MotionCorr/job002/mic_001.mrc") == "mic_001"
    assert micrograph_key("C:\\data\\mic_001.TIFF") == "mic_001"
    assert micrograph_key("May08_03.15.02") == "May08_03.15.02"
    assert micrograph_key("May08_03.15.02.bin_avg.png") == "May08_03.15.02.bin_avg"


@pytest.mark.parametrize("key, expected", [
    ("mic_1", "mic_1"),
    ("micrographs/mic_10.mrc", "mic_10"),
    ("mic_10_autopick", "mic_10"),  # the key extends a name: the longest such name
    ("May08_03.15.02", "May08_03.15.02.bin_avg"),  # a name extends the key: the image has extra suffixes
    ("May08_03.15.02.bin_avg.png", "May08_03.15.02.bin_avg"),
    ("Falcon_2012_06_12-14_33_35_0", "Falcon_2012_06_12-14_33_35_0"),
    ("a", None),  # a_DW and a_noDW both extend it: ambiguous
    ("mic_0", None),  # mic_01 does not extend mic_0 with a separator
    ("mic_1_2", None),  # a numbered series: mic_1_2 is not mic_1
    ("May08_03.15.02_cryolo", "May08_03.15.02.bin_avg"),  # each has a suffix of its own
    ("Falcon_2012_06_12-14_33_36_0_cryolo", None),  # another micrograph of the series
    ("nothing", None),
])
def test_match_name(key, expected):
    names = ["mic_1", "mic_10", "mic_01", "May08_03.15.02.bin_avg", "a_DW", "a_noDW", "Falcon_2012_06_12-14_33_35_0"]
    assert match_name(key, names) == expected
    if key == "a":
        assert match_candidates(key, names) == ["a_DW", "a_noDW"]


# ------------------------------------------------------------------------------------------ pick sets


def test_pick_sets_flip_y_and_report_each_fault(tmp_path):
    shapes = {"May08_03.15.02.bin_avg": (100, 120), "a_DW": (100, 100), "a_noDW": (100, 100)}
    good = tmp_path / "May08_03.15.02.csv"
    good.write_text("x,y\n10,0\n20,99\n30,150\n")  # the last row lies outside a 100-high image
    unknown = tmp_path / "elsewhere.csv"
    unknown.write_text("x,y\n1,2\n")
    ambiguous = tmp_path / "a.box"
    ambiguous.write_text("0 0 10 10\n")
    broken = tmp_path / "broken.csv"
    broken.write_text("x,y\n1,oops\n")
    messages: list[str] = []
    picks = read_pick_sets([good, unknown, ambiguous, broken], shapes, what="reference", report=messages.append)
    assert len(messages) == 4 and all("\n" not in m for m in messages)
    assert "1 of 3 picks on 'May08_03.15.02.bin_avg' lie outside its 120x100 image" in messages[0]
    assert "micrograph 'elsewhere' is not among the micrographs given (1 picks skipped)" in messages[1]
    assert "micrograph 'a' matches several micrographs (a_DW, a_noDW)" in messages[2]
    assert "broken.csv" in messages[3] and "'oops'" in messages[3]
    np.testing.assert_allclose(np.sort(picks["May08_03.15.02.bin_avg"].y), [0, 99])
    flipped = read_pick_sets([good], shapes, flip=True, report=messages.append)["May08_03.15.02.bin_avg"]
    np.testing.assert_allclose(np.sort(flipped.y), [0, 99])  # 99 - 0, 99 - 99; 99 - 150 = -51 is outside
    np.testing.assert_allclose(flipped.x[np.argsort(flipped.y)], [20, 10])


def test_scoreless_sets_are_evaluated_at_all_their_picks():
    ref = {"m": Picks.from_arrays([10, 50, 90], [10, 50, 90])}
    pred = {"m": Picks.from_arrays([11, 52, 200], [10, 50, 200])}
    result = evaluate_sets(pred, ref, radius=5)
    assert result.ap is None and not result.has_scores and result.best_threshold is None
    assert (result.best_precision, result.best_recall) == (pytest.approx(2 / 3), pytest.approx(2 / 3))
    assert result.best_f1 == pytest.approx(2 / 3) and result.summary()["ap"] is None


# ------------------------------------------------------------------------------------------ commands


@pytest.fixture
def flipped_set(tmp_path) -> dict[str, Path]:
    """A 200x160 PNG with a reference CSV in the image frame and score-less STAR picks in the flipped frame."""
    image = tmp_path / "mics" / "May08_03.15.02.bin_avg.png"
    image.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (160, 200)).astype(np.uint8)).save(image)
    xs, ys = np.array([20.0, 60.0, 100.0, 140.0]), np.array([30.0, 70.0, 110.0, 150.0])
    reference = tmp_path / "May08_03.15.02.csv"
    reference.write_text("x,y,diameter_px\n" + "".join(f"{x:g},{y:g},20\n" for x, y in zip(xs, ys)))
    predicted = tmp_path / "May08_03.15.02_cryolo.star"
    predicted.write_text("data_\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n_rlnAutopickFigureOfMerit #3\n" +
                         "".join(f"{x:g} {159 - y:g} -999\n" for x, y in zip(xs, ys)) + "180 -40 -999\n")
    return {"image": image, "reference": reference, "predicted": predicted, "out": tmp_path / "result.json"}


def evaluate(files: dict[str, Path], *extra: str) -> dict:
    args = ["evaluate", "--predicted", str(files["predicted"]), "--reference", str(files["reference"]),
            "--radius", "5", "--json", str(files["out"]), *extra]
    assert main(args) == 0
    return json.loads(files["out"].read_text())["summary"]


def test_evaluate_flip_y_of_scoreless_predictions(flipped_set, capsys):
    mics = ["--micrographs", str(flipped_set["image"])]
    summary = evaluate(flipped_set, *mics, "--flip-y", "predicted")
    assert summary["ap"] is None and summary["n_tp"] == 4 and summary["n_pred"] == 4
    assert summary["best_precision"] == 1.0 and summary["best_recall"] == 1.0
    out = capsys.readouterr().out
    assert "F1" in out and "no scores" in out
    assert "1 of 5 picks on 'May08_03.15.02.bin_avg' lie outside its 200x160 image" in " ".join(out.split())
    unflipped = evaluate(flipped_set, *mics)  # the frames disagree: almost nothing matches
    assert unflipped["n_tp"] == 0 and unflipped["n_pred"] == 4
    both = evaluate(flipped_set, *mics, "--flip-y", "both")
    assert both["n_tp"] == 0


def test_evaluate_flip_y_needs_micrographs_and_radius_in_angstrom(flipped_set, caplog):
    args = ["evaluate", "--predicted", str(flipped_set["predicted"]), "--reference", str(flipped_set["reference"])]
    assert main([*args, "--radius", "5", "--flip-y"]) == 2 and "--flip-y needs --micrographs" in caplog.text
    assert main([*args, "--radius", "10A"]) == 2 and "give --pixel-size" in caplog.text
    summary = evaluate(flipped_set, "--micrographs", str(flipped_set["image"]), "--flip-y", "predicted",
                       "--radius", "10A", "--pixel-size", "2")
    assert summary["radius"] == 5.0 and summary["n_tp"] == 4


def test_evaluate_without_micrographs_matches_names_with_extra_suffixes(tmp_path):
    reference = tmp_path / "May08_03.15.02.csv"
    reference.write_text("x,y\n10,10\n50,50\n")
    predicted = tmp_path / "candidates.txt"
    predicted.write_text("image_name\tx_coord\ty_coord\tscore\nMay08_03.15.02.bin_avg\t10\t11\t2.0\n"
                         "May08_03.15.02.bin_avg\t90\t90\t1.0\nother\t1\t1\t3.0\n")
    out = tmp_path / "r.json"
    assert main(["evaluate", "--predicted", str(predicted), "--reference", str(reference), "--radius", "5",
                 "--json", str(out)]) == 0
    summary = json.loads(out.read_text())["summary"]
    assert summary["n_tp"] == 1 and summary["n_pred"] == 2 and summary["ap"] == pytest.approx(0.5)
    assert summary["ignored_micrographs"] == ["other"]


def test_evaluate_merges_a_reference_that_lists_particles_twice(tmp_path, capsys):
    reference = tmp_path / "m.csv"  # the 10146 pattern: one particle as rows 1 px apart
    reference.write_text("x,y\n100,100\n101,100\n100,101\n300,300\n301,300\n")
    predicted = tmp_path / "m.star"
    predicted.write_text("data_\nloop_\n_rlnCoordinateX\n_rlnCoordinateY\n_rlnAutopickFigureOfMerit\n"
                         "100 100 2.0\n300 300 1.0\n")
    out = tmp_path / "r.json"
    args = ["evaluate", "--predicted", str(predicted), "--reference", str(reference), "--radius", "20",
            "--json", str(out)]
    assert main(args) == 0
    assert json.loads(out.read_text())["summary"]["best_recall"] == pytest.approx(2 / 5)
    assert main([*args, "--merge-reference", "10"]) == 0
    summary = json.loads(out.read_text())["summary"]
    assert summary["n_ref"] == 2 and summary["best_recall"] == 1.0 and summary["ap"] == 1.0
    assert "merged 3 reference rows" in capsys.readouterr().out


def test_train_accepts_flip_y_and_image_formats():
    args = build_parser().parse_args(["train", "--micrographs", "a.png", "--labels", "a.star", "-o", "m.pt",
                                      "--expected-particles", "10", "--pixel-size", "1.77", "--flip-y"])
    assert args.flip_y and args.pixel_size == 1.77


def test_training_labels_flipped_on_png_micrographs(tmp_path):
    from streampick.train.data import load_training_data

    image = tmp_path / "May08_03.15.02.bin_avg.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 65535, (128, 96)).astype(np.uint16)).save(image)
    labels = tmp_path / "May08_03.15.02.star"
    labels.write_text("data_\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n10 0\n20 117\n30 200\n")
    messages: list[str] = []
    data = load_training_data([image], [labels], target_pixel_size=4.0, pixel_size=2.0, flip_y=True,
                              report=messages.append)
    positives = data[0].positives
    np.testing.assert_allclose(np.sort(positives.y), [10, 127])  # 127 - 117, 127 - 0; 127 - 200 is outside
    assert len(messages) == 1 and "1 of 3 picks" in messages[0]


# ------------------------------------------------------------------------------------------ real files


@pytest.mark.real_data
def test_real_pick_files_read_with_their_documented_counts(real_data):
    bgal = real_data / "empiar10017_bgal_cryosegnet"

    def total(paths) -> int:
        return sum(len(p) for path in paths for p in read_coordinates(path).values())

    assert total(sorted((bgal / "coords_cryoppp").glob("*.csv"))) == 13021
    assert total(bgal.glob("coords_cryoppp_original/*.csv")) == 629
    for picker, count in (("crYOLO", 12395), ("CASSPER", 11320), ("Gautomatch", 6375)):
        files = sorted((bgal / "coords_cassper_paper" / picker).glob("*.star"))
        assert len(files) == 20 and total(files) == count, picker
    manual = {p.stem: len(read_coordinates(p)[p.stem]) for p in (bgal / "coords_manual_star").glob("*.star")}
    assert sorted(manual.values()) == [612, 643]
    cryolo = read_coordinates(next((bgal / "coords_cassper_paper" / "crYOLO").glob("*.star")))
    assert not next(iter(cryolo.values())).has_scores  # figure of merit -999
    gautomatch = read_coordinates(next((bgal / "coords_cassper_paper" / "Gautomatch").glob("*.star")))
    assert next(iter(gautomatch.values())).has_scores
    assert total((real_data / "empiar10146_apoferritin_autocryopicker" / "coords").glob("*.csv")) == 5448
    assert total((real_data / "empiar10028_80s_promptsam" / "coords").glob("*.csv")) == 865
    ucsf = read_coordinates(real_data / "micrograph_cleaner_ucsf_stack_1142/coords_autopick/"
                                        "Ucsf_stack_1142_DW_autopick.star")
    assert len(ucsf["Ucsf_stack_1142_DW_autopick"]) == 45 and ucsf["Ucsf_stack_1142_DW_autopick"].has_scores


@pytest.mark.real_data
def test_real_names_match_their_micrographs(real_data):
    for folder, pattern, picks in [("empiar10146_apoferritin_autocryopicker", "*.png", "coords/*.csv"),
                                   ("empiar10028_80s_promptsam", "*.png", "coords/*.csv"),
                                   ("empiar10017_bgal_cryosegnet", "*.jpg", "coords_cassper_paper/crYOLO/*.star")]:
        names = [p.stem for p in (real_data / folder / "micrographs").glob(pattern)]
        keys = [p.stem for p in (real_data / folder).glob(picks)]
        assert len(names) == len(keys) >= 10
        assert sorted(match_name(k, names) for k in keys) == sorted(names), folder


@pytest.mark.real_data
def test_real_cryolo_picks_need_the_flip_to_match_the_jpeg_reference(real_data, tmp_path):
    """The README's figures: crYOLO against CryoPPP within 54 px, after y' = 4095 - y: P 0.868, R 0.826."""
    bgal = real_data / "empiar10017_bgal_cryosegnet"
    files = {"predicted": bgal / "coords_cassper_paper" / "crYOLO", "reference": bgal / "coords_cryoppp"}
    mics = sorted(str(p) for p in (bgal / "micrographs").glob("*.jpg"))
    out = tmp_path / "r.json"
    base = ["evaluate", "--predicted", *sorted(map(str, files["predicted"].glob("*.star"))),
            "--reference", *sorted(map(str, files["reference"].glob("*.csv"))), "--radius", "54",
            "--micrographs", *mics, "--json", str(out)]
    assert main([*base, "--flip-y", "predicted"]) == 0
    summary = json.loads(out.read_text())["summary"]
    assert summary["ap"] is None and summary["n_pred"] == 12395 and summary["n_ref"] == 13021
    assert summary["best_precision"] == pytest.approx(0.868, abs=0.002)
    assert summary["best_recall"] == pytest.approx(0.826, abs=0.002)
    assert main(base) == 0
    assert json.loads(out.read_text())["summary"]["best_recall"] < 0.45
