"""End to end on real ice (issue 7): `streampick train` briefly on three EMPIAR-10017 train-half micrographs
and their CryoPPP picks, then `streampick pick` on a test-half micrograph; the trained model must find far
more of that micrograph's reference particles than the same network untrained.  Skipped without ../shared."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from streampick.evaluate import evaluate_sets
from streampick.io.coords import read_coordinates
from streampick.nets import Model, ModelCard, build
from streampick.nets.checkpoint import save_model
from streampick.picks import Picks
from streampick.realsets import find_set, load_set

DIAMETER = 108.0
DOWNSAMPLE = 9.0  # the particle 12 px across: the fastest scale that still picks well


def _cli(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "streampick", *args], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def _recall_at_count(candidates, reference: Picks) -> float:
    """Recall when the micrograph keeps as many best picks as it has reference particles."""
    picks = next(iter(read_coordinates(candidates).values()))
    top = Picks(picks.x[:len(reference)], picks.y[:len(reference)], picks.score[:len(reference)])
    result = evaluate_sets({"m": top}, {"m": reference}, DIAMETER / 2)
    return result.n_tp / result.n_ref


def test_brief_finetuning_on_10017_finds_far_more_test_particles_than_untrained(real_data, tmp_path):
    files = load_set(real_data, find_set("10017"), report=pytest.fail)
    train = files.train[:3]
    labels = [real_data / files.realset.folder / "coords_cryoppp" / f"{p.stem}.csv" for p in train]
    test = files.test[0]
    reference = files.reference[test.stem]

    torch.manual_seed(0)  # the untrained start: the network `train` builds from --seed 0, as shipped weights
    card = ModelCard(name="untrained", architecture="resnet8", units=32, batch_norm=False,
                     pixel_size=DOWNSAMPLE, particle_diameter=DIAMETER, source="scratch")
    save_model(tmp_path / "untrained.pt", Model(build("resnet8", 32), card))
    _cli("train", "--micrographs", *map(str, train), "--labels", *map(str, labels), "--pixel-size", "1",
         "--downsample", str(DOWNSAMPLE), "--particle-diameter", str(DIAMETER), "--expected-particles", "650",
         "--epochs", "1", "--steps", "150", "--batch-size", "64", "--lr", "1e-3", "--test-fraction", "0",
         "--seed", "0", "--threads", "2", "-o", str(tmp_path / "trained.pt"))

    recall = {}
    for name in ("untrained", "trained"):
        _cli("pick", str(test), "-m", str(tmp_path / f"{name}.pt"), "--pixel-size", "1", "--downsample",
             str(DOWNSAMPLE), "-o", str(tmp_path / name))
        recall[name] = _recall_at_count(tmp_path / name / "candidates.txt", reference)
    assert recall["trained"] >= 0.6, recall
    assert recall["trained"] >= recall["untrained"] + 0.25, recall

