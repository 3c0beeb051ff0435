"""A real daemon subprocess with a real subscriber, for the end-to-end tests (not a test module)."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mrcfile
import numpy as np
import yaml
import zmq

from streampick.daemon.control import request
from streampick.daemon.security import free_loopback_port
from streampick.streambench import land_file


def write_micrograph(path: Path, data: np.ndarray, pixel_size: float = 1.0) -> None:
    """Write a whole MRC at once (in a private folder: the watched folder sees it only when renamed)."""
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(data.astype(np.float32))
        mrc.voxel_size = pixel_size


def save_tiny_model(path: Path) -> Path:
    """A small untrained resnet8 checkpoint with a card (the daemon's plumbing is under test, not accuracy)."""
    import torch

    from streampick.nets import Model, ModelCard, build, save_model

    torch.manual_seed(0)
    card = ModelCard(name="tiny", architecture="resnet8", units=32, pixel_size=8.0, particle_diameter=150.0,
                     threshold=0.0, version="7")
    save_model(path, Model(build("resnet8", 32).eval(), card))
    return path


def write_sources(folder: Path, n: int, seed: int) -> list[Path]:
    """``n`` simulated 1024² micrographs at 1 Å/px (20 particles each), written outside any watched folder."""
    from streampick.simulate import simulate_micrograph

    rng = np.random.default_rng(seed)
    paths = []
    for index in range(n):
        image, _ = simulate_micrograph(rng, shape=(1024, 1024), pixel_size=1.0, particle_diameter_a=150.0,
                                       n_particles=20)
        paths.append(folder / f"src_{index}.mrc")
        write_micrograph(paths[-1], image)
    return paths


def land(watched: Path, name: str, source: Path, how: str) -> None:
    """Make ``source`` appear in ``watched`` as a microscope would: 'rename' (a hidden temporary file renamed
    into place), 'copy', or a slow 'in-place' write (header first, data in chunks over ~0.9 s)."""
    mode = {"rename": "temp-rename", "copy": "copy", "in-place": "in-place"}[how]
    land_file(source, watched / name, mode, slow_write_s=0.9 if how == "in-place" else 0.0)


class DaemonHarness:
    """Start ``streampick run`` in a subprocess, subscribe to it, collect what it publishes."""

    def __init__(self, root: Path, model: Path, *, curve=None, **overrides) -> None:
        self.root = root
        self.watched = root / "watched"
        self.out = root / "out"
        self.watched.mkdir(parents=True, exist_ok=True)
        self.pub = f"tcp://127.0.0.1:{free_loopback_port()}"
        self.ctl = f"tcp://127.0.0.1:{free_loopback_port()}"
        config = {
            "watch": {"folder": str(self.watched), "settle_seconds": 0.2, "give_up_seconds": 2.0},
            "output": {"folder": str(self.out), "combined_every_s": 0.5},
            "picking": {"model": str(model), "radius": "70A", "edge_margin": "20A"},
            "publish": {"endpoint": self.pub, "stats_interval": 0.5, "heartbeat_interval": 0.2},
            "control": {"endpoint": self.ctl},
            "daemon": {"retry_seconds": 1.0},
        }
        for dotted, value in overrides.items():
            section, key = dotted.split("__")
            config.setdefault(section, {})[key] = value
        self.config = root / "config.yaml"
        self.config.write_text(yaml.safe_dump(config))
        self.curve = curve
        self.context = zmq.Context()
        self.sub = self.context.socket(zmq.SUB)
        if curve is not None:
            from streampick.daemon.security import apply_curve_client

            apply_curve_client(self.sub, curve)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.connect(self.pub)
        self.messages: list[tuple[str, dict]] = []
        self.process: subprocess.Popen | None = None
        self.log = root / "daemon.log"

    def start(self, *extra: str) -> None:
        """Start the daemon and wait for a heartbeat from this process (not an earlier one)."""
        seen = len(self.messages)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "streampick", "run", "--config",
                                             str(self.config), *extra], stdout=log, stderr=subprocess.STDOUT)
        self.wait_for(lambda: any(t == "heartbeat" for t, _ in self.messages[seen:]), 60, "a heartbeat")

    def catch_up(self) -> None:
        """Ask for what this subscriber missed (``replay``), as a late or reconnecting subscriber must."""
        since = 0
        while True:
            reply = self.control("replay", since=since)
            self.messages.extend(("picks", m) for m in reply["messages"])
            if not reply["more"] or not reply["messages"]:
                return
            since = reply["messages"][-1]["seq"]

    def receive(self, timeout: float) -> None:
        if self.sub.poll(int(timeout * 1000)):
            while True:
                try:
                    topic, payload = self.sub.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self.messages.append((topic.decode(), json.loads(payload)))

    def wait_for(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"daemon exited ({self.process.returncode}) waiting for {what}:\n"
                                     f"{self.log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}:\n"
                                     f"{self.log.read_text()[-3000:]}")
            self.receive(0.1)

    def picks(self) -> list[dict]:
        return [m for t, m in self.messages if t == "picks"]

    def errors(self) -> list[dict]:
        return [m for t, m in self.messages if t == "error"]

    def picked_names(self) -> set[str]:
        return {m["micrograph"]["name"] for m in self.picks()}

    def unique_picks(self) -> dict[str, dict]:
        """Pick messages by key: a re-send or replay repeats a key with the same seq."""
        by_key: dict[str, dict] = {}
        for message in self.picks():
            first = by_key.setdefault(message["key"], message)
            assert first["seq"] == message["seq"], (first["key"], first["seq"], message["seq"])
        return by_key

    def control(self, command: str, **args) -> dict:
        return request(self.ctl, command, timeout=10.0, context=self.context, curve=self.curve, **args)

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> int:
        if self.process is not None and self.process.poll() is None:
            try:
                self.control("shutdown")
            except Exception:  # noqa: BLE001 - already gone or wedged: fall back to SIGTERM
                self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        return self.process.returncode if self.process is not None else 0

    def close(self) -> None:
        self.stop()
        self.sub.close()
        self.context.term()


def background(target, *args) -> threading.Thread:
    thread = threading.Thread(target=target, args=args)
    thread.start()
    return thread
