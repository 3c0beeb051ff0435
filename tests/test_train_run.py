"""Short real training runs on simulated micrographs, in-process through the CLI and the library.

Four 1024² micrographs at 2 Å/px (256² at the 8 Å/px working scale), labels = a random 30 % of the true
particles, jittered (what ``streampick simulate`` writes).  resnet8_u32 from scratch, GE-binomial, batch 64:
on this data the held-out AP against the full truth goes from ~0.33 untrained to ~0.69 after 50 updates and
~0.72 after 150 (measured with bfloat16 and float32 alike); the test runs 90 and asks for +0.2.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from streampick.cli import main
from streampick.io.coords import read_coordinates
from streampick.nets import Model, ModelCard, build, load_model
from streampick.simulate import simulate_dataset
from streampick.train.data import NEGATIVE, POSITIVE, load_training_data
from streampick.train.loop import TrainOptions, make_sampler, split_micrographs, train


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train") / "sim"
    simulate_dataset(out, 4, seed=1, shape=(1024, 1024), pixel_size=2.0)
    return out


def base_args(sim: Path, out: Path) -> list[str]:
    return ["-q", "train", "--micrographs", *sorted(str(p) for p in (sim / "micrographs").glob("*.mrc")),
            "--labels", str(sim / "labels.txt"), "-o", str(out), "--target-pixel-size", "8",
            "--particle-diameter", "150", "--expected-particles", "50", "--batch-size", "64"]


def test_training_from_scratch_beats_the_untrained_model_by_a_wide_margin(sim, tmp_path):
    out = tmp_path / "model.pt"
    args = base_args(sim, out) + ["--epochs", "3", "--steps", "30", "--test-micrographs", "sim_0003",
                                  "--test-reference", str(sim / "truth.star")]
    assert main(args) == 0
    card = json.loads(out.with_suffix(".card.json").read_text())
    ap = card["metrics"]["held_out_ap"]
    assert len(ap) == 4  # the untrained model, then each epoch
    assert card["metrics"]["best_ap"] == max(ap[1:]) >= ap[0] + 0.2
    assert card["metrics"]["best_epoch"] == ap.index(max(ap))
    assert card["metrics"]["test_micrographs"] == ["sim_0003"]
    model = load_model(out)
    assert (model.card.architecture, model.card.units, model.card.pixel_size, model.card.particle_diameter) == \
        ("resnet8", 32, 8.0, 150.0)
    assert model.card.metrics["objective"] == "ge-binomial"
    assert model.card.metrics["pi"] == pytest.approx(50 * 29 / 256**2)
    assert "streampick train" in model.card.command and "--expected-particles 50.0" in model.card.command
    assert "3 training, 1 held out" in model.card.training_data
    # The automatic threshold: the lower of the count rule's (over all 4 micrographs) and the PU-corrected F1's
    # (recall on the held-out one), estimated on the held-out one.
    threshold = card["metrics"]["threshold"]
    assert model.card.threshold is not None and threshold["value"] == model.card.threshold
    assert (threshold["method"], threshold["count_micrographs"], threshold["estimate_micrographs"]) == \
        ("lower", 4, "held-out (1)")
    assert threshold["value"] == pytest.approx(min(threshold["count_value"], threshold["pu_f1_value"]), abs=1e-5)
    assert threshold["expected_particles"] == 50 and threshold["picks_per_micrograph"] >= 35  # count: 50 ± bf16 ties
    assert 0 <= threshold["estimated_recall"] <= 1 and threshold["n_labels"] > 0
    # The written model picks with its card alone (working scale, radius and threshold from the card), and
    # the candidates table keeps every candidate.
    picks_dir = tmp_path / "picks"
    assert main(["-q", "pick", str(sim / "micrographs" / "sim_0003.mrc"), "-o", str(picks_dir), "-m",
                 str(out)]) == 0
    (candidates,) = read_coordinates(picks_dir / "candidates.txt").values()
    (kept,) = read_coordinates(picks_dir / "sim_0003_autopick.star").values()
    assert len(kept) == len(candidates.above(model.card.threshold)) < len(candidates)


def test_the_smoothing_option_is_stored_in_the_card_and_used_for_the_threshold(sim, tmp_path):
    thresholds = {}
    # none given: 3/32 of the 150 Å diameter, since the scratch start's card has none
    for given, expected in ((None, 150 * 3 / 32), ("0", 0.0), ("16", 16.0)):
        out = tmp_path / f"smoothing{given}.pt"
        option = [] if given is None else ["--smoothing", given]
        assert main(base_args(sim, out) + ["--epochs", "1", "--steps", "3", *option]) == 0
        card = json.loads(out.with_suffix(".card.json").read_text())
        assert card["smoothing"] == expected and load_model(out).card.smoothing == expected
        thresholds[given] = card["threshold"]
        if given == "16":  # a start model with a smoothing hands it on unless the option says otherwise
            again = tmp_path / "from16.pt"
            assert main(base_args(sim, again) + ["--epochs", "1", "--steps", "1", "--model", str(out)]) == 0
            assert load_model(again).card.smoothing == 16.0
    # same seed, same updates: only the smoothing of the picks the threshold is chosen from differs
    assert thresholds["0"] != thresholds["16"]


def test_k_fold_reports_mean_and_sd_and_refits_on_everything(sim, tmp_path):
    out = tmp_path / "cv.pt"
    assert main(base_args(sim, out) + ["--epochs", "1", "--steps", "2", "--batch-size", "16", "--k-fold", "2"]) == 0
    metrics = json.loads(out.with_suffix(".card.json").read_text())["metrics"]
    assert metrics["k_fold"] == 2 and len(metrics["fold_ap"]) == 2
    assert sorted(sum(metrics["fold_micrographs"], [])) == [f"sim_{i:04d}" for i in range(4)]
    assert metrics["mean_ap"] == pytest.approx(sum(metrics["fold_ap"]) / 2)
    assert metrics["sd_ap"] is not None


@pytest.mark.parametrize("objective", ["pn", "ge-kl", "nnpu"])
def test_every_objective_trains_with_negatives_and_is_deterministic(sim, objective, tmp_path):
    junk = tmp_path / "junk.txt"  # e.g. picks on ice contamination, marked as junk by the user
    junk.write_text("image_name\tx_coord\ty_coord\n" + "".join(f"sim_000{i}\t{100 + 37 * i}\t{500 - 41 * i}\n"
                                                             for i in range(3)))
    data = load_training_data(sorted((sim / "micrographs").glob("*.mrc")), [sim / "labels.txt"], [junk],
                              target_pixel_size=8.0)
    assert sum(len(m.negatives) for m in data) == 3
    train_set, test_set = split_micrographs(data, test_names=["sim_0003"])
    options = TrainOptions(objective=objective, epochs=1, steps=3, batch_size=16, precision="float32")
    kinds = make_sampler(build("resnet8", 32), train_set, options).sample(512).kind
    assert (kinds == NEGATIVE).any() and (kinds == POSITIVE).any()
    losses = []
    for _ in range(2):
        torch.manual_seed(0)
        model = Model(build("resnet8", 32), ModelCard(name="t", architecture="resnet8", units=32))
        result = train(model, train_set, test_set, options, expected_particles=50, particle_diameter=150.0,
                       from_scratch=True)
        losses.append(result.history[1].loss)
        assert result.history[1].ap is not None
    assert losses[0] == losses[1] and losses[0] == losses[0]  # same seed, same losses; not NaN


def test_training_runs_contiguous_and_evaluation_leaves_the_model_alone(sim):
    from streampick.nets import prepare_for_inference
    from streampick.score import memory_format
    from streampick.train.loop import held_out_ap

    data = load_training_data(sorted((sim / "micrographs").glob("*.mrc")), [sim / "labels.txt"],
                              target_pixel_size=8.0)
    train_set, test_set = split_micrographs(data, test_names=["sim_0003"])
    torch.manual_seed(0)
    model = Model(build("resnet8", 32).train(), ModelCard(name="t", architecture="resnet8", units=32))
    strides = {k: v.stride() for k, v in model.net.state_dict().items()}
    ap = held_out_ap(model, test_set, 150.0)
    assert ap is not None and model.net.training  # scored a prepared copy: the net is as it was
    assert {k: v.stride() for k, v in model.net.state_dict().items()} == strides
    assert held_out_ap(prepare_for_inference(model), test_set, 150.0) == pytest.approx(ap, abs=0.02)
    assert memory_format(model.net) == torch.channels_last  # as load_model gives it on a CPU
    result = train(model, train_set, test_set, TrainOptions(epochs=1, steps=1, batch_size=8), expected_particles=50,
                   particle_diameter=150.0, from_scratch=True)
    assert memory_format(model.net) == torch.contiguous_format  # trained contiguous (bf16 training is faster so)
    assert memory_format(result.model.net) == torch.contiguous_format and not result.model.net.training


def test_a_time_limit_ends_training_early_and_keeps_what_it_reached(sim):
    data = load_training_data(sorted((sim / "micrographs").glob("*.mrc")), [sim / "labels.txt"],
                              target_pixel_size=8.0)
    train_set, test_set = split_micrographs(data, test_names=["sim_0003"])
    torch.manual_seed(0)
    model = Model(build("resnet8", 32), ModelCard(name="t", architecture="resnet8", units=32))
    options = TrainOptions(epochs=5, steps=100_000, batch_size=8, time_limit=1.0)
    result = train(model, train_set, test_set, options, expected_particles=50, particle_diameter=150.0,
                   from_scratch=True)
    assert [r.epoch for r in result.history] == [0, 1]  # one epoch, cut short, then evaluated
    assert 0 < result.history[1].steps < 100_000 and result.history[1].ap is not None
