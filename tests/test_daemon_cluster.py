"""The daemon picking on a real Dask LocalCluster (worker processes on loopback, issue 8): files land, picks
arrive once each and equal in-process picks; a worker killed with kill -9 mid-stream costs nothing and
repeats nothing; an unreachable scheduler stops the start with a message naming the key."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from daemon_harness import DaemonHarness, land, write_sources

from streampick.cli import main
from streampick.daemon.security import free_loopback_port
from streampick.executor import EMULATION_ENV
from streampick.io.coords import read_coordinates

pytest.importorskip("distributed", reason="Dask distributed is not installed (pip install 'streampick[dask]')")


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> list[Path]:
    return write_sources(tmp_path_factory.mktemp("sources"), 12, seed=5)


def _cluster_daemon(root: Path, model: Path, workers: int) -> DaemonHarness:
    return DaemonHarness(root, model, executor__kind="dask", dask__cluster="local", dask__workers=workers,
                         picking__precision="float32")


def _children(pid: int) -> list[int]:
    """Every descendant process of ``pid`` (from /proc)."""
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == parent:
                    found.append(int(entry.name))
                    frontier.append(int(entry.name))
    return found


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_the_daemon_picks_on_a_local_cluster_exactly_once_and_as_in_process(tmp_path, model_path, sources):
    daemon = _cluster_daemon(tmp_path, model_path, workers=2)
    try:
        daemon.start()
        status = daemon.control("status")
        assert status["executor"]["kind"] == "dask" and status["executor"]["workers"] == 2
        for i in range(4):
            land(daemon.watched, f"mic_{i}.mrc", sources[i], "rename")
        # bad input read on a worker: one clear error each, and the daemon goes on
        bad_files = {"corrupt.mrc": b"\x00" * 1024 + b"not image data" * 100,
                     "truncated.mrc": sources[0].read_bytes()[:300_000]}
        whole = sources[1].read_bytes()  # a whole MRC of NaN pixels: the daemon hands it on, a worker refuses it
        bad_files["nan.mrc"] = whole[:1024] + np.full((len(whole) - 1024) // 4, np.nan, np.float32).tobytes()
        for name, content in bad_files.items():
            (tmp_path / name).write_bytes(content)
            os.replace(tmp_path / name, daemon.watched / name)
        daemon.wait_for(lambda: len(daemon.picked_names()) == 4, 90, "4 micrographs picked on the cluster")
        daemon.wait_for(lambda: set(bad_files) <= {Path(e.get("path") or "").name for e in daemon.errors()}, 60,
                        "an error for each bad file")
        bad = [e for e in daemon.errors() if Path(e.get("path") or "").name in bad_files]
        assert len(bad) == 3 and all("\n" not in e["message"] for e in bad), bad
        daemon.receive(1.0)
        picks = daemon.picks()
        assert sorted(m["micrograph"]["name"] for m in picks) == [f"mic_{i}" for i in range(4)]  # once each
        assert all(m["model"]["version"] == "tiny:7" for m in picks)
        executor = daemon.control("status")["executor"]  # per-worker figures, also in every stats message
        assert sum(w["picked"] for w in executor["per_worker"]) == 4 and executor["failures"] == 0
        assert all(w["models"] == ["tiny:7"] for w in executor["per_worker"] if w["picked"])
        assert any(m.get("executor", {}).get("kind") == "dask" for t, m in daemon.messages if t == "stats")
        assert daemon.stop() == 0
    finally:
        daemon.close()
    local = tmp_path / "local"
    assert main(["-q", "pick", *(str(daemon.watched / f"mic_{i}.mrc") for i in range(4)), "-o", str(local),
                 "-m", str(model_path), "--radius", "70A", "--edge-margin", "20A", "--precision", "float32"]) == 0
    expected = read_coordinates(local / "candidates.txt")
    for message in picks:
        ours = expected[message["micrograph"]["name"]]
        assert len(message["picks"]["x"]) == len(ours)
        np.testing.assert_allclose(message["picks"]["x"], ours.x, atol=0.01)
        np.testing.assert_allclose(message["picks"]["score"], ours.score, atol=1e-3)


def test_a_worker_killed_mid_stream_costs_no_micrograph_and_repeats_none(tmp_path, model_path, sources):
    daemon = _cluster_daemon(tmp_path, model_path, workers=2)
    try:
        daemon.start()
        # LocalCluster's nannies run in the daemon and start each worker as a multiprocessing child
        workers = [p for p in _children(daemon.process.pid) if "spawn_main" in _cmdline(p)]
        assert len(workers) == 2, [_cmdline(p) for p in _children(daemon.process.pid)]
        for i in range(6):
            land(daemon.watched, f"mic_{i}.mrc", sources[i], "rename")
        daemon.wait_for(lambda: len(daemon.picked_names()) >= 1, 60, "the first pick")
        os.kill(workers[-1], signal.SIGKILL)  # kill -9 one worker while the rest of the six are in flight
        for i in range(6, 12):
            land(daemon.watched, f"mic_{i}.mrc", sources[i], "rename")
        daemon.wait_for(lambda: len(daemon.picked_names()) == 12, 120, "12 micrographs picked")
        daemon.receive(1.0)
        names = [m["micrograph"]["name"] for m in daemon.picks()]
        assert sorted(names) == sorted(f"mic_{i}" for i in range(12))  # every one, once
        assert daemon.control("status")["counts"]["done"] == 12
        assert daemon.stop() == 0
    finally:
        daemon.close()


def test_an_unreachable_scheduler_stops_the_start_with_the_key_named(tmp_path, model_path):
    daemon = DaemonHarness(tmp_path, model_path, executor__kind="dask",
                           dask__scheduler=f"tcp://127.0.0.1:{free_loopback_port()}", dask__connect_timeout=1.0)
    try:
        done = subprocess.run([sys.executable, "-m", "streampick", "run", "--config", str(daemon.config)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode != 0
        assert "dask.scheduler: cannot reach tcp://127.0.0.1:" in done.stderr
    finally:
        daemon.close()


class _Cluster:
    """A Dask scheduler and one worker as separate processes on a fixed loopback port."""

    def __init__(self, port: int, root: Path) -> None:
        self.address, self.root, self.processes = f"tcp://127.0.0.1:{port}", root, []
        self.port = port

    def start(self) -> None:
        with open(self.root / "cluster.log", "ab") as log:  # the children keep their own handles
            self.processes = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host",
                                                "127.0.0.1", "--port", str(self.port), "--no-dashboard"],
                                               stdout=log, stderr=subprocess.STDOUT)]
            self.processes.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker",
                                                    self.address, "--nthreads", "1", "--host", "127.0.0.1",
                                                    "--no-dashboard"], stdout=log, stderr=subprocess.STDOUT))
        from distributed import Client

        with Client(self.address, timeout="30s") as client:
            client.wait_for_workers(1, timeout=30)

    def kill(self) -> None:
        for process in self.processes:
            process.kill()
            process.wait()


@pytest.mark.parametrize("mode", ["in-process", "wait"])
def test_a_scheduler_that_goes_away_and_comes_back_loses_nothing(tmp_path, model_path, sources, mode):
    cluster = _Cluster(free_loopback_port(), tmp_path)
    cluster.start()
    daemon = DaemonHarness(tmp_path, model_path, executor__kind="dask", dask__scheduler=cluster.address,
                           dask__connect_timeout=2.0, dask__on_scheduler_loss=mode)
    try:
        daemon.start()
        for i in range(2):
            land(daemon.watched, f"mic_{i}.mrc", sources[i], "rename")
        daemon.wait_for(lambda: len(daemon.picked_names()) == 2, 60, "2 picks on the cluster")
        cluster.kill()
        for i in range(2, 4):
            land(daemon.watched, f"mic_{i}.mrc", sources[i], "rename")
        daemon.wait_for(lambda: any("connection lost" in e["message"] for e in daemon.errors()), 60,
                        "the lost scheduler reported")
        lost = [e for e in daemon.errors() if "connection lost" in e["message"]]
        assert len(lost) == 1 and lost[0]["message"].startswith(f"dask.scheduler {cluster.address}: ")
        if mode == "in-process":
            daemon.wait_for(lambda: len(daemon.picked_names()) == 4, 60, "2 picks in-process meanwhile")
        else:
            daemon.receive(3.0)
            assert len(daemon.picked_names()) == 2  # waiting: queued, not lost
        cluster.start()
        daemon.wait_for(lambda: daemon.control("status")["executor"].get("connected") and
                        daemon.control("status")["executor"].get("workers") == 1, 60, "the scheduler back")
        for i in range(4, 6):
            land(daemon.watched, f"mic_{i}.mrc", sources[i], "rename")
        daemon.wait_for(lambda: len(daemon.picked_names()) == 6, 90, "all 6 picked")
        daemon.receive(1.0)
        names = [m["micrograph"]["name"] for m in daemon.picks()]
        assert sorted(names) == [f"mic_{i}" for i in range(6)]  # every one, once
        assert daemon.stop() == 0
    finally:
        daemon.close()
        cluster.kill()


def test_a_new_arrival_overtakes_queued_repicks_on_the_cluster(tmp_path, model_path, sources, monkeypatch):
    # each task holds 0.3 s (the benchmark's emulated device), so that 11 re-picks take seconds, not a blink
    monkeypatch.setenv(EMULATION_ENV, "0.3")
    daemon = DaemonHarness(tmp_path, model_path, executor__kind="dask", dask__cluster="local", dask__workers=1,
                           dask__tasks_per_worker=1)
    try:
        daemon.start()
        for i in range(11):
            land(daemon.watched, f"mic_{i}.mrc", sources[i], "rename")
        daemon.wait_for(lambda: len(daemon.picked_names()) == 11, 90, "11 micrographs picked")
        assert daemon.control("reprocess", all=True)["queued"] == 11  # 11 re-picks queued behind new arrivals
        land(daemon.watched, "late.mrc", sources[11], "rename")
        daemon.wait_for(lambda: sum(m["repick"] for m in daemon.picks()) == 11 and "late" in daemon.picked_names(),
                        120, "the re-picks and the new arrival")
        late = next(m for m in daemon.picks() if m["micrograph"]["name"] == "late")
        after = [m for m in daemon.picks() if m["repick"] and m["seq"] > late["seq"]]
        assert not late["repick"] and len(after) >= 6, (late["seq"], [m["seq"] for m in daemon.picks()])
        # the queued re-picks went out several to a task (dask.batch_size 4); the new arrival went alone
        assert late["stats"]["timings"]["task_size"] == 1
        assert max(m["stats"]["timings"]["task_size"] for m in daemon.picks() if m["repick"]) > 1
        assert daemon.stop() == 0
    finally:
        daemon.close()
