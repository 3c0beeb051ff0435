"""The GPU path: the same picks on CUDA as on the CPU, training on CUDA, and the daemon choosing the GPU.

Skipped (with the reason) where torch sees no CUDA device, as in CI; run on a GPU machine with the README's
test command (the rest of the suite then also picks on the GPU, since ``device: auto`` prefers it).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from streampick.device import scoring_dtype, select_device
from streampick.nets import Model, ModelCard, build, load_model
from streampick.pick import Length, PickSettings, prepare, score_and_extract
from streampick.simulate import simulate_dataset

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (GPU tests run on a GPU "
                                "machine only)")


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu") / "sim"
    simulate_dataset(out, 4, seed=1, shape=(1024, 1024), pixel_size=2.0)
    return out


def test_auto_selects_the_gpu_and_bfloat16():
    device = select_device("auto")
    assert device.type == "cuda"
    assert scoring_dtype(device, "auto") == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32)


@pytest.mark.parametrize("precision", ["float32", "auto"])
def test_gpu_picks_match_cpu_picks(sim, precision):
    from streampick.io.micrograph import read_micrograph

    torch.manual_seed(0)
    card = ModelCard(name="t", architecture="resnet8", units=32, pixel_size=8.0, particle_diameter=150.0)
    weights = build("resnet8", 32).eval().state_dict()
    settings = PickSettings(radius=Length(75.0), precision=precision)
    micrograph = read_micrograph(sim / "micrographs" / "sim_0000.mrc")
    picks = {}
    for device in ("cpu", "cuda"):
        net = build("resnet8", 32)
        net.load_state_dict(weights)
        model = Model(net.eval().to(device), card)
        prepared = prepare(micrograph, 8.0, torch.device(device))
        picks[device] = score_and_extract([prepared], model, settings)[0].picks
    cpu, gpu = picks["cpu"], picks["cuda"]
    top = min(len(cpu), len(gpu), 20)
    assert top >= 5
    # the strongest candidates are the same places (within a pixel) with close scores
    distance = np.hypot(cpu.x[:top, None] - gpu.x[None, :top], cpu.y[:top, None] - gpu.y[None, :top]).min(1)
    assert np.median(distance) < 1.0
    tolerance = 1e-3 if precision == "float32" else 0.1
    assert np.abs(np.sort(cpu.score[:top]) - np.sort(gpu.score[:top])).max() < tolerance


def test_training_on_the_gpu_improves_the_held_out_ap(sim, tmp_path):
    from streampick.cli import main

    out = tmp_path / "gpu.pt"
    args = ["-q", "train", "--micrographs", *sorted(str(p) for p in (sim / "micrographs").glob("*.mrc")),
            "--labels", str(sim / "labels.txt"), "-o", str(out), "--target-pixel-size", "8",
            "--particle-diameter", "150", "--expected-particles", "50", "--batch-size", "64", "--device", "cuda",
            "--epochs", "3", "--steps", "30", "--test-micrographs", "sim_0003", "--test-reference",
            str(sim / "truth.star")]
    assert main(args) == 0
    ap = load_model(out).card.metrics["held_out_ap"]
    assert max(ap[1:]) >= ap[0] + 0.2
