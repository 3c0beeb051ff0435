"""Live fine-tuning: when the user's labels change, train a candidate model and hand it over if it is better.

The daemon's housekeeping thread calls :meth:`FineTuner.tick`.  It scans the labels folder
(:mod:`.labels`) every ``training.scan_interval`` seconds and, whenever the usable labels differ from those
the last round trained on (new files, edits, or a labelled micrograph that has now been picked), waits until
the folder has been quiet for ``training.settle_seconds`` and starts a round (:mod:`.trainer`): a separate
process that fine-tunes the *current* model, holding out labelled micrographs.  When it finishes, the
candidate's held-out AP is compared with the current model's on the same micrographs and the candidate is
offered to the daemon (``swap``) only if it is better.  Every step is published on the ``training`` topic.

The history of versions (each round's candidate, its AP, whether it became active) is kept in the journal,
so the monitor shows it across restarts.  Faults (an unreadable label file, an unknown micrograph, a
missing ``training.expected_particles``, a round that crashed) are reported once each; the daemon goes on.
"""
from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import MicrographError
from .journal import Journal
from .labels import LabelSet, collect_labels, fingerprint, label_files, write_round_labels
from .trainer import RoundPlan, TrainingRun, swap_decision, train_command

log = logging.getLogger("streampick.daemon.finetune")

HISTORY_KEY = "training:history"
ROUND_KEY = "training:round"
DIGEST_KEY = "training:labels"  # the digest of the labels the last round trained on
_REPORTED_MEMORY = 10_000


@dataclass(frozen=True)
class StartPoint:
    """What a round starts from: the current model's spec and version, and the scale options for it."""

    spec: str
    name: str
    version: str
    scale: list[str]  # --target-pixel-size X or --downsample F, plus --pixel-size P if overridden
    particle_diameter: float | None  # Å


class FineTuner:
    """Watches the labels and runs training rounds (see the module docstring).

    Args:
        training: the validated ``training`` config section.
        labels_folder: where labels are read.
        work_folder: where rounds keep their files (``round-NNNN/``) and candidate models (``models/``).
        journal: the daemon's journal (known micrographs; the history survives restarts).
        start_point: returns the current model's :class:`StartPoint`.
        swap: called with (candidate model path, ``done`` event) for a candidate that beat the current model;
            returns the new active version, or raises to refuse it.
        report: one-line fault reporter (log + ``error`` topic).
        publish: publishes a ``training`` message (a dict).
        device: the trainer's device option.
    """

    def __init__(self, training: dict, labels_folder: Path, work_folder: Path, journal: Journal, *,
                 start_point: Callable[[], StartPoint], swap: Callable[[Path, dict], str],
                 report: Callable[[str], None], publish: Callable[[dict], None]) -> None:
        self.config = training
        self.labels_folder = labels_folder
        self.work_folder = work_folder
        self.journal = journal
        self.start_point = start_point
        self.swap = swap
        self._report = report
        self._publish = publish
        self.lock = threading.Lock()
        self.state = "idle" if training["enabled"] else "disabled"
        self.message = ""
        self.run: TrainingRun | None = None
        self.round = int(journal.get_meta(ROUND_KEY) or 0)
        self.history: list[dict] = json.loads(journal.get_meta(HISTORY_KEY) or "[]")
        self.progress: dict = {}
        self.labels: LabelSet | None = None
        self.trained_digest: str | None = journal.get_meta(DIGEST_KEY)
        self._files_print = ""
        self._known_done = -1
        self._changed_at = 0.0
        self._next_scan = 0.0
        self._reported: dict[str, None] = {}
        self._shapes: dict[str, tuple[int, int]] = {}
        self._force = False
        self._attempted_digest: str | None = None
        self._stopping = False
        self._cancelled = False

    # --------------------------------------------------------------------------------------- scanning

    def tick(self, now: float) -> None:
        """Scan the labels when due; start a round when the labels have changed and settled."""
        if not self.config["enabled"] or now < self._next_scan:
            return
        self._next_scan = now + self.config["scan_interval"]
        self._scan(now)
        with self.lock:
            busy = self.run is not None
        if busy or self.labels is None:
            return
        digest = self.labels.digest()
        # labels not yet trained on, and not already found wanting (too few micrographs, no π): try once each
        changed = digest not in (self.trained_digest, self._attempted_digest) and bool(self.labels.micrographs)
        settled = now - self._changed_at >= self.config["settle_seconds"]
        if (self._force or (changed and self.config["auto"])) and settled:
            self._force = False
            self._attempted_digest = digest
            self.start_round()

    def _scan(self, now: float) -> None:
        positives, negatives = label_files(self.labels_folder)
        files_print = fingerprint(positives + negatives)
        if not positives and not negatives:  # the usual case: no labels, so no journal queries every scan
            self.labels, self._files_print = None, files_print
            return
        done = self.journal.counts()["done"]
        if files_print == self._files_print and done == self._known_done:
            return
        if files_print != self._files_print:
            self._changed_at = now
        self._files_print, self._known_done = files_print, done
        known = {Path(r.path).stem: r.path for r in self.journal.micrographs_in("done")}
        try:
            self.labels = collect_labels(positives, negatives, known, self.report_once, self._shapes)
        except MicrographError as err:  # a labelled micrograph vanished after it was picked
            self.report_once(f"labels: {err} (labels not read; retrying at the next change)")
            self._files_print = ""
            return
        n_pos, n_neg = self.labels.count()
        if positives or negatives:
            log.info("labels: %d particles and %d junk picks on %d micrographs", n_pos, n_neg,
                     len(self.labels.micrographs))

    def report_once(self, message: str) -> None:
        """Report a label fault the first time it is seen (scans repeat every few seconds)."""
        if message in self._reported:
            return
        self._reported[message] = None
        if len(self._reported) > _REPORTED_MEMORY:
            del self._reported[next(iter(self._reported))]
        self._report(message)

    def request_round(self) -> dict:
        """The control command ``train``: start a round as soon as the labels are read and settled."""
        if not self.config["enabled"]:
            raise ValueError("training is disabled (training.enabled: false)")
        with self.lock:
            if self.run is not None:
                return {"state": self.state, "round": self.round, "started": False}
        self._force = True
        self._next_scan = 0.0
        self._changed_at = 0.0
        return {"state": self.state, "round": self.round + 1, "started": True}

    # ----------------------------------------------------------------------------------------- rounds

    def start_round(self) -> bool:
        """Start a training round on the current labels; False (with the reason reported) when it cannot."""
        labels = self.labels
        reason = self._cannot_train(labels)
        if reason:
            self.report_once(reason)
            self._set_state("waiting", reason)
            return False
        start = self.start_point()
        diameter = self.config["particle_diameter"] or start.particle_diameter
        if not diameter:
            self.report_once("training.particle_diameter: needed to validate fine-tuned models (the model "
                             f"card of {start.version} has none)")
            self._set_state("waiting", "no particle diameter")
            return False
        number = self.round + 1
        folder = self.work_folder / f"round-{number:04d}"
        try:
            label_path, negative_path = write_round_labels(folder, labels)
        except OSError as err:
            self._report(f"training round {number}: cannot write its labels in {folder} ({err.strerror or err})")
            return False
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", re.sub(r"-ft\d+$", "", start.name)) or "model"
        plan = RoundPlan(number=number, start_model=start.spec, micrographs=[labels.paths[s] for s in
                         sorted(labels.paths)], labels=label_path, negatives=negative_path,
                         output=self.work_folder / "models" / f"{base}-ft{number}.pt",
                         log_file=folder / "train.log", particle_diameter=float(diameter), scale=start.scale)
        command = train_command(plan, self.config, device=self.config["device"])
        n_pos, n_neg = labels.count()
        with self.lock:
            self.round = number
            self.trained_digest = labels.digest()
            self.progress = {"round": number, "from": start.version, "labels": n_pos, "negatives": n_neg,
                             "micrographs": len(labels.micrographs), "done": 0,
                             "total": self.config["epochs"] * self.config["steps"], "loss": None, "epochs": []}
            try:
                self.run = TrainingRun(command, plan.log_file, nice=self.config["nice"],
                                       on_event=self._on_event, on_exit=self._on_exit)
            except OSError as err:
                self.run = None
                self._report(f"training round {number}: cannot start the trainer ({err})")
                return False
        self.journal.set_meta(ROUND_KEY, str(number))
        self.journal.set_meta(DIGEST_KEY, self.trained_digest)
        log.info("training round %d: fine-tuning %s on %d labelled particles (%d junk) from %d micrographs; "
                 "log %s", number, start.version, n_pos, n_neg, len(labels.micrographs), plan.log_file)
        self._set_state("training", f"round {number} from {start.version}")
        return True

    def _cannot_train(self, labels: LabelSet | None) -> str | None:
        if labels is None or not labels.micrographs:
            return None if labels is None else "training: no usable labels yet"
        if self.config["expected_particles"] is None:
            return "training.expected_particles: needed to fine-tune (the class prior cannot be told from sparse " \
                   "labels); set it in the config and restart"
        if len(labels.micrographs) < max(2, self.config["min_micrographs"]):
            return (f"training: labels on {len(labels.micrographs)} picked micrograph(s); "
                    f"{max(2, self.config['min_micrographs'])} needed (one at least is held out to validate)")
        return None

    def _on_event(self, event: dict) -> None:
        kind = event.get("event")
        with self.lock:
            if kind == "step":
                self.progress.update(done=event.get("done", 0), loss=event.get("loss"))
            elif kind == "epoch":
                self.progress["epochs"].append({"epoch": event.get("epoch"), "ap": event.get("ap")})
            elif kind == "start":
                self.progress.update(train=event.get("train"), test=event.get("test"))
        if kind == "warning":
            self.report_once(f"training round {self.round}: {event.get('message')}")
        elif kind in ("step", "epoch", "start"):
            self._set_state("training", self.message)

    def _on_exit(self, done: dict | None, error: str | None) -> None:
        number = self.round
        entry = {"round": number, "time": time.time(), "from": self.progress.get("from"),
                 "labels": self.progress.get("labels"), "micrographs": self.progress.get("micrographs")}
        if self._cancelled:
            entry.update(state="cancelled", reason="cancelled by the control command cancel-training")
        elif done is None:
            if not self._stopping:
                self._report(f"training round {number} failed: {error}")
            entry.update(state="failed", reason=error)
        else:
            accept, reason = swap_decision(done.get("start_ap"), done.get("best_ap"), int(done.get("best_epoch", 0)),
                                           self.config["min_ap_gain"])
            entry.update(version=None, start_ap=done.get("start_ap"), ap=done.get("best_ap"),
                         best_epoch=done.get("best_epoch"), model=done.get("output"), reason=reason,
                         threshold=done.get("threshold"))
            if accept:
                try:
                    entry.update(version=self.swap(Path(done["output"]), done), state="active")
                except Exception as err:  # a candidate that cannot be loaded is a failed round, not a crash
                    entry.update(state="failed", reason=f"cannot load the candidate: {err}")
                    self._report(f"training round {number}: cannot load the candidate {done.get('output')} ({err})")
            else:
                entry.update(state="rejected")
            log.info("training round %d: %s (%s)", number, entry["state"], reason)
        with self.lock:
            if entry.get("state") == "active":
                for old in self.history:
                    if old.get("state") == "active":
                        old["state"] = "retired"
            self.history.append(entry)
            self.run = None
        try:
            self.journal.set_meta(HISTORY_KEY, json.dumps(self.history[-100:]))
        except Exception as err:  # noqa: BLE001 - the history is for display; the round's outcome stands
            log.warning("cannot store the training history: %s", err)
        self._set_state("idle", f"round {number} {entry['state']}: {entry.get('reason')}")

    def cancel(self) -> dict:
        """The control command ``cancel-training``: stop the running round; its candidate is discarded and
        its labels count as trained on (change them, or send ``train``, to train again)."""
        with self.lock:
            run = self.run
        if run is None:
            return {"cancelled": False, "state": self.state}
        self._cancelled = True
        run.stop()
        self._cancelled = False
        return {"cancelled": True, "round": self.round}

    def stop(self) -> None:
        """Stop a running round (daemon shutdown); its candidate is discarded."""
        self._stopping = True
        with self.lock:
            run = self.run
        if run is not None:
            run.stop()

    # ---------------------------------------------------------------------------------------- reports

    def _set_state(self, state: str, message: str) -> None:
        with self.lock:
            self.state, self.message = state, message
        self._publish(self.summary())

    def summary(self) -> dict:
        """The training state for ``status``, ``stats`` and ``training`` messages."""
        with self.lock:
            labels = self.labels
            n_pos, n_neg = labels.count() if labels else (0, 0)
            return {"state": self.state, "message": self.message, "round": self.round,
                    "progress": dict(self.progress, epochs=list(self.progress.get("epochs", []))) if
                    self.state == "training" else None,
                    "labels": {"particles": n_pos, "negatives": n_neg,
                               "micrographs": len(labels.micrographs) if labels else 0},
                    "versions": [dict(v) for v in self.history[-20:]]}
