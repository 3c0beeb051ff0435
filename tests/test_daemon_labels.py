"""Live fine-tuning's parts without a daemon: the labels folder, control labels, the swap rule, the
trainer's command line and its JSON progress from a real ``streampick train`` child."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from streampick.daemon.labels import add_control_labels, collect_labels, fingerprint, label_files
from streampick.daemon.trainer import RoundPlan, TrainingRun, swap_decision, train_command
from streampick.io.coords import read_coordinates, write_star
from streampick.picks import Picks


def write_mrc(path: Path, shape=(200, 300)) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.zeros(shape, dtype=np.float32))
        mrc.voxel_size = 2.0
    return str(path)


@pytest.fixture
def known(tmp_path) -> dict[str, str]:
    return {f"mic_{i}": write_mrc(tmp_path / "watched" / f"mic_{i}.mrc") for i in range(3)}


def test_label_files_split_particles_and_junk_and_ignore_other_files(tmp_path):
    labels = tmp_path / "labels"
    for name in ("a.star", "sub/b.box", "negatives/c.txt", "negatives/control/d.star", ".hidden.star",
                 "notes.md", "e.star~"):
        (labels / name).parent.mkdir(parents=True, exist_ok=True)
        (labels / name).write_text("x")
    positives, negatives = label_files(labels)
    assert [p.relative_to(labels).as_posix() for p in positives] == ["a.star", "sub/b.box"]
    assert [p.relative_to(labels).as_posix() for p in negatives] == ["negatives/c.txt", "negatives/control/d.star"]
    before = fingerprint(positives)
    (labels / "a.star").write_text("xy")
    assert fingerprint(positives) != before
    assert label_files(tmp_path / "absent") == ([], [])


def test_bad_label_files_get_one_clear_message_each_and_the_rest_is_kept(tmp_path, known):
    labels = tmp_path / "labels"
    labels.mkdir()
    good = labels / "mic_0_autopick.star"
    write_star(good, Picks.from_arrays([10.0, 50.0], [20.0, 60.0]))
    (labels / "rows.txt").write_text("image_name\tx_coord\ty_coord\nmic_1\t12\t30\nmic_1\tabc\t40\n")
    (labels / "unknown.txt").write_text("image_name\tx_coord\ty_coord\nmic_9\t12\t30\nmic_2\t40\t41\n")
    (labels / "outside.box").write_text("10 10 20 20\n5000 10 20 20\n")  # named for no micrograph
    write_star(labels / "mic_1.star", Picks.from_arrays([10.0, 350.0], [20.0, 20.0]))  # one outside 300x200
    messages: list[str] = []
    result = collect_labels(*label_files(labels), known, messages.append)
    assert len(messages) == 4, messages
    text = "\n".join(messages)
    assert "rows.txt" in text and "'abc' is not a number" in text
    assert "unknown.txt" in text and "'mic_9'" in text
    assert "outside.box" in text and "micrograph 'outside'" in text
    assert "mic_1.star" in text and "1 of 2 picks on 'mic_1' lie outside its 300x200 image" in text
    assert all("\n" not in m for m in messages)
    assert sorted(result.micrographs) == ["mic_0", "mic_1", "mic_2"]
    assert len(result.positives["mic_0"]) == 2 and len(result.positives["mic_1"]) == 1
    assert result.paths["mic_2"] == known["mic_2"]
    assert result.count() == (4, 0)


def test_control_labels_are_files_that_add_up_or_replace(tmp_path, known):
    labels = tmp_path / "labels"
    path, total = add_control_labels(labels, "/data/mic_0.mrc", Picks.from_arrays([1.0, 2.0], [3.0, 4.0]))
    assert path == labels / "control" / "mic_0.star" and total == 2
    _, total = add_control_labels(labels, "mic_0", Picks.from_arrays([5.0], [6.0]))
    assert total == 3
    _, total = add_control_labels(labels, "mic_0", Picks.from_arrays([7.0], [8.0]), replace=True)
    assert total == 1 and list(read_coordinates(path).values())[0].x.tolist() == [7.0]
    junk, _ = add_control_labels(labels, "mic_1", Picks.from_arrays([9.0], [9.0]), negative=True)
    assert junk == labels / "negatives" / "control" / "mic_1.star"
    result = collect_labels(*label_files(labels), known, lambda m: pytest.fail(m))
    assert result.count() == (1, 1) and result.micrographs == ["mic_0"]


@pytest.mark.parametrize("start, best, epoch, gain, swap", [
    (0.50, 0.60, 2, 0.0, True), (0.50, 0.50, 0, 0.0, False), (0.50, 0.52, 1, 0.05, False),
    (None, 0.6, 1, 0.0, False), (0.5, None, 0, 0.0, False)])
def test_a_candidate_is_swapped_in_only_when_it_beats_the_current_model(start, best, epoch, gain, swap):
    accept, reason = swap_decision(start, best, epoch, gain)
    assert accept is swap and reason and "\n" not in reason


def test_the_trainer_command_and_progress_of_a_real_child(tmp_path):
    plan = RoundPlan(number=3, start_model="topaz:resnet8_u32", micrographs=["/d/a.mrc", "/d/b.mrc"],
                     labels=tmp_path / "labels.star", negatives=None, output=tmp_path / "m-ft3.pt",
                     log_file=tmp_path / "train.log", particle_diameter=150.0, scale=["--target-pixel-size", "8"])
    training = {"expected_particles": 60, "objective": "ge-binomial", "epochs": 2, "steps": 5, "batch_size": 16,
                "lr": 2e-4, "radius": 3.0, "test_fraction": 0.25, "precision": "auto", "threads": 1}
    command = train_command(plan, training, device="cpu")
    assert command[:4] == [sys.executable, "-m", "streampick", "train"]
    joined = " ".join(command)
    for part in ("--progress json", "--exit-with-stdin", "--micrographs /d/a.mrc /d/b.mrc", "--seed 3",
                 "--target-pixel-size 8", "--expected-particles 60", "--model topaz:resnet8_u32", "--threads 1"):
        assert part in joined
    # A child that fails reports its last stderr line; events from a child that prints JSON lines arrive.
    events, outcome = [], []
    script = ("import json, sys; print(json.dumps({'event': 'step', 'done': 1, 'total': 2}), flush=True); "
              "print('not json'); sys.exit('label file x: broken')")
    run = TrainingRun([sys.executable, "-c", script], tmp_path / "child.log", nice=0,
                      on_event=events.append, on_exit=lambda done, error: outcome.append((done, error)))
    run.thread.join(30)
    assert events == [{"event": "step", "done": 1, "total": 2}]
    assert outcome == [(None, "training exited with status 1: label file x: broken")]


def test_a_trainer_child_exits_when_its_parent_goes_away(tmp_path):
    """--exit-with-stdin: closing the pipe (what kill -9 of the daemon does) ends the child at once."""
    child = subprocess.Popen([sys.executable, "-c", "from streampick.train.progress import exit_when_stdin_closes;"
                              "import time; exit_when_stdin_closes(); time.sleep(60)"], stdin=subprocess.PIPE)
    child.stdin.close()
    assert child.wait(20) == 3


def test_json_progress_lines(capsys):
    from streampick.train.loop import EpochRecord
    from streampick.train.progress import JsonProgress

    progress = JsonProgress(total_steps=2)
    hooks = progress.callbacks(0)
    hooks.step(1, 0.5)
    hooks.step(2, float("nan"))
    hooks.epoch(EpochRecord(1, 2, 0.4, 0.75, 1.234))
    progress.warning("label file y:\nbad row")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0] == {"event": "step", "fold": 0, "done": 1, "total": 2, "loss": 0.5}
    assert lines[1]["done"] == 2 and lines[1]["loss"] is None  # the last step always; NaN as null
    assert lines[2] == {"event": "epoch", "fold": 0, "epoch": 1, "ap": 0.75, "loss": 0.4, "seconds": 1.234}
    assert lines[3] == {"event": "warning", "message": "label file y: bad row"}
