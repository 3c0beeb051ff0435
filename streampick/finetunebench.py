"""Pick latency while live fine-tuning runs (``streampick bench --stream finetune``).

One real daemon (``streampick run``, as :mod:`streampick.streambench` starts it) picks three phases of ``n``
micrographs landing one every ``interval`` seconds, exactly as in the latency mode:

1. *idle*: no training;
2. *training*: a fine-tuning round runs the whole time (sparse labels of six simulated micrographs the daemon
   picked first, dropped into its labels folder, then the control command ``train``; the round is long
   enough to outlast the phase and is checked to be running at its start and end);
3. *idle again*: after ``cancel-training``.

The result is the end-to-end latency of each phase (writer's completion → picks message received) and the
ratio of the training phase's median to the median of both idle phases together (target ≤ 1.25, issue 4);
measuring idle before and after makes slow drift of a shared machine visible instead of charging it to
training.  The trainer runs with the daemon's defaults (``training.threads`` 1, ``training.nice`` 19).
"""
from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path

from .streambench import (
    WRITE_MODES,
    Lander,
    Session,
    StreamSettings,
    _context,
    _finish,
    _lander_main,
    _num,
    _run_lines,
    _start,
    _verdict,
    describe,
    follow,
    land_file,
    latency_rows,
    stage_sources,
)

TARGET_RATIO = 1.25
LABEL_MICROGRAPHS = 6
PHASES = ("idle", "training", "idle_after")


def run_finetune(settings: StreamSettings) -> dict:
    """Run the three phases (see the module docstring) and return the result dict."""
    with Session(settings) as session:
        workspace = session.workspace
        names = [f"mic_{i:05d}" for i in range(3 * settings.n)]
        sources = [workspace.private / f"{name}.mrc" for name in names]
        stage_sources(sources, settings)
        labelled = _simulate_labelled(workspace.private / "labelled", settings)
        session.extra_config = {"training": {
            "auto": False, "expected_particles": labelled["expected_particles"],
            "particle_diameter": settings.diameter, "epochs": 50, "steps": 100}}
        started, t0 = _start(session)
        result = {"mode": "finetune", **_context(session, started), "labelled": labelled}
        _land_labelled(session, labelled)
        phases, checks = {}, {}
        for index, phase in enumerate(PHASES):
            if phase == "training":
                checks["start"] = _start_training(session, labelled)
            elif phase == "idle_after":
                checks["cancel"] = session.daemon.control("cancel-training")
            phases[phase] = _land_phase(session, sources[index * settings.n:(index + 1) * settings.n])
            if phase == "training":
                checks["end"] = _training_state(session)
        result.update(_finish(session, started, t0, all(p["complete"] for p in phases.values())))
    return {**result, "phases": phases, "checks": checks, "summary": summarize_phases(phases)}


def _simulate_labelled(folder: Path, settings: StreamSettings) -> dict:
    """Six simulated micrographs of half the edge (at least 1024²) over the same field of view (so the same
    size at the working scale), and their sparse labels (30 % of the particles)."""
    from .simulate import simulate_dataset

    size = max(settings.size // 2, 1024)
    meta = simulate_dataset(folder, LABEL_MICROGRAPHS, seed=settings.seed + 1, shape=(size, size),
                            pixel_size=settings.pixel_size * settings.size / size,
                            particle_diameter_a=settings.diameter)
    return {"folder": str(folder), "n": LABEL_MICROGRAPHS, "labels": meta["n_labels"], "size": size,
            "expected_particles": meta["n_truth"] / LABEL_MICROGRAPHS}


def _land_labelled(session: Session, labelled: dict) -> None:
    folder = Path(labelled["folder"])
    for path in sorted((folder / "micrographs").glob("*.mrc")):
        land_file(path, session.workspace.watched / path.name, "copy", 0.0)
    _wait(session, lambda: {f"sim_{i:04d}" for i in range(LABEL_MICROGRAPHS)} <=
          {m["name"] for m in session.subscriber.snapshot()}, 300, "the labelled micrographs picked")


def _start_training(session: Session, labelled: dict) -> dict:
    labels = session.workspace.out / "labels"
    labels.mkdir(exist_ok=True)
    shutil.copyfile(Path(labelled["folder"]) / "labels.txt", labels / "labels.txt")
    reply = session.daemon.control("train")
    _wait(session, lambda: (_training_state(session).get("progress") or {}).get("done", 0) > 0, 300,
          "the training round's first updates")
    return {"reply": reply, **_training_state(session)}


def _training_state(session: Session) -> dict:
    summary = session.daemon.control("training")
    progress = summary.get("progress") or {}
    return {"state": summary.get("state"), "round": summary.get("round"),
            "progress": {"done": progress.get("done", 0), "total": progress.get("total")},
            "time": time.time()}


def _land_phase(session: Session, sources: list[Path]) -> dict:
    settings = session.settings
    jobs = [(str(source), str(session.workspace.watched / source.name), WRITE_MODES[i % len(WRITE_MODES)],
             1.0 + i * settings.interval, settings.slow_write_s) for i, source in enumerate(sources)]
    session.lander = Lander(_lander_main, (jobs,))
    complete = follow(session, len(sources) * (settings.interval + settings.slow_write_s) + 180)
    rows = latency_rows(session.lander.landed, session.subscriber.snapshot())
    session.lander.close()
    return {"complete": complete, "rows": rows,
            "latency": describe([r["received"] - r["written"] for r in rows if r["received"] is not None])}


def _wait(session: Session, condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline or session.daemon.process.poll() is not None:
            raise RuntimeError(f"streampick bench --stream finetune: no {what}:\n{session.daemon.log_tail()}")
        time.sleep(0.2)


def summarize_phases(phases: dict) -> dict:
    """Median latency per phase and the training phase's median over the idle phases' joint median."""
    idle = [r["received"] - r["written"] for p in ("idle", "idle_after") for r in phases[p]["rows"]
            if r["received"] is not None]
    training = phases["training"]["latency"]["median"]
    idle_median = statistics.median(idle) if idle else None
    ratio = training / idle_median if training is not None and idle_median else None
    return {"idle_median_s": idle_median, "training_median_s": training, "ratio": ratio,
            "met": ratio is not None and ratio <= TARGET_RATIO}


def finetune_section(result: dict) -> list[str]:
    """The Markdown section of one result (see :func:`streampick.streambench.markdown_report`)."""
    settings, summary, checks, labelled = result["settings"], result["summary"], result["checks"], result["labelled"]
    start, end = checks.get("start", {}), checks.get("end", {})
    steps = (end.get("progress", {}).get("done", 0) or 0) - (start.get("progress", {}).get("done", 0) or 0)
    lines = [f"#### Latency while fine-tuning: `{settings['model']}`, 3 phases × {settings['n']} × "
             f"{settings['size']}² float32, one every {settings['interval']:g} s", "",
             f"- labels: {labelled['labels']} sparse labels (30 %) on {labelled['n']} simulated "
             f"{labelled['size']}² micrographs, expected particles {labelled['expected_particles']:.1f}; the round "
             "(resnet8_u32 start = the daemon's model, 50 × 100 updates of 256 crops, training.threads 1, "
             "training.nice 19) was running at the training phase's start and end: "
             f"{start.get('state')} → {end.get('state')}, {steps} updates during the phase",
             *_run_lines(result), "",
             "| phase | received | median s | p95 s | max s |", "|---|---|---|---|---|"]
    for phase in PHASES:
        stats = result["phases"][phase]["latency"]
        lines.append(f"| {phase.replace('_', ' ')} | {stats['n']} | {_num(stats['median'])} | {_num(stats['p95'])} "
                     f"| {_num(stats['max'])} |")
    lines += ["", "| target (issue 4) | measured | |", "|---|---|---|",
              f"| training median ≤ {TARGET_RATIO:g} × idle median | {_num(summary['ratio'], 2)} × "
              f"({_num(summary['training_median_s'], 2)} s vs {_num(summary['idle_median_s'], 2)} s) | "
              f"{_verdict(summary['met'])} |"]
    return lines
