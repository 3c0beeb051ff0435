"""Benchmark the picking engine: streampick bench [--n N] [--models M...] [--topaz RUNNER]

Simulates N micrographs (4096² float32 at 1.0 Å/px by default, with ground truth), picks them with each
model at the working scale (8 Å/px by default) in a fresh process, and reports per-stage medians (read,
downsample, normalize, score, extract, write), the end-to-end median per micrograph, peak RSS and the
average precision against the truth.  --dense adds the exact dense mode for comparison.  --topaz runs the
same micrographs through Topaz (preprocess + extract) with an external runner script (see
docs/benchmarks.md) and scores its picks the same way.  Prints a Markdown report (machine, command, date).
"""
from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
from pathlib import Path


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=6, help="micrographs to simulate (default 6)")
    parser.add_argument("--size", type=int, default=4096, help="micrograph edge in pixels (default 4096)")
    parser.add_argument("--pixel-size", type=float, default=1.0, help="simulated pixel size, Å (default 1.0)")
    parser.add_argument("--target-pixel-size", type=float, default=8.0, help="working scale, Å (default 8)")
    parser.add_argument("--diameter", type=float, default=150.0, help="particle diameter, Å (default 150)")
    parser.add_argument("--models", nargs="+", default=["topaz:resnet16_u64", "topaz:resnet8_u32"],
                        help="models to time; random:resnet16_u64 etc. gives untrained weights of that size")
    parser.add_argument("--dense", action="store_true", help="also time the exact dense mode")
    parser.add_argument("--strides", type=int, nargs="+", default=[2],
                        help="fast-mode score strides to time (default 2; 4 is the coarsest)")
    parser.add_argument("--precisions", nargs="+", default=["auto"], choices=["auto", "float32", "bfloat16"],
                        help="network precisions to time in fast mode (dense always runs float32)")
    parser.add_argument("--topaz", help="Topaz runner script (IN OUT MODEL FACTOR RADIUS THRESHOLD)")
    parser.add_argument("--data", type=Path, help="reuse a simulated dataset folder instead of simulating")
    parser.add_argument("--json", type=Path, help="also write the raw results as JSON")
    parser.add_argument("--seed", type=int, default=1)


def main(args: argparse.Namespace) -> int:
    from .. import bench

    data = args.data or bench.scratch_dir("streampick-bench-") / "data"
    if args.data is None:
        from ..simulate import simulate_dataset

        simulate_dataset(data, args.n, seed=args.seed, shape=(args.size, args.size), pixel_size=args.pixel_size,
                         particle_diameter_a=args.diameter)
    paths = sorted(str(p) for p in (data / "micrographs").glob("*.mrc"))
    radius_a = 0.5 * args.diameter
    rows = []
    for model in args.models:
        runs = [(stride, precision) for stride in args.strides for precision in args.precisions]
        for stride, precision in runs + ([(1, "float32")] if args.dense else []):
            config = bench.BenchConfig(model, args.target_pixel_size, f"{radius_a}A", dense=stride == 1,
                                       score_stride=stride, precision=precision)
            out = bench.scratch_dir("streampick-bench-out-")
            run = bench.run_isolated(config, paths, str(out))
            summary = bench.summarize(run)
            summary["ap"] = bench.score_against_truth(Path(run["candidates"]), data, radius_a / args.pixel_size)
            mode = ("dense" if stride == 1 else f"fast (stride {stride})") + f", {summary['precision']}"
            rows.append({"engine": "streampick", "model": model, "mode": mode, **summary})
        if args.topaz and model.startswith("topaz:"):
            rows.append(bench.topaz_row(args.topaz, data, model.split(":", 1)[1],
                                        args.target_pixel_size / args.pixel_size, radius_a / args.target_pixel_size,
                                        radius_a / args.pixel_size, len(paths)))
    rest = sys.argv[sys.argv.index("bench") + 1:] if "bench" in sys.argv else []
    command = " ".join(["streampick bench", *(shlex.quote(a) for a in rest)])
    print(bench.markdown_report(rows, command=command, date=datetime.date.today().isoformat(), n=len(paths),
                                size=args.size, pixel_size=args.pixel_size,
                                target_pixel_size=args.target_pixel_size))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0
