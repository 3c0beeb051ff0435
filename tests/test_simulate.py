"""Synthetic micrographs: determinism, where the truth lies, that the signal is there, the dataset files."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from streampick.simulate import (interaction_constant, make_particle_model, render_micrograph,
                                 simulate_dataset, simulate_micrograph, wavelength_a)

SMALL = dict(shape=(512, 512), pixel_size=2.0, particle_diameter_a=100.0)


def test_same_seed_same_micrograph():
    a = render_micrograph(np.random.default_rng(3), **SMALL)
    b = render_micrograph(np.random.default_rng(3), **SMALL)
    c = render_micrograph(np.random.default_rng(4), **SMALL)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.truth, b.truth)
    assert not np.array_equal(a.image, c.image)
    assert a.image.dtype == np.float32 and a.image.shape == (512, 512)
    image, truth = simulate_micrograph(np.random.default_rng(3), **SMALL)
    np.testing.assert_array_equal(image, a.image)
    assert truth.shape == (len(a.truth), 2) and len(truth) > 5


def test_physical_constants():
    assert wavelength_a(300) == pytest.approx(0.019687, rel=1e-4)
    assert interaction_constant(300) == pytest.approx(6.526e-4, rel=1e-3)


def test_truth_inside_and_away_from_carbon_contamination_and_aggregates():
    diameter_px = 100.0 / 2.0
    checked = 0
    for seed in range(4):
        sim = render_micrograph(np.random.default_rng(seed), shape=(1024, 1024), pixel_size=2.0,
                                particle_diameter_a=100.0, carbon_probability=1.0,
                                contamination_per_um2=60.0, aggregates_per_um2=60.0)
        assert sim.carbon is not None and len(sim.truth) > 0
        x, y = sim.truth.T
        r = diameter_px / 2
        assert (x >= r).all() and (x <= 1024 - r).all() and (y >= r).all() and (y <= 1024 - r).all()
        assert not sim.blocked(sim.truth, margin=r - 1e-6).any()
        d = np.hypot(x[:, None] - x, y[:, None] - y) + np.eye(len(x)) * 1e9
        assert d.min() >= 0.9 * diameter_px
        if len(sim.aggregates):
            da = np.hypot(x[:, None] - sim.aggregates[:, 0], y[:, None] - sim.aggregates[:, 1])
            assert da.min() >= diameter_px
        # carbon and contamination really darken the image
        median = np.median(sim.image)
        for cx, cy, _ in sim.contamination:
            if 2 <= cx < 1022 and 2 <= cy < 1022:
                checked += 1
                assert sim.image[int(cy) - 2:int(cy) + 3, int(cx) - 2:int(cx) + 3].mean() < 0.6 * median
        grid = np.stack(np.meshgrid(np.arange(8, 1024, 16.0), np.arange(8, 1024, 16.0)), -1).reshape(-1, 2)
        on_carbon = sim.blocked(grid) & ~_near_contamination(grid, sim.contamination)
        if on_carbon.any() and not on_carbon.all():
            values = sim.image[grid[:, 1].astype(int), grid[:, 0].astype(int)]
            assert values[on_carbon].mean() < 0.9 * values[~sim.blocked(grid, margin=10)].mean()
    assert checked > 0


def _near_contamination(xy, contamination):
    out = np.zeros(len(xy), dtype=bool)
    for x, y, r in contamination:
        out |= np.hypot(xy[:, 0] - x, xy[:, 1] - y) < r + 10
    return out


def test_particle_signal_is_there():
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(11)
    sim = render_micrograph(rng, shape=(1024, 1024), pixel_size=2.0, particle_diameter_a=150.0,
                            carbon_probability=0.0, contamination_per_um2=0.0, aggregates_per_um2=0.0,
                            ice_gradient=0.0)
    blurred = gaussian_filter(sim.image.astype(np.float64), sigma=150.0 / 2.0 / 4)
    at_truth = blurred[np.rint(sim.truth[:, 1]).astype(int), np.rint(sim.truth[:, 0]).astype(int)]
    xy = rng.uniform(40, 984, (4000, 2))
    far = np.hypot(xy[:, None, 0] - sim.truth[:, 0], xy[:, None, 1] - sim.truth[:, 1]).min(axis=1) > 75
    background = blurred[np.rint(xy[far, 1]).astype(int), np.rint(xy[far, 0]).astype(int)]
    difference = background.mean() - at_truth.mean()  # particles are dark at low resolution
    stderr = np.hypot(at_truth.std() / np.sqrt(len(at_truth)), background.std() / np.sqrt(len(background)))
    assert len(at_truth) > 20 and difference > 5 * stderr
    # ... yet faint per pixel: the raw image is dominated by shot noise (~sqrt(dose * pixel^2))
    assert sim.image.std() < 1.5 * np.sqrt(40.0 * 4.0)


def test_particle_model_is_centred_and_inside_its_sphere():
    model = make_particle_model(np.random.default_rng(0), 150.0, n_blobs=200)
    assert model.centres.shape == (200, 3)
    np.testing.assert_allclose(np.average(model.centres, axis=0, weights=model.volumes), 0, atol=1e-6)
    assert np.linalg.norm(model.centres, axis=1).max() < 75.0 + 1e-6


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "data"
    meta = simulate_dataset(out, 3, seed=5, shape=(256, 256), pixel_size=4.0, particle_diameter_a=150.0,
                            label_fraction=0.3)
    return out, meta


def test_dataset_files(dataset):
    import mrcfile

    out, meta = dataset
    for i in range(3):
        with mrcfile.open(out / "micrographs" / f"sim_{i:04d}.mrc", permissive=False) as mrc:
            assert mrc.data.dtype == np.float32 and mrc.data.shape == (256, 256)
            assert float(mrc.voxel_size.x) == pytest.approx(4.0)
        assert (out / "truth" / f"sim_{i:04d}.star").is_file()
    saved = json.loads((out / "simulation.json").read_text())
    assert saved == json.loads(json.dumps(meta))
    assert saved["micrograph_parameters"]["pixel_size"] == 4.0 and saved["seed"] == 5
    assert {"dose", "defocus_um", "protein_contrast_v"} <= set(saved["micrograph_parameters"])
    assert not [p for p in out.rglob(".*")], "temporary files left behind"


def test_dataset_truth_and_labels(dataset):
    from streampick.io.coords import read_coordinates

    out, meta = dataset
    truth = read_coordinates(out / "truth.star")
    per_file = {}
    for i in range(3):
        per_file.update(read_coordinates(out / "truth" / f"sim_{i:04d}.star"))
    labels = read_coordinates(out / "labels.txt")
    n_truth = sum(len(p) for p in per_file.values())
    assert n_truth == meta["n_truth"] > 10
    assert sum(len(p) for p in truth.values()) == n_truth
    assert sum(len(p) for p in labels.values()) == round(0.3 * n_truth) == meta["n_labels"]
    jitter = meta["label_jitter_px"]
    for name, lab in labels.items():
        ref = per_file[name]
        d = np.hypot(lab.x[:, None] - ref.x, lab.y[:, None] - ref.y)
        nearest = d.argmin(axis=1)
        assert (d.min(axis=1) <= jitter + 0.01).all()
        assert len(set(nearest.tolist())) == len(lab)  # distinct particles


def test_dataset_is_deterministic(dataset, tmp_path):
    out, _ = dataset
    again = tmp_path / "again"
    simulate_dataset(again, 3, seed=5, shape=(256, 256), pixel_size=4.0, particle_diameter_a=150.0)
    for path in out.rglob("*"):
        if path.is_file():
            assert (again / path.relative_to(out)).read_bytes() == path.read_bytes(), path.name
    with pytest.raises(TypeError):
        simulate_dataset(tmp_path / "bad", 1, shape=(64, 64), options={"not_an_option": 1})


# ------------------------------------------------------------------------------------------------- CLI


def test_cli_simulate_then_evaluate(tmp_path, capsys):
    from streampick.cli import main
    from streampick.io.coords import read_coordinates, write_table
    from streampick.picks import Picks

    out = tmp_path / "sim"
    assert main(["simulate", str(out), "--n", "2", "--size", "512", "--pixel-size", "2",
                 "--diameter", "100", "--seed", "1"]) == 0
    assert "2 micrographs" in capsys.readouterr().out
    truth = read_coordinates(out / "truth.star")
    rng = np.random.default_rng(0)

    def scored(shift: float) -> str:
        path = tmp_path / f"pred_{shift:g}.txt"
        write_table(path, [(k, Picks.from_arrays(p.x + shift, p.y, rng.normal(size=len(p))))
                           for k, p in truth.items()])
        return str(path)

    def ap(pred: str, *reference: str) -> float:
        report = tmp_path / "report.json"
        assert main(["evaluate", "--predicted", pred, "--reference", *reference, "--radius", "5",
                     "--threshold", "0", "--json", str(report)]) == 0
        return json.loads(report.read_text())["summary"]["ap"]

    per_mic = [str(p) for p in sorted((out / "truth").glob("*.star"))]
    assert ap(scored(0), str(out / "truth.star")) == pytest.approx(1.0)
    assert ap(scored(3), *per_mic) == pytest.approx(1.0)
    assert ap(scored(10), str(out / "truth.star")) == 0.0
    assert "AP" in capsys.readouterr().out
    assert main(["evaluate", "--predicted", str(out / "labels.txt"), "--reference", str(out / "truth.star"),
                 "--radius", "5", "--method", "hungarian"]) == 0
    assert "no scores" in capsys.readouterr().out


def test_command_modules_do_not_import_torch():
    code = ("import sys, streampick.commands.evaluate, streampick.commands.simulate, streampick.evaluate, "
            "streampick.simulate; assert 'torch' not in sys.modules and 'scipy' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
