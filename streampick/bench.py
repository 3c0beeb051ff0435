"""Benchmarks of the picking engine: per-stage and end-to-end time per micrograph, peak memory, accuracy.

Each configuration runs in a fresh process (spawn), so its peak RSS is its own; timings are medians over
micrographs after one warm-up micrograph.  Optionally the same micrographs go through Topaz 0.3.20
(``topaz preprocess`` + ``topaz extract``) via a runner script given with ``--topaz``, installed outside this
project (see docs/benchmarks.md), and both pick sets are scored against the simulation's truth.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

STAGES = ["read", "downsample", "normalize", "score", "extract", "write"]


@dataclass(frozen=True)
class BenchConfig:
    """One engine configuration to time."""

    model: str
    target_pixel_size: float
    radius: str
    dense: bool = False
    score_stride: int = 2
    precision: str = "auto"
    threads: int | None = None
    pixel_size: float | None = None  # the micrographs' own, when known (the simulated data's): no header guess


def machine_description() -> str:
    """CPU model, cores, memory, OS, Python and torch versions, as one line."""
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB, {gpu}; {platform.system()} "
            f"{platform.release()}; Python {platform.python_version()}, torch {torch.__version__}")


def run_engine(config: BenchConfig, paths: list[str], out_dir: str) -> dict:
    """Pick ``paths`` with ``config`` in this process; per-micrograph stage timings and peak RSS."""
    import torch

    from .device import scoring_dtype, select_device
    from .outputs import write_micrograph_outputs, write_run_outputs
    from .pick import Length, PickFailure, PickSettings, pick_micrographs

    if config.threads:
        torch.set_num_threads(config.threads)
    device = select_device("auto")
    start_load = time.perf_counter()
    model = _load_or_random(config.model, device)
    load_time = time.perf_counter() - start_load
    settings = PickSettings(target_pixel_size=config.target_pixel_size, dense=config.dense,
                            score_stride=config.score_stride, precision=config.precision,
                            radius=Length.parse(config.radius), pixel_size=config.pixel_size)
    rows, results = [], []
    for path in paths:
        start = time.perf_counter()
        (result,) = pick_micrographs([path], model, settings, device)
        if isinstance(result, PickFailure):
            raise RuntimeError(str(result.error))
        write_start = time.perf_counter()
        write_micrograph_outputs(result, Path(out_dir), threshold=0.0, box_size=64)
        timings = dict(result.timings, write=time.perf_counter() - write_start)
        timings["end_to_end"] = time.perf_counter() - start
        rows.append(timings)
        results.append(result)
    write_run_outputs(results, Path(out_dir), threshold=0.0)
    precision = str(scoring_dtype(device, config.precision)).replace("torch.", "")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB → MiB on Linux
    candidates = str(Path(out_dir) / "candidates.txt")
    return {"rows": rows, "peak_rss_mib": rss, "load_s": load_time, "precision": precision, "candidates": candidates}


def _load_or_random(spec: str, device):
    """A named model, or ``random:resnet16_u64`` (untrained weights: same speed, meaningless picks)."""
    from .nets.architectures import build
    from .nets.checkpoint import Model, ModelCard, load_model, prepare_for_inference

    if spec.startswith("random:"):
        architecture, units = spec.split(":", 1)[1].split("_u")
        net = build(architecture, int(units))
        return prepare_for_inference(Model(net, ModelCard(name=spec, architecture=architecture, units=int(units))),
                                     device)
    return load_model(spec, device)


def run_isolated(config: BenchConfig, paths: list[str], out_dir: str) -> dict:
    """``run_engine`` in a fresh spawned process (so peak RSS and thread settings are its own)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(run_engine, config, paths, out_dir).result()


def summarize(run: dict, warmup: int = 1) -> dict:
    """Median seconds per stage and end to end, skipping the first ``warmup`` micrographs."""
    rows = run["rows"][warmup:] or run["rows"]
    summary = {stage: statistics.median(r.get(stage, 0.0) for r in rows) for stage in STAGES + ["end_to_end"]}
    summary["n"] = len(rows)
    summary["peak_rss_mib"] = run["peak_rss_mib"]
    summary["precision"] = run["precision"]
    return summary


def run_topaz(script: str, mic_dir: Path, out_dir: Path, model: str, factor: float, radius_px: int) -> dict:
    """Run the external Topaz runner script; it prints a JSON line with stage times and peak RSS last."""
    factor_text = str(int(factor)) if float(factor).is_integer() else str(factor)
    command = [script, str(mic_dir), str(out_dir), model, factor_text, str(radius_px), "-6"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"topaz runner failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


_SCRATCH: list[Path] = []


def scratch_dir(prefix: str) -> Path:
    """A new temporary folder, removed by :func:`remove_scratch` when the benchmark ends."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    _SCRATCH.append(path)
    return path


def remove_scratch() -> None:
    import shutil

    while _SCRATCH:
        shutil.rmtree(_SCRATCH.pop(), ignore_errors=True)


def score_against_truth(candidates: Path, data: Path, radius_px: float) -> float | None:
    """Average precision of a candidates table against a simulated dataset's ``truth.star`` (greedy)."""
    from .evaluate import evaluate_sets
    from .io.coords import read_coordinates

    return evaluate_sets(read_coordinates(candidates), read_coordinates(data / "truth.star"), radius_px).ap


def topaz_row(script: str, data: Path, model: str, factor: float, radius_scaled: float, match_radius_px: float,
              n: int) -> dict:
    """Time Topaz preprocess + extract on the same micrographs and score its picks."""
    out = scratch_dir("topaz-bench-")
    run = run_topaz(script, data / "micrographs", out, model, factor, int(round(radius_scaled)))
    total = run["preprocess_wall_s"] + run["extract_wall_s"]
    return {"engine": "topaz 0.3.20", "model": f"topaz:{model}", "mode": "dense (batched call)",
            "end_to_end": total / n, "preprocess_per_mic": run["preprocess_wall_s"] / n,
            "extract_per_mic": run["extract_wall_s"] / n,
            "peak_rss_mib": max(run["preprocess_peak_rss_kb"], run["extract_peak_rss_kb"]) / 1024,
            "ap": score_against_truth(Path(run["picks"]), data, match_radius_px), "n": n}


def markdown_report(rows: list[dict], *, command: str, date: str, n: int, size: int, pixel_size: float,
                    target_pixel_size: float) -> str:
    """The benchmark as a Markdown section: machine, command, date, one table row per configuration."""
    lines = [f"### Engine benchmark, {date}", "", f"- machine: {machine_description()}",
             f"- command: `{command}`",
             f"- data: {n} simulated {size}² float32 micrographs at {pixel_size} Å/px, picked at "
             f"{target_pixel_size} Å/px; medians over micrographs after one warm-up; AP against the simulated "
             "truth (greedy matching within the particle radius)", "",
             "| engine | model | mode | read | downsample | normalize | score | extract | write | "
             "end-to-end s/mic | peak RSS MiB | AP |", "|" + "---|" * 12]
    for row in rows:
        stages = [f"{row[s]:.3f}" if s in row else "" for s in STAGES]
        if row["engine"] != "streampick":
            stages = [f"preprocess {row['preprocess_per_mic']:.2f}", "", "", f"extract {row['extract_per_mic']:.2f}",
                      "", ""]
        ap = "" if row.get("ap") is None else f"{row['ap']:.3f}"
        lines.append(f"| {row['engine']} | {row['model']} | {row['mode']} | " + " | ".join(stages) +
                     f" | {row['end_to_end']:.3f} | {row['peak_rss_mib']:.0f} | {ap} |")
    return "\n".join(lines)
