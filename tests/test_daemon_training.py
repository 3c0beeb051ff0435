"""Live fine-tuning end to end: a real daemon, real label files and control labels, a real trainer process.

Six simulated 1024² micrographs at 2 Å/px (256² at the 8 Å/px working scale), 11-95 particles each (sim_0000
is mostly carbon); the daemon starts from an untrained resnet8_u32 whose output starts at the prior (its
classifier bias at logit(π), as `streampick train` does from scratch), so a short round (3 × 30 updates of 64
crops, as in test_train_run) improves the held-out AP by a wide margin and must be swapped in, and a round at
a learning rate of 1e-12 changes nothing and must be rejected.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from daemon_harness import DaemonHarness, land

from streampick.io.coords import read_coordinates, write_table
from streampick.nets import Model, ModelCard, build, save_model
from streampick.simulate import simulate_dataset

TRAINING = {"expected_particles": 50, "settle_seconds": 0.5, "scan_interval": 0.3, "epochs": 3, "steps": 30,
            "batch_size": 64, "test_fraction": 0.3, "nice": 0, "threads": 1, "device": "cpu"}


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finetune") / "sim"
    simulate_dataset(out, 6, seed=1, shape=(1024, 1024), pixel_size=2.0)
    return out


@pytest.fixture(scope="module")
def untrained(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "untrained.pt"
    card = ModelCard(name="untrained", architecture="resnet8", units=32, pixel_size=8.0, particle_diameter=150.0,
                     version="0")
    net = build("resnet8", 32)
    pi = 50 * 29 / 256**2
    with torch.no_grad():
        net.classifier.bias.fill_(math.log(pi / (1 - pi)))
    save_model(path, Model(net, card))
    return path


def harness(tmp_path: Path, model: Path, **training) -> DaemonHarness:
    return DaemonHarness(tmp_path, model, picking__radius=None, picking__edge_margin="0",
                         **{f"training__{k}": v for k, v in {**TRAINING, **training}.items()})


def versions(h: DaemonHarness, state: str) -> list[dict]:
    return [v for t, m in h.messages if t == "training" for v in m["versions"] if v["state"] == state]


def wait_round(h: DaemonHarness, expected: str) -> dict:
    """The first finished round's version entry, which must be in state ``expected``."""
    h.wait_for(lambda: any(t == "training" and m["versions"] for t, m in h.messages), 240, "a round to finish")
    entry = next(m["versions"][0] for t, m in h.messages if t == "training" and m["versions"])
    log = (h.out / "training" / "round-0001" / "train.log").read_text()[-2000:]
    assert entry["state"] == expected, (entry, log)
    return entry


def digest_files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "picks.star"}


def test_fine_tuning_swaps_in_a_better_model_and_repicks_in_the_background(tmp_path, sim, untrained):
    h = harness(tmp_path, untrained)
    try:
        h.start()
        for i in range(1, 5):
            land(h.watched, f"sim_{i:04d}.mrc", sim / "micrographs" / f"sim_{i:04d}.mrc", "rename")
        h.wait_for(lambda: len(h.picked_names()) == 4, 60, "4 micrographs picked")
        first_version = h.picks()[0]["model"]["version"]
        old_folder = Path(h.picks()[0]["outputs"]["star"]).parent
        old_files = digest_files(old_folder)

        labels = h.out / "labels"
        labels.mkdir()
        # Labels on only one micrograph are not enough: one must be held out.
        all_labels = read_coordinates(sim / "labels.txt")
        write_table(labels / "first.txt", [("sim_0001", all_labels["sim_0001"])])
        h.wait_for(lambda: any("2 needed" in e["message"] for e in h.errors()), 30, "the too-few-labels message")
        # The rest: sim's sparse labels (30 % of the particles) but sim_0000's (it lands later: its labels would
        # start another round; sim_0005 never lands), one micrograph's labels over the control socket, and
        # three bad files.
        write_table(labels / "rest.txt", [(k, v) for k, v in all_labels.items()
                                          if k not in ("sim_0000", "sim_0001", "sim_0003")])
        picks = all_labels["sim_0003"]
        reply = h.control("add-labels", micrograph="sim_0003", x=picks.x.tolist(), y=picks.y.tolist())
        assert reply["ok"] and reply["labels"] == len(picks)
        (labels / "rows.txt").write_text("image_name\tx_coord\ty_coord\nsim_0001\t12\tnot-a-number\n")
        (labels / "elsewhere.txt").write_text("image_name\tx_coord\ty_coord\nnot_landed_9\t12\t30\n")
        (labels / "sim_0002_outside.box").write_text("5000 5000 40 40\n")

        active = wait_round(h, "active")
        assert active["ap"] > active["start_ap"] + 0.1, active
        new_version = active["version"]
        assert new_version != first_version and new_version.startswith("untrained-ft")

        # Every picked micrograph is re-picked with the new version in the background, into a new folder.
        def repicked() -> set[str]:
            return {m["micrograph"]["name"] for m in h.picks() if m["model"]["version"] == new_version}
        h.wait_for(lambda: len(repicked()) == 4, 60, "4 re-picks with the new model")
        assert all(m["repick"] for m in h.picks() if m["model"]["version"] == new_version)
        # A new arrival is picked with the new version, as a live pick.
        land(h.watched, "sim_0000.mrc", sim / "micrographs" / "sim_0000.mrc", "rename")
        h.wait_for(lambda: "sim_0000" in repicked(), 30, "the new arrival")
        live = [m for m in h.picks() if m["micrograph"]["name"] == "sim_0000"]
        assert len(live) == 1 and not live[0]["repick"]
        # No threshold configured: the new model's automatic threshold (its card's) is used from the swap on.
        assert active["threshold"] is not None and live[0]["threshold"] == pytest.approx(active["threshold"])
        assert digest_files(old_folder) == old_files  # the old version's files untouched
        new_folder = Path(live[0]["outputs"]["star"]).parent
        assert new_folder != old_folder and (new_folder / "candidates" / "sim_0001.txt").is_file()

        # Each bad label file got one clear message, however often the folder was scanned.
        errors = [e["message"] for e in h.errors() if e["stage"] == "training"]
        for name, what in (("rows.txt", "not a number"), ("elsewhere.txt", "'not_landed_9'"),
                           ("sim_0002_outside.box", "outside"), ("rest.txt", "'sim_0005'")):
            hits = [e for e in errors if name in e and what in e]
            assert len(hits) == 1, (name, errors)
        status = h.control("status")
        assert status["model"]["version"] == new_version and status["training"]["state"] == "idle"
        assert status["training"]["labels"]["micrographs"] == 4
        h.stop()

        # A restart continues with the fine-tuned model, picks nothing again and does not train again on the
        # same labels.
        n_picks, seen = len(h.unique_picks()), len(h.messages)
        h.start()
        assert h.control("status")["model"]["version"] == new_version
        h.receive(2.0)
        assert len(h.unique_picks()) == n_picks
        assert not [m for t, m in h.messages[seen:] if t == "training" and m["state"] == "training"]
    finally:
        h.close()


def test_a_candidate_that_is_no_better_is_rejected_and_the_model_kept(tmp_path, sim, untrained):
    h = harness(tmp_path, untrained, lr=1e-12, auto=False)
    try:
        h.start()
        for i in range(1, 4):
            land(h.watched, f"sim_{i:04d}.mrc", sim / "micrographs" / f"sim_{i:04d}.mrc", "rename")
        h.wait_for(lambda: len(h.picked_names()) == 3, 60, "3 micrographs picked")
        version = h.picks()[0]["model"]["version"]
        (h.out / "labels").mkdir()
        (h.out / "labels" / "all.txt").write_text((sim / "labels.txt").read_text())
        h.receive(1.5)
        assert not [m for t, m in h.messages if t == "training" and m["state"] == "training"]  # auto: false
        assert h.control("train")["started"]
        rejected = wait_round(h, "rejected")
        assert rejected["ap"] == rejected["start_ap"] and "does not beat" in rejected["reason"]
        assert h.control("status")["model"]["version"] == version
        h.receive(1.0)
        assert {m["model"]["version"] for m in h.picks()} == {version}  # nothing re-picked
        progress = [m["progress"] for t, m in h.messages if t == "training" and m.get("progress")]
        assert progress and progress[-1]["total"] == 90 and progress[-1]["epochs"][0]["epoch"] == 0
        assert json.loads(json.dumps(h.control("training")))["versions"][-1]["state"] == "rejected"
    finally:
        h.close()
