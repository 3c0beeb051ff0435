"""End to end: a real `streampick run` subprocess, real files landing, a real ZMQ subscriber on loopback."""
from __future__ import annotations

import os
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import starfile
import yaml
from daemon_harness import DaemonHarness, background, land, write_sources

from streampick.cli import main
from streampick.daemon.journal import Journal


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> list[Path]:
    """Eight simulated 1024² micrographs at 1 Å/px, written outside any watched folder."""
    return write_sources(tmp_path_factory.mktemp("sources"), 8, seed=3)


@pytest.fixture
def daemon(tmp_path, model_path):
    harness = DaemonHarness(tmp_path, model_path)
    yield harness
    harness.close()


def test_micrographs_landing_every_way_are_published_exactly_once(daemon, sources):
    daemon.start()
    ways = ["in-place", "rename", "copy", "in-place", "rename"]
    writers = [background(land, daemon.watched, f"mic_{i}.mrc", sources[i], way) for i, way in enumerate(ways)]
    for writer in writers:
        writer.join()
    daemon.wait_for(lambda: len(daemon.picked_names()) == 5, 60, "5 micrographs picked")
    daemon.receive(1.0)
    picks = daemon.picks()
    assert sorted(m["micrograph"]["name"] for m in picks) == [f"mic_{i}" for i in range(5)]  # once each
    assert len({m["key"] for m in picks}) == 5 and [m["seq"] for m in picks] == sorted(m["seq"] for m in picks)
    for message in picks:
        star = starfile.read(message["outputs"]["star"])
        assert len(star) == message["n_picks"] == sum(s >= 0.0 for s in message["picks"]["score"])
        stamps = message["timestamps"]
        assert stamps["landed"] <= stamps["complete"] <= stamps["started"] <= stamps["committed"] \
            <= stamps["published"]
        assert message["model"]["version"] == "tiny:7" and not message["replay"]
    status = daemon.control("status")
    assert status["ok"] and status["counts"]["done"] == 5 and status["counts"]["published"] == 5


def test_control_threshold_replay_pause_and_shutdown(daemon, sources):
    daemon.start()
    for i in range(2):
        land(daemon.watched, f"mic_{i}.mrc", sources[i], "rename")
    daemon.wait_for(lambda: len(daemon.picked_names()) == 2, 60, "2 micrographs picked")
    first = daemon.picks()[0]
    scores = np.array(first["picks"]["score"])
    new_threshold = float(np.median(scores))
    assert daemon.control("set-threshold", threshold=new_threshold)["threshold"] == new_threshold
    star = Path(first["outputs"]["star"])
    expected = int((scores >= new_threshold).sum())
    daemon.wait_for(lambda: len(starfile.read(star)) == expected if expected else True, 20, "STAR rewritten")
    replay = daemon.control("replay", since=0)
    assert [m["seq"] for m in replay["messages"]] == [m["seq"] for m in daemon.picks()]
    assert all(m["replay"] for m in replay["messages"]) and not replay["more"]
    assert daemon.control("pause")["state"] == "paused"
    land(daemon.watched, "mic_2.mrc", sources[2], "rename")
    daemon.wait_for(lambda: daemon.control("status")["queue_depth"] == 1, 20, "a queued micrograph")
    assert "mic_2" not in daemon.picked_names()
    assert daemon.control("resume")["state"] == "running"
    daemon.wait_for(lambda: "mic_2" in daemon.picked_names(), 30, "mic_2 picked after resume")
    bad = daemon.control("set-threshold", threshold="high")
    assert not bad["ok"] and "threshold" in bad["error"]
    assert daemon.stop() == 0
    daemon.start()  # a restart with the same config keeps the threshold the user set
    assert daemon.control("status")["threshold"] == new_threshold
    assert daemon.stop() == 0
    config = yaml.safe_load(daemon.config.read_text())
    config["picking"]["threshold"] = 0.25  # a threshold written into the config since then wins
    daemon.config.write_text(yaml.safe_dump(config))
    daemon.start()
    assert daemon.control("status")["threshold"] == 0.25
    assert daemon.stop() == 0


def test_kill_9_and_restart_loses_nothing_and_repeats_nothing(daemon, sources):
    daemon.start()
    for i in range(3):
        land(daemon.watched, f"mic_{i}.mrc", sources[i], "rename")
    daemon.wait_for(lambda: len(daemon.picked_names()) >= 1, 60, "a first pick")
    daemon.kill9()
    for i in range(3, 6):  # land while the daemon is down
        land(daemon.watched, f"mic_{i}.mrc", sources[i], "rename" if i < 5 else "copy")
    daemon.start()
    land(daemon.watched, "mic_6.mrc", sources[6], "in-place")

    def all_seen() -> bool:  # what a reconnecting subscriber does: replay what it may have missed
        daemon.catch_up()
        return len(daemon.picked_names()) == 7
    daemon.wait_for(all_seen, 90, "all 7 micrographs picked")
    daemon.kill9()
    daemon.start()  # a second kill -9, at rest: nothing may be picked again
    daemon.receive(2.0)
    daemon.catch_up()
    by_key = daemon.unique_picks()  # asserts a repeated key always carries the same seq
    assert len(by_key) == 7
    assert sorted(m["micrograph"]["name"] for m in by_key.values()) == [f"mic_{i}" for i in range(7)]
    daemon.stop()
    with Journal(daemon.out / "journal.sqlite") as journal:
        counts = journal.counts()
    assert counts["done"] == 7 and counts["results"] == 7 and counts["published"] == 7


def _bad_files(folder: Path, good: Path) -> dict[str, str]:
    """Write one file per bad-input class; returns {name: the stage its error should come from}."""
    data = good.read_bytes()
    (folder / "truncated.mrc").write_bytes(data[: len(data) // 2])
    (folder / "garbage.mrc").write_bytes(os.urandom(5000))
    (folder / "empty.mrc").write_bytes(b"")
    with mrcfile.new(folder / "volume.mrc") as mrc:
        mrc.set_data(np.random.default_rng(0).normal(size=(3, 64, 64)).astype(np.float32))
    with mrcfile.new(folder / "flat.mrc") as mrc:
        mrc.set_data(np.zeros((256, 256), np.float32))
    with mrcfile.new(folder / "complex.mrc") as mrc:
        mrc.set_data(np.ones((64, 64), np.complex64))
    return {"truncated": "complete", "garbage": "read", "empty": "complete", "volume": "read", "flat": "read",
            "complex": "read"}


def test_bad_files_each_get_one_error_and_the_daemon_goes_on(daemon, sources):
    daemon.start()
    expected = _bad_files(daemon.watched, sources[0])
    land(daemon.watched, "good.mrc", sources[1], "rename")
    daemon.wait_for(lambda: {Path(e["path"]).stem for e in daemon.errors() if e["path"]} >= set(expected),
                    60, "an error for every bad file")
    daemon.wait_for(lambda: "good" in daemon.picked_names(), 30, "the good micrograph")
    daemon.receive(2.5)  # past give_up_seconds again: nothing is reported twice
    errors = [e for e in daemon.errors() if e["path"]]
    for name, stage in expected.items():
        mine = [e for e in errors if Path(e["path"]).stem == name]
        assert len(mine) == 1, (name, mine)
        assert mine[0]["stage"] == stage and name in mine[0]["message"] and "\n" not in mine[0]["message"]
    assert daemon.picked_names() == {"good"}
    status = daemon.control("status")
    assert status["counts"]["failed"] == len(expected)


def test_a_file_deleted_while_queued_is_reported(daemon, sources):
    daemon.start()
    daemon.control("pause")
    land(daemon.watched, "doomed.mrc", sources[0], "rename")
    daemon.wait_for(lambda: daemon.control("status")["queue_depth"] == 1, 20, "queued")
    (daemon.watched / "doomed.mrc").unlink()
    daemon.control("resume")
    daemon.wait_for(lambda: any("doomed" in (e["path"] or "") for e in daemon.errors()), 20, "the error")
    land(daemon.watched, "after.mrc", sources[1], "rename")
    daemon.wait_for(lambda: "after" in daemon.picked_names(), 30, "the next micrograph")


def test_an_output_write_failure_is_retried_and_nothing_is_lost(daemon, sources):
    blocker = daemon.out / "tiny_7" / "candidates"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where the daemon needs a folder: every write under it fails")
    daemon.start()
    land(daemon.watched, "mic_0.mrc", sources[0], "rename")
    daemon.wait_for(lambda: any(e["stage"] == "write" for e in daemon.errors()), 30, "the write error")
    assert "retrying" in daemon.errors()[0]["message"] and not daemon.picks()
    blocker.unlink()
    daemon.wait_for(lambda: "mic_0" in daemon.picked_names(), 30, "the micrograph after the retry")


def test_a_copy_of_a_picked_micrograph_is_not_picked_again(daemon, sources):
    daemon.start()
    land(daemon.watched, "a.mrc", sources[0], "rename")
    daemon.wait_for(lambda: "a" in daemon.picked_names(), 30, "a")
    land(daemon.watched, "a_copy.mrc", sources[0], "copy")
    land(daemon.watched, "b.mrc", sources[1], "rename")
    daemon.wait_for(lambda: "b" in daemon.picked_names(), 30, "b")
    assert "a_copy" not in daemon.picked_names()
    assert daemon.control("status")["counts"]["duplicate"] == 1


def test_a_non_loopback_endpoint_without_keys_is_refused(tmp_path, model_path, caplog):
    harness = DaemonHarness(tmp_path, model_path, publish__endpoint="tcp://0.0.0.0:5999")
    try:
        assert main(["run", "--config", str(harness.config)]) == 2
    finally:
        harness.close()
    assert "publish.endpoint" in caplog.text and "CurveZMQ" in caplog.text


@pytest.mark.parametrize("section,key,value,message", [
    ("watch", "foldr", "/tmp", "watch.foldr: unknown key"),
    ("watch", "folder", "/no/such/folder", "watch.folder"),
    ("watch", "observer", "fanotify", "watch.observer: must be one of"),
    ("publish", "high_water_mark", "lots", "publish.high_water_mark: expected"),
])
def test_config_errors_name_the_key(tmp_path, model_path, caplog, section, key, value, message):
    harness = DaemonHarness(tmp_path, model_path, **{f"{section}__{key}": value})
    try:
        assert main(["run", "--config", str(harness.config)]) == 2
    finally:
        harness.close()
    assert message in caplog.text


def test_demo_runs_microscope_daemon_and_scores_the_picks(tmp_path, model_path, capsys):
    code = main(["demo", "-o", str(tmp_path / "demo"), "--n", "3", "--interval", "0.5", "--size", "1024",
                 "-m", str(model_path), "--no-monitor"])
    assert code == 0
    assert "demo: 3 micrographs picked" in capsys.readouterr().out
    assert len(list((tmp_path / "demo" / "picks" / "tiny_7").glob("*_autopick.star"))) == 3


def test_curve_keys_admit_only_authorized_clients(tmp_path, model_path, sources):
    from streampick.daemon.control import ControlError, request
    from streampick.daemon.security import CurveClient

    keys = tmp_path / "keys"
    assert main(["-q", "keys", str(keys)]) == 0
    client = CurveClient(secret_key_file=keys / "client.key_secret", server_public_key_file=keys / "server.key")
    harness = DaemonHarness(tmp_path / "run", model_path, curve=client,
                            security__server_secret_key=str(keys / "server.key_secret"),
                            security__authorized_clients=str(keys / "authorized_clients"))
    try:
        harness.start()  # the harness subscribes with the client's keys: heartbeats arrive
        land(harness.watched, "mic_0.mrc", sources[0], "rename")
        harness.wait_for(lambda: "mic_0" in harness.picked_names(), 30, "a pick over CurveZMQ")
        with pytest.raises(ControlError):
            request(harness.ctl, "status", timeout=1.5)  # no keys: no answer
    finally:
        harness.close()


@pytest.fixture
def tiny_disk(tmp_path):
    """A 400 kB tmpfs mounted for the test (root only), so that writes fail with a real ENOSPC."""
    import subprocess

    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root and mount to make a small full disk")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_reported_retried_and_nothing_is_lost(tmp_path, model_path, sources, tiny_disk):
    import subprocess

    harness = DaemonHarness(tmp_path / "run", model_path, output__folder=str(tiny_disk / "out"),
                            output__journal=str(tmp_path / "journal.sqlite"))
    filler = tiny_disk / "filler"
    filler.write_bytes(b"\0" * 380_000)  # leave ~20 kB: not enough for a candidates table
    try:
        harness.start()
        for i in range(3):
            land(harness.watched, f"mic_{i}.mrc", sources[i], "rename")
        harness.wait_for(lambda: any("No space left" in e["message"] for e in harness.errors()), 60, "ENOSPC")
        assert harness.control("status")["state"] == "running"
        subprocess.run(["mount", "-o", "remount,size=20m", str(tiny_disk)], check=True)
        harness.wait_for(lambda: len(harness.picked_names()) == 3, 60, "all 3 after the disk grew")
        assert len(harness.unique_picks()) == 3
        assert not list(tiny_disk.rglob(".*.tmp"))  # no temporary files left behind by failed writes
    finally:
        harness.close()


def test_the_polling_observer_sees_files_on_a_mount_without_inotify(tmp_path, model_path, sources):
    harness = DaemonHarness(tmp_path, model_path, watch__observer="polling", watch__poll_interval=0.3)
    try:
        harness.start()
        land(harness.watched, "mic_0.mrc", sources[0], "in-place")
        land(harness.watched, "mic_1.mrc", sources[1], "rename")
        harness.wait_for(lambda: harness.picked_names() == {"mic_0", "mic_1"}, 60, "both micrographs")
    finally:
        harness.close()


def test_reprocess_writes_a_new_generation_and_keeps_the_old_files(daemon, sources):
    daemon.start()
    land(daemon.watched, "mic_0.mrc", sources[0], "rename")
    daemon.wait_for(lambda: "mic_0" in daemon.picked_names(), 30, "the first pick")
    first = daemon.picks()[0]
    old_star = Path(first["outputs"]["star"])
    old_text = old_star.read_text()
    assert daemon.control("reprocess", paths=[first["micrograph"]["path"]])["queued"] == 1
    daemon.wait_for(lambda: len(daemon.unique_picks()) == 2, 30, "the re-pick")
    again = [m for m in daemon.picks() if m["generation"] == 1][0]
    assert again["key"] != first["key"] and again["micrograph"]["identity"] == first["micrograph"]["identity"]
    assert Path(again["outputs"]["star"]).parent.name == "tiny_7-r1"
    assert old_star.read_text() == old_text


def test_user_patterns_pick_tiff_and_png_and_refuse_a_movie(tmp_path, model_path, sources):
    """watch.patterns *.tif and *.png with picking.pixel_size: a TIFF renamed into place and a 16-bit PNG written
    in place with pauses longer than settle_seconds are each picked once (the PNG only when its IEND chunk has
    landed); a 3-frame TIFF gets one 'movie stack' error."""
    import io
    import time

    import tifffile
    from PIL import Image

    harness = DaemonHarness(tmp_path, model_path, watch__patterns=["*.tif", "*.png"], picking__pixel_size=1.0)
    try:
        harness.start()
        image = mrcfile.read(sources[0]).astype(np.float32)
        private = tmp_path / "private"
        private.mkdir()
        tifffile.imwrite(private / "a.tif", image)
        os.rename(private / "a.tif", harness.watched / "a.tif")
        tifffile.imwrite(private / "movie.tif", np.stack([image[:256, :256]] * 3), photometric="minisblack")
        os.rename(private / "movie.tif", harness.watched / "movie.tif")
        scaled = (image - image.min()) / (image.max() - image.min()) * 65535
        buffer = io.BytesIO()
        Image.fromarray(scaled.astype(np.uint16)).save(buffer, format="PNG")
        raw = buffer.getvalue()
        with open(harness.watched / "b.bin_avg.png", "wb") as stream:  # slow, in place: 4 chunks, 0.5 s apart
            for k in range(4):
                stream.write(raw[k * len(raw) // 4:(k + 1) * len(raw) // 4])
                stream.flush()
                time.sleep(0.5)
        harness.wait_for(lambda: harness.picked_names() == {"a", "b.bin_avg"}, 60, "the TIFF and the PNG")
        harness.wait_for(lambda: any("movie" in (e["path"] or "") for e in harness.errors()), 30, "the movie error")
        harness.receive(1.0)
        assert len(harness.picks()) == 2
        errors = harness.errors()
        assert len(errors) == 1 and "3 frames (a movie stack)" in errors[0]["message"], errors
        assert {tuple(m["micrograph"]["shape"]) for m in harness.picks()} == {image.shape}
    finally:
        harness.close()
