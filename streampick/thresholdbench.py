"""How far the automatic threshold is from the best one, on simulated data with known truth (issue 7, cap. 3).

    python -m streampick.thresholdbench OUT.json [--set a|b] [--quick] [--budget S] [--pretrained resnet8_u32.sav]

For each simulated dataset (``streampick simulate``: 2048² micrographs at 2 Å/px, 150 Å particles, ~200 per
micrograph, the count varying between micrographs): the first ``n_labelled`` micrographs are the user's,
with a random ``label_fraction`` of their particles labelled (jittered); the next ``n_eval`` are scored
against their **complete** truth and never seen before.  The labelled micrographs are split as the daemon
splits them (a quarter held out); a model is trained as ``streampick train`` trains it, and each threshold
rule of :mod:`streampick.train.threshold` (and the biased ones it replaces) is computed from the user's
micrographs only, with ``E`` = the mean true count on the labelled micrographs (what a user would count),
and with ``E`` off by ×0.7 and ×1.3.  Each threshold is then applied to the evaluation micrographs: its F1
against the complete truth, beside the best F1 any threshold reaches there (the oracle), and the gap
between them is the rule's error.  Rows are written to OUT.json after each model (``--budget`` stops
starting new models after that many seconds).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Case:
    seed: int
    label_fraction: float
    n_labelled: int = 10
    n_eval: int = 10
    size: int = 2048
    pixel_size: float = 2.0


@dataclass(frozen=True)
class Variant:
    name: str
    start: str  # "scratch" or a model spec
    epochs: int
    steps: int


CASES = {"a": [Case(31, 0.3), Case(32, 0.3), Case(33, 0.15), Case(34, 0.5)],
         # b: more seeds, and the daemon's situation: 5 labelled micrographs, one held out
         "b": [Case(41, 0.3, n_labelled=5), Case(42, 0.3, n_labelled=5), Case(43, 0.2, n_labelled=5), Case(44, 0.3),
               Case(45, 0.15), Case(46, 0.5)]}
QUICK_CASES = [Case(31, 0.3, n_labelled=4, n_eval=2, size=1024)]
DIAMETER = 150.0
WORKING = 8.0  # Å/px


def simulate(case: Case, folder: Path) -> Path:
    from .simulate import simulate_dataset

    out = folder / f"sim_{case.seed}"
    simulate_dataset(out, case.n_labelled + case.n_eval, seed=case.seed, shape=(case.size, case.size),
                     pixel_size=case.pixel_size, particle_diameter_a=DIAMETER, label_fraction=case.label_fraction)
    return out


def load(case: Case, sim: Path, device):
    """(labelled micrographs with their sparse labels, evaluation micrographs with their complete truth)."""
    from .train.data import load_training_data

    mics = sorted((sim / "micrographs").glob("*.mrc"))
    quiet = {"report": lambda line: None}
    labelled = load_training_data(mics[:case.n_labelled], [sim / "labels.txt"], target_pixel_size=WORKING,
                                  device=device, **quiet)
    truth = [sim / "truth" / f"{p.stem}.star" for p in mics[case.n_labelled:]]
    evaluation = load_training_data(mics[case.n_labelled:], truth, target_pixel_size=WORKING, device=device,
                                    **quiet)
    truth_counts = [len(load_truth(sim, p.stem)) for p in mics[:case.n_labelled]]  # what a user would count
    return labelled, evaluation, float(np.mean(truth_counts))


def load_truth(sim: Path, stem: str):
    """The complete truth of one micrograph."""
    from .io.coords import read_coordinates

    (picks,) = read_coordinates(sim / "truth" / f"{stem}.star").values()
    return picks


def start_model(variant: Variant, seed: int, device):
    import torch

    from .nets import Model, ModelCard, build, load_model

    if variant.start != "scratch":
        return load_model(variant.start, device)
    torch.manual_seed(seed)
    return Model(build("resnet8", 32).to(device), ModelCard(name="t", architecture="resnet8", units=32))


def rules(model, train_set, test_set, expected: float, held_truth: dict) -> tuple[dict, dict]:
    """Every rule's threshold, from the user's micrographs only; and the shipped rule's estimate beside the
    truth on the held-out micrographs (the PU estimate's error)."""
    from .evaluate import evaluate_sets
    from .train.loop import pick_prepared
    from .train.threshold import estimate_threshold

    held = pick_prepared(model, test_set, DIAMETER)
    trained = pick_prepared(model, train_set, DIAMETER)
    every = {**trained, **held}
    labels = {m.name: m.positives for m in [*train_set, *test_set]}
    names = list(held)
    radius = DIAMETER / 2 / test_set[0].prepared.micrograph.pixel_size
    out: dict[str, float | None] = {"logit 0": 0.0}
    for factor in (1.0, 0.7, 0.85, 1.15, 1.3):
        tag = "" if factor == 1.0 else f" E×{factor:g}"
        out[f"count all{tag}"] = estimate_threshold(every, labels, expected * factor, radius, held_out=names,
                                                    method="count").value
    for factor in (1.0, 0.7, 1.3):
        tag = "" if factor == 1.0 else f" E×{factor:g}"
        out[f"pu-f1 held-out{tag}"] = estimate_threshold(every, labels, expected * factor, radius, held_out=names,
                                                         method="pu-f1").value
    for factor in (1.0, 0.7, 1.3):
        tag = "" if factor == 1.0 else f" E×{factor:g}"
        out[f"lower{tag}"] = estimate_threshold(every, labels, expected * factor, radius, held_out=names).value
    out["pu-f1 held-out only"] = estimate_threshold(held, labels, expected, radius, method="pu-f1").value
    out["count held-out only"] = estimate_threshold(held, labels, expected, radius, method="count").value
    out["pu-f1 training"] = estimate_threshold(trained, labels, expected, radius, method="pu-f1").value
    out["labels-F1 held-out"] = evaluate_sets(held, {n: labels[n] for n in names}, radius).best_threshold  # biased
    estimate = estimate_threshold(every, labels, expected, radius, held_out=names)  # the shipped rule
    truth = evaluate_sets(held, held_truth, radius).at_threshold(estimate.value)
    return out, {**estimate.to_dict(), "held_out_truth": dict(zip(("precision", "recall", "f1", "n"), truth))}


def score(model, evaluation, thresholds: dict) -> dict:
    """F1 (precision, recall, picks per micrograph) against the complete truth at each threshold."""
    from .evaluate import evaluate_sets
    from .train.loop import pick_prepared

    picks = pick_prepared(model, evaluation, DIAMETER)
    truth = {m.name: m.positives for m in evaluation}
    radius = DIAMETER / 2 / evaluation[0].prepared.micrograph.pixel_size
    result = evaluate_sets(picks, truth, radius)
    row = {"ap": result.ap, "best_f1": result.best_f1, "best_threshold": result.best_threshold,
           "best_picks_per_micrograph": None, "at": {}}
    if result.best_threshold is not None:
        row["best_picks_per_micrograph"] = result.at_threshold(result.best_threshold)[3] / len(evaluation)
    for name, value in thresholds.items():
        if value is None:
            row["at"][name] = None
            continue
        p, r, f1, n = result.at_threshold(value)
        row["at"][name] = {"threshold": value, "precision": p, "recall": r, "f1": f1,
                           "picks_per_micrograph": n / len(evaluation)}
    return row


def run(out: Path, cases: list[Case], variants: list[Variant], budget: float, work: Path, device_name: str) -> list:
    from .device import select_device
    from .train.loop import TrainOptions, split_micrographs, train

    start = time.perf_counter()
    with ProcessPoolExecutor(min(len(cases), 8)) as pool:  # before CUDA is touched
        sims = list(pool.map(simulate, cases, [work] * len(cases)))
    say(f"simulated {len(cases)} datasets in {time.perf_counter() - start:.0f} s")
    device = select_device(device_name)
    loaded = [load(case, sim, device) for case, sim in zip(cases, sims)]
    rows: list[dict] = []
    for variant in variants:
        for case, sim, (labelled, evaluation, expected) in zip(cases, sims, loaded):
            if time.perf_counter() - start > budget:
                say(f"budget of {budget:.0f} s spent: stopping before {variant.name} on seed {case.seed}")
                return rows
            t0 = time.perf_counter()
            train_set, test_set = split_micrographs(labelled, test_fraction=0.25, seed=case.seed)
            model = start_model(variant, case.seed, device)
            options = TrainOptions(epochs=variant.epochs, steps=variant.steps, seed=case.seed)
            result = train(model, train_set, test_set, options, expected_particles=expected,
                           particle_diameter=DIAMETER, from_scratch=variant.start == "scratch")
            held_truth = {m.name: load_truth(sim, m.name) for m in test_set}
            thresholds, estimate = rules(result.model, train_set, test_set, expected, held_truth)
            row = {"case": asdict(case), "variant": asdict(variant), "expected": expected,
                   "best_epoch": result.best_epoch, "held_out_ap_labels": result.best_ap,
                   "n_held_out_labels": sum(len(m.positives) for m in test_set),
                   "estimate": estimate, **score(result.model, evaluation, thresholds),
                   "seconds": round(time.perf_counter() - t0, 1)}
            rows.append(row)
            counted = row["at"]["count all"]
            say(f"{variant.name} seed {case.seed}: AP {row['ap']:.3f}, best F1 {row['best_f1']:.3f}, count "
                f"rule F1 {counted['f1'] if counted else float('nan'):.3f} ({row['seconds']} s)")
            out.write_text(json.dumps({"device": str(device), "rows": rows}, indent=1) + "\n")
    return rows


def summary(rows: list[dict]) -> str:
    """A markdown table: per rule, the mean and worst gap to the oracle F1, and the mean F1."""
    names = [n for n in rows[0]["at"]] if rows else []
    lines = ["| rule | mean F1 | mean gap to best F1 | worst gap | picks/mic ÷ best's |", "|---|---|---|---|---|"]
    for name in names:
        gaps, f1s, ratio = [], [], []
        for row in rows:
            at = row["at"].get(name)
            f1 = at["f1"] if at else 0.0
            gaps.append(row["best_f1"] - f1)
            f1s.append(f1)
            if at and row["best_picks_per_micrograph"]:
                ratio.append(at["picks_per_micrograph"] / row["best_picks_per_micrograph"])
        lines.append(f"| {name} | {statistics.mean(f1s):.3f} | {statistics.mean(gaps):.3f} | {max(gaps):.3f} | "
                     f"{statistics.median(ratio) if ratio else float('nan'):.2f} |")
    return "\n".join(lines)


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streampick.thresholdbench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="JSON file for the rows")
    parser.add_argument("--set", choices=sorted(CASES), default="a", help="which datasets (a: 4 × 10 labelled "
                        "micrographs, 4 models each; b: 6 more, three of them with 5 labelled micrographs)")
    parser.add_argument("--quick", action="store_true", help="one tiny dataset, a few updates (a smoke test)")
    parser.add_argument("--budget", type=float, default=1e9, help="start no model after this many seconds")
    parser.add_argument("--pretrained", help="also fine-tune from this model (e.g. Topaz's resnet8_u32.sav)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--work", type=Path, help="folder for the simulated data (default: a temporary one)")
    args = parser.parse_args(argv)
    import tempfile

    if args.quick:
        cases, variants = QUICK_CASES, [Variant("scratch 1×3", "scratch", 1, 3)]
    else:
        cases = CASES[args.set]
        variants = [Variant("scratch 1×100", "scratch", 1, 100), Variant("scratch 5×200", "scratch", 5, 200)]
        if args.pretrained:
            variants.append(Variant("pretrained 5×200", args.pretrained, 5, 200))
        if args.set == "a":
            variants.append(Variant("scratch 10×500", "scratch", 10, 500))
    with tempfile.TemporaryDirectory() as tmp:
        rows = run(args.out, cases, variants, args.budget, args.work or Path(tmp), args.device)
    print(summary(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
