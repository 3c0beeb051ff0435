"""Play a microscope: write simulated micrographs into a folder on a schedule: streampick microscope OUT --n N

Writes OUT/mic_00000.mrc, mic_00001.mrc, … one every --interval seconds (a fixed schedule from the start),
taking turns between the ways real files arrive (--modes): in-place (header first, then the data in
chunks over --slow-write seconds), temp-rename (the same slow write into a hidden .mic_00000.mrc.XXXXXX,
then a rename, as rsync does) and copy (a plain file copy).  Point the daemon at OUT to watch it pick live.
--truth DIR writes the true particle centres of each micrograph to DIR/<stem>.star (keep DIR outside OUT).
Prints one line per file once it is whole: seconds since start, path, write mode.  Ctrl-C stops.

Example:
    streampick microscope session --n 100 --interval 5 --size 4096 --truth truth
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ._types import non_negative, positive_int


def add_args(parser: argparse.ArgumentParser) -> None:
    from ..microscope import WRITE_MODES

    parser.add_argument("out", type=Path, help="folder to write micrographs into (the daemon's watched folder)")
    parser.add_argument("--n", type=positive_int, required=True, help="number of micrographs")
    parser.add_argument("--interval", type=non_negative, default=5.0,
                        help="seconds between files (default 5)")
    parser.add_argument("--size", type=positive_int, default=4096,
                        help="micrograph edge in pixels (default 4096)")
    parser.add_argument("--pixel-size", type=non_negative, default=1.0, help="Å per pixel (default 1.0)")
    parser.add_argument("--diameter", type=non_negative, default=150.0,
                        help="particle diameter in Å (default 150)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--modes", nargs="+", choices=WRITE_MODES, default=list(WRITE_MODES),
                        help="write modes used in turn (default: all three)")
    parser.add_argument("--slow-write", type=non_negative, default=2.0,
                        help="seconds an in-place or temp-rename write takes (default 2)")
    parser.add_argument("--truth", type=Path, metavar="DIR", help="write ground truth STAR files here")


def main(args: argparse.Namespace) -> int:
    from ..errors import StreampickError
    from ..microscope import run_microscope

    if args.size < 64 or not args.pixel_size > 0 or not args.diameter > 0:
        raise StreampickError("microscope: --size must be at least 64, --pixel-size and --diameter > 0")
    start = time.time()
    written = 0

    def report(path: Path, t_complete: float) -> None:
        nonlocal written
        print(f"{t_complete - start:9.2f} s  {path}  {args.modes[written % len(args.modes)]}", flush=True)
        written += 1

    run_microscope(args.out, args.n, interval_s=args.interval, size=args.size, pixel_size=args.pixel_size,
                   seed=args.seed, write_modes=args.modes, slow_write_s=args.slow_write,
                   particle_diameter_a=args.diameter, truth_dir=args.truth, on_written=report)
    return 0
