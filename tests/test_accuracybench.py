"""The accuracy benchmark end to end on a tiny set laid out like the real ones (8-bit PNG micrographs and CSV
references in pixels): every row, the report, the PR plot, the overlay and the JSON; and the leave-one-out
rule for a default model trained on a set."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from streampick.accuracybench import (
    AccuracyConfig,
    Completeness,
    default_row,
    finetune,
    leave_one_out_path,
    reference_completeness,
    run_benchmark,
    validate_threshold_rules,
)
from streampick.accuracyreport import write_outputs
from streampick.nets import load_model, save_model
from streampick.picks import Picks
from streampick.realsets import RealSet, load_set
from streampick.simulate import simulate_micrograph

DIAMETER_PX = 40.0


def _tiny_set(root: Path, n: int = 4) -> RealSet:
    folder = root / "tiny"
    (folder / "micrographs").mkdir(parents=True)
    (folder / "coords").mkdir()
    rng = np.random.default_rng(3)
    for i in range(n):
        # 150 Å particles at 3.75 Å/px: 40 px across, as the sets are given in pixels
        image, truth = simulate_micrograph(rng, shape=(384, 384), pixel_size=3.75, particle_diameter_a=150.0,
                                           n_particles=25, carbon_probability=0.0)
        lo, hi = np.percentile(image, [0.5, 99.5])
        grey = np.clip((image - lo) / (hi - lo) * 255, 0, 255).astype(np.uint8)  # quantized like 10028
        Image.fromarray(grey).save(folder / "micrographs" / f"m{i}.bin_avg.png")
        rows = "\n".join(f"{x:.1f},{y:.1f},{DIAMETER_PX:g}" for x, y in truth)
        (folder / "coords" / f"m{i}.csv").write_text(f"x,y,diameter_px\n{rows}\n")
    return RealSet("tiny", "a tiny simulated set", "tiny", "micrographs/*.png", "coords/*.csv", DIAMETER_PX)


def test_accuracy_benchmark_runs_every_row_and_writes_the_report(tmp_path):
    realset = _tiny_set(tmp_path)
    config = AccuracyConfig(root=tmp_path, sets=("tiny",), pretrained="streampick-sim-resnet8-u32",
                            default_model="streampick-sim-resnet8-u32", acrosses=(16.0, 20.0), steps=5,
                            batch_size=32, time_limit=60.0)
    messages: list[str] = []
    (result,) = run_benchmark(config, messages.append, realsets=[realset])
    assert [row.kind for row in result.rows] == ["pretrained", "default", "finetuned"]
    assert [p.stem for p in result.files.test] == ["m2.bin_avg", "m3.bin_avg"]
    for row in result.rows:
        assert set(row.picks) == {"m2.bin_avg", "m3.bin_avg"}  # the test half only
        assert 0.0 <= row.result.ap <= 1.0 and 0.0 <= row.top_recall <= 1.0
        assert row.seconds_per_micrograph > 0
    assert set(result.rows[0].train_ap_by_across) == {16.0, 20.0}
    finetuned = result.rows[2]
    assert finetuned.training_seconds <= 60.0 and finetuned.threshold is not None
    assert finetuned.at_threshold is not None and "5 updates" in finetuned.note
    assert any("fine-tuned" in m for m in messages)

    out = tmp_path / "docs"
    text = write_outputs([result], config, out, command="streampick bench --accuracy X", date="2026-11-26",
                         machine="test machine")
    assert (out / "accuracy.md").read_text() == text
    assert "## a tiny simulated set" in text and "## Protocol" in text and "test machine" in text
    assert text.count("| (") >= 3  # the three rows of the table
    with Image.open(out / "accuracy" / "pr_tiny.png") as plot:
        assert plot.format == "PNG" and plot.size[0] > 300
    with Image.open(out / "accuracy" / "overlay_tiny.jpg") as overlay:
        assert max(overlay.size) == 1024 and overlay.mode == "RGB"
    saved = json.loads((out / "accuracy" / "results.json").read_text())
    assert [r["kind"] for r in saved["sets"]["tiny"]] == ["pretrained", "default", "finetuned"]
    assert saved["reference_completeness"]["tiny"]["n_top"] == result.completeness.n_top > 0
    assert "Reference completeness check" in text


def test_the_completeness_check_finds_particles_the_reference_lacks(tmp_path):
    """Dark disks on noise; the reference lists two thirds of them, the picks all of them (the reference's
    first): the check counts the rest as unmatched and finds them as dark as the matched ones."""
    folder = tmp_path / "disks"
    (folder / "micrographs").mkdir(parents=True)
    (folder / "coords").mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:400, :400]
    all_picks = {}
    for i in range(2):
        centres = np.array([(x, y) for x in range(50, 351, 60) for y in range(50, 351, 60)], dtype=float)
        image = rng.normal(0, 1, (400, 400))
        for x, y in centres:
            image[(xx - x) ** 2 + (yy - y) ** 2 <= 20**2] -= 2.0
        Image.fromarray(np.clip(128 + 25 * image, 0, 255).astype(np.uint8)).save(
            folder / "micrographs" / f"d{i}.png")
        listed = centres[np.arange(len(centres)) % 3 != 2]
        rows = "\n".join(f"{x:g},{y:g}" for x, y in listed)
        (folder / "coords" / f"d{i}.csv").write_text(f"x,y\n{rows}\n")
        # picks, best first: every other listed particle, then the unlisted ones, then the rest
        unlisted = centres[np.arange(len(centres)) % 3 == 2]
        order = np.concatenate([listed[::2], unlisted, listed[1::2]])
        all_picks[f"d{i}"] = Picks.from_arrays(order[:, 0], order[:, 1], -np.arange(len(order), dtype=float))
    files = load_set(tmp_path, RealSet("disks", "disks", "disks", "micrographs/*.png", "coords/*.csv", 40.0))
    check = reference_completeness(files, all_picks, across=16.0)
    # the test half is d1: 24 listed, top 24 picks = 12 listed + 12 unlisted
    assert (check.n_top, check.n_unmatched) == (24, 12)
    assert check.unmatched < -1.0 and check.matched < -1.0 and abs(check.background) < 0.5
    assert abs(check.unmatched - check.matched) < 0.3
    assert check.verdict() == "particles"


@pytest.mark.parametrize("unmatched, background, verdict", [
    (-1.0, 0.0, "particles"), (-0.05, 0.0, "background"), (-0.5, 0.0, "mixed"), (-0.9, -0.9, "undecided"),
    (float("nan"), float("nan"), "undecided")])
def test_the_completeness_verdict(unmatched, background, verdict):
    check = Completeness(matched=-1.0 if background == background else float("nan"), unmatched=unmatched,
                         background=background, n_top=100, n_unmatched=15)
    assert check.verdict() == verdict


def test_threshold_validation_stays_inside_the_train_half(tmp_path):
    realset = _tiny_set(tmp_path, n=8)
    config = AccuracyConfig(root=tmp_path, sets=("tiny",), steps=5, batch_size=32, time_limit=60.0)
    messages: list[str] = []
    rows = validate_threshold_rules(config, messages.append, realsets=[realset])
    row = rows["tiny"]
    assert (row["fine-tuned on"], row["scored on"]) == (2, 2)  # the train half m0-m3, split again by name
    assert 0.0 <= row["F1 count"] <= row["best F1"] and row["F1 lower"] in (row["F1 count"], row["F1 pu-f1"])
    assert 0.0 <= row["AP"] <= 1.0
    assert len(messages) == 1 and "F1 lower" in messages[0]


@pytest.mark.parametrize("smoothing", [0.0, 1.5])
def test_row_c_card_carries_its_smoothing_in_nominal_angstrom(tmp_path, smoothing):
    files = load_set(tmp_path, _tiny_set(tmp_path))
    config = AccuracyConfig(root=tmp_path, steps=2, batch_size=16, time_limit=60.0, smoothing=smoothing)
    model, estimate, _, _ = finetune(config, files)
    # 1 px = 1 "Å" here, and a working pixel is diameter / across original pixels
    assert model.card.smoothing == pytest.approx(smoothing * DIAMETER_PX / config.finetune_across)
    assert model.card.threshold == estimate.value


def test_a_default_model_trained_on_a_set_is_replaced_by_its_leave_one_out_twin(tmp_path):
    realset = _tiny_set(tmp_path)
    files = load_set(tmp_path, realset)
    model = load_model("streampick-sim-resnet8-u32")
    model.card.metrics = {**model.card.metrics, "real_sets_trained": ["tiny"]}
    save_model(tmp_path / "models" / "mine.pt", model)
    config = AccuracyConfig(root=tmp_path, default_model=str(tmp_path / "models" / "mine.pt"), acrosses=(20.0,))
    with pytest.raises(FileNotFoundError, match="trained without it is missing"):
        default_row(config, files, lambda message: None)  # never scored by a model that saw the set

    model.card.metrics = {**model.card.metrics, "real_sets_trained": []}
    twin = tmp_path / "models" / "leave-one-out" / "mine-without-tiny.pt"
    twin.parent.mkdir()
    save_model(twin, model)
    assert leave_one_out_path(config.default_model, "tiny") == twin
    row = default_row(config, files, lambda message: None)
    assert "without tiny" in row.label and row.kind == "default"
