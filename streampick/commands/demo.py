"""Run the built-in demo: a simulated microscope feeds the daemon while the monitor shows it live.

A simulated microscope writes micrographs (4096², 1 Å/px; slow in-place writes, rsync-style temp files
renamed into place, and copies) into a folder at a steady rate.  `streampick run` watches that folder and
picks each micrograph as it lands; `streampick monitor` shows throughput, latency, particles per
micrograph, the score histogram and errors.  At the end the picks are scored against the simulation's
ground truth.  Everything lands in --output (default: a new temporary folder); Ctrl-C stops early.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

from ..config import DEFAULT_MODEL


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", type=Path, help="demo folder (default: a new temporary folder)")
    parser.add_argument("--n", type=int, default=12, help="micrographs the microscope writes (default 12)")
    parser.add_argument("--interval", type=float, default=4.0, help="seconds between micrographs (default 4)")
    parser.add_argument("--size", type=int, default=4096, help="micrograph edge in pixels (default 4096)")
    parser.add_argument("-m", "--model", default=DEFAULT_MODEL,
                        help=f"model the daemon picks with (default {DEFAULT_MODEL}, shipped: trained on simulated "
                             "micrographs like these)")
    parser.add_argument("--no-monitor", action="store_true", help="print progress lines instead of the monitor")
    parser.add_argument("--seed", type=int, default=0)


def main(args: argparse.Namespace) -> int:
    import yaml

    from ..daemon.control import ControlError, request
    from ..daemon.security import free_loopback_port
    from ..microscope import run_microscope
    from .monitor import run_monitor

    root = args.output or Path(tempfile.mkdtemp(prefix="streampick-demo-"))
    watched, out, truth = root / "microscope", root / "picks", root / "truth"
    for folder in (watched, out, truth):
        folder.mkdir(parents=True, exist_ok=True)
    publish, control = (f"tcp://127.0.0.1:{free_loopback_port()}" for _ in range(2))
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump({
        "watch": {"folder": str(watched)}, "output": {"folder": str(out), "combined_every_s": 2.0},
        "picking": {"model": args.model, "target_pixel_size": 8.0, "radius": "70A", "edge_margin": "40A"},
        "publish": {"endpoint": publish}, "control": {"endpoint": control}}, sort_keys=False))
    daemon = _start_daemon(config, root / "daemon.log")
    print(f"demo folder {root}; daemon log {root / 'daemon.log'}", file=sys.stderr)
    try:
        _wait_ready(daemon, control, root / "daemon.log")
        done = threading.Event()
        microscope = threading.Thread(target=run_microscope, args=(watched, args.n), name="microscope", kwargs=dict(
            interval_s=args.interval, size=args.size, seed=args.seed, truth_dir=truth, stop=done))
        microscope.start()
        finisher = threading.Thread(target=_finish_when_picked, args=(microscope, control, args.n, done),
                                    name="finisher")
        finisher.start()
        try:
            if args.no_monitor:
                _print_progress(control, done)
            else:
                run_monitor(publish, control, stop=done)
        finally:
            done.set()
            microscope.join()
            finisher.join()
        try:
            request(control, "shutdown", timeout=10)
        except ControlError:
            daemon.terminate()
        daemon.wait(60)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    return _score(out, truth)


def _start_daemon(config: Path, log: Path):
    import subprocess

    with open(log, "ab") as handle:
        return subprocess.Popen([sys.executable, "-m", "streampick", "run", "--config", str(config)],
                                stdout=handle, stderr=subprocess.STDOUT)


def _wait_ready(daemon, control: str, log: Path, timeout: float = 180.0) -> None:
    from ..daemon.control import ControlError, request
    from ..errors import StreampickError

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            raise StreampickError(f"demo: the daemon exited ({daemon.returncode}): {tail[0]}")
        try:
            request(control, "status", timeout=1.0)
            return
        except ControlError:
            continue
    raise StreampickError(f"demo: the daemon did not answer within {timeout:g} s (see {log})")


def _finish_when_picked(microscope: threading.Thread, control: str, n: int, done: threading.Event) -> None:
    """Set ``done`` once the microscope has finished and every micrograph is accounted for."""
    from ..daemon.control import ControlError, request

    microscope.join()
    deadline = time.monotonic() + 120
    while not done.is_set() and time.monotonic() < deadline:
        try:
            counts = request(control, "status", timeout=2.0)["counts"]
        except ControlError:
            break
        if counts["done"] + counts["failed"] + counts["duplicate"] >= n:
            time.sleep(1.0)  # let the monitor draw the last stats
            break
        done.wait(0.5)
    done.set()


def _print_progress(control: str, done: threading.Event) -> None:
    from ..daemon.control import ControlError, request

    last = None
    while not done.wait(1.0):
        try:
            status = request(control, "status", timeout=2.0)
        except ControlError:
            continue
        line = f"picked {status['counts']['done']}, queued {status['queue_depth']}, failed {status['counts']['failed']}"
        if line != last:
            print(line, flush=True)
            last = line


def _score(out: Path, truth: Path) -> int:
    from ..evaluate import evaluate_sets
    from ..io.coords import read_coordinates

    tables = sorted(out.glob("*/candidates/*.txt"))
    references = {}
    for star in sorted(truth.glob("*.star")):
        (picks,) = read_coordinates(star).values()  # one micrograph's truth per file
        references[star.stem] = picks
    if not tables or not references:
        print("demo: nothing was picked", file=sys.stderr)
        return 1
    predicted = {}
    for table in tables:
        predicted.update(read_coordinates(table))
    result = evaluate_sets(predicted, references, radius=75.0)
    print(f"demo: {len(predicted)} micrographs picked; against the simulation's truth AP {result.ap:.3f}, "
          f"best F1 {result.best_f1:.3f} (precision {result.best_precision:.3f}, recall "
          f"{result.best_recall:.3f}); outputs in {out}")
    stars = {}
    for star in sorted(out.glob("*/*_autopick.star")):
        for picks in read_coordinates(star).values():
            stars[star.stem.removesuffix("_autopick")] = picks
    if stars:  # the STAR files hold the picks at or above the daemon's threshold (the model card's)
        kept = evaluate_sets(stars, references, radius=75.0)
        precision = kept.n_tp / kept.n_pred if kept.n_pred else 0.0
        print(f"demo: the STAR files (picks at or above the threshold) hold {kept.n_pred} picks: precision "
              f"{precision:.3f}, recall {kept.n_tp / kept.n_ref:.3f}")
    return 0
