"""Driving Topaz 0.3.20's command line (``topaz preprocess``, ``train``, ``extract``) as a benchmark baseline.

Topaz is GPL-3.0 and its CLI needs torchvision, so it is never imported here: it runs as a subprocess from an
installation outside this project (docs/benchmarks.md says how the reference one was built), always on the CPU
(``-d -1``) with a given number of torch threads.  :meth:`Topaz.train` times every update by the arrival of the
line ``topaz train`` prints (and flushes) after it, reading the process's CPU time at the same moments, and
reads back from its log the figures Topaz computes for itself: the observed labelled fraction, π, and whether it
fell back from GE-binomial to PN.

Topaz 0.3.20 counts (2r+1)× too many pixels per labelled particle (:func:`topaz_disk_pixels`), both in π from
``-n`` and in the labelled fraction p_obs it subtracts from π (π_u = π − p_obs).
"""
from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .streambench import read_cpu_s
from .train.objectives import disk_pixel_count

PN_FALLBACK = "PN (Topaz's fallback: π ≤ its p_obs)"


def topaz_disk_pixels(radius: int) -> int:
    """Pixels Topaz 0.3.20 counts per labelled particle (``stats.pixels_given_radius``: a 3-D grid whose disk
    condition ignores z, hence (2r+1)× the true disk: 203 at r = 3)."""
    return (2 * radius + 1) * disk_pixel_count(radius)


@dataclass
class TopazRun:
    """What one ``topaz train`` call left: when each update ended, Topaz's own π figures, the saved models."""

    update_stamps: list[float]  # perf_counter() at each update's log line
    update_cpu: list[float | None]  # the process's CPU seconds (/proc, 1/100 s ticks) at the same moments
    wall_s: float
    first_update_s: float | None  # start-up and data loading before the first update ended
    p_observed: float | None
    pi: float | None
    method: str
    models: list[Path] = field(default_factory=list)  # one per epoch, in order

    @property
    def update_seconds(self) -> list[float]:
        """Seconds between consecutive updates (one fewer than the updates)."""
        return [b - a for a, b in zip(self.update_stamps, self.update_stamps[1:])]

    @property
    def update_cpu_seconds(self) -> list[float]:
        """CPU seconds of Topaz's process between consecutive updates (all its threads)."""
        return [b - a for a, b in zip(self.update_cpu, self.update_cpu[1:]) if a is not None and b is not None]


class Topaz:
    """The ``topaz`` executable at ``cli``, on the CPU with ``threads`` torch threads."""

    def __init__(self, cli: Path, threads: int) -> None:
        self.cli, self.threads = Path(cli), threads

    def _run(self, args: list[str], log: Path) -> float:
        """Run ``topaz ARGS`` with its output in ``log``; its wall seconds.

        Raises:
            RuntimeError: Topaz failed (the message ends with its log's tail).
        """
        start = time.perf_counter()
        with open(log, "w") as out:
            done = subprocess.run([str(self.cli), *args], stdout=out, stderr=subprocess.STDOUT, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"topaz {args[0]} failed ({done.returncode}): {log.read_text()[-800:]}")
        return time.perf_counter() - start

    def preprocess(self, paths: list[Path], out_dir: Path, factor: int) -> float:
        """``topaz preprocess -s FACTOR`` (Fourier crop + GMM normalization) of ``paths`` into ``out_dir``."""
        out_dir.mkdir(parents=True, exist_ok=True)
        return self._run(["preprocess", "-s", str(factor), "-d", "-1", "-j", str(self.threads), "-o", str(out_dir),
                          *map(str, paths)], out_dir.parent / f"preprocess-{out_dir.name}.log")

    def train(self, args: list[str], log: Path, save_prefix: Path | None = None) -> TopazRun:
        """``topaz train ARGS`` with no data-loading workers, timing each update by its log line.

        Args:
            args: the training options (data, model, objective, π, minibatch, epochs).
            log: Topaz's messages (stderr); its per-update table goes to ``log`` with suffix ``.out``.
            save_prefix: where Topaz saves each epoch's model (``PREFIX_epochN.sav``); None saves none.

        Raises:
            RuntimeError: Topaz failed.
        """
        extra = ["--save-prefix", str(save_prefix)] if save_prefix else []
        command = [str(self.cli), "train", *args, "--num-workers", "0", "-j", str(self.threads), "-d", "-1", *extra]
        start, stamps, cpu = time.perf_counter(), [], []
        with open(log, "w") as err, open(log.with_suffix(".out"), "w") as table:
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1)
            for line in process.stdout or ():
                if "\ttrain\t" in line:
                    stamps.append(time.perf_counter())
                    cpu.append(read_cpu_s(process.pid))
                table.write(line)
            process.wait()
        wall = time.perf_counter() - start
        text = log.read_text()
        if process.returncode != 0:
            raise RuntimeError(f"topaz train failed ({process.returncode}): {text[-800:]}")
        models = sorted(save_prefix.parent.glob(f"{save_prefix.name}_epoch*.sav"),
                        key=lambda p: int(p.stem.rsplit("epoch", 1)[1])) if save_prefix else []
        return TopazRun(stamps, cpu, wall, stamps[0] - start if stamps else None,
                        p_observed=_log_float(text, r"#\s*0\ttrain\t(\S+)"),
                        pi=_log_float(text, r"(?:Setting pi =|# pi =) (\S+)"),
                        method=PN_FALLBACK if "setting method to PN" in text else "GE-binomial", models=models)

    def extract(self, model: Path, images: list[Path], out: Path, *, radius: int, factor: int,
                threshold: float) -> float:
        """``topaz extract`` of preprocessed ``images`` into the table ``out``, coordinates scaled back up by
        ``factor`` (``-x``), NMS ``radius`` in working pixels, picks above the logit ``threshold``."""
        return self._run(["extract", "-m", str(model), "-r", str(radius), "-t", str(threshold), "-x", str(factor),
                          "-d", "-1", "-j", str(self.threads), "-o", str(out), *map(str, images)],
                         out.with_suffix(".log"))


def _log_float(text: str, pattern: str) -> float | None:
    match = re.search(pattern, text)
    return float(match.group(1)) if match else None
