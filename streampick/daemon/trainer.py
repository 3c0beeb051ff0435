"""One live fine-tuning round, run as its own process so that picking keeps its latency.

A round is ``streampick train`` with ``--progress json``, started from the daemon's current model on the
labelled micrographs, at low CPU priority (``training.nice``) and with few threads (``training.threads``);
the child exits by itself if the daemon dies (``--exit-with-stdin``).  :class:`TrainingRun` reads its JSON
lines on a thread of its own and hands each event to a callback; when the process ends it reports the
``done`` event (or the reason it failed).  :func:`swap_decision` says whether the candidate may replace the
current model: only when its held-out AP beats the current model's AP on the same held-out micrographs.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("streampick.daemon.trainer")


@dataclass(frozen=True)
class RoundPlan:
    """What one round trains: from which model, on which micrographs and labels, into which file."""

    number: int
    start_model: str  # a model spec load_model accepts
    micrographs: list[str]
    labels: Path
    negatives: Path | None
    output: Path  # the candidate model file
    log_file: Path  # the child's stderr
    particle_diameter: float  # Å
    scale: list[str] = field(default_factory=list)  # --target-pixel-size X, or --downsample F (+ --pixel-size)


def train_command(plan: RoundPlan, training: dict, *, device: str) -> list[str]:
    """The child's command line (``python -m streampick train ...``) for ``plan`` and the ``training``
    config section."""
    command = [sys.executable, "-m", "streampick", "train", "--progress", "json", "--exit-with-stdin",
               "--micrographs", *plan.micrographs, "--labels", str(plan.labels), "-o", str(plan.output),
               "--model", plan.start_model, *plan.scale, "--particle-diameter", f"{plan.particle_diameter:g}",
               "--expected-particles", f"{training['expected_particles']:g}",
               "--objective", training["objective"], "--epochs", str(training["epochs"]),
               "--steps", str(training["steps"]), "--batch-size", str(training["batch_size"]),
               "--lr", f"{training['lr']:g}", "--radius", f"{training['radius']:g}",
               "--test-fraction", f"{training['test_fraction']:g}", "--seed", str(plan.number),
               "--precision", training["precision"], "--device", device,
               "--threads", str(training["threads"])]
    if plan.negatives is not None:
        command += ["--negatives", str(plan.negatives)]
    return command


def swap_decision(start_ap: float | None, best_ap: float | None, best_epoch: int, min_gain: float
                  ) -> tuple[bool, str]:
    """Whether a candidate replaces the current model, and why (one line).

    ``start_ap`` is the current model's AP on the round's held-out micrographs (epoch 0), ``best_ap`` the
    candidate's; training keeps the starting weights (``best_epoch`` 0) when no epoch beats them.
    """
    if best_ap is None or start_ap is None:
        return False, "no held-out AP to validate the candidate with"
    if best_epoch == 0 or best_ap < start_ap + min_gain:
        return False, (f"held-out AP {best_ap:.3f} does not beat the current model's {start_ap:.3f} "
                       f"by {min_gain:g}")
    return True, f"held-out AP {start_ap:.3f} → {best_ap:.3f}"


class TrainingRun:
    """A running ``streampick train`` child: events go to ``on_event``; at the end ``on_exit(done, error)``
    gets the ``done`` event (or None) and the failure's one-line reason (or None)."""

    def __init__(self, command: list[str], log_file: Path, *, nice: int,
                 on_event: Callable[[dict], None], on_exit: Callable[[dict | None, str | None], None]) -> None:
        self.command = command
        self.log_file = log_file
        self.on_event = on_event
        self.on_exit = on_exit
        log_file.parent.mkdir(parents=True, exist_ok=True)
        self._stderr = open(log_file, "wb")
        try:
            self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=self._stderr, env=_child_env())
        except OSError:
            self._stderr.close()
            raise
        if nice:
            try:
                os.setpriority(os.PRIO_PROCESS, self.process.pid, nice)
            except (OSError, AttributeError):  # not POSIX, or the child already gone: it still runs
                log.warning("could not lower the trainer's priority")
        self.thread = threading.Thread(target=self._read, name="trainer-reader", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        done = None
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            try:
                event = json.loads(raw)
            except ValueError:
                continue  # not ours (a library printing to stdout)
            if not isinstance(event, dict):
                continue
            if event.get("event") == "done":
                done = event
            self.on_event(event)
        rc = self.process.wait()
        for stream in (self.process.stdout, self.process.stdin, self._stderr):
            try:
                stream.close()
            except OSError:  # a broken pipe to a child that is gone
                pass
        error = None
        if rc != 0 or done is None:
            error = f"training exited with status {rc}: {_last_line(self.log_file)}"
        self.on_exit(done if rc == 0 else None, error)

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the child (then kill it) and wait for the reader to finish."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.thread.join(timeout)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    # the child must import this very package, also when the daemon runs from a source tree
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    return env


def _last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    return lines[-1] if lines else "(no output)"
