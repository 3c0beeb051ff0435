"""Write a synthetic dataset with known particle positions: streampick simulate OUT --n N

Simulates N square micrographs (weak-phase projections of one random asymmetric particle, or with
--particle-shape shell a hollow apoferritin-like one, at random orientations, CTF, shot noise, ice gradient,
and on some micrographs a carbon edge, ice contamination and aggregates; see streampick.simulate for the
model and its limits) and writes into OUT:

    micrographs/sim_0000.mrc ...   float32 MRC, pixel size in the header
    truth/sim_0000.star ...        every pickable particle (aggregates excluded), RELION STAR
    truth.star                     the same, one combined STAR file
    labels.txt                     a random --label-fraction of the truth, slightly jittered (Topaz table):
                                   sparse labels for training
    simulation.json                every parameter and per-micrograph draws (defocus, counts, carbon)

The same --seed gives the same files.  Example:
    streampick simulate sim --n 20 --size 4096 --pixel-size 1.0 --diameter 150
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ._types import positive_float, positive_int


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--n", type=positive_int, required=True, help="number of micrographs")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--size", type=positive_int, default=4096,
                        help="micrograph edge in pixels (default 4096)")
    parser.add_argument("--pixel-size", type=positive_float, default=1.0, help="Å per pixel (default 1.0)")
    parser.add_argument("--diameter", type=positive_float, default=150.0,
                        help="particle diameter in Å (default 150)")
    parser.add_argument("--label-fraction", type=float, default=0.3,
                        help="fraction of true particles written to labels.txt (default 0.3)")
    parser.add_argument("--particle-shape", choices=("blobs", "shell"), default="blobs",
                        help="blobs: compact asymmetric domains (default); shell: hollow, like apoferritin")
    parser.add_argument("--coverage", type=float, nargs=2, metavar=("LOW", "HIGH"), default=(0.05, 0.55),
                        help="range of the fraction of free ice covered by particles, drawn per micrograph "
                             "(default 0.05 0.55)")


def main(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from ..errors import StreampickError
    from ..simulate import simulate_dataset

    if args.size < 64:
        raise StreampickError(f"simulate: --size {args.size} is too small (at least 64 pixels)")
    if not 0 <= args.label_fraction <= 1:
        raise StreampickError(f"simulate: --label-fraction must be within [0, 1], got {args.label_fraction}")
    low, high = args.coverage
    if not 0 <= low <= high <= 0.9:
        raise StreampickError(f"simulate: --coverage needs 0 <= LOW <= HIGH <= 0.9, got {low:g} {high:g}")
    console = Console()
    with Progress(console=console, transient=False) as progress:
        task = progress.add_task("simulating", total=args.n)
        meta = simulate_dataset(args.out, args.n, seed=args.seed, shape=(args.size, args.size),
                                pixel_size=args.pixel_size, particle_diameter_a=args.diameter,
                                label_fraction=args.label_fraction, particle_shape=args.particle_shape,
                                options={"coverage": (low, high)},
                                progress=lambda done, total: progress.update(task, completed=done))
    console.print(f"wrote {meta['n']} micrographs, {meta['n_truth']} true particles and {meta['n_labels']} "
                  f"labels to {args.out}")
    return 0
