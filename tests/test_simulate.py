"""Synthetic micrographs: determinism, where the truth lies, that the signal is there (and faint), the
structured background, per-micrograph variety, the detector model, the dataset files."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from streampick.simulate import (
    interaction_constant,
    make_particle_model,
    make_shell_model,
    render_micrograph,
    simulate_dataset,
    simulate_micrograph,
    wavelength_a,
)

SMALL = dict(shape=(512, 512), pixel_size=2.0, particle_diameter_a=100.0)
CLEAN = dict(carbon_probability=0.0, contamination_per_um2=0.0, aggregates_per_um2=0.0)  # ice only


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
        assert d.min() >= 0.8 * diameter_px  # the default min_distance
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


def _fourier_crop(image: np.ndarray, factor: int) -> np.ndarray:
    """Bin by ``factor`` the way the picker does: keep the low-frequency block of the spectrum."""
    h, w = image.shape[0] // factor, image.shape[1] // factor
    spectrum = np.fft.rfft2(image.astype(np.float64))
    kept = np.concatenate([spectrum[:h // 2, :w // 2 + 1], spectrum[-(h // 2):, :w // 2 + 1]])
    return np.fft.irfft2(kept, s=(h, w)) / factor**2


def _gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    ky = np.fft.fftfreq(image.shape[0])[:, None]
    kx = np.fft.rfftfreq(image.shape[1])[None, :]
    transfer = np.exp(-2 * np.pi**2 * sigma**2 * (kx * kx + ky * ky))
    return np.fft.irfft2(np.fft.rfft2(image) * transfer, s=image.shape)


def _band(image: np.ndarray, pixel_size: float, shortest: float = 50.0, longest: float = 200.0) -> np.ndarray:
    """The part of ``image`` with wavelengths between ``shortest`` and ``longest`` Å."""
    ky = np.fft.fftfreq(image.shape[0])[:, None] / pixel_size
    kx = np.fft.rfftfreq(image.shape[1])[None, :] / pixel_size
    k = np.hypot(kx, ky)
    spectrum = np.fft.rfft2(image.astype(np.float64))
    spectrum[(k < 1 / longest) | (k > 1 / shortest)] = 0
    return np.fft.irfft2(spectrum, s=image.shape)


def _disks(shape: tuple[int, int], centres: np.ndarray, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    mask = np.zeros(shape, dtype=bool)
    for x, y in centres:
        mask |= (xx - x) ** 2 + (yy - y) ** 2 < radius**2
    return mask


@pytest.mark.parametrize("seed", [11, 12])
def test_particle_signal_is_there_but_faint(seed):
    """Matched test at particle scale after binning to 8 Å/px, with ice texture and clutter on (the defaults).

    A band-pass (difference of Gaussians) at the particle radius is sampled at the true centres and at random
    places at least a radius away: the true centres are darker by many standard errors, yet one sample alone
    separates them poorly (effect size d' around 1, where the old clean simulation gave 3-4.5).
    """
    sim = render_micrograph(np.random.default_rng(seed), shape=(2048, 2048), n_particles=100, **CLEAN)
    small = _fourier_crop(sim.image, 8)
    radius = 75.0 / 8
    dog = _gaussian(small, radius / 2) - _gaussian(small, 2 * radius)
    truth = sim.truth / 8
    at_truth = dog[np.rint(truth[:, 1]).astype(int), np.rint(truth[:, 0]).astype(int)]
    xy = np.random.default_rng(0).uniform(10, 246, (3000, 2))
    far = np.hypot(xy[:, None, 0] - truth[:, 0], xy[:, None, 1] - truth[:, 1]).min(axis=1) > radius
    background = dog[np.rint(xy[far, 1]).astype(int), np.rint(xy[far, 0]).astype(int)]
    difference = background.mean() - at_truth.mean()  # particles are dark at low resolution
    stderr = np.hypot(at_truth.std() / np.sqrt(len(at_truth)), background.std() / np.sqrt(len(background)))
    assert len(at_truth) == 100 and difference > 5 * stderr
    assert difference / background.std() < 2.0  # faint: far from the clean, trivially separable images
    # the raw 1 Å/px image is noise: its spread is the shot + detector noise, sqrt(counts / DQE), within 5 %
    assert sim.image.std() < 1.05 * np.sqrt(sim.image.mean() / 0.7)


def test_per_pixel_snr_is_realistic():
    """Variance of the noise-free particle signal inside the disks over the noise variance, at 1 Å/px."""
    model = make_particle_model(np.random.default_rng(0), 150.0)
    quiet = dict(shape=(1024, 1024), ice_gradient=0.0, ice_roughness_a=0.0, clutter_per_um2=0.0, model=model,
                 shot_noise=False, **CLEAN)
    snr = {}
    for defocus in (0.8, 3.0):
        kw = dict(quiet, defocus_um=(defocus, defocus), bfactor=100.0, ice_thickness_a=400.0)
        sim = render_micrograph(np.random.default_rng(1), n_particles=12, **kw)
        empty = render_micrograph(np.random.default_rng(1), n_particles=0, **kw).image.mean()
        signal = sim.image / empty - 1
        snr[defocus] = signal[_disks(signal.shape, sim.truth, 75.0)].var() * empty * 0.7
    assert 0.002 < snr[0.8] < snr[3.0] < 0.03


def test_structured_background():
    """Ice texture is as strong as the particles at 50-200 Å; clutter adds particle-like dark spots."""
    model = make_particle_model(np.random.default_rng(0), 150.0)
    kw = dict(shape=(2048, 2048), ice_gradient=0.0, model=model, shot_noise=False, defocus_um=(2.0, 2.0),
              ice_roughness_a=8.0, **CLEAN)
    particles = render_micrograph(np.random.default_rng(2), n_particles=30, clutter_per_um2=0.0,
                                  **{**kw, "ice_roughness_a": 0.0})
    ice = render_micrograph(np.random.default_rng(2), n_particles=0, clutter_per_um2=0.0, **kw)
    clutter = render_micrograph(np.random.default_rng(2), n_particles=0, **{**kw, "ice_roughness_a": 0.0})
    level = clutter.image.mean()
    disks = _disks(particles.image.shape, particles.truth, 75.0)
    particle_band = _band(particles.image / level - 1, 1.0)[disks].std()
    ice_band = _band(ice.image / level - 1, 1.0).std()
    assert 0.5 < ice_band / particle_band < 2.0
    expected = 6000.0 * 2048**2 / 1e8  # the default rate per µm²
    assert abs(clutter.info["n_clutter"] - expected) < 5 * np.sqrt(expected)
    dark = _gaussian(clutter.image.astype(np.float64) / level - 1, 4.0)
    assert (dark < -0.02).mean() > 0.002  # dark spots of fragments, on an otherwise flat field
    quiet = render_micrograph(np.random.default_rng(2), n_particles=0, clutter_per_um2=0.0,
                              **{**kw, "ice_roughness_a": 0.0})
    assert np.ptp(quiet.image) < 1e-3 * level  # nothing left when texture and clutter are off


def test_envelope_damps_high_frequencies():
    """A larger B-factor takes power from high frequencies and leaves low ones alone."""
    kw = dict(shape=(1024, 1024), n_particles=20, shot_noise=False, defocus_um=(1.5, 1.5), astigmatism_a=0.0,
              ice_roughness_a=0.0, clutter_per_um2=0.0, ice_gradient=0.0, **CLEAN)
    power = {}
    for b in (0.0, 150.0):
        image = render_micrograph(np.random.default_rng(4), bfactor=b, **kw).image
        power[b] = (_band(image, 1.0, 8.5, 11.0).var(), _band(image, 1.0, 60.0, 300.0).var())
    assert power[150.0][0] < 0.6 * power[0.0][0]
    assert power[150.0][1] == pytest.approx(power[0.0][1], rel=0.05)


def test_detector_noise():
    """On a flat field the noise variance is counts / DQE."""
    flat = dict(shape=(512, 512), n_particles=0, clutter_per_um2=0.0, ice_roughness_a=0.0, ice_gradient=0.0,
                **CLEAN)
    for dqe in (0.5, 1.0):
        image = render_micrograph(np.random.default_rng(5), detector_dqe=dqe, **flat).image
        assert image.var() == pytest.approx(image.mean() / dqe, rel=0.03)
    with pytest.raises(ValueError):
        render_micrograph(np.random.default_rng(5), detector_dqe=0.0, **flat)


def test_micrographs_vary():
    """Defocus, B-factor, ice and coverage are drawn per micrograph within their ranges; numbers fix them."""
    infos = [render_micrograph(np.random.default_rng(seed), shape=(256, 256), pixel_size=4.0).info
             for seed in range(12)]
    for key, (low, high) in {"defocus_um": (0.8, 3.0), "bfactor": (50, 150), "ice_thickness_a": (250, 600),
                             "ice_roughness_a": (5, 12), "coverage": (0.05, 0.55)}.items():
        values = np.array([info[key] for info in infos])
        assert (values >= low).all() and (values <= high).all(), key
        assert np.ptp(values) > 0.4 * (high - low), key
    fixed = render_micrograph(np.random.default_rng(0), shape=(256, 256), pixel_size=4.0, bfactor=80.0,
                              ice_thickness_a=300.0, ice_roughness_a=6.0).info
    assert (fixed["bfactor"], fixed["ice_thickness_a"], fixed["ice_roughness_a"]) == (80.0, 300.0, 6.0)


def test_crowded_micrographs_have_touching_particles():
    sim = render_micrograph(np.random.default_rng(6), shape=(2048, 2048), coverage=(0.55, 0.55), **CLEAN)
    x, y = sim.truth.T
    nearest = (np.hypot(x[:, None] - x, y[:, None] - y) + np.eye(len(x)) * 1e9).min(axis=1)
    assert len(x) > 80 and nearest.min() >= 0.8 * 150
    assert (nearest < 150).mean() > 0.2  # many particles touch a neighbour


def test_particle_model_is_centred_and_inside_its_sphere():
    model = make_particle_model(np.random.default_rng(0), 150.0, n_blobs=200)
    assert model.centres.shape == (200, 3)
    np.testing.assert_allclose(np.average(model.centres, axis=0, weights=model.volumes), 0, atol=1e-6)
    assert np.linalg.norm(model.centres, axis=1).max() < 75.0 + 1e-6


def test_shell_model_is_hollow_centred_and_as_heavy_as_a_compact_particle():
    shell = make_shell_model(np.random.default_rng(0), 120.0, n_blobs=400)
    radii = np.linalg.norm(shell.centres, axis=1)
    assert radii.max() < 60.0 + 1e-6
    assert np.quantile(radii, 0.01) > 0.6 * 60.0  # the cavity is empty (re-centring moves blobs ~1 Å)
    np.testing.assert_allclose(np.average(shell.centres, axis=0, weights=shell.volumes), 0, atol=1e-6)
    compact = make_particle_model(np.random.default_rng(0), 120.0)
    assert shell.volumes.sum() == pytest.approx(compact.volumes.sum())
    with pytest.raises(ValueError, match="inner_fraction"):
        make_shell_model(np.random.default_rng(0), 120.0, inner_fraction=0.95)


def test_a_shell_projects_to_a_ring_with_a_light_centre():
    """Noise-free, in focus-free projection (no CTF): the centre holds less protein than the rim."""
    from streampick.simulate import _particle_points, _splat

    yy, xx = np.mgrid[:128, :128]
    r = np.hypot(xx - 64, yy - 64)

    def centre_and_rim(model) -> tuple[float, float]:
        xy, volumes = _particle_points(np.random.default_rng(2), model, np.array([[64.0, 64.0]]), 1.0)
        thickness = _splat((128, 128), xy, volumes, 1.0)
        return thickness[r < 15].mean(), thickness[(r > 45) & (r < 58)].mean()

    centre, rim = centre_and_rim(make_shell_model(np.random.default_rng(1), 120.0))
    assert rim > 1.25 * centre > 0
    centre, rim = centre_and_rim(make_particle_model(np.random.default_rng(1), 120.0))
    assert centre > 1.25 * rim


def test_dataset_particle_shape_is_checked_and_recorded(tmp_path):
    with pytest.raises(ValueError, match="coverage must be a range"):
        render_micrograph(np.random.default_rng(0), shape=(128, 128), pixel_size=4.0, coverage=(0.6, 0.2))
    with pytest.raises(ValueError, match="unknown particle shape 'cube'"):
        simulate_dataset(tmp_path / "x", 1, shape=(128, 128), pixel_size=4.0, particle_shape="cube")
    meta = simulate_dataset(tmp_path / "shells", 1, seed=3, shape=(256, 256), pixel_size=4.0,
                            particle_diameter_a=120.0, particle_shape="shell")
    assert meta["particle_model"]["shape"] == "shell"
    assert json.loads((tmp_path / "shells" / "simulation.json").read_text())["particle_model"]["shape"] == "shell"


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
    assert {"dose", "defocus_um", "protein_contrast_v", "ice_roughness_a", "clutter_per_um2",
            "detector_dqe"} <= set(saved["micrograph_parameters"])
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


def test_cli_simulate_shells_at_a_chosen_coverage(tmp_path, capsys, caplog):
    from streampick.cli import main

    out = tmp_path / "dense"
    assert main(["simulate", str(out), "--n", "1", "--size", "512", "--pixel-size", "2", "--diameter", "100",
                 "--particle-shape", "shell", "--coverage", "0.5", "0.5", "--seed", "4"]) == 0
    meta = json.loads((out / "simulation.json").read_text())
    assert meta["particle_model"]["shape"] == "shell"
    assert meta["micrograph_parameters"]["coverage"] == [0.5, 0.5]
    assert meta["micrographs"][0]["coverage"] > 0.3
    assert main(["simulate", str(tmp_path / "bad"), "--n", "1", "--coverage", "0.6", "0.2"]) != 0
    assert "--coverage needs 0 <= LOW <= HIGH <= 0.9, got 0.6 0.2" in caplog.text
    assert not (tmp_path / "bad").exists()


def test_command_modules_do_not_import_torch():
    code = ("import sys, streampick.commands.evaluate, streampick.commands.simulate, streampick.evaluate, "
            "streampick.simulate; assert 'torch' not in sys.modules and 'scipy' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
