"""The daemon itself: wires watcher → completeness → journal → work queue → engine → outputs → publisher.

Threads (each a loop that waits with a timeout and stops on one event):

* the watchdog observer, whose handler only enqueues paths;
* *intake*: feeds events to the completeness tracker, journals files as they land and become whole, and
  queues them (new arrivals before the start-up backlog);
* *worker*: picks queued micrographs (batched when several wait), writes outputs, commits each result to
  the journal, publishes it, marks it published;
* *housekeeping*: heartbeats, stats, the combined STAR, threshold rewrites, the labels folder;
* the publisher's and the control server's own socket threads;
* during live fine-tuning (:mod:`.finetune`), a reader of the trainer process's progress.

The model in use is one immutable :class:`ActiveModel` (network, spec, version), read once per batch; a
fine-tuned candidate that beat it on held-out labelled micrographs replaces it between batches, is
remembered in the journal (a restart continues with it), and the micrographs already picked are queued
again, behind new arrivals, to be picked with it into the new version's folder.

Every fault with a file or the disk is reported once (log, ``error`` message, journal) and the daemon
goes on; a failed output write is retried later, so nothing is lost.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import signal
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import describe
from ..device import select_device
from ..errors import ConfigError, IncompleteMicrographError, MicrographError, StreampickError
from ..executor import EMULATION_ENV, ModelRef, PickTask, executor_from_config
from ..io.coords import write_combined_star, write_star
from ..nets.checkpoint import Model, load_model, model_version
from ..pick import PickFailure, PickResult, Prepared, read_and_prepare, score_and_extract, settings_from_options
from ..picks import Picks
from .completeness import CompletenessTracker
from .control import ControlServer
from .finetune import FineTuner, StartPoint
from .journal import Journal, MicrographRecord
from .labels import add_control_labels
from .pipeline import file_identity, pick_message, picks_of, version_folder, write_outputs
from .protocol import error_message, heartbeat_message, training_message
from .publisher import Publisher
from .security import CurveServer, check_endpoint
from .stats import RollingStats
from .watcher import WatchSettings, scan_existing, start_observer
from .workqueue import BACKLOG, NEW, REPICK, WorkItem, WorkQueue

log = logging.getLogger("streampick.daemon")


ACTIVE_MODEL_KEY = "active_model"
THRESHOLD_KEY = "threshold"  # the last set-threshold, and the configured threshold it replaced
WARM_TIMEOUT_S = 120.0  # at most this long for the cluster's workers to load a model before picking goes on


@dataclass(frozen=True)
class ActiveModel:
    """The model picking new micrographs: its network and card, the spec it was loaded from, its version."""

    model: Model
    spec: str
    version: str


class Daemon:
    """One streaming picking session, configured by a validated config dict (see config.example.yaml)."""

    def __init__(self, config: dict[str, dict[str, Any]], *, reprocess: bool = False) -> None:
        self.config = config
        self.reprocess_on_start = reprocess
        self.stop_event = threading.Event()
        self.started = time.time()
        self.out_dir = Path(config["output"]["folder"])
        self.watch = WatchSettings(folder=Path(config["watch"]["folder"]),
                                   patterns=tuple(config["watch"]["patterns"]),
                                   ignore_patterns=tuple(config["watch"]["ignore_patterns"]),
                                   recursive=config["watch"]["recursive"],
                                   polling=config["watch"]["observer"] == "polling",
                                   poll_interval=config["watch"]["poll_interval"])
        self.settings = settings_from_options(config["picking"])
        _warn_about_patterns(self.watch.patterns, self.settings.pixel_size)
        self.curve = _curve(config["security"])
        check_endpoint("publish.endpoint", config["publish"]["endpoint"], self.curve)
        check_endpoint("control.endpoint", config["control"]["endpoint"], self.curve)
        self.events: queue.SimpleQueue[Path] = queue.SimpleQueue()
        self.work = WorkQueue()
        self.stats = RollingStats()
        self.tracker = CompletenessTracker(settle_seconds=config["watch"]["settle_seconds"],
                                           give_up_seconds=config["watch"]["give_up_seconds"])
        self.backlog: set[str] = set()
        self.threshold_lock = threading.Lock()
        self.user_threshold = config["picking"]["threshold"] is not None
        self.pending_rewrite = threading.Event()
        self.combined_dirty = threading.Event()
        # micrograph id → (micrograph path, its picks ≥ the threshold): the combined STAR's content, kept small
        # (a full message holds every candidate: ~180 KiB for a 4096² micrograph)
        self.latest: dict[int, tuple[str, Picks]] = {}
        self.latest_lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.startup_faults: list[tuple[str | None, str, str]] = []

    # ------------------------------------------------------------------------------------- lifecycle

    def run(self) -> int:
        """Run until ``shutdown`` (control), SIGTERM or SIGINT; returns the exit code."""
        log.info("effective configuration:\n%s", describe(self.config))
        self.device = select_device(self.config["picking"]["device"])
        # a cluster that cannot be reached is a config error, before anything starts
        self.executor = executor_from_config(self.config) if self.config["executor"]["kind"] == "dask" else None
        if self.executor is not None:
            log.info("picking on a Dask cluster: %s", self.executor.describe())
        self.out_dir.mkdir(parents=True, exist_ok=True)
        journal_path = self.config["output"]["journal"] or self.out_dir / "journal.sqlite"
        self.journal = Journal(journal_path)
        self.active = self._initial_model()
        for line in self._warm_workers(self.active):  # reported once the publisher runs
            self.startup_faults.append((None, "cluster", line))
        self.threshold, self.user_threshold = self._initial_threshold()
        training = self.config["training"]
        self.finetuner = FineTuner(
            training, Path(training["labels_folder"] or self.out_dir / "labels"), self.out_dir / "training",
            self.journal, start_point=self._start_point, swap=self._swap,
            report=lambda message: self.report(None, "training", message),
            publish=lambda summary: self.publisher.publish("training", training_message(summary, time.time())))
        self.publisher = Publisher(self.config["publish"]["endpoint"],
                                   high_water_mark=self.config["publish"]["high_water_mark"], curve=self.curve)
        self.control = ControlServer(self.config["control"]["endpoint"], self.handle_control, curve=self.curve)
        self.publisher.start()
        self.control.start()
        for fault in self.startup_faults:
            self.report(*fault)
        log.info("publishing on %s, control on %s, model %s, output %s", self.publisher.bound_endpoint,
                 self.control.bound_endpoint, self.active.version, self.out_dir)
        self._install_signal_handlers()
        try:
            self._recover()
            self.observer = start_observer(self.watch, self.events.put)
            self._queue_backlog()
            self._queue_repicks()
            for target in (self._intake_loop, self._worker_loop, self._housekeeping_loop):
                thread = threading.Thread(target=self._guard(target), name=target.__name__.strip("_"))
                thread.start()
                self.threads.append(thread)
            log.info("watching %s (%s)", self.watch.folder, "polling" if self.watch.polling else "inotify")
            while not self.stop_event.wait(0.5):
                pass
        finally:
            self._shutdown()
        return 0

    def _guard(self, loop):
        """Run a thread's loop; an unexpected exception is reported and stops the daemon cleanly."""
        def guarded() -> None:
            try:
                loop()
            except Exception as err:  # a bug, not bad input: report it and stop rather than hang
                log.exception("%s crashed", loop.__name__)
                self.report(None, "internal", f"{loop.__name__} crashed: {err}")
                self.stop_event.set()
        return guarded

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop_event.set())

    def _shutdown(self) -> None:
        self.stop_event.set()
        observer = getattr(self, "observer", None)
        if observer is not None:
            observer.stop()
            observer.join()
        for thread in self.threads:
            thread.join()
        finetuner = getattr(self, "finetuner", None)
        if finetuner is not None:
            finetuner.stop()
        self._write_combined()
        if getattr(self, "executor", None) is not None:
            self.executor.close()
        self.control.close()
        self.publisher.close()
        self.journal.close()
        log.info("stopped")

    # --------------------------------------------------------------------------------------- recovery

    def _recover(self) -> None:
        """Re-send what was committed but not published; re-queue what was seen but not picked."""
        for result in self.journal.unpublished():
            self._publish(result.micrograph_id, result.seq, result.message, replay=True)
        for record in self.journal.micrographs_in("queued"):
            self.work.put(record.id, record.path, BACKLOG)
        for record in self.journal.micrographs_in("waiting"):
            self.backlog.add(record.path)
            self.tracker.touch(Path(record.path))
        self._reload_latest(rewrite=False)
        if self.reprocess_on_start:
            for record in self.journal.micrographs_in("done"):
                self.journal.bump_generation(record.id)
                self.work.put(record.id, record.path, REPICK)

    def _queue_backlog(self) -> None:
        for path in scan_existing(self.watch):
            record = self._observe(path)
            if record is not None and record.state == "waiting":
                self.backlog.add(str(path))
                self.tracker.touch(path)

    # ----------------------------------------------------------------------------------------- intake

    def _observe(self, path: Path) -> MicrographRecord | None:
        try:
            stat = path.stat()
        except OSError:
            return None
        return self.journal.observe(str(path), stat.st_size, stat.st_mtime)

    def _intake_loop(self) -> None:
        while not self.stop_event.is_set():
            wait = self.tracker.next_check()
            try:
                path = self.events.get(timeout=0.25 if wait is None else min(max(wait, 0.005), 0.25))
            except queue.Empty:
                path = None
            while path is not None:
                record = self._observe(path)
                if record is not None and record.state == "waiting":
                    self.tracker.touch(path)
                try:
                    path = self.events.get_nowait()
                except queue.Empty:
                    path = None
            self._take_report(self.tracker.poll())

    def _take_report(self, report) -> None:
        for path in report.ready:
            record = self._observe(path)
            if record is None or record.state != "waiting":
                continue
            self.journal.set_state(record.id, "queued", complete=time.time())
            priority = BACKLOG if str(path) in self.backlog else NEW
            self.backlog.discard(str(path))
            self.work.put(record.id, str(path), priority)
        for path, reason in report.given_up:
            record = self._observe(path)
            if record is not None:
                self.journal.set_state(record.id, "failed", error=reason)
            self.report(str(path), "complete", reason)

    # ----------------------------------------------------------------------------------------- worker

    def _worker_loop(self) -> None:
        if self.executor is not None:
            return self._cluster_loop()
        batch_size = self.config["picking"]["batch_size"]
        while not self.stop_event.is_set():
            item = self.work.get(0.25, time.monotonic)
            if item is None:
                continue
            items = [item]
            while len(items) < batch_size and (extra := self.work.get(0.0, time.monotonic)) is not None:
                items.append(extra)
            self._pick_in_process(items)

    def _pick_in_process(self, items: list[WorkItem]) -> None:
        """Load, score (same-shape micrographs together) and commit ``items`` in this process."""
        active = self.active  # one model for the whole batch, even if a new one is swapped in meanwhile
        loaded = [x for x in (self._load(i, active) for i in items) if x is not None]
        by_shape: dict[tuple, list] = {}
        for entry in loaded:
            by_shape.setdefault(tuple(entry[1].image.shape), []).append(entry)
        for group in by_shape.values():
            results = score_and_extract([p for _, p, _, _ in group], active.model, self.settings)
            for (work_item, _, identity, started), result in zip(group, results):
                self._finish(work_item, identity, started, result, active)

    def _load(self, item: WorkItem, active: ActiveModel
              ) -> tuple[WorkItem, Prepared, tuple[str, int, int], float] | None:
        """Read, identify and preprocess one queued micrograph; None when there is nothing to pick."""
        started = time.time()
        identity = self._identify(item, active)
        if identity is None:
            return None
        try:
            prepared = read_and_prepare(item.path, active.model, self.settings, self.device, mmap=False)
        except (MicrographError, OSError) as err:
            self._unreadable(item, err)
            return None
        return item, prepared, identity, started

    def _identify(self, item: WorkItem, active: ActiveModel) -> tuple[str, int, int] | None:
        """(content identity, size, generation) of a queued micrograph, or None when the active model has
        already picked this content (this file: done; another file: a duplicate) or the file is unreadable."""
        try:
            identity, size = file_identity(item.path)
        except OSError as err:
            self._unreadable(item, err)
            return None
        generation = self.journal.generation(item.micrograph_id)
        existing = self.journal.find_result(identity, active.version, generation)
        if existing is None:
            return identity, size, generation
        if existing.micrograph_id == item.micrograph_id:
            self.journal.set_state(item.micrograph_id, "done")
        else:
            first = self.journal.micrograph(existing.micrograph_id)
            note = f"same content as {first.path if first else 'an earlier micrograph'}; not picked again"
            self.journal.set_state(item.micrograph_id, "duplicate", error=note, identity=identity)
            log.info("%s: %s", item.path, note)
        return None

    def _unreadable(self, item: WorkItem, err: Exception) -> None:
        """A micrograph that could not be read: wait again if it is still being written, else fail it once."""
        if isinstance(err, IncompleteMicrographError):
            self.journal.set_state(item.micrograph_id, "waiting")  # rewritten in place: wait again
            self.tracker.touch(Path(item.path))
            return
        message = str(err) if isinstance(err, MicrographError) else f"{item.path}: cannot read ({err})"
        self.journal.set_state(item.micrograph_id, "failed", error=message)
        self.report(item.path, "read", message)

    def _cluster_loop(self) -> None:
        """Pick through the configured cluster (``executor: dask``): the daemon identifies each queued
        micrograph and skips what is already picked, workers read, score and extract it, and the daemon writes
        the outputs and commits, so the journal stays the one record.  At most ``in_flight`` tasks are out at a
        time, new arrivals first (the work queue's order, and Dask's priority).  A task that fails while the
        scheduler is up is retried after ``daemon.retry_seconds``.  When the scheduler is lost, what was out is
        re-queued, the loss is reported once, and until it answers again the daemon waits or picks in-process
        (``dask.on_scheduler_loss``).  Tasks still out at shutdown stay queued in the journal."""
        in_flight: dict = {}
        outage, next_probe = False, 0.0
        wake = threading.Event()  # a task finished or a micrograph was queued
        self.work.listen(wake.set)
        device = self.config["picking"]["device"]
        emulated = float(os.environ[EMULATION_ENV]) if os.environ.get(EMULATION_ENV) else None
        per_worker = self.config["dask"]["tasks_per_worker"]
        # re-pick tasks: one per worker at most (the worker's other slot stays free for new arrivals), and
        # fewer by dask.live_workers while there are more workers, so that some worker's device is free when a
        # micrograph lands (Dask places a task on the least busy worker)
        workers, live = max(1, self.executor.in_flight // per_worker), self.config["dask"]["live_workers"]
        repick_slots = workers - live if workers > live else workers
        if emulated is not None:
            log.warning("BENCHMARK MODE (%s=%g): cluster tasks hold %g s instead of scoring; picks are meaningless",
                        EMULATION_ENV, emulated, emulated)
        while not self.stop_event.is_set():
            if outage:
                if time.monotonic() >= next_probe:
                    next_probe = time.monotonic() + 2.0
                    if self.executor.reconnect():
                        outage = False
                        log.info("Dask scheduler back: %s", self.executor.describe())
                        continue
                if self.config["dask"]["on_scheduler_loss"] == "in-process":
                    item = self.work.get(0.25, time.monotonic)
                    if item is not None:
                        self._pick_in_process([item])
                else:
                    self.stop_event.wait(0.25)
                continue
            while len(in_flight) < self.executor.in_flight:
                # re-picks leave one slot per worker to new arrivals, which then wait behind at most one task
                repicks = sum(1 for entries in in_flight.values() if entries[0][0].priority == REPICK)
                urgent_only = BACKLOG if repicks >= repick_slots else None
                items = self._take_batch(0.0 if in_flight else 0.25, urgent_only,
                                         spare_slots=self.executor.in_flight - len(in_flight) - 1)
                if not items:
                    break
                active = self.active
                entries = []
                for item in items:
                    started = time.time()
                    identity = self._identify(item, active)
                    if identity is not None:
                        entries.append((item, identity, started, active))
                if not entries:
                    continue
                ref = ModelRef(_shared_spec(active.spec), active.version)
                tasks = [PickTask(entry[0].path, ref, self.settings, device, emulated, submitted=time.time())
                         for entry in entries]
                future = self.executor.submit(tasks, priority=-entries[0][0].priority)
                future.add_done_callback(lambda _: wake.set())
                in_flight[future] = entries
            if not in_flight:
                continue
            wake.wait(0.25)
            wake.clear()
            lost = []
            for future in [f for f in in_flight if f.done()]:
                entries = in_flight.pop(future)
                try:
                    outcomes = future.result()
                except Exception as err:  # the cluster could not pick them: not the micrographs' fault
                    if not self.executor.healthy():
                        lost += [entry[0] for entry in entries]
                        continue
                    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
                    for item, *_ in entries:
                        self._retry(item, "cluster", f"{item.path}: picking on the cluster failed ({reason})")
                    continue
                for (item, identity, started, active), outcome in zip(entries, outcomes):
                    if isinstance(outcome, PickFailure):
                        self._unreadable(item, outcome.error)
                    else:
                        self._finish(item, identity, started, outcome, active)
            if lost or not self.executor.healthy():
                lost += [entry[0] for entries in in_flight.values() for entry in entries]
                in_flight.clear()
                for item in lost:
                    self.work.put(item.micrograph_id, item.path, item.priority)
                mode = self.config["dask"]["on_scheduler_loss"]
                self.report(None, "cluster", f"dask.scheduler {self.executor.address or 'of the local cluster'}: "
                            f"connection lost; {len(lost)} micrographs re-queued, "
                            + ("picking in-process until it returns" if mode == "in-process"
                               else "waiting for it to return"))
                outage, next_probe = True, time.monotonic() + 2.0
        for future in in_flight:
            future.remote.cancel()  # left queued in the journal: picked after a restart

    def _take_batch(self, timeout: float, max_priority: int | None, spare_slots: int) -> list[WorkItem]:
        """The most urgent queued micrograph and, while more are queued than ``spare_slots`` tasks could take
        one by one, up to ``dask.batch_size`` - 1 more of the same urgency: a backlog shares Dask's cost per
        task, and a new arrival with free slots still goes alone."""
        first = self.work.get(timeout, time.monotonic, max_priority=max_priority)
        if first is None:
            return []
        items = [first]
        while len(items) < self.config["dask"]["batch_size"] and len(self.work) > spare_slots:
            item = self.work.get(0.0, time.monotonic, max_priority=first.priority)
            if item is None:
                break
            items.append(item)
        return items

    def _finish(self, item: WorkItem, identity: tuple[str, int, int], started: float,
                result: PickResult, active: ActiveModel) -> None:
        identity_hash, size, generation = identity
        folder = version_folder(self.out_dir, active.version, generation)
        with self.threshold_lock:
            threshold = self.threshold
        try:
            start = time.perf_counter()
            outputs = write_outputs(result, folder, threshold=threshold, suffix=self.config["output"]["suffix"])
            result.timings["write"] = time.perf_counter() - start
        except OSError as err:
            self._retry(item, "write", f"{item.path}: cannot write outputs to {folder} ({err.strerror or err})")
            return
        record = self.journal.micrograph(item.micrograph_id)
        timestamps = {"landed": record.landed, "complete": record.complete or record.landed, "started": started}

        def build(seq: int) -> dict:
            return pick_message(seq=seq, result=result, identity=identity_hash, size=size,
                                model_name=active.model.card.name, model_version=active.version,
                                generation=generation, timestamps=dict(timestamps, committed=time.time()),
                                threshold=threshold, floor=self.settings.floor, outputs=outputs,
                                repick=item.priority == REPICK)
        try:
            committed = self.journal.commit_result(item.micrograph_id, identity_hash, active.version, generation,
                                                   build, result.timings)
        except sqlite3.Error as err:
            self._retry(item, "journal", f"{item.path}: cannot commit to the journal ({err})")
            return
        self._publish(item.micrograph_id, committed.seq, committed.message, replay=False)
        if active is not self.active and self.config["training"]["repick"]:
            self.work.put(item.micrograph_id, item.path, REPICK)  # picked just as a new model came in

    def _retry(self, item: WorkItem, stage: str, message: str) -> None:
        delay = self.config["daemon"]["retry_seconds"]
        self.report(item.path, stage, f"{message}; retrying in {delay:g} s")
        self.work.put(item.micrograph_id, item.path, item.priority, not_before=time.monotonic() + delay)

    def _publish(self, micrograph_id: int, seq: int, message: dict, *, replay: bool) -> None:
        message = dict(message, replay=replay, timestamps=dict(message["timestamps"], published=time.time()))
        self.publisher.publish("picks", message)
        self.journal.mark_published(seq)
        if not replay and not message.get("repick"):
            self.stats.record(message["timestamps"]["complete"], message["timestamps"]["published"])
        if message["model"]["version"] == self.active.version and message["generation"] == 0:
            entry = (message["micrograph"]["path"], picks_of(message).above(message["threshold"]))
            with self.latest_lock:
                self.latest[micrograph_id] = entry
            self.combined_dirty.set()

    # ------------------------------------------------------------------------------------ housekeeping

    def report(self, path: str | None, stage: str, message: str) -> None:
        """Report a fault once: log, ``error`` topic and the error count."""
        log.error("%s", message)
        self.stats.record_error()
        self.publisher.publish("error", error_message(path, stage, message, time=time.time()))

    def _housekeeping_loop(self) -> None:
        publish = self.config["publish"]
        next_heartbeat = next_stats = next_combined = time.monotonic()
        while not self.stop_event.wait(0.1):
            now = time.monotonic()
            if now >= next_heartbeat:
                self.publisher.publish("heartbeat", heartbeat_message(
                    time=time.time(), state=self.state, last_seq=self.journal.last_seq(),
                    uptime_s=time.time() - self.started))
                next_heartbeat = now + publish["heartbeat_interval"]
            if now >= next_stats:
                self.publisher.publish("stats", self.stats_message())
                next_stats = now + publish["stats_interval"]
            if self.pending_rewrite.is_set():
                self.pending_rewrite.clear()
                self._rewrite_stars()
            if now >= next_combined and self.combined_dirty.is_set():
                self._write_combined()
                next_combined = now + self.config["output"]["combined_every_s"]
            self.finetuner.tick(now)

    @property
    def folder(self) -> Path:
        """The active model version's output folder (generation 0)."""
        return version_folder(self.out_dir, self.active.version, 0)

    def _write_combined(self) -> None:
        self.combined_dirty.clear()
        folder = self.folder
        with self.latest_lock:
            items = list(self.latest.values())
        try:
            write_combined_star(folder / "picks.star", items)
        except OSError as err:
            self.combined_dirty.set()
            self.report(None, "write", f"cannot write the combined STAR in {folder} ({err.strerror or err})")

    def _rewrite_stars(self) -> None:
        self._reload_latest(rewrite=True)
        self.combined_dirty.set()

    def _reload_latest(self, *, rewrite: bool) -> None:
        """Rebuild the combined STAR's content from the journal at the current threshold (one result in
        memory at a time); with ``rewrite``, also rewrite each micrograph's STAR file at that threshold."""
        with self.threshold_lock:
            threshold = self.threshold
        for result in self.journal.iter_latest_results(self.active.version, generation=0):
            message = result.message
            picks = picks_of(message).above(threshold)
            if rewrite:
                try:
                    write_star(message["outputs"]["star"], picks)
                except OSError as err:
                    self.report(message["micrograph"]["path"], "write",
                                f"cannot rewrite {message['outputs']['star']} ({err.strerror or err})")
            with self.latest_lock:
                self.latest[result.micrograph_id] = (message["micrograph"]["path"], picks)

    @property
    def state(self) -> str:
        return "paused" if self.work.paused else "running"

    def status(self) -> dict:
        counts = self.journal.counts()
        with self.threshold_lock:
            threshold = self.threshold
        active = self.active
        return {"state": self.state, "counts": counts, "queue_depth": len(self.work), "threshold": threshold,
                "model": {"name": active.model.card.name, "version": active.version},
                "repicked": self.journal.count_results(active.version),
                "training": self.finetuner.summary(),
                "last_seq": self.journal.last_seq(), "uptime_s": time.time() - self.started,
                "device": str(self.device), "output": str(self.out_dir), "watch": str(self.watch.folder),
                "executor": self.executor.describe() if self.executor is not None else {"kind": "in-process"}}

    def stats_message(self) -> dict:
        status = self.status()
        now = time.time()
        return {"schema": 1, "topic": "stats", "time": now, **{k: status[k] for k in (
            "uptime_s", "state", "model", "threshold", "counts", "queue_depth", "last_seq", "repicked",
            "training", "executor")}, **self.stats.snapshot(now)}

    # ---------------------------------------------------------------------------------------- control

    def handle_control(self, request: dict) -> dict:
        """Answer one control request (runs on the control thread)."""
        command = request.get("command")
        handlers = {"status": lambda: self.status(), "pause": self._pause, "resume": self._resume,
                    "set-threshold": lambda: self._set_threshold(request),
                    "replay": lambda: self._replay(request), "reprocess": lambda: self._reprocess(request),
                    "add-labels": lambda: self._add_labels(request), "train": self.finetuner.request_round,
                    "training": self.finetuner.summary, "cancel-training": self.finetuner.cancel,
                    "shutdown": self._request_shutdown}
        if command not in handlers:
            raise ValueError(f"unknown command {command!r} (known: {', '.join(handlers)})")
        return handlers[command]()

    def _pause(self) -> dict:
        self.work.pause()
        log.info("paused")
        return {"state": self.state}

    def _resume(self) -> dict:
        self.work.resume()
        log.info("resumed")
        return {"state": self.state}

    def _set_threshold(self, request: dict) -> dict:
        value = request.get("threshold")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"set-threshold needs a number 'threshold', got {value!r}")
        with self.threshold_lock:
            self.threshold = float(value)
            self.user_threshold = True  # the user's choice: a swapped-in model's card threshold no longer applies
        self.journal.set_meta(THRESHOLD_KEY, json.dumps({"value": float(value),
                                                         "config": self.config["picking"]["threshold"]}))
        self.pending_rewrite.set()
        log.info("threshold set to %.3f; rewriting STAR files from the kept candidates", value)
        return {"threshold": float(value)}

    def _replay(self, request: dict) -> dict:
        since, limit = int(request.get("since", 0)), min(int(request.get("limit", 500)), 2000)
        results = self.journal.results_since(since, limit + 1)
        messages = [dict(r.message, replay=True) for r in results[:limit]]
        return {"messages": messages, "last_seq": self.journal.last_seq(), "more": len(results) > limit}

    def _reprocess(self, request: dict) -> dict:
        paths = request.get("paths")
        if request.get("all"):
            records = self.journal.micrographs_in("done")
        elif isinstance(paths, list):
            wanted = {str(Path(p)) for p in paths}
            records = [r for r in self.journal.micrographs_in("done") if r.path in wanted]
        else:
            raise ValueError("reprocess needs 'paths': [...] or 'all': true")
        for record in records:
            self.journal.bump_generation(record.id)
            self.work.put(record.id, record.path, REPICK)
        return {"queued": len(records)}

    def _add_labels(self, request: dict) -> dict:
        micrograph = request.get("micrograph")
        if not isinstance(micrograph, str) or not micrograph.strip():
            raise ValueError("add-labels needs 'micrograph': the micrograph's name or path")
        xs, ys = request.get("x"), request.get("y")
        if not isinstance(xs, list) or not isinstance(ys, list) or len(xs) != len(ys) or not xs:
            raise ValueError("add-labels needs 'x' and 'y': equally long, non-empty lists of pixel coordinates")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v == v for v in xs + ys):
            raise ValueError("add-labels: 'x' and 'y' must hold numbers only")
        picks = Picks.from_arrays(xs, ys)
        path, total = add_control_labels(self.finetuner.labels_folder, micrograph, picks,
                                         negative=bool(request.get("negative")), replace=bool(request.get("replace")))
        log.info("add-labels: %d %s for %s (%s)", len(picks), "junk picks" if request.get("negative") else
                 "particles", micrograph, path)
        return {"file": str(path), "labels": total}

    # ------------------------------------------------------------------------------------ models

    def _initial_model(self) -> ActiveModel:
        """The configured model, or the fine-tuned model this session swapped in before a restart (as long
        as the config still names the model it was fine-tuned from)."""
        configured = self.config["picking"]["model"]
        stored = json.loads(self.journal.get_meta(ACTIVE_MODEL_KEY) or "null")
        if stored and stored.get("base") == configured and Path(stored["spec"]).is_file():
            try:
                model = load_model(stored["spec"], self.device)
                log.info("continuing with the fine-tuned model %s", stored["spec"])
                return ActiveModel(model, stored["spec"], model_version(model))
            except StreampickError as err:  # reported once the publisher runs
                self.startup_faults.append((stored["spec"], "training", f"cannot load the fine-tuned model "
                                            f"({err}); using {configured}"))
        model = load_model(configured, self.device)
        return ActiveModel(model, configured, model_version(model))

    def _warm_workers(self, active: ActiveModel) -> list[str]:
        """Have the cluster's workers load ``active`` before any micrograph needs it, waiting at most
        :data:`WARM_TIMEOUT_S` (a worker stuck loading must not hold up the daemon: tasks load the model
        themselves); one line per problem."""
        if self.executor is None:
            return []
        problems: list[str] = []

        def warm() -> None:
            try:
                problems.extend(self.executor.warm(ModelRef(_shared_spec(active.spec), active.version),
                                                   self.config["picking"]["device"]))
            except Exception as err:  # e.g. the scheduler is gone: tasks load the model when they run
                problems.append(str(err).splitlines()[0] if str(err) else type(err).__name__)

        thread = threading.Thread(target=warm, name="warm-workers", daemon=True)
        thread.start()
        thread.join(WARM_TIMEOUT_S)
        if thread.is_alive():
            return [f"workers still loading model {active.version} after {WARM_TIMEOUT_S:g} s; picking goes on "
                    "(each task loads the model where it runs)"]
        return [f"workers cannot load model {active.version} ({problem}); its tasks will fail until they can"
                for problem in list(problems)]

    def _initial_threshold(self) -> tuple[float, bool]:
        """The threshold to start with, and whether the user chose it: the last ``set-threshold`` of this
        output folder's sessions, as long as ``picking.threshold`` in the config is what it was then; else the
        configured one; else the active model card's automatic threshold (0 without one)."""
        configured = self.config["picking"]["threshold"]
        stored = json.loads(self.journal.get_meta(THRESHOLD_KEY) or "null")
        if stored and stored.get("config") == configured:
            log.info("continuing with the threshold %.3f set with set-threshold", stored["value"])
            return float(stored["value"]), True
        if configured is not None:
            return float(configured), True
        return float(self.active.model.card.threshold or 0.0), False

    def _start_point(self) -> StartPoint:
        active = self.active
        card, picking = active.model.card, self.config["picking"]
        if picking["downsample"]:
            scale = ["--downsample", f"{picking['downsample']:g}"]
        else:
            target = picking["target_pixel_size"] or card.pixel_size
            scale = ["--target-pixel-size", f"{target:g}"] if target else []
        if picking["pixel_size"]:
            scale += ["--pixel-size", f"{picking['pixel_size']:g}"]
        diameter = card.particle_diameter
        if diameter is None and self.settings.radius is not None and self.settings.radius.unit == "A":
            diameter = 2 * self.settings.radius.value
        return StartPoint(active.spec, card.name, active.version, scale, diameter)

    def _swap(self, path: Path, done: dict) -> str:
        """Make the candidate at ``path`` the active model (called by the fine-tuner); returns its version."""
        model = load_model(path, self.device)
        new = ActiveModel(model, str(path), model_version(model))
        for line in self._warm_workers(new):
            self.report(None, "cluster", line)
        old, self.active = self.active, new
        with self.latest_lock:
            self.latest.clear()
        with self.threshold_lock:  # the new card's automatic threshold, unless the user set one
            if not self.user_threshold and model.card.threshold is not None:
                self.threshold = model.card.threshold
        self.journal.set_meta(ACTIVE_MODEL_KEY, json.dumps({"spec": str(path), "version": new.version,
                                                            "base": self.config["picking"]["model"]}))
        queued = self._queue_repicks()
        log.info("model %s replaced by %s (%s); %d picked micrographs queued to re-pick", old.version,
                 new.version, done.get("reason") or f"held-out AP {done.get('best_ap')}", queued)
        return new.version

    def _queue_repicks(self) -> int:
        """Queue, behind new arrivals, every picked micrograph that the active model has not picked."""
        if not self.config["training"]["repick"]:
            return 0
        records = self.journal.done_without(self.active.version)
        for record in records:
            self.work.put(record.id, record.path, REPICK)
        return len(records)

    def _request_shutdown(self) -> dict:
        self.stop_event.set()
        return {"state": "stopping"}


def _shared_spec(spec: str) -> str:
    """A model spec workers elsewhere can load: a relative file path made absolute (names stay names)."""
    path = Path(spec)
    return str(path.resolve()) if path.is_file() else spec


def _curve(security: dict) -> CurveServer | None:
    secret, clients = security["server_secret_key"], security["authorized_clients"]
    if bool(secret) != bool(clients):
        raise ConfigError("security: set both server_secret_key and authorized_clients (CurveZMQ), or neither")
    return CurveServer(Path(secret), Path(clients)) if secret else None


_NO_PIXEL_SIZE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


def _warn_about_patterns(patterns: tuple[str, ...], pixel_size: float | None) -> None:
    """Say at start-up what the watch patterns will bring: TIFF, PNG and JPEG need picking.pixel_size (they
    carry none), and EER movies are refused (streampick picks motion-corrected sums)."""
    lowered = [p.lower() for p in patterns]
    if pixel_size is None and any(p.endswith(_NO_PIXEL_SIZE_SUFFIXES) for p in lowered):
        log.warning("watch.patterns %s match TIFF, PNG or JPEG files, which carry no pixel size: set "
                    "picking.pixel_size, or each of them is refused", list(patterns))
    if any(p.endswith(".eer") for p in lowered):
        log.warning("watch.patterns %s match EER movies, which are refused: streampick picks motion-corrected "
                    "sums (watch the motion-correction output instead)", list(patterns))
