"""Training benchmark (issue 4): streampick's PU training side by side with Topaz 0.3.20 ``topaz train``.

``streampick bench --train`` runs it.  One simulated set (default 40 micrographs of 2048² at 1 Å/px, 150 Å
particles): the first half trains, the second half is held out.  Each training micrograph gets labels for a
random 30 % of its true particles (seeded; jittered as ``streampick simulate`` jitters them); the held-out
micrographs are scored against their **full** truth with :func:`~streampick.evaluate.evaluate_sets`
(greedy matching within half the particle diameter), for both engines.

Phases, all on the CPU, in this order (the JSON is rewritten after each):

1. **Held-out AP** (:func:`train_ours`, :func:`train_topaz`): resnet8 with 32 units, GE-binomial, the same
   labels, minibatch, label radius, learning rate and number of updates, from scratch for both (Topaz with
   ``--no-pretrained --bn off``, the same architecture as ours).  The AP reported is that of the **last**
   update's weights for both engines (our loop's best-epoch choice is made on the held-out set itself, so it
   is recorded but not compared).
2. **π robustness** (:func:`pi_robustness`): ours with π from 0.5× … 1.5× the true expected particles.
3. **Update time** (:func:`time_updates`): interleaved repeats, at each thread count, of a short run each of
   ours in ``auto`` precision (bfloat16 where native), ours in float32 and ``topaz train``; wall and CPU
   seconds per 256-example update from one update to the next (our step callbacks, Topaz's per-update log
   lines), median within a run, then the median over the repeats.  :class:`LoadMeter` records the CPU the
   rest of the machine used meanwhile.
4. Optionally Topaz with its own (inflated) π, and both engines from Topaz's pretrained resnet8_u32.

Topaz's π: ``topaz train`` counts (2r+1)× too many pixels per labelled particle (203 instead of 29 at r = 3)
both in π from ``-n`` and in its observed labelled fraction p_obs, and gives the GE term π_u = π − p_obs.
Passing the true π with ``--pi`` therefore makes π ≤ p_obs, and Topaz silently switches to PN.  The main
Topaz row passes ``--pi`` = our π_u + Topaz's own p_obs, so that Topaz's π_u equals ours exactly; the
``topaz_default_pi`` row gives ``-n`` the same expected particles (π and π_u then 7× ours).  Each engine
preprocesses with its own code (``topaz preprocess`` for Topaz) and picks with its own extraction
(``topaz extract -r R -x F``, coordinates scaled back to original pixels), with the same −6 logit floor.

Topaz runs through :mod:`~streampick.topazcli` from an installation outside this project (default
``/opt/topaz-ref/venv/bin/topaz``, see docs/benchmarks.md); where it is absent its rows are skipped with the
reason recorded.  :mod:`~streampick.trainreport` turns the results into Markdown.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .evaluate import evaluate_sets
from .io.coords import read_coordinates, write_table
from .picks import Picks
from .streambench import read_system_cpu
from .topazcli import Topaz, topaz_disk_pixels
from .train.data import LabelledMicrograph, load_training_data, working_centres
from .train.loop import Callbacks, Prior, TrainOptions, class_prior, split_micrographs, train

TOPAZ_CLI = Path("/opt/topaz-ref/venv/bin/topaz")
FLOOR = -6.0  # lowest logit kept as a pick, both engines (Topaz's default threshold)
Say = Callable[[str], None]


def _stderr(message: str) -> None:
    print(f"streampick bench --train: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class TrainBenchConfig:
    """What the benchmark simulates and how it trains (defaults: the issue's benchmark)."""

    n: int = 40  # micrographs; the first half trains, the rest is held out
    size: int = 2048
    pixel_size: float = 1.0
    target_pixel_size: float = 8.0
    diameter: float = 150.0
    label_fraction: float = 0.3
    epochs: int = 10
    steps: int = 100  # updates per epoch
    batch_size: int = 256
    radius: int = 3  # label disk radius, working pixels
    lr: float = 2e-4
    pi_factors: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5)
    threads: int | None = None  # torch threads of both engines (None: torch's default, all cores)
    timing_repeats: int = 3
    timing_steps: int = 50
    timing_warmup: int = 5  # leading updates of each timing run left out
    timing_threads: tuple[int, ...] | None = None  # thread counts to time (None: ``threads`` only)
    topaz_cli: Path | None = TOPAZ_CLI
    topaz_default_pi: bool = False
    pretrained: bool = False
    seed: int = 1

    @property
    def updates(self) -> int:
        return self.epochs * self.steps

    @property
    def thread_counts(self) -> tuple[int, ...]:
        """The thread counts the update timing runs at."""
        return self.timing_threads or (self.threads or torch.get_num_threads(),)

    @property
    def factor(self) -> float:
        """Downsampling factor from the micrographs to the working scale."""
        return self.target_pixel_size / self.pixel_size

    @property
    def match_radius_px(self) -> float:
        """Matching radius of the AP, original pixels (half the particle diameter)."""
        return self.diameter / 2 / self.pixel_size


# ----------------------------------------------------------------------------------------------- the data


@dataclass
class Benchmark:
    """The simulated benchmark: files on disk and the micrographs prepared once for our trainer."""

    root: Path
    train_set: list[LabelledMicrograph]
    test_set: list[LabelledMicrograph]
    truth: dict[str, Picks]  # full truth of the held-out micrographs, original pixels
    labels: Path  # labels of the training micrographs (Topaz table, original pixels)
    expected_particles: float  # true particles per training micrograph, mean
    prior: Prior  # ours at the true expected particles

    def summary(self) -> dict:
        return {"root": str(self.root), "train": [m.name for m in self.train_set],
                "test": [m.name for m in self.test_set], "n_labels": sum(len(m.positives) for m in self.train_set),
                "n_truth_test": sum(len(p) for p in self.truth.values()),
                "expected_particles": self.expected_particles, "pi": self.prior.pi,
                "labelled_fraction": self.prior.labelled_fraction, "pi_u": self.prior.pi_u,
                "working_shape": list(self.train_set[0].image.shape)}


def prepare_benchmark(folder: Path, config: TrainBenchConfig) -> Benchmark:
    """Simulate the micrographs, write the training labels and prepare everything for our trainer."""
    from .simulate import simulate_dataset

    if config.n < 2:
        raise ValueError("the training benchmark needs at least 2 micrographs (half train, half held out)")
    meta = simulate_dataset(folder, config.n, seed=config.seed, shape=(config.size, config.size),
                            pixel_size=config.pixel_size, particle_diameter_a=config.diameter)
    truth = read_coordinates(folder / "truth.star")
    names = sorted(truth)
    train_names, test_names = names[:config.n // 2], names[config.n // 2:]
    labels = folder / "train_labels.txt"
    write_labels(labels, {n: truth[n] for n in train_names}, config, meta["label_jitter_px"])
    paths = [folder / "micrographs" / f"{n}.mrc" for n in names]
    data = load_training_data(paths, [labels], target_pixel_size=config.target_pixel_size)
    train_set, test_set = split_micrographs(data, test_names=test_names)
    expected = float(np.mean([len(truth[n]) for n in train_names]))
    return Benchmark(folder, train_set, test_set, {n: truth[n] for n in test_names}, labels, expected,
                     class_prior(train_set, expected, config.radius))


def write_labels(path: Path, truth: dict[str, Picks], config: TrainBenchConfig, jitter_px: float) -> None:
    """A random ``label_fraction`` of each micrograph's true particles (seeded), jittered within ``jitter_px``
    as the simulator jitters its labels; written as a Topaz table in original pixels."""
    from .simulate import _sparse_labels

    rng = np.random.default_rng([config.seed, 4])
    shape = (config.size, config.size)
    items = []
    for name, picks in truth.items():
        xy = np.column_stack([picks.x, picks.y])
        items += _sparse_labels(rng, [(name, xy)], config.label_fraction, jitter_px, shape)
    write_table(path, items)


# ------------------------------------------------------------------------------------------------ timing


class LoadMeter:
    """CPU used by the rest of the machine since creation, in cores on average: the machine's busy time from
    /proc/stat less this process's and its waited-for children's CPU time."""

    def __init__(self) -> None:
        self.start = self._read()

    @staticmethod
    def _read() -> tuple[float, float, float]:
        own = sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                    resource.getrusage(resource.RUSAGE_CHILDREN)))
        return time.perf_counter(), read_system_cpu()[0], own

    def other_cores(self) -> float:
        (t0, busy0, own0), (t1, busy1, own1) = self.start, self._read()
        return max(0.0, (busy1 - busy0) - (own1 - own0)) / max(t1 - t0, 1e-9)


class UpdateClock:
    """Seconds per update, wall and this process's CPU: the time between consecutive step callbacks, never
    across an evaluation."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.cpu_seconds: list[float] = []
        self._last: tuple[float, float] | None = None

    def step(self, done: int, loss: float) -> None:
        now = time.perf_counter(), time.process_time()
        if self._last is not None:
            self.seconds.append(now[0] - self._last[0])
            self.cpu_seconds.append(now[1] - self._last[1])
        self._last = now

    def epoch(self, record: object) -> None:
        self._last = None

    def callbacks(self) -> Callbacks:
        return Callbacks(step=self.step, epoch=self.epoch)


def _median(values: list[float], skip: int = 0) -> float | None:
    kept = values[skip:] or values
    return float(statistics.median(kept)) if kept else None


# -------------------------------------------------------------------------------------------- ours


def _start_model(start: str, seed: int):
    """resnet8_u32 from scratch (seeded) or Topaz's pretrained resnet8_u32."""
    from .nets import Model, ModelCard, build, load_model

    if start == "pretrained":
        return load_model("topaz:resnet8_u32")
    torch.manual_seed(seed)
    return Model(build("resnet8", 32), ModelCard(name="trainbench", architecture="resnet8", units=32))


def train_ours(bench: Benchmark, config: TrainBenchConfig, *, start: str = "scratch", pi_factor: float = 1.0,
               precision: str = "auto", epochs: int | None = None, steps: int | None = None,
               evaluate: bool = True) -> dict:
    """Train resnet8_u32 with our :func:`~streampick.train.loop.train` (GE-binomial) and measure it.

    Args:
        bench: the benchmark.
        config: sizes and hyper-parameters.
        start: ``scratch`` or ``pretrained`` (Topaz's resnet8_u32).
        pi_factor: π from this multiple of the true expected particles per micrograph.
        precision: ``auto``, ``float32`` or ``bfloat16``.
        epochs, steps: override the config's (the timing runs are short).
        evaluate: pick the held-out micrographs after each epoch (against the full truth).

    Returns:
        A row: held-out AP of the last weights and per epoch, π, π_u, seconds per update, wall time, load.
    """
    from .device import scoring_dtype

    epochs, steps = epochs or config.epochs, steps or config.steps
    model = _start_model(start, config.seed)
    options = TrainOptions(objective="ge-binomial", epochs=epochs, steps=steps, batch_size=config.batch_size,
                           lr=config.lr, radius=float(config.radius), precision=precision, seed=config.seed)
    clock, meter, t0 = UpdateClock(), LoadMeter(), time.perf_counter()
    result = train(model, bench.train_set, bench.test_set if evaluate else [], options,
                   expected_particles=bench.expected_particles * pi_factor, particle_diameter=config.diameter,
                   reference=bench.truth, callbacks=clock.callbacks(), from_scratch=start == "scratch")
    aps = [r.ap for r in result.history]
    return {"engine": "streampick", "start": start, "pi_setting": f"{pi_factor:g}× true", "pi_factor": pi_factor,
            "expected_particles": bench.expected_particles * pi_factor, "pi": result.prior.pi,
            "pi_u": result.prior.pi_u, "method": "GE-binomial",
            "precision": str(scoring_dtype(torch.device("cpu"), precision)).replace("torch.", ""),
            "updates": epochs * steps, "ap": aps[-1], "ap_per_epoch": aps,
            "s_per_update": _median(clock.seconds, config.timing_warmup), "update_seconds": clock.seconds,
            "cpu_s_per_update": _median(clock.cpu_seconds, config.timing_warmup), "update_cpu_seconds":
            clock.cpu_seconds, "wall_s": time.perf_counter() - t0, "other_cores": meter.other_cores()}


def pi_robustness(bench: Benchmark, config: TrainBenchConfig, reference: dict, say: Say = _stderr) -> list[dict]:
    """Ours with π from each of ``config.pi_factors`` × the true expected particles; ``reference`` is the
    1× run (reused, not repeated).  Each row gets ``delta_ap`` against it."""
    rows = []
    for factor in config.pi_factors:
        if factor == reference["pi_factor"]:
            row = reference
        else:
            say(f"π robustness: {factor:g}× ({config.updates} updates)")
            row = train_ours(bench, config, pi_factor=factor)
        rows.append({**row, "delta_ap": row["ap"] - reference["ap"]})
    return rows


# ------------------------------------------------------------------------------------------------- Topaz


def find_topaz(config: TrainBenchConfig) -> tuple[Topaz | None, str | None]:
    """The Topaz runner, or None and the reason its rows are skipped."""
    if config.topaz_cli is None:
        return None, "Topaz rows not asked for (--no-topaz)"
    if not Path(config.topaz_cli).is_file():
        return None, f"Topaz rows skipped: {config.topaz_cli} not found (Topaz 0.3.20 reference environment absent)"
    if not float(config.factor).is_integer():
        return None, f"Topaz rows skipped: topaz preprocess needs an integer downsampling factor, not {config.factor}"
    return Topaz(Path(config.topaz_cli), config.threads or torch.get_num_threads()), None


@dataclass
class TopazData:
    """The benchmark as Topaz sees it: its own preprocessed images and the labels at the working scale."""

    train_dir: Path
    test_images: list[Path]
    labels: Path
    n_labels: int
    train_pixels: int
    preprocess_s: float


def prepare_topaz(topaz: Topaz, bench: Benchmark, config: TrainBenchConfig, folder: Path) -> TopazData:
    """``topaz preprocess`` both halves; the training labels at the working scale, rounded as ours are."""
    import mrcfile

    factor = int(config.factor)
    mics = bench.root / "micrographs"
    seconds = topaz.preprocess([mics / f"{m.name}.mrc" for m in bench.train_set], folder / "train", factor)
    seconds += topaz.preprocess([mics / f"{m.name}.mrc" for m in bench.test_set], folder / "test", factor)
    items = []
    for m in bench.train_set:
        rows_cols = working_centres(m.prepared, m.positives)  # the very pixels our label maps centre their disks on
        items.append((m.name, Picks.from_arrays(rows_cols[:, 1], rows_cols[:, 0])))
    labels = folder / "train_labels_working.txt"
    write_table(labels, items)
    pixels = 0
    for m in bench.train_set:
        with mrcfile.open(folder / "train" / f"{m.name}.mrc", header_only=True, permissive=True) as mrc:
            pixels += int(mrc.header.nx) * int(mrc.header.ny)
    return TopazData(folder / "train", [folder / "test" / f"{m.name}.mrc" for m in bench.test_set], labels,
                     sum(len(p) for _, p in items), pixels, seconds)


def topaz_p_observed(data: TopazData, radius: int) -> float:
    """The labelled fraction Topaz computes for itself (and subtracts from π)."""
    return data.n_labels * topaz_disk_pixels(radius) / data.train_pixels


def matched_topaz_pi(bench: Benchmark, data: TopazData, config: TrainBenchConfig) -> float:
    """The ``--pi`` for which Topaz's π_u (= π − its own p_obs) equals ours at the true expected particles."""
    return bench.prior.pi_u + topaz_p_observed(data, config.radius)


def literal_pi_check(topaz: Topaz, bench: Benchmark, data: TopazData, config: TrainBenchConfig,
                     folder: Path) -> dict:
    """One update of ``topaz train --pi <the true π>``: which objective Topaz then really uses."""
    args = _topaz_train_args(data, config, start="scratch", pi_args=["--pi", repr(bench.prior.pi)], epochs=1, steps=1)
    run = topaz.train(args, folder / "literal-pi.log")
    return {"pi": bench.prior.pi, "p_observed_topaz": run.p_observed, "method": run.method}


def _topaz_train_args(data: TopazData, config: TrainBenchConfig, *, start: str, pi_args: list[str],
                      epochs: int, steps: int) -> list[str]:
    weights = [] if start == "pretrained" else ["--no-pretrained", "--bn", "off"]
    return ["--train-images", str(data.train_dir), "--train-targets", str(data.labels), "--model", "resnet8",
            "--units", "32", *weights, "--method", "GE-binomial", *pi_args, "--radius", str(config.radius),
            "--minibatch-size", str(config.batch_size), "--minibatch-balance", str(1 / 16),
            "--learning-rate", str(config.lr), "--epoch-size", str(steps), "--num-epochs", str(epochs)]


def train_topaz(topaz: Topaz, bench: Benchmark, data: TopazData, config: TrainBenchConfig, folder: Path, *,
                start: str = "scratch", pi_mode: str = "matched", curve: bool = False) -> dict:
    """``topaz train`` on the same labels, then ``topaz extract`` of the held-out micrographs, scored like ours.

    Args:
        topaz, bench, data, config: the runner, the benchmark, Topaz's view of it, the settings.
        folder: where this run's models, logs and picks go.
        start: ``scratch`` (``--no-pretrained --bn off``) or ``pretrained`` (Topaz's resnet8_u32).
        pi_mode: ``matched`` (``--pi`` giving our π_u) or ``default`` (``-n`` the true expected particles).
        curve: also extract and score every epoch's model (the AP per epoch), not only the last.
    """
    folder.mkdir(parents=True, exist_ok=True)
    if pi_mode == "matched":
        pi_args, setting = ["--pi", repr(matched_topaz_pi(bench, data, config))], "--pi: π_u = ours"
    else:
        pi_args, setting = ["-n", repr(bench.expected_particles)], "-n true (Topaz's default π)"
    args = _topaz_train_args(data, config, start=start, pi_args=pi_args, epochs=config.epochs, steps=config.steps)
    meter = LoadMeter()
    run = topaz.train(args, folder / "train.log", save_prefix=folder / "model")
    other = meter.other_cores()
    models = run.models if curve else run.models[-1:]
    aps = [topaz_ap(topaz, model, bench, data, config, folder / f"picks_{model.stem}.txt") for model in models]
    gets_pi_u = run.pi is not None and run.p_observed is not None and run.method == "GE-binomial"
    return {"engine": "topaz 0.3.20", "start": start, "pi_setting": setting, "pi_args": pi_args, "pi": run.pi,
            "pi_u": run.pi - run.p_observed if gets_pi_u else None, "p_observed_topaz": run.p_observed,
            "method": run.method, "precision": "float32", "updates": config.updates, "ap": aps[-1],
            "ap_per_epoch": [None, *aps] if curve else None,
            "s_per_update": _median(run.update_seconds, config.timing_warmup), "update_seconds": run.update_seconds,
            "cpu_s_per_update": _median(run.update_cpu_seconds, config.timing_warmup),
            "update_cpu_seconds": run.update_cpu_seconds, "wall_s": run.wall_s, "first_update_s": run.first_update_s,
            "other_cores": other}


def topaz_ap(topaz: Topaz, model: Path, bench: Benchmark, data: TopazData, config: TrainBenchConfig,
             out: Path) -> float:
    """``topaz extract`` the held-out micrographs with ``model`` and score the picks against the full truth."""
    radius = int(round(config.diameter / 2 / config.target_pixel_size))
    topaz.extract(model, data.test_images, out, radius=radius, factor=int(config.factor), threshold=FLOOR)
    return evaluate_sets(read_coordinates(out), bench.truth, config.match_radius_px).ap


# ------------------------------------------------------------------------------------------------ phases


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch threads, then restore the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def time_updates(bench: Benchmark, config: TrainBenchConfig, topaz: Topaz | None, data: TopazData | None,
                 folder: Path, say: Say = _stderr) -> list[dict]:
    """Interleaved repeats of short runs at each thread count: ours (auto, float32), then ``topaz train``.

    Returns:
        One entry per engine, precision and thread count: ``per_repeat`` and ``cpu_per_repeat`` (median wall
        and CPU seconds per update of each repeat, after the warm-up updates), their ``median`` and
        ``cpu_median``, and ``other_cores`` (the rest of the machine, per repeat).  With one thread the CPU
        time is about what the update takes on an otherwise idle core.
    """
    entries: dict[tuple[str, str, int], dict] = {}

    def record(engine: str, precision: str, threads: int, wall: list[float], cpu: list[float], other: float) -> None:
        entry = entries.setdefault((engine, precision, threads), {
            "engine": engine, "precision": precision, "threads": threads, "per_repeat": [], "cpu_per_repeat": [],
            "other_cores": []})
        entry["per_repeat"].append(_median(wall, config.timing_warmup))
        entry["cpu_per_repeat"].append(_median(cpu, config.timing_warmup))
        entry["other_cores"].append(other)

    for repeat in range(config.timing_repeats):
        for threads in config.thread_counts:
            say(f"update timing, repeat {repeat + 1}/{config.timing_repeats}, {threads} thread(s), "
                f"{config.timing_steps} updates per run")
            with torch_threads(threads):
                for precision in ("auto", "float32"):
                    row = train_ours(bench, config, precision=precision, epochs=1, steps=config.timing_steps,
                                     evaluate=False)
                    label = f"auto = {row['precision']}" if precision == "auto" else precision
                    record("streampick", label, threads, row["update_seconds"], row["update_cpu_seconds"],
                           row["other_cores"])
            if topaz is not None and data is not None:
                args = _topaz_train_args(data, config, start="scratch", epochs=1, steps=config.timing_steps,
                                         pi_args=["--pi", repr(matched_topaz_pi(bench, data, config))])
                meter = LoadMeter()
                run = Topaz(topaz.cli, threads).train(args, folder / f"timing-{repeat}-{threads}.log")
                record("topaz 0.3.20", "float32", threads, run.update_seconds, run.update_cpu_seconds,
                       meter.other_cores())
    for entry in entries.values():
        entry["median"] = _median([s for s in entry["per_repeat"] if s is not None])
        entry["cpu_median"] = _median([s for s in entry["cpu_per_repeat"] if s is not None])
    return list(entries.values())


def run_benchmark(config: TrainBenchConfig, folder: Path, say: Say = _stderr,
                  checkpoint: Path | None = None) -> dict:
    """The whole benchmark (see the module docstring); JSON-ready results.

    Phases in order: the primary AP rows (ours and Topaz from scratch), π robustness, update timing, then the
    optional rows.  ``checkpoint``, if given, gets the results so far as JSON after each phase.
    """
    with torch_threads(config.threads or torch.get_num_threads()):
        return _run_phases(config, folder, say, checkpoint)


def _run_phases(config: TrainBenchConfig, folder: Path, say: Say, checkpoint: Path | None) -> dict:
    from .bench import machine_description

    started = time.perf_counter()
    say(f"simulating {config.n} micrographs of {config.size}² in {folder}")
    bench = prepare_benchmark(folder / "data", config)
    topaz, skipped = find_topaz(config)
    results: dict = {"config": _config_dict(config), "machine": machine_description(), "data": bench.summary(),
                     "topaz_skipped": skipped, "threads": torch.get_num_threads(), "load_at_start": _loadavg()}
    data = None
    if topaz is not None:
        say("topaz preprocess (train and held-out halves)")
        data = prepare_topaz(topaz, bench, config, folder / "topaz")
        results["topaz_data"] = {"n_labels": data.n_labels, "train_pixels": data.train_pixels,
                                 "preprocess_s": data.preprocess_s,
                                 "p_observed_topaz": topaz_p_observed(data, config.radius),
                                 "literal_pi": literal_pi_check(topaz, bench, data, config, folder / "topaz")}
    elif skipped:
        say(skipped)
    results["pretrained_skipped"] = _pretrained_missing() if config.pretrained else None
    if results["pretrained_skipped"]:
        say(results["pretrained_skipped"])
        config = dataclasses.replace(config, pretrained=False)
    primary, extra = _row_plans(bench, config, topaz, data, folder)
    results["rows"] = [_run_plan(plan, say) for plan in primary]
    _save(results, checkpoint)
    results["pi_robustness"] = pi_robustness(bench, config, results["rows"][0], say)
    _save(results, checkpoint)
    results["timing"] = time_updates(bench, config, topaz, data, folder, say)
    _save(results, checkpoint)
    for plan in extra:
        results["rows"].append(_run_plan(plan, say))
        _save(results, checkpoint)
    results["wall_s"] = time.perf_counter() - started
    results["load_at_end"] = _loadavg()
    _save(results, checkpoint)
    return results


def _save(results: dict, path: Path | None) -> None:
    if path is not None:
        path.write_text(json.dumps(results, indent=2, default=str))


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


Plan = tuple[str, Callable[[], dict]]


def _row_plans(bench: Benchmark, config: TrainBenchConfig, topaz: Topaz | None, data: TopazData | None,
               folder: Path) -> tuple[list[Plan], list[Plan]]:
    """The held-out AP runs: ours and (if present) Topaz from scratch, and the optional ones (Topaz's default
    π; both engines from Topaz's pretrained resnet8_u32)."""
    def topaz_plan(start: str, pi_mode: str) -> Plan:
        return (f"topaz train from {start}, π {pi_mode}",
                functools.partial(train_topaz, topaz, bench, data, config, folder / f"topaz-{start}-{pi_mode}",
                                  start=start, pi_mode=pi_mode, curve=pi_mode == "matched"))

    with_topaz = topaz is not None and data is not None
    primary = [("streampick from scratch", functools.partial(train_ours, bench, config))]
    primary += [topaz_plan("scratch", "matched")] if with_topaz else []
    extra = [topaz_plan("scratch", "default")] if with_topaz and config.topaz_default_pi else []
    if config.pretrained:
        extra.append(("streampick from pretrained", functools.partial(train_ours, bench, config, start="pretrained")))
        extra += [topaz_plan("pretrained", "matched")] if with_topaz else []
    return primary, extra


def _run_plan(plan: Plan, say: Say) -> dict:
    label, run = plan
    say(f"{label} ...")
    row = run()
    say(f"{label}: held-out AP {row['ap']:.3f} ({row['wall_s']:.0f} s)")
    return row


def _pretrained_missing() -> str | None:
    """Why Topaz's pretrained resnet8_u32 cannot be loaded here (topaz-em not installed), or None."""
    from .errors import ModelError

    try:
        _start_model("pretrained", 0)
    except ModelError as err:
        return f"pretrained rows skipped: {err}"
    return None


def _config_dict(config: TrainBenchConfig) -> dict:
    out = dataclasses.asdict(config)
    out["topaz_cli"] = None if config.topaz_cli is None else str(config.topaz_cli)
    out["pi_factors"] = list(config.pi_factors)
    return out
