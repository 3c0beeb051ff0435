"""Architectures, strided/dense equivalence, checkpoints and Topaz weight import."""
from __future__ import annotations

import pytest
import torch

from streampick.errors import ModelError
from streampick.nets import Model, ModelCard, build, load_model, save_model
from streampick.nets.checkpoint import infer_topaz_architecture, topaz_to_streampick_keys

EXPECTED = {("resnet8", 32): (71, 4), ("resnet16", 64): (91, 4), ("conv31", 32): (31, 4),
            ("conv63", 32): (63, 8), ("conv127", 16): (127, 16)}


@pytest.mark.parametrize("name,units", list(EXPECTED))
def test_receptive_field_and_stride(name, units):
    net = build(name, units)
    assert (net.width, net.stride) == EXPECTED[(name, units)]
    # a valid-convolution net maps a width-sized input to exactly one output pixel
    with torch.inference_mode():
        assert net.eval()(torch.zeros(1, 1, net.width, net.width)).shape[-2:] == (1, 1)


@pytest.mark.parametrize("name,units", list(EXPECTED))
def test_strided_output_is_dense_output_subsampled(name, units):
    torch.manual_seed(0)
    net = build(name, units).eval()
    image = torch.randn(1, 1, net.width + 3 * net.stride + 5, net.width + 2 * net.stride + 1)
    with torch.inference_mode():
        dense, strided = net(image, dense=True), net(image)
    sub = dense[..., ::net.stride, ::net.stride]
    assert sub.shape == strided.shape
    torch.testing.assert_close(sub, strided, atol=1e-4, rtol=1e-3)  # oneDNN may pick other algorithms


def _as_topaz_layout(state: dict) -> dict:
    return {("features." + k if k.startswith("features.") else k): v for k, v in state.items()}


@pytest.mark.parametrize("name,units", [("resnet8", 32), ("resnet16", 64)])
def test_topaz_layout_state_dict_maps_every_key(tmp_path, name, units):
    torch.manual_seed(1)
    net = build(name, units).eval()
    topaz_state = _as_topaz_layout(net.state_dict())
    assert all(k.startswith(("features.features.", "classifier.")) for k in topaz_state)
    path = tmp_path / f"{name}_u{units}.sav"
    torch.save(topaz_state, path)
    assert infer_topaz_architecture(topaz_state) == (name, units)
    loaded = load_model(path)
    assert loaded.card.architecture == name and loaded.card.units == units and loaded.card.source == "topaz"
    assert set(topaz_to_streampick_keys(topaz_state)) == set(loaded.net.state_dict())
    image = torch.randn(1, 1, 120, 110)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.net(image), net(image))


def test_topaz_state_dict_with_a_missing_key_is_refused(tmp_path):
    state = _as_topaz_layout(build("resnet8", 32).state_dict())
    del state["features.features.2.proj.weight"]
    torch.save(state, tmp_path / "broken.sav")
    with pytest.raises(ModelError, match="do not fit"):
        load_model(tmp_path / "broken.sav")


def test_checkpoint_round_trip_keeps_weights_and_card(tmp_path):
    torch.manual_seed(2)
    net = build("conv63", 16).eval()
    card = ModelCard(name="tiny", architecture="conv63", units=16, batch_norm=True, pixel_size=8.0,
                     particle_diameter=150.0, threshold=-1.5, metrics={"ap": 0.8}, training_data="sim")
    save_model(tmp_path / "tiny.pt", Model(net, card))
    assert (tmp_path / "tiny.card.json").is_file()
    loaded = load_model(tmp_path / "tiny.pt")
    assert loaded.card == card
    image = torch.randn(1, 1, 100, 100)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.net(image), net(image))


@pytest.mark.parametrize("smoothing", [-1.0, "12A", None, True, float("nan"), float("inf")])
def test_a_card_with_a_bad_smoothing_is_refused_in_one_line(tmp_path, smoothing):
    card = ModelCard(name="tiny", architecture="resnet8", units=32)
    save_model(tmp_path / "tiny.pt", Model(build("resnet8", 32).eval(), card))
    data = torch.load(tmp_path / "tiny.pt", weights_only=True)
    data["card"]["smoothing"] = smoothing  # a hand-edited card
    torch.save(data, tmp_path / "edited.pt")
    with pytest.raises(ModelError, match="smoothing must be a length") as caught:
        load_model(tmp_path / "edited.pt")
    assert "\n" not in str(caught.value)


def test_pickled_module_is_refused_with_weights_only(tmp_path):
    torch.save(build("resnet8", 32), tmp_path / "module.pt")  # a whole pickled module, as 'topaz train' saves
    with pytest.raises(ModelError, match="not a loadable weights file"):
        load_model(tmp_path / "module.pt")


@pytest.mark.parametrize("spec", ["no/such/file.pt", "topaz:resnet99_u1", "garbage"])
def test_unresolvable_model_specs_raise_model_error(spec):
    with pytest.raises(ModelError):
        load_model(spec)


def test_topaz_pretrained_resolves_without_importing_topaz(topaz_model_path):
    import sys

    model = load_model("topaz:resnet16_u64")
    assert model.card.architecture == "resnet16" and model.card.units == 64
    assert "topaz" not in sys.modules


def test_load_model_prepares_for_cpu_scoring_and_scoring_changes_no_network(tmp_path):
    from streampick.score import memory_format, score_batch

    torch.manual_seed(3)
    net = build("resnet8", 32).eval()
    save_model(tmp_path / "m.pt", Model(net, ModelCard(name="m", architecture="resnet8", units=32)))
    loaded = load_model(tmp_path / "m.pt")
    assert memory_format(loaded.net) == torch.channels_last and not loaded.net.training
    assert memory_format(net) == torch.contiguous_format
    images = torch.randn(2, 150, 130)
    for candidate in (net, loaded.net):
        strides = {k: v.stride() for k, v in candidate.state_dict().items()}
        before = memory_format(candidate)
        for dtype in (torch.float32, torch.bfloat16):
            score_batch(candidate, images, dtype=dtype)
            score_batch(candidate, images, dense=True, dtype=dtype)
        assert {k: v.stride() for k, v in candidate.state_dict().items()} == strides
        assert memory_format(candidate) == before
    torch.testing.assert_close(score_batch(loaded.net, images), score_batch(net, images), atol=1e-4, rtol=1e-3)
