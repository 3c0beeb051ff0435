"""Pick particles on micrographs: streampick pick MICROGRAPHS... -o DIR

Each micrograph is read, Fourier-downsampled to the working pixel size, GMM-normalized, scored with the
model (strided + sub-pixel refinement; --dense for the exact full-resolution map) and non-maximum
suppressed.  Writes per-micrograph RELION STARs and EMAN boxes (picks >= threshold), a combined picks.star,
and candidates.txt with every candidate above the floor and its score.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..config import DEFAULT_MODEL

log = logging.getLogger(__name__)


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("micrographs", nargs="+", type=Path, help="MRC files to pick")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    parser.add_argument("--config", type=Path, help="YAML config (its 'picking' section); options override it")
    parser.add_argument("-m", "--model", help=f"model: a shipped name (default {DEFAULT_MODEL}), a .pt "
                                              "checkpoint, a Topaz .sav, or topaz:NAME (topaz:resnet16_u64)")
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument("--target-pixel-size", type=float, help="working pixel size in Å (default: model card)")
    scale.add_argument("--downsample", type=float, help="downsampling factor instead of a target pixel size")
    parser.add_argument("--pixel-size", type=float, help="override the micrographs' header pixel size (Å)")
    parser.add_argument("--radius", help="NMS radius, e.g. 70A or 9px (original pixels); "
                                         "default: half the model's particle diameter")
    parser.add_argument("--edge-margin", help="drop picks this close to the edge (Å or px; default 0)")
    parser.add_argument("--smoothing", help="σ of a Gaussian smoothing of the score map before NMS, e.g. 12A or "
                                            "10px (original pixels); 0: none; default: the model card's")
    parser.add_argument("--threshold", type=float, help="score threshold for STAR/box outputs "
                                                        "(default: model card's, else 0)")
    parser.add_argument("--floor", type=float, help="lowest candidate score kept (default -6)")
    parser.add_argument("--box-size", type=int, help="EMAN box size in original pixels "
                                                     "(default: 1.5 x particle diameter, else 4 x radius)")
    parser.add_argument("--dense", action="store_true", default=None, help="exact dense scoring (slow)")
    parser.add_argument("--score-stride", type=int, help="fast mode: exact scores every N working pixels, "
                                                         "interpolated between (default 2; 4 is fastest)")
    parser.add_argument("--precision", choices=["auto", "float32", "bfloat16"],
                        help="network precision (default auto: bfloat16 where the hardware is native)")
    parser.add_argument("--batch-size", type=int, help="micrographs scored together (default 1)")
    parser.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    where = parser.add_argument_group("where to pick (the config's executor and dask sections)")
    where.add_argument("--executor", choices=["in-process", "dask"],
                       help="in-process (default) or dask (pip install 'streampick[dask]')")
    cluster = where.add_mutually_exclusive_group()
    cluster.add_argument("--scheduler", help="dask: join the running cluster at this address (tcp://HOST:8786)")
    cluster.add_argument("--cluster", choices=["local", "slurm"], help="dask: start a cluster (slurm: the config's "
                                                                         "dask.slurm_* keys)")
    where.add_argument("--workers", type=int, help="dask local cluster: worker processes (default 2)")


def resolve_config(args: argparse.Namespace) -> dict:
    """The config file's sections (or the defaults), with the 'picking', 'executor' and 'dask' keys the options
    give overriding them."""
    from ..config import check_executor, default_config, load_config

    config = load_config(args.config) if args.config else default_config()
    options = config["picking"]
    for key in options:
        given = getattr(args, key, None)
        if given is not None:
            options[key] = given
    if args.executor:
        config["executor"]["kind"] = args.executor
    for key in ("scheduler", "cluster", "workers"):
        if getattr(args, key, None) is not None:
            config["dask"][key] = getattr(args, key)
            if key != "workers":  # the other way to reach a cluster no longer applies
                config["dask"]["cluster" if key == "scheduler" else "scheduler"] = None
    check_executor(config)
    return config



def main(args: argparse.Namespace) -> int:
    from contextlib import closing

    from rich.progress import Progress

    from ..device import select_device
    from ..executor import ModelRef, PickTask, executor_from_config, remember_model
    from ..nets.checkpoint import load_model, model_version
    from ..outputs import write_micrograph_outputs, write_run_outputs
    from ..pick import PickFailure, nms_radius, settings_from_options

    config = resolve_config(args)
    opts = config["picking"]
    spec = str(Path(opts["model"]).resolve()) if Path(opts["model"]).is_file() else opts["model"]
    model = load_model(spec, select_device(opts["device"]))
    ref = ModelRef(spec, model_version(model))
    remember_model(ref, opts["device"], model)  # an in-process executor picks with this one, not a second copy
    settings = settings_from_options(opts)
    threshold = opts["threshold"] if opts["threshold"] is not None else (model.card.threshold or 0.0)
    radius = nms_radius(settings, model)
    tasks = [PickTask(str(Path(p).resolve()), ref, settings, opts["device"]) for p in args.micrographs]
    results, failed = [], 0
    executor = executor_from_config(config)
    with Progress(transient=False) as progress, closing(executor):
        task = progress.add_task(f"picking ({executor.name})", total=len(args.micrographs))
        for outcome in executor.pick(tasks):
            progress.advance(task)
            if isinstance(outcome, PickFailure):
                log.error("%s", outcome.error)
                failed += 1
                continue
            box = opts["box_size"] or _default_box(model.card.particle_diameter, radius, outcome.pixel_size)
            write_micrograph_outputs(outcome, args.output, threshold=threshold, box_size=box)
            results.append(outcome)
    order = {task.path: i for i, task in enumerate(tasks)}  # a cluster returns them as they finish
    results.sort(key=lambda r: order.get(str(Path(r.path).resolve()), len(order)))
    write_run_outputs(results, args.output, threshold=threshold)
    n_picks = sum(len(r.picks.above(threshold)) for r in results)
    log.info("picked %d micrographs (%d failed): %d picks >= %.2f, candidates in %s",
             len(results), failed, n_picks, threshold, args.output / "candidates.txt")
    return 1 if failed and not results else 0


def _default_box(diameter: float | None, radius, pixel_size: float) -> int:
    size = 1.5 * diameter / pixel_size if diameter else 4 * radius.pixels(pixel_size)
    return max(2 * int(round(size / 2)), 2)
