"""End-to-end benchmark of the streaming daemon (``streampick bench --stream``): latency, throughput, soak.

Each mode starts a real ``streampick run`` subprocess on loopback (random free ports, a temporary folder
that is removed afterwards, a config written the way ``tests/daemon_harness.py`` writes one), subscribes to
it over ZeroMQ from a thread of this process that stamps every message with its arrival time, and lands
micrographs in its watched folder from a separate *lander* process (multiprocessing spawn), so that writing
files never competes with the subscriber for this process's GIL:

* ``latency``: n micrographs (4096² float32), rendered into a private folder before the daemon starts,
  land one every ``interval`` seconds, taking turns between a slow in-place write (header first, then the
  data in 8 flushed chunks over ``slow_write_s``), the same slow write to a hidden temporary name followed
  by a rename, and a plain copy: the three ways of :mod:`streampick.microscope`.  Latency runs from the
  writer's own completion time (the file whole at its final name, as ``run_microscope``'s ``on_written``
  reports it) to the picks message arriving here, broken down with the message's timestamps.
  ``writer="microscope"`` runs :func:`streampick.microscope.run_microscope` itself in the lander process
  instead (it renders each micrograph just before its slot, on the daemon's CPU).
* ``throughput``: n micrographs staged as hidden files in the watched folder are renamed into place every
  ``interval`` seconds, faster than the daemon picks; the rate is counted from first to last publication.
* ``soak``: n small micrographs land in batches while the daemon is killed (SIGKILL) at random moments and
  restarted; afterwards a ``replay`` from seq 0 must show every landed file under exactly one key, the
  journal's counts must agree, and the daemon's RSS (``VmRSS``, sampled every second) must stay flat.

Micrographs beyond the first ``unique`` are byte copies of those with a distinct MRC header label: the
daemon identifies a micrograph by the SHA-256 of its bytes, so each copy is new work of the same cost.
"""
from __future__ import annotations

import os
import random
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MODES = ("latency", "throughput", "soak", "finetune")
WRITE_MODES = ("in-place", "temp-rename", "copy")
MODE_DEFAULTS: dict[str, dict[str, Any]] = {
    "latency": {"n": 20, "interval": 5.0, "size": 4096, "unique": None, "slow_write_s": 2.0},
    "throughput": {"n": 60, "interval": 0.1, "size": 4096, "unique": 10, "slow_write_s": 0.0},
    "soak": {"n": 2000, "interval": 4.0, "size": 512, "unique": 100, "slow_write_s": 0.02},
    "finetune": {"n": 12, "interval": 5.0, "size": 4096, "unique": None, "slow_write_s": 2.0},  # n per phase
}
QUIET_CORES = 0.25  # a micrograph counts as picked on a quiet machine when others used less CPU than this
TARGETS = {"latency_median_s": 1.5, "latency_p95_s": 3.0, "throughput_per_s": 0.8}
SEGMENTS = [  # (label, from, to): the latency breakdown, from the message's timestamps
    ("file complete (writer) → judged whole (daemon `complete`)", "written", "complete"),
    ("judged whole → picking started (`started`)", "complete", "started"),
    ("started → result built (`committed`)", "started", "committed"),
    ("committed → handed to PUB (`published`; includes the journal COMMIT)", "committed", "published"),
    ("published → received by the subscriber", "published", "received"),
    ("**file complete → received** (end to end)", "written", "received"),
    ("file complete → published (the daemon's own view)", "written", "published"),
]
STAGES = ("read", "downsample", "normalize", "score", "extract", "write")
_LABEL_OFFSET, _NLABL_OFFSET, _NSYMBT_OFFSET, _HEADER = 224, 220, 92, 1024


@dataclass(frozen=True)
class StreamSettings:
    """One streaming benchmark run.  See :data:`MODE_DEFAULTS` for each mode's defaults."""

    model: str
    n: int
    interval: float
    size: int = 4096
    unique: int | None = None  # distinct renders; None: every micrograph distinct
    pixel_size: float = 1.0
    target_pixel_size: float = 8.0
    diameter: float = 150.0
    settle_seconds: float | None = None  # None: the daemon's default (streampick.config)
    slow_write_s: float = 2.0
    writer: str = "prerendered"  # latency only: or "microscope" (run_microscope in the lander process)
    batch: int = 50  # soak: micrographs per batch (one batch every `interval` seconds)
    kills: int = 2  # soak: kill -9 restarts
    seed: int = 0
    workdir: str | None = None  # parent of the temporary folder; None: the system's
    keep: bool = False  # keep the temporary folder (for debugging)
    timeout_s: float = 900.0  # soak: the most seconds to wait for every micrograph (the others scale with n)


def default_model() -> str:
    """``topaz:resnet8_u32`` when topaz-em is installed, else untrained weights of the same size.

    Returns:
        A model spec for :class:`StreamSettings` (``random:ARCH_uUNITS`` is saved as a checkpoint).
    """
    import importlib.util

    return "topaz:resnet8_u32" if importlib.util.find_spec("topaz") else "random:resnet8_u32"


def settings_for(mode: str, model: str, **overrides: Any) -> StreamSettings:
    """The settings of ``mode`` with its defaults, overridden by every non-None keyword.

    Args:
        mode: One of :data:`MODES`.
        model: The model spec.
        **overrides: :class:`StreamSettings` fields; None values are ignored.

    Returns:
        The settings.
    """
    values = dict(MODE_DEFAULTS[mode])
    values.update({key: value for key, value in overrides.items() if value is not None})
    return StreamSettings(model=model, **values)


def run_mode(mode: str, settings: StreamSettings) -> dict:
    """Run one benchmark mode.

    Args:
        mode: ``latency``, ``throughput``, ``soak`` or ``finetune`` (:mod:`streampick.finetunebench`).
        settings: What to run.

    Returns:
        The result dict (``mode``, ``settings``, ``config``, measurements); :func:`markdown_report` renders it.
    """
    if mode == "finetune":
        from .finetunebench import run_finetune

        return run_finetune(settings)
    runner = {"latency": run_latency, "throughput": run_throughput, "soak": run_soak}[mode]
    return runner(settings)


# --------------------------------------------------------------------------------------------- workspace


class Workspace:
    """A temporary folder with ``watched/``, ``out/``, ``private/`` and the daemon's config; removed on exit."""

    def __init__(self, settings: StreamSettings) -> None:
        self.settings = settings
        self.root = Path(tempfile.mkdtemp(prefix="streampick-streambench-", dir=settings.workdir))
        self.watched, self.out, self.private = self.root / "watched", self.root / "out", self.root / "private"
        for folder in (self.watched, self.out, self.private):
            folder.mkdir()

    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.settings.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def config(self) -> dict:
        """The daemon's configuration: defaults except folders, endpoints, model and working scale."""
        from .config import WATCH_KEYS
        from .daemon.security import free_loopback_port

        settle = self.settings.settle_seconds
        settle = WATCH_KEYS["settle_seconds"][1] if settle is None else settle
        return {
            "watch": {"folder": str(self.watched), "settle_seconds": settle},
            "output": {"folder": str(self.out)},
            "picking": {"model": resolve_model(self.settings, self.root),
                        "target_pixel_size": self.settings.target_pixel_size,
                        "radius": f"{self.settings.diameter / 2:g}A"},
            "publish": {"endpoint": f"tcp://127.0.0.1:{free_loopback_port()}"},
            "control": {"endpoint": f"tcp://127.0.0.1:{free_loopback_port()}"},
        }


def resolve_model(settings: StreamSettings, folder: Path) -> str:
    """The model spec for the daemon: ``random:ARCH_uUNITS`` becomes an untrained checkpoint in ``folder``.

    Args:
        settings: Its ``model`` is resolved.
        folder: Where to save an untrained checkpoint.

    Returns:
        A spec ``streampick run`` loads.
    """
    if not settings.model.startswith("random:"):
        return settings.model
    path = folder / "untrained.pt"
    if not path.exists():
        import torch

        from .nets import Model, ModelCard, build, save_model

        architecture, units = settings.model.split(":", 1)[1].split("_u")
        torch.manual_seed(settings.seed)
        card = ModelCard(name=f"untrained-{architecture}_u{units}", architecture=architecture, units=int(units),
                         pixel_size=settings.target_pixel_size, particle_diameter=settings.diameter,
                         threshold=0.0, version="0")
        save_model(path, Model(build(architecture, int(units)).eval(), card))
    return str(path)


# ----------------------------------------------------------------------------------------------- staging


def stage_sources(targets: list[Path], settings: StreamSettings) -> None:
    """Write ``len(targets)`` distinct micrographs: ``unique`` renders and labelled byte copies of them.

    Rendering runs in up to 2 spawned processes; ends with ``os.sync()`` so that the daemon's journal
    fsyncs do not wait for the staged gigabytes to reach the disk.

    Args:
        targets: Where to write each micrograph (any names; hidden names stay unseen by the daemon).
        settings: Size, pixel size, particle diameter, seed and ``unique``.
    """
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    unique = min(settings.unique or len(targets), len(targets))
    bases = [targets[0].parent / f"base_{j:05d}.mrc.render" for j in range(unique)]
    jobs = [(str(base), settings.seed * 100_003 + j, settings.size, settings.pixel_size, settings.diameter)
            for j, base in enumerate(bases)]
    with ProcessPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1, unique)),
                             mp_context=get_context("spawn")) as pool:
        list(pool.map(_render, jobs))
    raw = [bytearray(base.read_bytes()) for base in bases]
    for index, target in enumerate(targets):
        data = raw[index % unique]
        data[_NLABL_OFFSET:_NLABL_OFFSET + 4] = struct.pack("<i", 1)
        data[_LABEL_OFFSET:_LABEL_OFFSET + 80] = f"streampick streambench {index:06d}".encode().ljust(80)
        target.write_bytes(data)
    for base in bases:
        base.unlink()
    os.sync()


def _render(job: tuple[str, int, int, float, float]) -> str:
    """Simulate one micrograph into a float32 MRC (runs in a spawned worker)."""
    import mrcfile
    import numpy as np

    from .simulate import simulate_micrograph

    path, seed, size, pixel_size, diameter = job
    for attempt in range(5):  # the simulator can fail to place an aggregate on a small image: next seed
        try:
            image, _ = simulate_micrograph(np.random.default_rng([seed, attempt]), (size, size), pixel_size,
                                           diameter)
            break
        except ValueError:
            if attempt == 4:
                raise
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.asarray(image, dtype=np.float32))
        mrc.voxel_size = pixel_size
    return path


# ------------------------------------------------------------------------------------------------ lander


def land_file(source: Path, target: Path, mode: str, slow_write_s: float) -> None:
    """Make ``source`` appear as ``target`` the way ``mode`` says (see :data:`WRITE_MODES`).

    Args:
        source: A whole MRC file (for ``rename``: a hidden file in the target's folder, moved).
        target: The final name in the watched folder.
        mode: ``in-place``, ``temp-rename``, ``copy`` or ``rename`` (an instant rename of ``source``).
        slow_write_s: Duration of an ``in-place`` or ``temp-rename`` write (8 chunks).
    """
    if mode == "copy":
        shutil.copyfile(source, target)
    elif mode == "rename":
        os.rename(source, target)
    elif mode == "in-place":
        _slow_write(source.read_bytes(), target, slow_write_s)
    elif mode == "temp-rename":
        temp = target.with_name(f".{target.name}.{random.randrange(16**6):06x}")
        _slow_write(source.read_bytes(), temp, slow_write_s)
        os.rename(temp, target)
    else:
        raise ValueError(f"unknown landing mode {mode!r}")


def _slow_write(raw: bytes, target: Path, duration: float) -> None:
    """The header first, then the data in 8 chunks, flushed, ``duration / 8`` apart (as the microscope)."""
    offset = _HEADER + max(0, struct.unpack_from("<i", raw, _NSYMBT_OFFSET)[0])
    bounds = [offset + (len(raw) - offset) * k // 8 for k in range(9)]
    with open(target, "wb") as stream:
        stream.write(raw[:offset])
        stream.flush()
        for begin, end in zip(bounds[:-1], bounds[1:]):
            if duration > 0:
                time.sleep(duration / 8)
            stream.write(raw[begin:end])
            stream.flush()


def _lander_main(jobs: list[tuple[str, str, str, float, float]], reports: Any) -> None:
    """The lander process: land each ``(source, target, mode, at_s, slow_write_s)`` at ``at_s`` from start."""
    start = time.monotonic()
    for source, target, mode, at_s, slow_write_s in jobs:
        delay = start + at_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        land_file(Path(source), Path(target), mode, slow_write_s)
        reports.put(("landed", Path(target).stem, time.time(), mode))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    reports.put(("done", usage.ru_utime + usage.ru_stime, time.time(), None))


def _microscope_main(watched: str, settings: StreamSettings, reports: Any) -> None:
    """The lander process running :func:`streampick.microscope.run_microscope` (renders before each slot)."""
    from .microscope import run_microscope

    def written(path: Path, t_complete: float) -> None:
        mode = WRITE_MODES[int(path.stem.split("_")[-1]) % len(WRITE_MODES)]
        reports.put(("landed", path.stem, t_complete, mode))

    run_microscope(Path(watched), settings.n, interval_s=settings.interval, size=settings.size,
                   pixel_size=settings.pixel_size, seed=settings.seed, slow_write_s=settings.slow_write_s,
                   particle_diameter_a=settings.diameter, on_written=written)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    reports.put(("done", usage.ru_utime + usage.ru_stime, time.time(), None))


class Lander:
    """The lander process and what it reported: ``landed[name] = (t_complete, mode)``."""

    def __init__(self, target: Any, args: tuple) -> None:
        from multiprocessing import get_context

        context = get_context("spawn")
        self.reports = context.Queue()
        self.process = context.Process(target=target, args=(*args, self.reports), daemon=True)
        self.landed: dict[str, tuple[float, str]] = {}
        self.cpu_s: float | None = None
        self.finished: float | None = None
        self.process.start()

    def poll(self) -> None:
        """Take every report waiting; raise if the lander died without finishing."""
        import queue

        while True:
            try:
                kind, name, when, mode = self.reports.get_nowait()
            except queue.Empty:
                break
            if kind == "landed":
                self.landed[name] = (when, mode)
            else:
                self.cpu_s, self.finished = name, when
        if self.finished is None and not self.process.is_alive() and self.reports.empty():
            raise RuntimeError(f"the lander process exited ({self.process.exitcode}) before finishing")

    @property
    def done(self) -> bool:
        return self.finished is not None

    def close(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(10)
        self.reports.close()
        self.reports.join_thread()


# ------------------------------------------------------------------------------------- daemon and ZeroMQ


class Subscriber:
    """A SUB socket on its own thread; every message is stamped with ``time.time()`` on arrival.

    Picks messages are kept slim (no candidate lists): see :func:`slim_picks`.
    """

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.lock = threading.Lock()
        self.picks: list[dict] = []
        self.heartbeats: list[float] = []  # the daemon's `time` of each heartbeat
        self.stats: dict | None = None
        self.errors: list[dict] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="streambench-sub", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        import zmq

        context = zmq.Context()
        sub = context.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, 100_000)
        sub.connect(self.endpoint)
        self._ready.set()
        try:
            while not self._stop.is_set():
                if not sub.poll(100):
                    continue
                while True:
                    try:
                        topic, payload = sub.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._take(topic.decode(), payload, time.time())
        finally:
            sub.close()
            context.term()

    def _take(self, topic: str, payload: bytes, received: float) -> None:
        import json

        message = json.loads(payload)
        with self.lock:
            if topic == "picks":
                self.picks.append(slim_picks(message, received))
            elif topic == "heartbeat":
                self.heartbeats.append(message["time"])
            elif topic == "stats":
                self.stats = message
            elif topic == "error":
                self.errors.append(message)

    def add_replayed(self, messages: list[dict]) -> None:
        """Keep messages from a ``replay`` reply (``received`` None: they did not arrive live)."""
        with self.lock:
            self.picks.extend(slim_picks(m, None, via_replay=True) for m in messages)

    def snapshot(self) -> list[dict]:
        """The picks messages so far."""
        with self.lock:
            return list(self.picks)

    def heartbeat_since(self, when: float) -> bool:
        """Whether a heartbeat sent at or after ``when`` (daemon clock) has arrived."""
        with self.lock:
            return any(t >= when for t in self.heartbeats)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


def slim_picks(message: dict, received: float | None, *, via_replay: bool = False) -> dict:
    """What the benchmark keeps of a picks message: ids, timestamps, timings, candidate count.

    Args:
        message: A ``picks`` message (docs/protocol.md).
        received: When it arrived here (None for one from a ``replay`` reply).
        via_replay: It came from a ``replay`` reply rather than the PUB socket.

    Returns:
        A small dict.
    """
    return {"seq": message["seq"], "key": message["key"], "replay": message["replay"], "via_replay": via_replay,
            "name": message["micrograph"]["name"], "timestamps": message["timestamps"],
            "timings": message["stats"]["timings"], "n_candidates": len(message["picks"]["score"]),
            "received": received, "repick": bool(message.get("repick"))}


class DaemonProcess:
    """``streampick run`` in a subprocess with a written config; start, kill -9, stop, control requests."""

    def __init__(self, root: Path, config: dict) -> None:
        import yaml

        self.config = config
        self.config_path = root / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = root / "daemon.log"
        self.control_endpoint = config["control"]["endpoint"]
        self.process: subprocess.Popen | None = None
        self.starts: list[dict] = []  # per process: pid, spawned, ready

    def start(self, subscriber: Subscriber, timeout: float = 180.0) -> dict:
        """Start the daemon; return once a heartbeat it sent after starting has arrived.

        Args:
            subscriber: The subscriber that must see the heartbeat.
            timeout: Seconds to wait.

        Returns:
            ``{"pid", "spawned", "ready"}`` (Unix times).
        """
        spawned = time.time()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "streampick", "run", "--config",
                                             str(self.config_path)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not subscriber.heartbeat_since(spawned):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the daemon did not start (exit {self.process.poll()}):\n{self.log_tail()}")
            time.sleep(0.05)
        started = {"pid": self.process.pid, "spawned": spawned, "ready": time.time()}
        self.starts.append(started)
        return started

    def kill9(self) -> None:
        """SIGKILL the daemon and reap it."""
        import signal

        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> int | None:
        """Ask the daemon to shut down (SIGTERM, then SIGKILL, if it does not); return its exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            try:
                self.control("shutdown")
            except Exception:  # noqa: BLE001 - gone or wedged: fall back to signals
                self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        return self.process.returncode

    def control(self, command: str, **args: Any) -> dict:
        """One control request (10 s timeout)."""
        from .daemon.control import request

        return request(self.control_endpoint, command, timeout=10.0, **args)

    def replay(self, since: int = 0) -> list[dict]:
        """Every picks message with ``seq > since``, from the journal, as a late subscriber asks for them."""
        messages: list[dict] = []
        while True:
            reply = self.control("replay", since=since, limit=2000)
            messages.extend(reply["messages"])
            if not reply["more"] or not reply["messages"]:
                return messages
            since = reply["messages"][-1]["seq"]

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


def read_vmrss_kib(pid: int) -> int | None:
    """``VmRSS`` of a process in KiB from ``/proc/<pid>/status``, or None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def read_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process from ``/proc/<pid>/stat``, or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_system_cpu() -> tuple[float, float]:
    """``(busy, steal)`` CPU seconds of the whole machine since boot, from ``/proc/stat``."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


class Sampler:
    """Every ``interval`` s: the machine's busy CPU and the watched daemon's CPU; every second its ``VmRSS``.

    ``rss[pid] = [(t, KiB), ...]``; ``cpu = [(t, machine busy s, steal s, daemon pid, daemon CPU s), ...]``,
    from which :func:`other_load` tells how much CPU everything but the daemon used.
    """

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.pid: int | None = None
        self.rss: dict[int, list[tuple[float, int]]] = {}
        self.cpu: list[tuple[float, float, float, int | None, float | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="streambench-sampler", daemon=True)
        self._thread.start()

    def watch(self, pid: int | None) -> None:
        """Sample ``pid`` from now on (None: no daemon)."""
        self.pid = pid

    def _run(self) -> None:
        ticks = 0
        while not self._stop.wait(self.interval):
            pid = self.pid
            busy, steal = read_system_cpu()
            self.cpu.append((time.time(), busy, steal, pid, read_cpu_s(pid) if pid is not None else None))
            ticks += 1
            if pid is not None and ticks % max(1, round(1.0 / self.interval)) == 0:
                rss = read_vmrss_kib(pid)
                if rss is not None:
                    self.rss.setdefault(pid, []).append((time.time(), rss))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


def other_load(cpu: list[tuple], start: float, end: float) -> dict:
    """CPU used by everything except the daemon between ``start`` and ``end``, in cores on average.

    Args:
        cpu: :attr:`Sampler.cpu`.
        start: Unix time.
        end: Unix time.

    Returns:
        ``{"other_cores", "daemon_cores", "steal_cores", "seconds"}`` over the sample intervals that end in
        the window and watch one daemon process throughout (None values when there are none).
    """
    other = daemon = steal = seconds = 0.0
    for (t0, busy0, steal0, pid0, own0), (t1, busy1, steal1, pid1, own1) in zip(cpu[:-1], cpu[1:]):
        if not start < t1 <= end + 1e-9 or pid0 is None or pid0 != pid1 or own0 is None or own1 is None:
            continue
        seconds += t1 - t0
        daemon += own1 - own0
        other += (busy1 - busy0) - (own1 - own0)
        steal += steal1 - steal0
    if seconds <= 0:
        return {"other_cores": None, "daemon_cores": None, "steal_cores": None, "seconds": 0.0}
    return {"other_cores": max(0.0, other) / seconds, "daemon_cores": daemon / seconds,
            "steal_cores": steal / seconds, "seconds": seconds}


class Session:
    """A workspace, a daemon, a subscriber and a CPU/RSS sampler, started together and closed together."""

    def __init__(self, settings: StreamSettings) -> None:
        self.settings = settings
        self.workspace = Workspace(settings)
        self.daemon: DaemonProcess | None = None
        self.subscriber: Subscriber | None = None
        self.sampler = Sampler()
        self.lander: Lander | None = None
        self.extra_config: dict[str, dict] = {}  # config sections merged over the workspace's

    def __enter__(self) -> "Session":
        return self

    def start_daemon(self) -> dict:
        """Write the config, subscribe, start the daemon and sample its RSS; returns its start record."""
        if self.daemon is None:
            config = self.workspace.config()
            for section, values in self.extra_config.items():
                config.setdefault(section, {}).update(values)
            self.daemon = DaemonProcess(self.workspace.root, config)
            self.subscriber = Subscriber(self.daemon.config["publish"]["endpoint"])
        started = self.daemon.start(self.subscriber)
        self.sampler.watch(started["pid"])
        return started

    def __exit__(self, *exc: object) -> None:
        self.sampler.close()
        if self.lander is not None:
            self.lander.close()
        if self.daemon is not None:
            self.daemon.stop()
        if self.subscriber is not None:
            self.subscriber.close()
        self.workspace.__exit__(*exc)


def follow(session: Session, timeout: float, on_tick: Any = None) -> bool:
    """Wait until the lander is done and every landed micrograph has a picks message.

    Args:
        session: The running session (its ``lander`` set).
        timeout: Seconds to wait at most.
        on_tick: Called about every 0.1 s with the set of micrograph names picked so far.

    Returns:
        True when everything landed was picked; False on timeout.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        session.lander.poll()
        names = {m["name"] for m in session.subscriber.snapshot()}
        if session.lander.done and set(session.lander.landed) <= names:
            return True
        if on_tick is not None:
            on_tick(names)
        if session.daemon.process.poll() is not None:
            raise RuntimeError(f"the daemon exited ({session.daemon.process.returncode}):\n"
                               f"{session.daemon.log_tail()}")
        time.sleep(0.1)
    return False


def first_messages(picks: list[dict], *, live_only: bool) -> dict[str, dict]:
    """The first picks message of each micrograph name (received live only, when ``live_only``)."""
    first: dict[str, dict] = {}
    for message in picks:
        if not live_only or message["received"] is not None:
            first.setdefault(message["name"], message)
    return first


def _context(session: Session, started: dict) -> dict:
    """What every result records about the run: settings, daemon config, load average, start-up time."""
    return {"settings": asdict(session.settings), "config": session.daemon.config,
            "daemon_start_s": started["ready"] - started["spawned"], "load_at_start": os.getloadavg()}


def _finish(session: Session, started: dict, t0: float, complete: bool) -> dict:
    """What every result records at the end: completeness, CPU, load, the daemon's own stats, errors."""
    wall = time.time() - t0
    stats = session.subscriber.stats or {}
    cpu = other_load(session.sampler.cpu, t0, time.time())
    own = _own_cpu_s() - started["bench_cpu_s"] + (session.lander.cpu_s or 0.0)
    if cpu["other_cores"] is not None:  # what is left is other users of the machine (and the kernel)
        cpu["bench_cores"] = own / wall
        cpu["machine_cores"] = max(0.0, cpu["other_cores"] - cpu["bench_cores"])
    return {"complete": complete, "wall_s": wall, "load_at_end": os.getloadavg(), "cpu": cpu,
            "rss": rss_summary(dict(session.sampler.rss)),
            "lander_cpu_s": session.lander.cpu_s, "landed": len(session.lander.landed),
            "daemon_stats": {k: stats.get(k) for k in ("latency_s", "throughput_per_min", "counts", "errors")},
            "errors": [e["message"] for e in session.subscriber.errors][:20]}


def _start(session: Session) -> tuple[dict, float]:
    started = session.start_daemon()
    started["bench_cpu_s"] = _own_cpu_s()
    return started, time.time()


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ----------------------------------------------------------------------------------------------- latency


def run_latency(settings: StreamSettings) -> dict:
    """Micrographs land on a schedule; latency from the writer's completion to the message's arrival.

    Args:
        settings: ``n``, ``interval``, ``size``, ``slow_write_s``, ``writer`` and the rest.

    Returns:
        ``{"mode": "latency", "rows": [per micrograph], "summary": {segment: {median, p95, max, ...}}, ...}``.
    """
    with Session(settings) as session:
        names = [f"mic_{i:05d}" for i in range(settings.n)]
        sources = [session.workspace.private / f"{name}.mrc" for name in names]
        if settings.writer == "prerendered":
            stage_sources(sources, settings)
        started, t0 = _start(session)
        result = {"mode": "latency", **_context(session, started)}
        if settings.writer == "prerendered":
            jobs = [(str(source), str(session.workspace.watched / source.name), WRITE_MODES[i % len(WRITE_MODES)],
                     1.0 + i * settings.interval, settings.slow_write_s) for i, source in enumerate(sources)]
            session.lander = Lander(_lander_main, (jobs,))
        else:
            session.lander = Lander(_microscope_main, (str(session.workspace.watched), settings))
        complete = follow(session, settings.n * (settings.interval + settings.slow_write_s) + 180)
        result.update(_finish(session, started, t0, complete))
        rows = latency_rows(session.lander.landed, session.subscriber.snapshot())
        for row in rows:
            if row["received"] is not None:  # CPU others used while it was picked (0.5 s samples: coarse)
                row["other_cores"] = other_load(session.sampler.cpu, row["started"],
                                                row["committed"] + session.sampler.interval)["other_cores"]
    return {**result, "rows": rows, "summary": summarize_latency(rows),
            "missing": [row["name"] for row in rows if row["received"] is None]}


def latency_rows(landed: dict[str, tuple[float, str]], picks: list[dict]) -> list[dict]:
    """One row per landed micrograph: write mode, the writer's completion time and the message's timestamps.

    Args:
        landed: ``{name: (t_complete, mode)}`` from the lander.
        picks: Slim picks messages (see :func:`slim_picks`).

    Returns:
        Rows with ``written``, ``landed``, ``complete``, ``started``, ``committed``, ``published``,
        ``received`` (Unix times; ``received`` None when no message arrived live) and ``timings``.
    """
    first = first_messages(picks, live_only=True)
    rows = []
    for name, (written, mode) in sorted(landed.items()):
        row = {"name": name, "mode": mode, "written": written, "received": None}
        message = first.get(name)
        if message is not None:
            row.update({key: message["timestamps"][key] for key in
                        ("landed", "complete", "started", "committed", "published")})
            row.update(received=message["received"], timings=message["timings"],
                       n_candidates=message["n_candidates"])
        rows.append(row)
    return rows


def describe(values: list[float]) -> dict:
    """``n``, ``median``, ``p95`` (linear interpolation), ``min``, ``max`` and ``mean`` of ``values``."""
    import numpy as np

    if not values:
        return {"n": 0, "median": None, "p95": None, "min": None, "max": None, "mean": None}
    data = np.asarray(values, dtype=float)
    return {"n": int(data.size), "median": float(np.median(data)), "p95": float(np.percentile(data, 95)),
            "min": float(data.min()), "max": float(data.max()), "mean": float(data.mean())}


def summarize_latency(rows: list[dict]) -> dict:
    """Per segment of :data:`SEGMENTS` (keyed ``"from→to"``): :func:`describe` over the rows received.

    Args:
        rows: From :func:`latency_rows`.

    Returns:
        ``{"written→complete": {...}, ..., "by_mode": {mode: end-to-end stats}, "stages": {stage: stats}}``.
    """
    received = [row for row in rows if row["received"] is not None]
    summary: dict[str, Any] = {f"{a}→{b}": describe([row[b] - row[a] for row in received])
                               for _, a, b in SEGMENTS}
    summary["by_mode"] = {mode: describe([row["received"] - row["written"] for row in received
                                          if row["mode"] == mode]) for mode in sorted({r["mode"] for r in rows})}
    summary["stages"] = {stage: describe([row["timings"].get(stage, 0.0) for row in received])
                         for stage in STAGES}
    summary["pick_overhead"] = describe([row["committed"] - row["started"] -
                                         sum(row["timings"].get(s, 0.0) for s in STAGES) for row in received])
    quiet = [row for row in received if row.get("other_cores") is not None and row["other_cores"] < QUIET_CORES]
    summary["quiet"] = describe([row["received"] - row["written"] for row in quiet])
    return summary


# -------------------------------------------------------------------------------------------- throughput


def run_throughput(settings: StreamSettings) -> dict:
    """Micrographs arrive faster than the daemon picks (hidden staged files renamed into place on schedule).

    Args:
        settings: ``n`` micrographs, one renamed into place every ``interval`` seconds.

    Returns:
        ``{"mode": "throughput", "summary": {...}, ...}``; see :func:`summarize_throughput`.
    """
    with Session(settings) as session:
        watched = session.workspace.watched
        names = [f"mic_{i:05d}" for i in range(settings.n)]
        staged = [watched / f".{name}.mrc.staged" for name in names]
        stage_sources(staged, settings)
        started, t0 = _start(session)
        result = {"mode": "throughput", **_context(session, started)}
        jobs = [(str(path), str(watched / f"{name}.mrc"), "rename", 1.0 + i * settings.interval, 0.0)
                for i, (path, name) in enumerate(zip(staged, names))]
        session.lander = Lander(_lander_main, (jobs,))
        complete = follow(session, 180 + 10 * settings.n)
        result.update(_finish(session, started, t0, complete))
        messages = list(first_messages(session.subscriber.snapshot(), live_only=False).values())
        summary = summarize_throughput(messages, dict(session.lander.landed))
        published = [m["timestamps"]["published"] for m in messages]
        summary["cpu_window"] = other_load(session.sampler.cpu, min(published, default=0.0),
                                           max(published, default=0.0))
    return {**result, "summary": summary}


def summarize_throughput(messages: list[dict], landed: dict[str, tuple[float, str]]) -> dict:
    """Sustained rate from the first publication to the last, arrival span, per-micrograph service time.

    Args:
        messages: One slim picks message per micrograph.
        landed: ``{name: (t_complete, mode)}`` from the lander.

    Returns:
        ``per_s`` ((n − 1) / (last − first publication)), ``per_s_received`` (the same with arrival times),
        ``span_s``, ``arrival_span_s``, ``cycle`` (time between successive publications), ``service``
        (started → committed), per-stage ``stages`` and ``pick_overhead`` (service minus the stages).
    """
    published = sorted(m["timestamps"]["published"] for m in messages)
    received = sorted(m["received"] for m in messages if m["received"] is not None)
    arrivals = sorted(t for t, _ in landed.values())

    def rate(times: list[float]) -> float | None:
        return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else None

    stamps = [m["timestamps"] for m in messages]
    return {"n": len(messages), "per_s": rate(published), "per_s_received": rate(received),
            "span_s": published[-1] - published[0] if published else None,
            "arrival_span_s": arrivals[-1] - arrivals[0] if arrivals else None,
            "cycle": describe([b - a for a, b in zip(published[:-1], published[1:])]),
            "service": describe([s["committed"] - s["started"] for s in stamps]),
            "stages": {stage: describe([m["timings"].get(stage, 0.0) for m in messages]) for stage in STAGES},
            "pick_overhead": describe([m["timestamps"]["committed"] - m["timestamps"]["started"] -
                                       sum(m["timings"].get(s, 0.0) for s in STAGES) for m in messages]),
            "latency": describe([m["received"] - landed[m["name"]][0] for m in messages
                                 if m["received"] is not None and m["name"] in landed])}


# -------------------------------------------------------------------------------------------------- soak


class Killer:
    """Kills the daemon with SIGKILL at random moments (fractions of the micrographs picked) and restarts it.

    Also asks for a ``replay`` every few seconds, as a subscriber that has missed messages across a restart
    must, so that progress counts what the journal holds.
    """

    def __init__(self, session: Session, kills: int, rng: random.Random) -> None:
        width = 0.9 / max(kills, 1)
        self.fractions = [0.05 + width * (k + rng.uniform(0.15, 0.85)) for k in range(kills)]
        self.session = session
        self.rng = rng
        self.kills: list[dict] = []
        self.cursor = 0
        self.next_replay = time.monotonic() + 5.0

    def tick(self, names: set[str]) -> None:
        """Kill and restart when the next fraction is reached; catch up with ``replay`` every 5 s."""
        session = self.session
        if self.fractions and len(names) >= self.fractions[0] * session.settings.n:
            self.fractions.pop(0)
            time.sleep(self.rng.uniform(0.0, 0.5))  # not in step with a publication
            picks = session.subscriber.snapshot()
            killed = {"at": time.time(), "picked": len({m["name"] for m in picks}),
                      "landed": len(session.lander.landed), "last_seq": max((m["seq"] for m in picks), default=0),
                      "pid": session.daemon.process.pid}
            session.daemon.kill9()
            session.sampler.watch(None)
            started = session.start_daemon()
            killed.update(restarted_pid=started["pid"], down_s=started["ready"] - killed["at"])
            self.kills.append(killed)
        if time.monotonic() >= self.next_replay:
            self.next_replay = time.monotonic() + 5.0
            messages = session.daemon.replay(self.cursor)
            session.subscriber.add_replayed(messages)
            self.cursor = messages[-1]["seq"] if messages else self.cursor


def run_soak(settings: StreamSettings) -> dict:
    """Many small micrographs land in batches while the daemon is killed with SIGKILL and restarted.

    Args:
        settings: ``n`` micrographs of ``size``², ``batch`` every ``interval`` seconds, ``kills`` restarts.

    Returns:
        ``{"mode": "soak", "integrity": {...}, "journal": counts, "rss": {...}, "kills": [...], ...}``.
    """
    with Session(settings) as session:
        names = [f"mic_{i:05d}" for i in range(settings.n)]
        sources = [session.workspace.private / f"{name}.mrc" for name in names]
        stage_sources(sources, settings)
        started, t0 = _start(session)
        result = {"mode": "soak", **_context(session, started)}
        jobs = [(str(source), str(session.workspace.watched / source.name), WRITE_MODES[i % len(WRITE_MODES)],
                 1.0 + (i // settings.batch) * settings.interval, settings.slow_write_s)
                for i, source in enumerate(sources)]
        session.lander = Lander(_lander_main, (jobs,))
        killer = Killer(session, settings.kills, random.Random(settings.seed))
        complete = follow(session, settings.timeout_s, killer.tick)
        result.update(_finish(session, started, t0, complete))
        session.subscriber.add_replayed(session.daemon.replay(0))  # the final catch-up, from seq 0
        status = session.daemon.control("status")
        landed = sorted(session.lander.landed)
        exit_code = session.daemon.stop()
        counts = journal_counts(session.workspace.out / "journal.sqlite")
        picks = session.subscriber.snapshot()
        samples = dict(session.sampler.rss)
    return {**result, "kills": killer.kills, "status_counts": status.get("counts"), "exit_code": exit_code,
            "journal": counts, "integrity": check_integrity(landed, picks, counts),
            "rss": rss_summary(samples)}


def journal_counts(path: Path) -> dict:
    """The journal's micrograph and result counts (open it only once the daemon has stopped)."""
    from .daemon.journal import Journal

    with Journal(path) as journal:
        return journal.counts()


def check_integrity(landed: list[str], picks: list[dict], counts: dict) -> dict:
    """Lost, duplicated and inconsistent results after the final catch-up.

    Args:
        landed: Names of every micrograph landed.
        picks: Every slim picks message received (live and from ``replay``).
        counts: The journal's counts.

    Returns:
        ``lost`` (landed, no key), ``duplicated`` (a name under two keys), ``seq_conflicts`` (a key with two
        seqs), ``unexpected`` (picked, never landed), message counts and ``journal_ok`` / ``ok`` verdicts.
    """
    keys: dict[str, set[str]] = {}
    seqs: dict[str, set[int]] = {}
    for message in picks:
        keys.setdefault(message["name"], set()).add(message["key"])
        seqs.setdefault(message["key"], set()).add(message["seq"])
    live = [m for m in picks if not m["via_replay"]]
    live_seqs = {m["seq"] for m in live}
    n = len(landed)
    journal_ok = (counts["done"] == counts["results"] == counts["published"] == n and
                  all(counts[s] == 0 for s in ("waiting", "queued", "failed", "duplicate")))
    integrity = {"landed": n, "keys": len(seqs), "lost": sorted(set(landed) - set(keys)),
                 "duplicated": sorted(name for name, k in keys.items() if len(k) > 1),
                 "seq_conflicts": sorted(key for key, s in seqs.items() if len(s) > 1),
                 "unexpected": sorted(set(keys) - set(landed)), "live_messages": len(live),
                 "live_resends": sum(1 for m in live if m["replay"]),
                 "live_repeats": len(live) - len(live_seqs),
                 "missed_live": len({s for key in seqs for s in seqs[key]} - live_seqs), "journal_ok": journal_ok}
    integrity["ok"] = journal_ok and not any(integrity[k] for k in ("lost", "duplicated", "seq_conflicts",
                                                                      "unexpected"))
    return integrity


def rss_summary(samples: dict[int, list[tuple[float, int]]]) -> dict:
    """Per daemon process: the median of the first and of the last 10 % of its RSS samples, and the maximum.

    Args:
        samples: ``{pid: [(time, KiB), ...]}`` from :class:`Sampler`.

    Returns:
        ``{"processes": [{pid, samples, duration_s, first_mib, last_mib, max_mib}], "max_mib": ...}``.
    """
    processes = []
    for pid, series in samples.items():
        values = [kib / 1024 for _, kib in series]
        tenth = max(1, len(values) // 10)
        processes.append({"pid": pid, "samples": len(values), "duration_s": series[-1][0] - series[0][0],
                          "first_mib": statistics.median(values[:tenth]),
                          "last_mib": statistics.median(values[-tenth:]), "max_mib": max(values),
                          "series": [(round(t - series[0][0], 1), round(v, 1))
                                     for (t, _), v in zip(series, values)]})
    return {"processes": processes, "max_mib": max((p["max_mib"] for p in processes), default=None)}


# ------------------------------------------------------------------------------------------------ report


def markdown_report(results: list[dict], *, command: str, date: str, machine: str | None = None) -> str:
    """The streaming benchmark as Markdown: machine, command, date, then one section per result.

    Args:
        results: From :func:`run_mode`.
        command: The command line that produced them.
        date: ISO date.
        machine: The machine line; None asks :func:`streampick.bench.machine_description`.

    Returns:
        The report.
    """
    if machine is None:
        from .bench import machine_description

        machine = machine_description()
    lines = [f"### Streaming daemon benchmark, {date}", "", f"- machine: {machine}", f"- command: `{command}`"]
    from .finetunebench import finetune_section

    sections = {"latency": _latency_section, "throughput": _throughput_section, "soak": _soak_section,
                "finetune": finetune_section}
    for result in results:
        lines += ["", *sections[result["mode"]](result)]
    return "\n".join(lines) + "\n"


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _run_lines(result: dict) -> list[str]:
    """The lines every section shares: daemon settings, CPU use, load, start-up."""
    config, settings, cpu = result["config"], result["settings"], result["cpu"]
    picking = config["picking"]
    return [f"- daemon: model `{settings['model']}`, target_pixel_size {picking['target_pixel_size']:g} Å, "
            f"radius {picking['radius']}, watch.settle_seconds {config['watch']['settle_seconds']:g}; every "
            "other key at its default (inotify, score_stride 2, precision auto, batch_size 1); loopback ZeroMQ",
            f"- CPU over the run (cores on average, /proc/stat every 0.5 s): daemon "
            f"{_num(cpu['daemon_cores'], 2)}, this benchmark's subscriber and lander "
            f"{_num(cpu.get('bench_cores'), 2)}, **the rest of the machine (other users) "
            f"{_num(cpu.get('machine_cores'), 2)}**, steal {_num(cpu['steal_cores'], 2)}",
            f"- run: {result['wall_s']:.1f} s from the daemon's first heartbeat (its start-up: "
            f"{result['daemon_start_s']:.1f} s); load average (1/5/15 min) at start "
            f"{'/'.join(f'{x:.2f}' for x in result['load_at_start'])}, at end "
            f"{'/'.join(f'{x:.2f}' for x in result['load_at_end'])}",
            "- daemon RSS (VmRSS every 1 s; first 10 % median → last 10 % median, max): " + "; ".join(
                f"{p['first_mib']:.0f} → {p['last_mib']:.0f} MiB (max {p['max_mib']:.0f}) over "
                f"{p['duration_s']:.0f} s"
                for p in result["rss"]["processes"]),
            *([f"- daemon errors: {'; '.join(result['errors'])}"] if result.get("errors") else []),
            *([] if result["complete"] else ["- **incomplete: timed out before every landed micrograph was "
                                             "picked**"])]


def _latency_section(result: dict) -> list[str]:
    settings, summary = result["settings"], result["summary"]
    end_to_end = summary["written→received"]
    writer = ("pre-rendered, landed by a separate process" if settings["writer"] == "prerendered"
              else "run_microscope in a separate process, rendering before each slot")
    lines = [f"#### Latency: `{settings['model']}`, {settings['n']} × {settings['size']}² float32, one every "
             f"{settings['interval']:g} s", "",
             f"- writer: {writer}; write modes in turn: {', '.join(WRITE_MODES)} (slow writes "
             f"{settings['slow_write_s']:g} s in 8 chunks)", *_run_lines(result),
             f"- received live: {end_to_end['n']} of {result['landed']} landed"
             + (f" (missing: {', '.join(result['missing'])})" if result["missing"] else ""), "",
             "| segment | median s | p95 s | max s |", "|---|---|---|---|"]
    for label, a, b in SEGMENTS:
        stats = summary[f"{a}→{b}"]
        lines.append(f"| {label} | {_num(stats['median'])} | {_num(stats['p95'])} | {_num(stats['max'])} |")
    lines += ["", "| write mode | n | median s | max s |", "|---|---|---|---|"]
    for mode, stats in summary["by_mode"].items():
        lines.append(f"| {mode} | {stats['n']} | {_num(stats['median'])} | {_num(stats['max'])} |")
    lines += ["", "Inside started → committed (medians, s): " + ", ".join(
        f"{stage} {_num(summary['stages'][stage]['median'])}" for stage in STAGES)
        + f"; the rest (SHA-256 identity, journal look-ups, batching) {_num(summary['pick_overhead']['median'])}",
        "", f"Micrographs picked while the rest of the machine used < {QUIET_CORES:g} core (0.5 s samples): "
        f"{summary['quiet']['n']}, end to end median {_num(summary['quiet']['median'])} s, p95 "
        f"{_num(summary['quiet']['p95'])} s, max {_num(summary['quiet']['max'])} s.",
        "", "| target (issue 3) | measured | |", "|---|---|---|",
        f"| median ≤ {TARGETS['latency_median_s']:g} s | {_num(end_to_end['median'], 2)} s | "
        f"{_verdict(end_to_end['median'] is not None and end_to_end['median'] <= TARGETS['latency_median_s'])} |",
        f"| p95 ≤ {TARGETS['latency_p95_s']:g} s | {_num(end_to_end['p95'], 2)} s | "
        f"{_verdict(end_to_end['p95'] is not None and end_to_end['p95'] <= TARGETS['latency_p95_s'])} |"]
    return lines


def _throughput_section(result: dict) -> list[str]:
    settings, summary = result["settings"], result["summary"]
    per_s = summary["per_s"]
    met = per_s is not None and per_s >= TARGETS["throughput_per_s"]
    lines = [f"#### Throughput: `{settings['model']}`, {settings['n']} × {settings['size']}² float32 renamed into "
             f"place every {settings['interval']:g} s", "", *_run_lines(result), "",
             "| measure | value |", "|---|---|",
             f"| micrographs picked | {summary['n']} of {result['landed']} landed |",
             f"| **sustained rate, first → last publication** | **{_num(per_s, 2)} /s** (target ≥ "
             f"{TARGETS['throughput_per_s']:g}/s: {_verdict(met)}) |",
             f"| the same at the subscriber | {_num(summary['per_s_received'], 2)} /s |",
             f"| CPU between first and last publication: daemon / everything else | "
             f"{_num(summary['cpu_window']['daemon_cores'], 2)} / {_num(summary['cpu_window']['other_cores'], 2)} "
             f"cores |",
             f"| publications span / arrivals span | {_num(summary['span_s'], 1)} s / "
             f"{_num(summary['arrival_span_s'], 1)} s |",
             f"| time between publications, median / p95 / max | {_num(summary['cycle']['median'])} / "
             f"{_num(summary['cycle']['p95'])} / {_num(summary['cycle']['max'])} s |",
             f"| started → committed, median / p95 | {_num(summary['service']['median'])} / "
             f"{_num(summary['service']['p95'])} s |",
             "| inside it, medians | " + ", ".join(f"{s} {_num(summary['stages'][s]['median'])}" for s in STAGES)
             + f", rest {_num(summary['pick_overhead']['median'])} s |",
             f"| file complete → received (queueing included), median / max | "
             f"{_num(summary['latency']['median'], 1)} / {_num(summary['latency']['max'], 1)} s |"]
    return lines


def _soak_section(result: dict) -> list[str]:
    settings, integrity, journal = result["settings"], result["integrity"], result["journal"]
    kills = "; ".join(f"at {k['picked']} picked / {k['landed']} landed (seq {k['last_seq']}), back in "
                      f"{k['down_s']:.1f} s" for k in result["kills"]) or "none"
    lines = [f"#### Soak: `{settings['model']}`, {settings['n']} × {settings['size']}² float32, {settings['batch']} "
             f"every {settings['interval']:g} s, {len(result['kills'])} kill -9 restarts", "",
             f"- write modes in turn: {', '.join(WRITE_MODES)} (slow writes {settings['slow_write_s']:g} s)",
             *_run_lines(result), f"- kills (seed {settings['seed']}): {kills}", "",
             "| check | result | |", "|---|---|---|",
             f"| landed / distinct keys | {integrity['landed']} / {integrity['keys']} | |",
             f"| lost (landed, no key after replay from seq 0) | {len(integrity['lost'])} | "
             f"{_verdict(not integrity['lost'])} |",
             f"| duplicated (a micrograph under two keys) | {len(integrity['duplicated'])} | "
             f"{_verdict(not integrity['duplicated'])} |",
             f"| a key with two seqs | {len(integrity['seq_conflicts'])} | "
             f"{_verdict(not integrity['seq_conflicts'])} |",
             f"| picked but never landed | {len(integrity['unexpected'])} | {_verdict(not integrity['unexpected'])} |",
             f"| journal: done / results / published | {journal['done']} / {journal['results']} / "
             f"{journal['published']} | {_verdict(integrity['journal_ok'])} |",
             f"| journal: waiting / queued / failed / duplicate | {journal['waiting']} / {journal['queued']} / "
             f"{journal['failed']} / {journal['duplicate']} | |",
             f"| live messages (re-sends after restarts; same key+seq repeats) | {integrity['live_messages']} "
             f"({integrity['live_resends']}; {integrity['live_repeats']}) | |",
             f"| results not received live (recovered by replay) | {integrity['missed_live']} | |",
             "", "| daemon process | RSS samples | seconds | first 10 % median MiB | last 10 % median MiB | "
             "max MiB |", "|---|---|---|---|---|---|"]
    for index, proc in enumerate(result["rss"]["processes"]):
        lines.append(f"| {index + 1} (pid {proc['pid']}) | {proc['samples']} | {proc['duration_s']:.0f} | "
                     f"{proc['first_mib']:.0f} | {proc['last_mib']:.0f} | {proc['max_mib']:.0f} |")
    return lines
