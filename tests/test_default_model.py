"""The shipped default model: found by name (from a checkout and from a non-editable install), a complete
card, and it picks simulated particles far better than untrained weights."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import streampick
from streampick.config import DEFAULT_MODEL, PICKING_KEYS
from streampick.evaluate import evaluate_sets
from streampick.io.micrograph import Micrograph
from streampick.nets import Model, build, load_model
from streampick.nets.checkpoint import SHIPPED_MODELS
from streampick.picks import Picks
from streampick.simulate import simulate_micrograph

REPO = Path(__file__).resolve().parents[1]


def test_the_default_model_is_shipped_small_and_loads_by_name():
    path = REPO / "models" / f"{DEFAULT_MODEL}.pt"
    assert path.is_file() and path.stat().st_size < 2 * 2**20
    assert SHIPPED_MODELS.resolve() == (REPO / "models").resolve()  # a checkout uses its models/ folder
    model = load_model(DEFAULT_MODEL)
    assert (model.card.name, model.card.architecture, model.card.units) == (DEFAULT_MODEL, "resnet8", 32)
    assert PICKING_KEYS["model"][1] == DEFAULT_MODEL  # the configuration's default


def test_the_default_model_card_is_complete_and_matches_its_json():
    card = load_model(DEFAULT_MODEL).card
    assert card.pixel_size == 8.0 and card.particle_diameter == 150.0
    assert card.threshold is not None and -6 < card.threshold < 6
    assert "simulated" in card.training_data and "streampick train" in card.command
    assert card.metrics["objective"] == "ge-binomial" and card.metrics["best_ap"] > 0.5
    assert "threshold_method" in card.metrics and "demo" in card.metrics
    on_disk = json.loads((REPO / "models" / f"{DEFAULT_MODEL}.card.json").read_text())
    assert on_disk == json.loads(json.dumps(card.to_dict()))


def _micrograph(seed: int) -> tuple[Micrograph, np.ndarray]:
    """A 2048² simulated micrograph at 2 Å/px (the demo's field of view, 256² at the working scale)."""
    image, truth = simulate_micrograph(np.random.default_rng(seed), (2048, 2048), pixel_size=2.0,
                                       particle_diameter_a=150.0, coverage=(0.3, 0.4), defocus_um=(1.5, 2.5))
    return Micrograph(path=Path(f"sim{seed}.mrc"), data=image, pixel_size=2.0), truth


def _ap(model: Model, micrograph: Micrograph, truth: np.ndarray) -> float:
    picks = streampick.pick_micrograph(micrograph, model)  # the card's pixel size and radius
    reference = {"m": Picks.from_arrays(truth[:, 0], truth[:, 1])}
    return evaluate_sets({"m": picks}, reference, radius=75 / 2.0).ap


def test_the_default_model_picks_simulated_particles_far_better_than_untrained_weights():
    shipped = load_model(DEFAULT_MODEL)
    torch.manual_seed(0)
    untrained = Model(build("resnet8", 32).eval(), shipped.card)
    for seed in (11, 12):
        micrograph, truth = _micrograph(seed)
        assert len(truth) > 40
        good, bad = _ap(shipped, micrograph, truth), _ap(untrained, micrograph, truth)
        assert good > 0.6 and good > bad + 0.3, (seed, good, bad)


def test_a_non_editable_install_finds_the_shipped_models(tmp_path):
    """Build a wheel (as `pip install .` does), install it into a folder, and load the model from there."""
    if not _can_build_wheels():
        pytest.skip("pip, or a setuptools that builds wheels, is not available")
    source = tmp_path / "source"  # a copy of what packaging reads: never build inside the working tree
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for name in ("streampick", "models"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    _pip("wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(wheels), str(source))
    (wheel,) = wheels.glob("streampick-*.whl")
    assert f"streampick/_models/{DEFAULT_MODEL}.pt" in zipfile.ZipFile(wheel).namelist()
    site = tmp_path / "site"
    _pip("install", "--no-deps", "--no-index", "--target", str(site), str(wheel))
    probe = ("import streampick, streampick.nets.checkpoint as c; m = streampick.load_model(%r); "
             "print(streampick.__file__); print(c.SHIPPED_MODELS); print(m.card.name)" % DEFAULT_MODEL)
    # the wheel's folder first; whatever PYTHONPATH already held stays behind it (a machine whose
    # dependencies are installed on a PYTHONPATH, as the GPU machine's are, still finds mrcfile)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("STREAMPICK_MODELS", None)
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    module, folder, name = out.stdout.split()
    assert Path(module).is_relative_to(site) and Path(folder) == site / "streampick" / "_models"
    assert name == DEFAULT_MODEL


def _can_build_wheels() -> bool:
    if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode != 0:
        return False
    return any(importlib.util.find_spec(name) is not None
               for name in ("setuptools.command.bdist_wheel", "wheel"))


def _pip(*words: str) -> None:
    out = subprocess.run([sys.executable, "-m", "pip", "-q", *words], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "PIP_NO_INPUT": "1"})
    assert out.returncode == 0, out.stdout + out.stderr
