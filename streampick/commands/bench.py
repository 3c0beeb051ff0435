"""Benchmark the picking engine: streampick bench [--n N] [--models M...] [--topaz RUNNER]

Simulates N micrographs (4096² float32 at 1.0 Å/px by default, with ground truth), picks them with each
model at the working scale (8 Å/px by default) in a fresh process, and reports per-stage medians (read,
downsample, normalize, score, extract, write), the end-to-end median per micrograph, peak RSS and the
average precision against the truth.  --dense adds the exact dense mode for comparison.  --topaz runs the
same micrographs through Topaz (preprocess + extract) with an external runner script (see
docs/benchmarks.md) and scores its picks the same way.  Prints a Markdown report (machine, command, date).

--stream latency|throughput|soak|finetune|all measures the streaming daemon (`streampick run`) end to end
instead: latency from a file becoming whole to its picks message arriving at a subscriber (default 20
micrographs, one every 5 s), sustained throughput with files arriving faster than the daemon picks (default
60, one every 0.1 s), a soak of 2000 small micrographs with two kill -9 restarts (nothing lost, nothing
repeated, RSS flat), and latency while a live fine-tuning round runs against idle before and after (3
phases of 12).  --model (one or more) picks the weights, --n and --interval override each mode's
defaults.  See streampick/streambench.py and docs/benchmarks.md.

--train measures training instead (issue 4): 40 simulated 2048² micrographs, labels for 30 % of the
particles of the first 20, resnet8_u32 trained with GE-binomial for --epochs × --steps updates (10 × 100),
held-out AP of the other 20 against their full truth, beside Topaz 0.3.20 `topaz train` on the same labels
(--topaz-cli; skipped where absent); seconds per update (auto precision, float32, Topaz) over
--timing-repeats at each of --timing-threads; and the AP with π from --pi-factors × the true value.  See
streampick/trainbench.py.

--accuracy ROOT scores the real sets under ROOT (../shared/data/real) by issue 7's protocol: the train half
of each set (micrographs sorted by name) chooses the scale of Topaz's pretrained resnet16_u64 and of our
default model, a fine-tuned model learns from 30 % of the train half's reference picks within --time-limit
(100) seconds, and every row is scored on the test half (AP, max F1, F1 at the automatic threshold, recall in
the top 1.5 x count, seconds per micrograph, training time; EMPIAR-10017's published pickers beside them).
Writes --report-dir (docs)/accuracy.md with PR plots, overlays and results.json.  See
streampick/accuracybench.py.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import shlex
import sys
from pathlib import Path

from ..config import DASK_KEYS
from ._types import non_negative, positive_float, positive_int


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=None,
                        help="micrographs to simulate (default 6; --stream: 20, 60, 2000 per mode; --train: 40)")
    parser.add_argument("--size", type=int, default=None,
                        help="micrograph edge in pixels (default 4096; --train: 2048)")
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
    parser.add_argument("--json", type=Path, help="also write the raw results as JSON (--train: after each phase)")
    parser.add_argument("--seed", type=int, default=1)
    _add_stream_args(parser)
    _add_train_args(parser)
    _add_accuracy_args(parser)
    _add_scale_args(parser)


def _add_stream_args(parser: argparse.ArgumentParser) -> None:
    stream = parser.add_argument_group("streaming daemon (--stream)")
    stream.add_argument("--stream", choices=["latency", "throughput", "soak", "finetune", "all"],
                        help="benchmark the streaming daemon end to end instead of the engine")
    stream.add_argument("--model", nargs="+", metavar="MODEL",
                        help="model(s) for --stream (default topaz:resnet8_u32, or untrained resnet8_u32 "
                             "weights without topaz-em); each mode runs once per model")
    stream.add_argument("--interval", type=float,
                        help="seconds between files (latency 5, throughput 0.1) or between soak batches (4)")
    stream.add_argument("--soak-size", type=int, default=512, help="soak micrograph edge in pixels (default 512)")
    stream.add_argument("--batch", type=int, default=50, help="soak micrographs per batch (default 50)")
    stream.add_argument("--kills", type=int, default=2, help="soak kill -9 restarts (default 2)")
    stream.add_argument("--settle", type=float, help="watch.settle_seconds (default: the daemon's, 0.5)")
    stream.add_argument("--slow-write", type=float,
                        help="seconds a slow in-place or temp-rename write takes (latency 2, soak 0.02)")
    stream.add_argument("--writer", choices=["prerendered", "microscope"], default="prerendered",
                        help="latency: land pre-rendered files (default), or run run_microscope itself")
    stream.add_argument("--keep", action="store_true",
                        help="keep the temporary folders (for debugging; --stream and --train)")


def _add_train_args(parser: argparse.ArgumentParser) -> None:
    """Options of --train; those left unset take TrainBenchConfig's defaults (streampick/trainbench.py)."""
    train = parser.add_argument_group("training (--train)")
    train.add_argument("--train", action="store_true",
                       help="benchmark training (held-out AP against Topaz, update time, π robustness) instead")
    train.add_argument("--epochs", type=positive_int, help="epochs (default 10)")
    train.add_argument("--steps", type=positive_int, help="updates per epoch (default 100)")
    train.add_argument("--batch-size", type=positive_int, help="examples per update (default 256)")
    train.add_argument("--pi-factors", type=positive_float, nargs="+", metavar="F",
                       help="multiples of the true π for the robustness table (default 0.5 0.75 1 1.25 1.5)")
    train.add_argument("--threads", type=positive_int,
                       help="torch threads of both engines' training runs (default: torch's, all cores)")
    train.add_argument("--timing-repeats", type=positive_int, help="interleaved timing repeats (default 3)")
    train.add_argument("--timing-threads", type=positive_int, nargs="+", metavar="N",
                       help="thread counts to time updates at (default: --threads)")
    train.add_argument("--timing-steps", type=positive_int, help="updates per timing run (default 50)")
    topaz = train.add_mutually_exclusive_group()
    topaz.add_argument("--topaz-cli", type=Path,
                       help="Topaz 0.3.20 `topaz` executable (default /opt/topaz-ref/venv/bin/topaz; its rows are "
                            "skipped where it is absent)")
    topaz.add_argument("--no-topaz", action="store_true", help="leave out the Topaz rows")
    train.add_argument("--topaz-default-pi", action="store_true",
                       help="also train Topaz with -n (its own π, 7x too high)")
    train.add_argument("--pretrained", action="store_true",
                       help="also train both engines from Topaz's pretrained resnet8_u32")


def _add_accuracy_args(parser: argparse.ArgumentParser) -> None:
    accuracy = parser.add_argument_group("real-data accuracy (--accuracy)")
    accuracy.add_argument("--accuracy", type=Path, metavar="ROOT",
                          help="score the real sets under ROOT (../shared/data/real) by issue 7's protocol and "
                               "write the report (accuracy.md, PR plots, overlays, results.json)")
    accuracy.add_argument("--report-dir", type=Path, default=Path("docs"),
                          help="where --accuracy writes accuracy.md and accuracy/ (default docs)")
    accuracy.add_argument("--sets", nargs="+", metavar="KEY", help="only these sets (10017 10146 10028)")
    accuracy.add_argument("--threshold-validation", action="store_true",
                          help="--accuracy: instead of the report, compare the automatic-threshold rules within "
                               "the train halves only (how the default rule was chosen)")
    accuracy.add_argument("--time-limit", type=positive_float,
                          help="--accuracy: seconds for everything fine-tuning does (default 100)")
    accuracy.add_argument("--smoothing", type=non_negative, metavar="PX",
                          help="--accuracy: σ of row (c)'s score-map smoothing, working px (default 1.5; 0: none)")
    accuracy.add_argument("--finetune-seed", type=int, metavar="N",
                          help="--accuracy: seed of row (c)'s label sample and training (default 0, the protocol's)")


def _add_scale_args(parser: argparse.ArgumentParser) -> None:
    scale = parser.add_argument_group("scale-out on Dask (--scale)")
    scale.add_argument("--scale", action="store_true",
                       help="benchmark the daemon on a Dask LocalCluster of N worker processes with an emulated "
                            "50 ms device (streampick/scalebench.py; needs streampick[dask])")
    scale.add_argument("--workers", type=positive_int, nargs="+", default=[1, 2, 4, 8],
                       help="--scale: worker counts N (default 1 2 4 8)")
    scale.add_argument("--emulated-ms", type=positive_float, default=50.0,
                       help="--scale: emulated device time per micrograph (default 50 ms)")
    scale.add_argument("--task-batch", type=positive_int, default=DASK_KEYS["batch_size"][1],
                       help="--scale: dask.batch_size, micrographs per task while a backlog waits (default: the "
                            "daemon's, %(default)s)")
    scale.add_argument("--plot", type=Path, help="--scale: also write throughput against N as a PNG")
    scale.add_argument("--repick-backlog", type=positive_int, default=2000,
                       help="--scale: micrographs re-picked while live latency is measured (default 2000)")
    scale.add_argument("--repick-workers", type=positive_int, default=4,
                       help="--scale: pool size of the latency-while-re-picking run (default 4)")
    scale.add_argument("--no-repick", action="store_true", help="--scale: skip the latency-while-re-picking run")


def main(args: argparse.Namespace) -> int:
    if args.accuracy:
        return _accuracy_main(args)
    if args.scale:
        return _scale_main(args)
    if args.size is None:
        args.size = 2048 if args.train else 4096
    if args.stream:
        return _stream_main(args)
    from .. import bench

    try:
        return _train_main(args) if args.train else _engine_main(args)
    finally:
        if not (args.train and args.keep):
            bench.remove_scratch()


def _engine_main(args: argparse.Namespace) -> int:
    from .. import bench

    args.n = 6 if args.n is None else args.n
    data = args.data or bench.scratch_dir("streampick-bench-") / "data"
    if args.data is None:
        from ..simulate import simulate_dataset

        simulate_dataset(data, args.n, seed=args.seed, shape=(args.size, args.size), pixel_size=args.pixel_size,
                         particle_diameter_a=args.diameter)
    paths = sorted(str(p) for p in (data / "micrographs").glob("*.mrc"))
    if not paths:
        print(f"streampick bench: --data {data} has no micrographs/*.mrc (give a folder `streampick simulate` "
              "wrote)", file=sys.stderr)
        return 2
    radius_a = 0.5 * args.diameter
    rows = []
    for model in args.models:
        runs = [(stride, precision) for stride in args.strides for precision in args.precisions]
        for stride, precision in runs + ([(1, "float32")] if args.dense else []):
            config = bench.BenchConfig(model, args.target_pixel_size, f"{radius_a}A", dense=stride == 1,
                                       score_stride=stride, precision=precision,
                                       pixel_size=None if args.data else args.pixel_size)
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
    print(bench.markdown_report(rows, command=_command(), date=datetime.date.today().isoformat(), n=len(paths),
                                size=args.size, pixel_size=args.pixel_size,
                                target_pixel_size=args.target_pixel_size))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


def _train_main(args: argparse.Namespace) -> int:
    """``--train``: the training benchmark; prints the Markdown report (and writes the JSON)."""
    from .. import bench, trainbench, trainreport

    given = {"n": args.n, "size": args.size, "pixel_size": args.pixel_size, "diameter": args.diameter,
             "target_pixel_size": args.target_pixel_size, "epochs": args.epochs, "steps": args.steps,
             "batch_size": args.batch_size, "threads": args.threads, "timing_repeats": args.timing_repeats,
             "timing_steps": args.timing_steps,
             "timing_threads": tuple(args.timing_threads) if args.timing_threads else None,
             "pi_factors": tuple(args.pi_factors) if args.pi_factors else None, "topaz_cli": args.topaz_cli,
             "topaz_default_pi": args.topaz_default_pi, "pretrained": args.pretrained, "seed": args.seed}
    config = trainbench.TrainBenchConfig(**{key: value for key, value in given.items() if value is not None})
    if args.no_topaz:
        config = dataclasses.replace(config, topaz_cli=None)
    folder = bench.scratch_dir("streampick-trainbench-")
    if args.keep:
        print(f"streampick bench --train: keeping {folder}", file=sys.stderr)
    results = trainbench.run_benchmark(config, folder, checkpoint=args.json)  # the JSON, kept current
    print(trainreport.markdown_report(results, command=_command(), date=datetime.date.today().isoformat()))
    return 0


def _accuracy_main(args: argparse.Namespace) -> int:
    """``--accuracy``: the real-data accuracy report (streampick/accuracybench.py)."""
    from .. import accuracybench, accuracyreport, bench

    if not args.accuracy.is_dir():
        print(f"streampick bench --accuracy: {args.accuracy} is not a folder (give ../shared/data/real)",
              file=sys.stderr)
        return 2
    given = {"root": args.accuracy, "sets": tuple(args.sets) if args.sets else None,
             "time_limit": args.time_limit, "smoothing": args.smoothing, "seed": args.finetune_seed}
    config = accuracybench.AccuracyConfig(**{k: v for k, v in given.items() if v is not None})

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    if args.threshold_validation:
        rows = accuracybench.validate_threshold_rules(config, progress)
        columns = list(next(iter(rows.values())))
        print("| set | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns))
        for key, row in rows.items():
            print(f"| {key} | " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values())
                  + " |")
        return 0
    results = accuracybench.run_benchmark(config, progress)
    text = accuracyreport.write_outputs(results, config, args.report_dir, command=_command(),
                                        date=datetime.date.today().isoformat(),
                                        machine=bench.machine_description())
    print(text)
    return 0


def _scale_main(args: argparse.Namespace) -> int:
    """``--scale``: the Dask scale-out benchmark (streampick/scalebench.py)."""
    from .. import bench, scalebench

    settings = scalebench.default_settings()
    overrides = {"n": args.n, "interval": args.interval, "keep": args.keep or None}
    settings = dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    with scalebench.deferred_cleanup(settings) as settings:  # every run's files removed at the very end
        results = scalebench.run_benchmark(args.workers, settings, args.emulated_ms / 1000,
                                           progress=lambda m: print(m, file=sys.stderr, flush=True),
                                           batch_size=args.task_batch)
        report = scalebench.markdown_report(results, command=_command(), date=datetime.date.today().isoformat(),
                                            machine=bench.machine_description())
        if not args.no_repick:
            n_workers = args.repick_workers
            print(f"streampick bench --scale: live latency while re-picking, {n_workers} workers ...",
                  file=sys.stderr, flush=True)
            repick = scalebench.run_repick_latency(n_workers, settings, backlog=args.repick_backlog,
                                                   emulated_s=args.emulated_ms / 1000, batch_size=args.task_batch)
            results.append(repick)
            report += "\n" + scalebench.repick_report(repick)
    print(report)
    if args.plot:
        scalebench.plot_throughput([r for r in results if r["mode"] == "scale"], args.plot)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


def _command() -> str:
    rest = sys.argv[sys.argv.index("bench") + 1:] if "bench" in sys.argv else []
    return " ".join(["streampick bench", *(shlex.quote(a) for a in rest)])


def _stream_main(args: argparse.Namespace) -> int:
    """``--stream``: run the chosen modes once per model, print the Markdown report (and the JSON)."""
    from .. import streambench

    modes = streambench.MODES if args.stream == "all" else (args.stream,)
    results = []
    for model in args.model or [streambench.default_model()]:
        for mode in modes:
            size = args.soak_size if mode == "soak" else args.size
            settings = streambench.settings_for(
                mode, model, n=args.n, interval=args.interval, size=size, pixel_size=args.pixel_size,
                target_pixel_size=args.target_pixel_size, diameter=args.diameter, settle_seconds=args.settle,
                slow_write_s=args.slow_write, writer=args.writer, batch=args.batch, kills=args.kills,
                seed=args.seed, keep=args.keep)
            print(f"streampick bench --stream: {mode} with {model} ...", file=sys.stderr, flush=True)
            results.append(streambench.run_mode(mode, settings))
    print(streambench.markdown_report(results, command=_command(), date=datetime.date.today().isoformat()))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0
