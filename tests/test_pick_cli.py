"""End to end through the CLI, in-process: simulate → pick → evaluate, on real MRC files in tmp_path."""
from __future__ import annotations

import json
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import starfile
import torch

from streampick.cli import main
from streampick.io.coords import read_coordinates
from streampick.nets import Model, ModelCard, build, save_model

PICK = ["--target-pixel-size", "8", "--radius", "70A", "--edge-margin", "40A"]


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Path:
    """Three simulated 2048² micrographs at 1 Å/px (256² at the 8 Å/px working scale)."""
    out = tmp_path_factory.mktemp("sim") / "session"
    assert main(["-q", "simulate", str(out), "--n", "3", "--size", "2048", "--seed", "5"]) == 0
    return out


@pytest.fixture(scope="module")
def random_model(tmp_path_factory) -> Path:
    """An untrained resnet8 checkpoint with a card (pipeline plumbing only: its picks mean nothing)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "untrained.pt"
    card = ModelCard(name="untrained", architecture="resnet8", units=32, pixel_size=8.0, particle_diameter=150.0,
                     threshold=-1.0)
    save_model(path, Model(build("resnet8", 32).eval(), card))
    return path


def micrographs(session: Path) -> list[str]:
    return sorted(str(p) for p in (session / "micrographs").glob("*.mrc"))


def test_pick_writes_every_output_and_they_read_back(session, random_model, tmp_path):
    out = tmp_path / "picks"
    assert main(["-q", "pick", *micrographs(session), "-o", str(out), "-m", str(random_model)]) == 0
    table = read_coordinates(out / "candidates.txt")
    combined = starfile.read(out / "picks.star")
    assert set(table) == {f"sim_000{i}" for i in range(3)}
    for stem, candidates in table.items():
        star = starfile.read(out / f"{stem}_autopick.star")
        above = candidates.score >= -1.0  # the card's threshold
        assert len(star) == int(above.sum())
        np.testing.assert_allclose(np.sort(star["rlnCoordinateX"]), np.sort(candidates.x[above]), atol=0.01)
        assert (candidates.score >= -6.0).all()  # the default floor
        boxes = np.loadtxt(out / "box" / f"{stem}.box", ndmin=2)
        assert len(boxes) == len(star) and (boxes[:, 2] == 224).all()  # 1.5 × 150 Å at 1 Å/px, made even
    assert len(combined) == sum(int((p.score >= -1.0).sum()) for p in table.values())
    assert set(combined["rlnMicrographName"].map(lambda n: Path(n).stem)) <= set(table)


def test_pick_goes_on_past_a_bad_micrograph(session, random_model, tmp_path, caplog):
    bad = tmp_path / "truncated.mrc"
    good = micrographs(session)[0]
    bad.write_bytes(Path(good).read_bytes()[:5000])
    out = tmp_path / "picks"
    assert main(["pick", str(bad), good, "-o", str(out), "-m", str(random_model)]) == 0
    assert "truncated.mrc" in caplog.text
    assert set(read_coordinates(out / "candidates.txt")) == {Path(good).stem}


def test_pick_of_only_bad_micrographs_fails(tmp_path, random_model):
    empty = tmp_path / "empty.mrc"
    empty.write_bytes(b"")
    assert main(["-q", "pick", str(empty), "-o", str(tmp_path / "out"), "-m", str(random_model)]) == 1


@pytest.mark.parametrize("yaml_text,message", [
    ("picking:\n  radius_a: 70\n", "picking.radius_a: unknown key"),
    ("picking:\n  floor: low\n", "picking.floor: expected"),
    ("picking:\n  batch_size: 0\n", "picking.batch_size: must be positive"),
    ("picking:\n  smoothing: wide\n", "picking.smoothing: 'wide' is not a length"),
    ("picknig:\n  floor: 1\n", "picknig: unknown config section"),
    ("picking: [1, 2\n", "not valid YAML"),
])
def test_config_errors_name_the_key(tmp_path, random_model, session, caplog, yaml_text, message):
    config = tmp_path / "config.yaml"
    config.write_text(yaml_text)
    code = main(["pick", micrographs(session)[0], "-o", str(tmp_path / "out"), "--config", str(config),
                 "-m", str(random_model)])
    assert code == 2
    assert message in caplog.text


def test_simulate_pick_evaluate_with_topaz_weights(session, tmp_path, topaz_model_path):
    out = tmp_path / "picks"
    assert main(["-q", "pick", *micrographs(session), "-o", str(out), "-m", str(topaz_model_path), *PICK]) == 0
    report = tmp_path / "eval.json"
    assert main(["-q", "evaluate", "--predicted", str(out / "candidates.txt"), "--reference",
                 str(session / "truth.star"), "--radius", "75", "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    assert result["summary"]["ap"] > 0.8, result["summary"]


def test_fast_scoring_picks_what_dense_scoring_picks(session, tmp_path, topaz_model_path):
    aps = {}
    for mode in ["fast", "dense"]:
        out = tmp_path / mode
        extra = ["--dense", "--precision", "float32"] if mode == "dense" else []  # the exact reference
        assert main(["-q", "pick", *micrographs(session), "-o", str(out), "-m", str(topaz_model_path), *PICK,
                     *extra]) == 0
        report = tmp_path / f"{mode}.json"
        assert main(["-q", "evaluate", "--predicted", str(out / "candidates.txt"), "--reference",
                     str(session / "truth.star"), "--radius", "75", "--json", str(report)]) == 0
        aps[mode] = json.loads(report.read_text())["summary"]["ap"]
    assert abs(aps["fast"] - aps["dense"]) <= 0.01, aps


def test_header_pixel_size_override_changes_the_working_scale(session, random_model, tmp_path):
    path = micrographs(session)[0]
    with mrcfile.open(path, permissive=True) as mrc:
        assert float(mrc.voxel_size.x) == pytest.approx(1.0)
    out = tmp_path / "override"
    assert main(["-q", "pick", path, "-o", str(out), "-m", str(random_model), "--pixel-size", "2.0"]) == 0
    picks = read_coordinates(out / "candidates.txt")[Path(path).stem]
    assert picks.x.max() < 2048 and picks.y.max() < 2048  # still original-pixel coordinates


def test_the_cards_smoothing_is_used_unless_an_option_overrides_it(session, random_model, tmp_path):
    from streampick.nets import load_model

    model = load_model(random_model)
    smoothed_model = tmp_path / "smoothed.pt"
    model.card.smoothing = 24.0  # Å: 3 working pixels at 8 Å/px
    save_model(smoothed_model, model)
    path = micrographs(session)[0]
    stem = Path(path).stem
    runs = {"plain": [str(random_model)], "card": [str(smoothed_model)],
            "card, option 0": [str(smoothed_model), "--smoothing", "0"],
            "plain, option 24A": [str(random_model), "--smoothing", "24A"]}
    picks = {}
    for name, extra in runs.items():
        out = tmp_path / name.replace(", ", "_").replace(" ", "_")
        assert main(["-q", "pick", path, "-o", str(out), "--floor", "-1000", "-m", *extra]) == 0
        picks[name] = read_coordinates(out / "candidates.txt")[stem]
    np.testing.assert_array_equal(picks["card, option 0"].score, picks["plain"].score)
    np.testing.assert_array_equal(picks["plain, option 24A"].score, picks["card"].score)
    # averaging over ~3 px narrows the spread of the peaks' scores; every pick stays inside the image
    assert np.std(picks["card"].score) < np.std(picks["plain"].score)
    for found in picks.values():
        assert found.x.min() >= 0 and found.y.min() >= 0 and found.x.max() < 2048 and found.y.max() < 2048


def test_batched_scoring_gives_the_same_picks_as_one_at_a_time(session, random_model):
    from streampick.nets import load_model
    from streampick.pick import Length, PickSettings, pick_micrographs

    model = load_model(random_model)
    settings = PickSettings(radius=Length(70.0), edge_margin=Length(40.0))
    one = list(pick_micrographs(micrographs(session), model, settings, torch.device("cpu"), batch_size=1))
    three = list(pick_micrographs(micrographs(session), model, settings, torch.device("cpu"), batch_size=3))
    assert [r.path for r in one] == [r.path for r in three]
    for a, b in zip(one, three):
        assert len(a.picks) == len(b.picks) > 0
        np.testing.assert_allclose(a.picks.x, b.picks.x, atol=1e-3)
        np.testing.assert_allclose(a.picks.score, b.picks.score, atol=1e-4)


def test_cli_starts_without_importing_torch():
    import subprocess
    import sys

    code = "import sys, streampick.cli as c; c.build_parser(); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
