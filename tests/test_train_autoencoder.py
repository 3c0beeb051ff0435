"""The optional autoencoder regularizer: decoder shape, the loss term, a short run, and nothing of it saved."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

import streampick.train.loop as loop
from streampick.cli import main
from streampick.nets import Model, ModelCard, build, load_model
from streampick.simulate import simulate_dataset
from streampick.train.autoencoder import CropDecoder, build_decoder
from streampick.train.data import POSITIVE, load_training_data
from streampick.train.loop import Prior, TrainOptions, split_micrographs, train
from streampick.train.sampler import CropSampler


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("autoencoder") / "sim"
    simulate_dataset(out, 3, seed=2, shape=(512, 512), pixel_size=2.0)
    return out


@pytest.mark.parametrize("name,units", [("resnet8", 32), ("resnet16", 32), ("conv31", 16), ("conv127", 8)])
def test_decoder_output_has_the_crop_shape(name, units):
    net = build(name, units)
    crops = torch.randn(3, 1, net.width, net.width)
    decoder = build_decoder(net)
    assert isinstance(decoder, CropDecoder)
    assert decoder(net.embed(crops)).shape == crops.shape


def test_decoder_is_seeded_and_leaves_the_global_generator_alone():
    net = build("resnet8", 32)
    torch.manual_seed(5)
    a = build_decoder(net, seed=3)
    after = torch.rand(1)
    torch.manual_seed(5)
    b = build_decoder(net, seed=3)
    assert torch.equal(torch.rand(1), after)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_the_loss_adds_w_times_the_reconstruction_error_on_the_same_batch():
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(96, 96, generator=generator)
    labels = torch.zeros(96, 96, dtype=torch.uint8)
    labels[40:43, 50:53] = POSITIVE
    torch.manual_seed(0)
    net = build("resnet8", 32)
    prior = Prior(pi=0.01, labelled_fraction=9 / 96**2, pi_u=0.01 - 9 / 96**2)
    cpu, weight = torch.device("cpu"), 2.5
    results, nets = [], []
    for w in (0.0, weight):
        copy_ = copy.deepcopy(net)
        sampler = CropSampler([image], [labels], net.width, seed=0)  # the same batch both times
        options = TrainOptions(batch_size=32, precision="float32", autoencoder=w)
        decoder = build_decoder(copy_) if w > 0 else None
        params = list(copy_.parameters()) + (list(decoder.parameters()) if decoder else [])
        optimizer = torch.optim.SGD(params, lr=0.1)
        before = None if decoder is None else copy.deepcopy(decoder.state_dict())
        results.append(loop._step(copy_, sampler, optimizer, options, prior, cpu, torch.float32, decoder))
        nets.append(copy_)
        if decoder is not None:
            assert any(not torch.equal(before[k], v) for k, v in decoder.state_dict().items())  # decoder trained
    (loss0, error0), (loss1, error1) = results
    assert error0 is None and error1 > 0
    assert loss1 == pytest.approx(loss0 + weight * error1, rel=1e-5)
    # the reconstruction's gradient reaches the picker's features, not only the decoder
    first = [n.features[0].conv.weight for n in nets]
    assert not torch.allclose(first[0], first[1])


def _fresh() -> Model:
    torch.manual_seed(0)
    return Model(build("resnet8", 32), ModelCard(name="t", architecture="resnet8", units=32))


def test_w_zero_builds_no_decoder_and_records_no_reconstruction(sim, monkeypatch):
    data = load_training_data(sorted((sim / "micrographs").glob("*.mrc")), [sim / "labels.txt"],
                              target_pixel_size=8.0)
    train_set, test_set = split_micrographs(data, test_names=["sim_0002"])
    built = []
    real = loop.build_decoder
    monkeypatch.setattr(loop, "build_decoder", lambda *a, **k: built.append(1) or real(*a, **k))
    common = dict(expected_particles=20, particle_diameter=150.0, from_scratch=True)
    plain = train(_fresh(), train_set, test_set, TrainOptions(epochs=1, steps=2, batch_size=16), **common)
    assert built == [] and "reconstruction_mse" not in plain.metrics()
    assert plain.history[1].reconstruction is None
    regular = train(_fresh(), train_set, test_set, TrainOptions(epochs=1, steps=2, batch_size=16, autoencoder=1.0),
                    **common)
    assert built == [1]
    assert regular.metrics()["reconstruction_mse"][0] is None and regular.metrics()["reconstruction_mse"][1] > 0
    assert set(regular.model.net.state_dict()) == set(plain.model.net.state_dict())


def test_cli_run_with_autoencoder_saves_a_plain_picker_checkpoint(sim, tmp_path):
    out = tmp_path / "ae.pt"
    args = ["-q", "train", "--micrographs", *sorted(str(p) for p in (sim / "micrographs").glob("*.mrc")),
            "--labels", str(sim / "labels.txt"), "-o", str(out), "--target-pixel-size", "8",
            "--particle-diameter", "150", "--expected-particles", "20", "--batch-size", "16", "--epochs", "1",
            "--steps", "3", "--test-micrographs", "sim_0002", "--autoencoder", "0.5"]
    assert main(args) == 0
    metrics = json.loads(out.with_suffix(".card.json").read_text())["metrics"]
    assert metrics["autoencoder"] == 0.5
    assert len(metrics["reconstruction_mse"]) == 2 and metrics["reconstruction_mse"][1] > 0
    state = torch.load(out, weights_only=True)["state_dict"]
    assert set(state) == set(build("resnet8", 32).state_dict())  # no decoder keys
    model = load_model(out)
    assert model.card.metrics["autoencoder"] == 0.5 and "--autoencoder 0.5" in model.card.command
    with torch.inference_mode():
        assert model.net(torch.zeros(1, 1, 71, 71)).shape == (1, 1, 1, 1)
