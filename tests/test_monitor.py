"""The live monitor: its state from hand-built daemon messages, its frames at 80 and 120 columns, and
``streampick monitor --once`` in-process against a real PUB socket."""
from __future__ import annotations

import argparse
import io
import json
import threading

import numpy as np
import pytest
from rich.console import Console

from streampick.commands import monitor as monitor_command
from streampick.monitor import MonitorState, render

T0 = 1_700_000_000.0
MODEL = {"name": "topaz:resnet16_u64", "version": 3}


def stats_message(**changes) -> dict:
    message = {"time": T0, "uptime_s": 3725.0, "state": "running", "model": MODEL, "threshold": 0.5,
               "counts": {"waiting": 4, "queued": 2, "done": 117, "failed": 3, "duplicate": 1, "results": 118,
                          "published": 118},
               "queue_depth": 6, "throughput_per_min": 12.4,
               "latency_s": {"median": 1.7, "p95": 3.9, "n": 118},
               "errors": 3, "last_seq": 118}
    message.update(changes)
    return message


def picks_message(seq: int, scores: list[float], *, key: str | None = None, n_picks: int | None = None,
                  carbon: float = 0.2, replay: bool = False) -> dict:
    return {
        "seq": seq, "key": key or f"sha256-{seq}:3:0", "replay": replay,
        "micrograph": {"path": f"/data/session/mic_{seq:05d}.mrc", "name": f"mic_{seq:05d}.mrc",
                       "identity": f"sha256-{seq}", "size_bytes": 67109888, "shape": [4096, 4096],
                       "pixel_size": 1.0, "working_pixel_size": 8.0},
        "model": MODEL, "generation": 0,
        "timestamps": {"landed": T0 + seq, "complete": T0 + seq + 2.0, "started": T0 + seq + 2.1,
                       "committed": T0 + seq + 3.0, "published": T0 + seq + 3.5},
        "threshold": 0.5, "floor": -6.0,
        "picks": {"x": [10.0] * len(scores), "y": [20.0] * len(scores), "score": scores},
        "n_picks": sum(s >= 0.5 for s in scores) if n_picks is None else n_picks,
        "stats": {"normalization": {"mean": 0.0, "std": 1.0, "minor_mean": -2.0, "minor_weight": carbon,
                                    "log_posterior": -1.0, "iterations": 12, "method": "gmm"},
                  "carbon_fraction": carbon,
                  "timings": {"read": 0.01, "downsample": 0.02, "normalize": 0.01, "score": 0.3,
                              "extract": 0.02, "write": 0.01}},
        "outputs": {"star": f"/data/picks/mic_{seq:05d}_autopick.star",
                    "candidates": "/data/picks/candidates.txt"},
    }


def error_message(message: str = "not an MRC file (no MAP id)") -> dict:
    return {"time": T0 + 50, "path": "/data/session/mic_00041.mrc", "stage": "read", "message": message}


def heartbeat_message(seq: int = 0) -> dict:
    return {"time": T0, "state": "running", "last_seq": seq, "uptime_s": 60.0}


@pytest.fixture
def busy_state() -> MonitorState:
    """Heartbeats, three picks (one re-sent, then a gap of two), stats and an error."""
    state = MonitorState(endpoint="tcp://em-gpu-01:5555")
    state.update("heartbeat", heartbeat_message(), T0)
    state.update("picks", picks_message(1, [2.0, 1.0, 0.6, -1.0, -4.0], carbon=0.1), T0 + 4)
    state.update("picks", picks_message(2, [3.0, 0.7, -2.0], carbon=0.3), T0 + 5)
    state.update("picks", picks_message(2, [3.0, 0.7, -2.0], carbon=0.3, replay=True), T0 + 6)  # re-sent
    state.update("picks", picks_message(5, [1.5, -5.0]), T0 + 7)  # 3 and 4 missed
    state.update("stats", stats_message(), T0 + 8)
    state.update("error", error_message(), T0 + 9)
    state.update("heartbeat", heartbeat_message(5), T0 + 10)
    return state


def frame(state: MonitorState, now: float, width: int, **options) -> str:
    console = Console(file=io.StringIO(), width=width, force_terminal=False, record=True)
    console.print(render(state, now, width=width, **options))
    return console.export_text()


def test_state_keeps_latest_stats_history_scores_and_errors(busy_state):
    state = busy_state
    assert state.stats["throughput_per_min"] == 12.4
    assert state.counts()["done"] == 117 and state.latest("queue_depth") == 6
    assert state.model == MODEL and state.threshold == 0.5 and state.floor == -6.0
    assert [r.n_picks for r in state.history] == [3, 2, 1]
    assert [r.name for r in state.history] == ["mic_00001.mrc", "mic_00002.mrc", "mic_00005.mrc"]
    assert state.history[0].latency_s == pytest.approx(1.5)  # published - complete
    np.testing.assert_allclose(state.carbon_fractions(), [0.1, 0.3, 0.2])
    np.testing.assert_allclose(np.sort(state.all_scores()),
                               np.sort([2.0, 1.0, 0.6, -1.0, -4.0, 3.0, 0.7, -2.0, 1.5, -5.0]), rtol=1e-6)
    assert len(state.errors) == 1 and state.errors[0].stage == "read" and state.n_errors == 1
    assert state.daemon_state == "running"


def test_repeated_key_is_counted_once_and_seq_gaps_are_noticed(busy_state):
    assert busy_state.results == 3 and busy_state.duplicates == 1
    assert busy_state.replays == 0  # the only replay was a duplicate
    assert busy_state.last_seq == 5
    assert busy_state.seq_gaps == 1 and busy_state.seq_missed == 2


def test_replay_with_a_new_key_counts_and_an_older_seq_is_no_gap():
    state = MonitorState()
    state.update("picks", picks_message(7, [1.0]), T0)
    state.update("picks", picks_message(3, [1.0], replay=True), T0 + 1)  # never seen: counted, no gap
    assert state.results == 2 and state.replays == 1 and state.seq_gaps == 0 and state.last_seq == 7


def test_heartbeat_age_and_silence():
    state = MonitorState(silent_after_s=10.0)
    assert state.connection(T0) == "waiting" and state.heartbeat_age(T0) is None
    for i in range(3):
        state.update("heartbeat", heartbeat_message(), T0 + i)
    assert state.connection(T0 + 3) == "live" and state.heartbeat_age(T0 + 3) == pytest.approx(1.0)
    assert state.connection(T0 + 30) == "silent" and state.silent_for(T0 + 30) == pytest.approx(28.0)
    assert "daemon silent for 28 s" in frame(state, T0 + 30, 80)


def test_status_reply_fills_counts_until_the_first_stats():
    state = MonitorState()
    state.apply_status({"ok": True, "state": "paused", "counts": {"done": 7, "failed": 0, "waiting": 2},
                        "queue_depth": 2, "threshold": 0.0, "model": MODEL, "last_seq": 9, "uptime_s": 5.0})
    assert state.counts()["done"] == 7 and state.daemon_state == "paused" and state.model == MODEL
    state.update("stats", stats_message(), T0)
    assert state.counts()["done"] == 117 and state.daemon_state == "running"
    state.apply_status({"ok": False, "error": "unknown command"})  # ignored
    assert state.counts()["done"] == 117


def test_history_scores_errors_and_keys_are_bounded():
    state = MonitorState(history_size=5, score_micrographs=2, error_size=3, key_memory=4)
    for seq in range(1, 11):
        state.update("picks", picks_message(seq, [float(seq)]), T0 + seq)
        state.update("error", error_message(f"fault {seq}"), T0 + seq)
    assert len(state.history) == 5 and state.history[-1].name == "mic_00010.mrc"
    assert sorted(state.all_scores().tolist()) == [9.0, 10.0]
    assert [e.message for e in state.errors] == ["fault 8", "fault 9", "fault 10"] and state.n_errors == 10
    assert len(state._keys) == 4


def test_unknown_topics_and_bad_fields_do_not_break_the_state():
    state = MonitorState()
    state.update("gossip", {"a": 1}, T0)  # a newer daemon's topic: ignored, but the daemon is alive
    state.update("picks", ["not", "an", "object"], T0 + 1)  # type: ignore[arg-type]
    state.update("picks", {"seq": "x", "picks": {"score": ["a", None, 1.0]}, "n_picks": None}, T0 + 2)
    state.update("stats", {"counts": None, "latency_s": "fast", "model": {"name": "m", "version": "2024-06"}},
                 T0 + 3)
    assert state.connection(T0 + 3) == "live" and state.malformed == 1
    assert "m 2024-06" in frame(state, T0 + 3, 80)
    state.update("stats", {"model": {"name": "mine", "version": "mine:2"}, "latency_s": {"median": 0.04}}, T0 + 4)
    assert "mine:2" in frame(state, T0 + 4, 80) and "40 ms" in frame(state, T0 + 4, 80)
    assert state.results == 1 and state.all_scores().tolist() == [1.0]
    for width in (80, 120):
        frame(state, T0 + 1, width)  # renders without raising


@pytest.mark.parametrize("width", [80, 120])
def test_render_shows_the_key_numbers_and_labels(busy_state, width):
    text = frame(busy_state, T0 + 10.4, width)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    assert len(lines) <= 24  # one 80x24 screen
    for expected in ("tcp://em-gpu-01:5555", "live", "heartbeat 0.4 s ago", "running",
                     "Throughput", "per min", "12.4", "Latency", "median", "1.7 s", "p95", "3.9 s",
                     "Queue", "depth", "Counts", "done", "117", "failed", "waiting",
                     "Particles per micrograph", "latest 1", "Scores", "threshold 0.50",
                     "topaz:resnet16_u64 v3", "carbon", "20% now · 20% mean", "gaps 1 (2 missed)", "1 ignored",
                     "Errors", "not an MRC file", "mic_00041.mrc"):
        assert expected in text, f"{expected!r} missing at width {width}:\n{text}"
    assert "6 of 10 ≥ threshold" in text


def test_render_in_ascii_lists_only_max_errors(busy_state):
    for i in range(5):
        busy_state.update("error", error_message(f"fault number {i}"), T0 + 20 + i)
    text = frame(busy_state, T0 + 25, 80, max_errors=2, ascii_only=True)
    assert "fault number 4" in text and "fault number 3" in text and "fault number 2" not in text
    assert not set("▁▂▃▄▅▆▇█") & set(text)


class FakeDaemon:
    """A PUB socket that publishes a stats message every few ms, and a REP socket that answers status."""

    def __init__(self, context, server_key=None) -> None:
        import zmq

        self.context, self.stop, self.server_key = context, threading.Event(), server_key
        self.ready, self.status_requests = threading.Event(), 0
        self.endpoints: dict[str, str] = {}
        self.thread = threading.Thread(target=self._run, args=(zmq,), name="fake-daemon")

    def _run(self, zmq) -> None:
        # XPUB, to hear the monitor's subscription: sending only after it has joined makes the order of the
        # first messages it sees fixed (heartbeat, unreadable stats, stats), not a race with its connect.
        pub, rep = self.context.socket(zmq.XPUB), self.context.socket(zmq.REP)
        try:
            if self.server_key is not None:  # no authenticator: any client key pair is let in
                for socket in (pub, rep):
                    socket.curve_publickey, socket.curve_secretkey = zmq.auth.load_certificate(self.server_key)
                    socket.curve_server = True
            pub.bind("tcp://127.0.0.1:0")
            rep.bind("tcp://127.0.0.1:0")
            self.endpoints = {"pub": pub.getsockopt_string(zmq.LAST_ENDPOINT),
                              "rep": rep.getsockopt_string(zmq.LAST_ENDPOINT)}
            self.ready.set()
            joined = False
            while not self.stop.is_set():
                if not joined and pub.poll(10):
                    joined = pub.recv()[:1] == b"\x01"  # a subscription
                if joined:
                    pub.send_multipart([b"heartbeat", json.dumps(heartbeat_message(118)).encode()])
                    pub.send_multipart([b"stats", b"{not json"])  # counted as unreadable, never fatal
                    pub.send_multipart([b"stats", json.dumps(stats_message()).encode()])
                if rep.poll(10):
                    request = json.loads(rep.recv())
                    self.status_requests += request == {"command": "status"}
                    rep.send_json({"ok": True, "state": "running", "counts": {"done": 116}, "queue_depth": 6,
                                   "threshold": 0.5, "model": MODEL, "last_seq": 118, "uptime_s": 3700.0})
        finally:
            pub.close(linger=0)
            rep.close(linger=0)

    def __enter__(self) -> "FakeDaemon":
        self.thread.start()
        assert self.ready.wait(5), "the fake daemon did not bind"
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(5)


def monitor_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    monitor_command.add_args(parser)
    return parser.parse_args(argv)


def test_monitor_once_prints_a_frame_from_a_live_publisher(capsys):
    import zmq

    context = zmq.Context()
    try:
        with FakeDaemon(context) as daemon:
            args = monitor_args(["--endpoint", daemon.endpoints["pub"], "--control", daemon.endpoints["rep"],
                                 "--once", "--timeout", "10"])
            assert monitor_command.main(args) == 0
        assert daemon.status_requests == 1
    finally:
        context.term()
    out = capsys.readouterr().out
    for expected in (daemon.endpoints["pub"], "12.4", "per min", "117", "topaz:resnet16_u64 v3", "3.9 s",
                     "unreadable messages"):
        assert expected in out


def test_monitor_once_over_curvezmq(tmp_path, capsys):
    import zmq
    import zmq.auth

    server_public, server_secret = zmq.auth.create_certificates(tmp_path, "server")
    _, client_secret = zmq.auth.create_certificates(tmp_path, "client")
    context = zmq.Context()
    try:
        with FakeDaemon(context, server_key=server_secret) as daemon:
            args = monitor_args(["--endpoint", daemon.endpoints["pub"], "--control", daemon.endpoints["rep"],
                                 "--once", "--timeout", "10", "--client-key", str(client_secret),
                                 "--server-public-key", str(server_public)])
            assert monitor_command.main(args) == 0
        assert daemon.status_requests == 1
    finally:
        context.term()
    assert "12.4" in capsys.readouterr().out


def test_monitor_once_without_a_daemon_prints_a_frame_and_exits_1(capsys):
    args = monitor_args(["--endpoint", "tcp://127.0.0.1:9", "--control", "", "--once", "--timeout", "0.2"])
    assert monitor_command.main(args) == 1
    captured = capsys.readouterr()
    assert "waiting for the daemon" in captured.out and "no stats message" in captured.err


def test_monitor_curve_keys_need_both_files_and_usable_ones(tmp_path):
    from streampick.errors import StreampickError

    args = monitor_args(["--once", "--client-key", str(tmp_path / "client.key_secret")])
    with pytest.raises(StreampickError, match="both"):
        monitor_command.main(args)
    (tmp_path / "server.key").write_text("not a certificate\n")
    args = monitor_args(["--once", "--client-key", str(tmp_path / "missing.key_secret"),
                         "--server-public-key", str(tmp_path / "server.key")])
    with pytest.raises(StreampickError, match="missing.key_secret"):
        monitor_command.main(args)


def training_message(state: str = "training", **changes) -> dict:
    message = {"time": T0 + 20, "state": state, "message": "round 2 from mine:1", "round": 2,
               "progress": {"round": 2, "from": "mine:1", "done": 120, "total": 600, "loss": 0.412,
                            "epochs": [{"epoch": 0, "ap": 0.211}, {"epoch": 1, "ap": 0.305}]},
               "labels": {"particles": 240, "negatives": 12, "micrographs": 8},
               "versions": [{"round": 1, "state": "active", "version": "mine-ft1:mine-ft1-20261125T101010Z",
                             "start_ap": 0.105, "ap": 0.233}]}
    message.update(changes)
    return message


@pytest.mark.parametrize("width", [80, 120])
def test_training_panel_shows_progress_and_the_ap_of_each_version(busy_state, width):
    assert "Training" not in frame(busy_state, T0 + 10.4, width)  # nothing until labels or a round
    busy_state.update("training", training_message(), T0 + 20)
    text = frame(busy_state, T0 + 20.2, width)
    assert max(len(line) for line in text.splitlines()) <= width
    for expected in ("Training", "240 particles · 12 junk on 8 micrographs", "120/600", "loss 0.412",
                     "held-out AP 0.305", "active", "AP 0.105 → 0.233", "mine-ft1"):
        assert expected in text, f"{expected!r} missing at width {width}:\n{text}"
    done = training_message("idle", progress=None, message="round 2 rejected: no better",
                            versions=[*training_message()["versions"],
                                      {"round": 2, "state": "rejected", "start_ap": 0.233, "ap": 0.221}])
    busy_state.update("stats", stats_message(training=done), T0 + 30)  # stats carry it too
    text = frame(busy_state, T0 + 30.2, width)
    assert "rejected" in text and "AP 0.233 → 0.221" in text and "round 2 rejected" in text


def test_background_repicks_are_counted_apart_from_the_live_history(busy_state):
    before = len(busy_state.history)
    message = picks_message(6, [2.0, 1.0], key="sha256-1:mine-ft1:0")
    message["repick"] = True
    busy_state.update("picks", message, T0 + 30)
    assert len(busy_state.history) == before and busy_state.repicks == 1 and busy_state.results == 4
    busy_state.update("training", training_message("idle", progress=None), T0 + 31)
    assert "1 re-picked" in frame(busy_state, T0 + 31, 100)


@pytest.mark.parametrize("width", [80, 120])
def test_workers_panel_shows_the_dask_cluster_and_a_lost_scheduler(busy_state, width):
    assert "Workers" not in frame(busy_state, T0 + 10.4, width)  # the in-process executor: no panel
    executor = {"kind": "dask", "scheduler": "tcp://127.0.0.1:8786", "connected": True, "workers": 2, "busy": 1,
                "failures": 3, "per_worker": [
                    {"address": "tcp://127.0.0.1:40001", "busy": 2, "picked": 41, "per_min": 18.0,
                     "models": ["mine:1", "mine-ft1:2"]},
                    {"address": "tcp://127.0.0.1:40002", "busy": 0, "picked": 7, "per_min": 0.0, "models": []}]}
    busy_state.update("stats", stats_message(executor=executor), T0 + 20)
    text = frame(busy_state, T0 + 20.2, width)
    assert max(len(line) for line in text.splitlines()) <= width
    for expected in ("Workers · 2 · 1 busy · 3 failed", "127.0.0.1:40001", "41 picked", "18/min", "mine-ft1:2",
                     "idle"):
        assert expected in text, f"{expected!r} missing at width {width}:\n{text}"
    lost = {"kind": "dask", "scheduler": "tcp://127.0.0.1:8786", "connected": False, "workers": 0, "failures": 3}
    busy_state.update("stats", stats_message(executor=lost), T0 + 30)
    assert "connection lost" in frame(busy_state, T0 + 30.2, width)
