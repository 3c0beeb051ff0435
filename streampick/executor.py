"""Where picking work runs (issue 8's executor seam): in this process (the default; Dask is never imported),
or on a Dask distributed cluster (``pip install 'streampick[dask]'``).

A task is a micrograph *path* on a filesystem the workers share, a model *reference* (what ``load_model``
takes, plus its version) and the picking settings; its result is the micrograph's picks, GMM fit and stage
timings (:class:`~streampick.pick.PickResult`) or a one-line failure.  Image bytes never travel through the
scheduler, and each worker process loads a model version once and keeps it (:func:`run_pick_task`'s cache,
newest versions kept).  Callers decide what to pick and write and commit the results themselves.

``streampick pick`` runs through this seam, and so does the daemon with ``executor: dask`` (its live picks
and re-picks; with the in-process executor it keeps its own batched loop).
"""
from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from .errors import ConfigError, MicrographError
from .pick import PickFailure, PickResult, PickSettings, pick_micrographs, read_and_prepare, score_and_extract

log = logging.getLogger(__name__)
MODEL_CACHE_SIZE = 2  # model versions a worker keeps loaded (the active one and the one it replaces)


@dataclass(frozen=True)
class ModelRef:
    """A model as workers load it: ``spec`` for ``load_model`` (a path on the shared filesystem, a shipped
    name, ``topaz:NAME``) and ``version``, the cache key (a new version is loaded, never a stale one)."""

    spec: str
    version: str


@dataclass(frozen=True)
class PickTask:
    """One micrograph to pick: everything a worker needs, and nothing large."""

    path: str
    model: ModelRef
    settings: PickSettings
    device: str = "auto"
    emulated_device_s: float | None = None  # benchmark only (bench --scale): hold this long instead of scoring
    submitted: float | None = None  # time.time() at submission: the result's timings then say how long it waited


Outcome = PickResult | PickFailure


# ---------------------------------------------------------------------------------------------- the task


_models: OrderedDict[tuple[str, str], Any] = OrderedDict()
_models_lock = threading.Lock()


def cached_model(ref: ModelRef, device: str = "auto"):
    """The model ``ref`` names, loaded once per process and version (the :data:`MODEL_CACHE_SIZE` most recently
    used versions are kept)."""
    from .device import select_device
    from .nets.checkpoint import load_model

    key = (ref.version, device)
    with _models_lock:
        if key in _models:
            _models.move_to_end(key)
            return _models[key]
        model = load_model(ref.spec, select_device(device))
        _models[key] = model
        while len(_models) > MODEL_CACHE_SIZE:
            old, _ = _models.popitem(last=False)
            log.info("worker %s: model version %s evicted", worker_name(), old[0])
        return model


def remember_model(ref: ModelRef, device: str, model) -> None:
    """Put a model this process already loaded into the cache, so that tasks run here use it."""
    with _models_lock:
        _models[(ref.version, device)] = model
        _models.move_to_end((ref.version, device))
        while len(_models) > MODEL_CACHE_SIZE:
            _models.popitem(last=False)


def loaded_versions() -> list[str]:
    """The model versions this process holds (for a worker's status)."""
    with _models_lock:
        return [version for version, _ in _models]


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


_allocator_tuned = False
_device_lock = threading.Lock()  # a worker process with several threads still scores one micrograph at a time


def tune_allocator() -> None:
    """Keep freed memory in the process for reuse (glibc ``mallopt``: trim above 64 MiB, mmap above 16 MiB),
    once per process.  Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which hands every
    freed block back to the OS and re-faults it on the next allocation: the GMM fit of a 128² map took 28 ms
    instead of 4 (measured 2026-11-26).  A no-op where the C library is not glibc."""
    global _allocator_tuned
    if _allocator_tuned:
        return
    _allocator_tuned = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 64 << 20)  # M_TRIM_THRESHOLD
        libc.mallopt(-3, 16 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def run_pick_task(task: PickTask) -> Outcome:
    """Pick one micrograph where this function runs: read, preprocess, score, extract.  A micrograph that
    cannot be read gives a :class:`~streampick.pick.PickFailure`; anything else raises (the executor reports
    it, and Dask retries the task elsewhere when a worker dies)."""
    began = time.time()
    tune_allocator()
    model = cached_model(task.model, task.device)
    try:
        prepared = read_and_prepare(task.path, model, task.settings, next(model.net.parameters()).device)
    except MicrographError as err:
        return PickFailure(Path(task.path), err)
    queued = time.perf_counter()
    with _device_lock:  # one task on the device at a time; the others read and preprocess meanwhile
        device_wait = time.perf_counter() - queued
        if task.emulated_device_s is not None:
            result = _emulated_pick(prepared, model, task.settings, task.emulated_device_s)
        else:
            result = score_and_extract([prepared], model, task.settings)[0]
    if task.submitted is not None:  # queued on the cluster (the scheduler, the worker's own queue), model loading
        result.timings["cluster_wait"] = max(0.0, began - task.submitted)
    result.timings["device_wait"] = device_wait  # behind another task of this worker on the device
    return result


def run_cluster_tasks(tasks: list[PickTask]) -> tuple[list[Outcome], str, list[str]]:
    """:func:`run_pick_task` for each of ``tasks`` in turn on a Dask worker (one Dask task carries several
    micrographs while a backlog waits: Dask's own cost per task is then shared), with the worker's address and
    the model versions it holds (for the daemon's per-worker figures)."""
    from distributed import get_worker

    began = time.perf_counter()
    outcomes = [run_pick_task(task) for task in tasks]
    task_run = time.perf_counter() - began
    for outcome in outcomes:  # the daemon's view of a micrograph's time on the cluster, batch-mates included
        if isinstance(outcome, PickResult):
            outcome.timings.update(task_run=task_run, task_size=len(tasks))
    try:
        address = get_worker().address
    except ValueError:  # not on a worker (tests calling it directly)
        address = worker_name()
    return outcomes, address, loaded_versions()


EMULATION_ENV = "STREAMPICK_BENCH_EMULATED_DEVICE_S"
"""Set by ``streampick bench --scale`` only: the daemon's cluster tasks hold this many seconds instead of running
the network (the CPU cannot show GPU speed), and their picks are meaningless."""


def _emulated_pick(prepared, model, settings: PickSettings, seconds: float) -> PickResult:
    """The benchmark's stand-in for the GPU: hold ``seconds``, then extract picks from the inverted, smoothed
    image (real extraction work on a real-sized map)."""
    import torch.nn.functional as F

    from .extract import extract_picks
    from .pick import nms_radius

    start = time.perf_counter()
    time.sleep(seconds)
    score_map = -F.avg_pool2d(prepared.image[None, None], 3, stride=1, padding=1)[0, 0]
    held = time.perf_counter() - start
    start = time.perf_counter()
    original = prepared.micrograph
    to_scaled = prepared.scaled_pixel_size / original.pixel_size
    radius = nms_radius(settings, model).pixels(original.pixel_size) / to_scaled
    picks = extract_picks(score_map, radius=radius, floor=settings.floor, scale=prepared.scale)
    timings = dict(prepared.timings, score=held, extract=time.perf_counter() - start)
    return PickResult(original.path, original.data.shape, original.pixel_size, prepared.scaled_pixel_size, picks,
                      prepared.gmm, timings)


# ---------------------------------------------------------------------------------------------- executors


class Executor(Protocol):
    """Runs pick tasks.  ``submit`` runs a few together and returns a future of their outcomes, in order
    (higher ``priority`` runs first where the executor queues); ``pick`` runs many and yields the outcomes as
    they complete."""

    name: str

    def submit(self, tasks: list[PickTask], priority: int = 0) -> Future: ...

    def pick(self, tasks: Iterable[PickTask]) -> Iterator[Outcome]: ...

    def warm(self, ref: ModelRef, device: str = "auto") -> list[str]: ...

    def describe(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class InProcessExecutor:
    """Picks in the calling thread: ``submit`` runs the task before it returns; ``pick`` scores up to
    ``batch_size`` same-shape micrographs together (what ``streampick pick`` always did)."""

    name = "in-process"

    def __init__(self, batch_size: int = 1) -> None:
        self.batch_size = batch_size

    def submit(self, tasks: list[PickTask], priority: int = 0) -> Future:
        future: Future = Future()
        try:
            future.set_result([run_pick_task(task) for task in tasks])
        except Exception as err:  # the caller sees it from result(), as from a remote executor
            future.set_exception(err)
        return future

    def pick(self, tasks: Iterable[PickTask]) -> Iterator[Outcome]:
        tasks = list(tasks)
        if not tasks:
            return
        first = tasks[0]
        if any(t.model != first.model or t.settings != first.settings or t.device != first.device for t in tasks):
            for task in tasks:  # mixed models or settings: one at a time
                yield run_pick_task(task)
            return
        model = cached_model(first.model, first.device)
        device = next(model.net.parameters()).device
        yield from pick_micrographs([t.path for t in tasks], model, first.settings, device, self.batch_size)

    def warm(self, ref: ModelRef, device: str = "auto") -> list[str]:
        """Load ``ref`` into this process's model cache (as :meth:`DaskExecutor.warm` does on workers)."""
        try:
            cached_model(ref, device)
        except Exception as err:
            return [f"{worker_name()}: {err}"]
        return []

    def describe(self) -> dict[str, Any]:
        return {"kind": self.name}

    def close(self) -> None:
        pass


class WorkerFigures:
    """What one worker has picked: a count, the times of the last minute's results, its model versions."""

    WINDOW_S = 60.0

    def __init__(self) -> None:
        self.picked, self.recent, self.models = 0, deque(), []

    def record(self, versions: list[str], picked: bool = True) -> None:
        """A task finished on this worker (``picked`` False: the micrograph could not be read)."""
        self.models = list(versions)
        if not picked:
            return
        now = time.monotonic()
        self.picked += 1
        self.recent.append(now)
        while self.recent and self.recent[0] < now - self.WINDOW_S:
            self.recent.popleft()

    def summary(self, now: float) -> dict[str, Any]:
        recent = [t for t in self.recent if t >= now - self.WINDOW_S]
        return {"picked": self.picked, "per_min": len(recent) * 60.0 / self.WINDOW_S, "models": self.models}


class DaskExecutor:
    """Submits tasks to a Dask distributed cluster through ``client``; at most ``in_flight`` tasks at a time in
    :meth:`pick`.  ``resources`` (e.g. ``{"GPU": 1}``) reserves worker resources per task.  ``owned`` are
    closed with the executor (a cluster this executor started)."""

    name = "dask"

    def __init__(self, client, *, in_flight: int, resources: dict[str, float] | None = None,
                 owned: tuple = (), address: str | None = None, connect_timeout: float = 10.0) -> None:
        self.client, self.in_flight, self.resources, self.owned = client, in_flight, resources, owned
        self.address, self.connect_timeout = address, connect_timeout  # a scheduler we joined, to rejoin
        self.worker_figures: dict[str, WorkerFigures] = {}
        self.failures = 0  # tasks the cluster could not finish (no worker to blame)
        self._figures_lock = threading.Lock()

    def healthy(self) -> bool:
        """Whether the client is connected to its scheduler."""
        return self.client.status == "running"

    def reconnect(self) -> bool:
        """Whether the scheduler is reachable again: the client reconnects by itself for ``connect_timeout``
        seconds after a loss and then closes; a closed client to a scheduler we joined is replaced by a new
        one when the scheduler answers."""
        if self.healthy():
            return True
        if self.address is None or self.client.status not in ("closed", "closing"):
            return False
        from distributed import Client

        try:
            client = Client(self.address, timeout=f"{self.connect_timeout}s")
        except OSError:
            return False
        old, self.client = self.client, client
        old.close(timeout=5)  # its IO loop would otherwise linger and can hold up the process's exit
        return True

    def submit(self, tasks: list[PickTask], priority: int = 0) -> Future:
        """One Dask task picking ``tasks`` in turn, as a ``concurrent.futures.Future`` of their outcomes (it
        keeps the Dask future alive: a Dask future that is garbage-collected is forgotten by the scheduler).
        A worker that dies mid-task makes Dask run it again elsewhere; what cannot finish (the scheduler is
        gone, the task failed on too many workers) comes back as the future's exception."""
        remote = self.client.submit(run_cluster_tasks, list(tasks), priority=priority, pure=False,
                                    resources=self.resources)
        local: Future = Future()
        local.remote = remote  # type: ignore[attr-defined]

        def settle(done) -> None:
            try:
                outcomes, worker, versions = done.result()
            except BaseException as err:  # CancelledError, a lost scheduler, a task error
                with self._figures_lock:
                    self.failures += 1
                local.set_exception(err)
                return
            with self._figures_lock:
                figures = self.worker_figures.setdefault(worker, WorkerFigures())
                for outcome in outcomes:
                    figures.record(versions, picked=not isinstance(outcome, PickFailure))
            local.set_result(outcomes)

        remote.add_done_callback(settle)
        return local

    def warm(self, ref: ModelRef, device: str = "auto") -> list[str]:
        """Load ``ref`` on every worker now and on every worker that joins later (a worker plugin), so that
        no micrograph waits for a worker to import torch and load weights.  Returns a line saying why where a
        worker could not load it (its tasks will then fail, and be reported, as they come)."""
        from .daskworker import WarmWorker

        try:
            self.client.register_plugin(WarmWorker(ref, device))
        except Exception as err:  # Dask raises the first worker's error
            return [str(err).splitlines()[0] if str(err) else type(err).__name__]
        return []

    def pick(self, tasks: Iterable[PickTask]) -> Iterator[Outcome]:
        pending, running = deque(tasks), set()
        while pending or running:
            while pending and len(running) < self.in_flight:
                running.add(self.submit([pending.popleft()]))
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                yield from future.result()

    def describe(self) -> dict[str, Any]:
        """For ``status``: the scheduler and its workers (count, model versions are not known here)."""
        with self._figures_lock:
            failures = self.failures
        if not self.healthy():  # the client's cached scheduler info would still show the lost workers
            return {"kind": self.name, "scheduler": self.address, "connected": False, "workers": 0,
                    "failures": failures}
        try:
            info = self.client.scheduler_info()
            processing = self.client.processing()
            now = time.monotonic()
            with self._figures_lock:
                figures = dict(self.worker_figures)
            per_worker = [{"address": address, "busy": len(processing.get(address, ())),
                           **(figures[address].summary(now) if address in figures else
                              {"picked": 0, "per_min": 0.0, "models": []})}
                          for address in sorted(info.get("workers", {}))]
            return {"kind": self.name, "scheduler": info.get("address"), "connected": True,
                    "workers": len(per_worker), "busy": sum(1 for w in per_worker if w["busy"]),
                    "failures": failures, "per_worker": per_worker}
        except Exception as err:  # the scheduler is unreachable: say so rather than fail the status
            return {"kind": self.name, "scheduler": self.address, "connected": False,
                    "error": str(err).splitlines()[0] if str(err) else type(err).__name__}

    def close(self) -> None:
        self.client.close(timeout=5)
        for thing in self.owned:
            thing.close()


# ---------------------------------------------------------------------------------------------- from config


def is_loopback(address: str) -> bool:
    """Whether a scheduler address (``tcp://HOST:PORT``, ``tls://...``) names this machine's loopback."""
    host = urlparse(address if "://" in address else f"tcp://{address}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_scheduler_address(address: str, allow_remote: bool) -> None:
    """Refuse a scheduler outside loopback reached without TLS, unless the config explicitly allows it.

    Raises:
        ConfigError: naming ``dask.scheduler``.
    """
    scheme = urlparse(address).scheme if "://" in address else "tcp"
    if scheme not in ("tcp", "tls", "inproc"):
        raise ConfigError(f"dask.scheduler: '{address}' is not a Dask address (write tcp://HOST:8786 or "
                          "tls://HOST:8786)")
    if scheme == "tcp" and not is_loopback(address) and not allow_remote:
        raise ConfigError(f"dask.scheduler: {address} is outside this machine and not TLS: use tls:// with Dask's "
                          "TLS configured, or set dask.allow_insecure_remote: true on a trusted network")


def executor_from_config(config: dict[str, dict[str, Any]]) -> Executor:
    """The executor the config asks for (``executor.kind``, and the ``dask`` section).

    Raises:
        ConfigError: Dask is not installed, or a ``dask`` key is wrong (an unreachable scheduler, an unknown
            cluster kind, a remote scheduler without TLS), naming the key.
    """
    kind = config["executor"]["kind"]
    if kind == "in-process":
        return InProcessExecutor(config["picking"]["batch_size"])
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError("executor.kind: dask needs Dask distributed: pip install 'streampick[dask]'") from None
    logging.getLogger("distributed").setLevel(logging.WARNING)  # its INFO lines would flood the daemon's log
    options = config["dask"]
    resources = {"GPU": 1} if options["gpu_per_task"] else None
    if options["scheduler"]:
        check_scheduler_address(options["scheduler"], options["allow_insecure_remote"])
        try:
            client = Client(options["scheduler"], timeout=f"{options['connect_timeout']}s")
        except OSError as err:
            raise ConfigError(f"dask.scheduler: cannot reach {options['scheduler']} ({err})") from None
        workers = max(len(client.scheduler_info().get("workers", {})), 1)
        return DaskExecutor(client, in_flight=workers * options["tasks_per_worker"], resources=resources,
                            address=options["scheduler"], connect_timeout=options["connect_timeout"])
    cluster_kind = options["cluster"]
    if cluster_kind == "local":
        # tasks_per_worker threads: while one task scores, the next reads and preprocesses (the device lock in
        # run_pick_task keeps scoring to one task at a time)
        import dask

        # no dashboard, so no use for the workers' statistical profiler (it samples every thread 100×/s)
        with dask.config.set({"distributed.worker.profile.enabled": False}):
            cluster = LocalCluster(n_workers=options["workers"], threads_per_worker=options["tasks_per_worker"],
                                   processes=True, host="127.0.0.1", dashboard_address=None,
                                   resources={"GPU": 1} if resources else None)
        client = Client(cluster)
        return DaskExecutor(client, in_flight=options["workers"] * options["tasks_per_worker"],
                            resources=resources, owned=(cluster,))
    if cluster_kind == "slurm":
        cluster = slurm_cluster(options)
        client = Client(cluster)
        return DaskExecutor(client, in_flight=options["adaptive_maximum"] * options["tasks_per_worker"],
                            resources=resources, owned=(cluster,))
    raise ConfigError(f"dask.cluster: unknown cluster kind {cluster_kind!r} (local or slurm), or set dask.scheduler")


def slurm_cluster(options: dict[str, Any]):
    """A ``dask_jobqueue.SLURMCluster`` from the ``dask`` section: one worker process per job, each job asking
    for ``slurm_gpus_per_job`` GPUs, scaled adaptively between ``adaptive_minimum`` and ``adaptive_maximum``.

    Raises:
        ConfigError: dask-jobqueue is not installed.
    """
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise ConfigError("dask.cluster: slurm needs dask-jobqueue: pip install 'streampick[dask]'") from None
    import dask

    host = options["slurm_scheduler_host"]
    local_only = host is not None and is_loopback(host)
    if not (local_only or options["allow_insecure_remote"] or dask.config.get("distributed.comm.require-encryption",
                                                                              False)):
        raise ConfigError("dask.cluster: slurm workers reach this scheduler over the network: configure Dask's TLS "
                          "(distributed.comm.require-encryption and its certificates), or set "
                          "dask.allow_insecure_remote: true on a trusted cluster network")
    gpus = options["slurm_gpus_per_job"]
    cluster = SLURMCluster(
        queue=options["slurm_queue"], account=options["slurm_account"], walltime=options["slurm_walltime"],
        cores=options["slurm_cores"], memory=options["slurm_memory"], processes=1,
        job_extra_directives=[f"--gres=gpu:{gpus}"] if gpus else [],
        worker_extra_args=["--resources", f"GPU={gpus}"] if gpus else [],
        scheduler_options={"dashboard_address": None, **({"host": host} if host else {})}, silence_logs="error")
    cluster.adapt(minimum=options["adaptive_minimum"], maximum=options["adaptive_maximum"])
    return cluster
