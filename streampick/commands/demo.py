"""Run the built-in demo: simulate a small session, pick it, and score the picks against the truth.

A simulated microscope writes micrographs (with ground truth) into a folder, streampick picks them with the
chosen model, and evaluate prints average precision and the best F1.  Everything lands in --output.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", type=Path, default=Path("streampick-demo"), help="demo folder")
    parser.add_argument("--n", type=int, default=6, help="micrographs to simulate")
    parser.add_argument("--size", type=int, default=4096, help="micrograph edge in pixels (1 Å/px)")
    parser.add_argument("-m", "--model", default="topaz:resnet16_u64", help="model to pick with")
    parser.add_argument("--seed", type=int, default=0)


def main(args: argparse.Namespace) -> int:
    from ..cli import main as cli_main

    session, picks = args.output / "session", args.output / "picks"
    code = cli_main(["simulate", str(session), "--n", str(args.n), "--size", str(args.size),
                     "--seed", str(args.seed)])
    if code:
        return code
    micrographs = sorted(str(p) for p in (session / "micrographs").glob("*.mrc"))
    code = cli_main(["pick", *micrographs, "-o", str(picks), "-m", args.model, "--target-pixel-size", "8",
                     "--radius", "70A", "--edge-margin", "40A"])
    if code:
        return code
    return cli_main(["evaluate", "--predicted", str(picks / "candidates.txt"), "--reference",
                     str(session / "truth.star"), "--radius", "75", "--plot", str(args.output / "pr_curve.png")])
