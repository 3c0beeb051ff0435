"""Rebuild the shipped default model, streampick-sim-resnet8-u32, and measure it: every command, seed and set.

Run from the repository root, at low priority on a shared machine; WORK is a scratch folder (~8 GB) outside
the repository:

    nice -n 19 python3 models/make_default.py data WORK        # simulate every set (~3 min on 2 cores)
    nice -n 19 python3 models/make_default.py train WORK       # stage 1 (~16 min on 2 idle cores)
    nice -n 19 python3 models/make_default.py finetune WORK    # stage 2, from stage 1 (~5 min)
    nice -n 19 python3 models/make_default.py threshold WORK   # card.threshold: best F1 on held-out sims
    nice -n 19 python3 models/make_default.py evaluate WORK --real ../shared/data/real   # the card's table
    python3 models/make_default.py install WORK                # copy NAME.pt + NAME.card.json into models/

Data (all from `streampick simulate`, or the demo's own microscope, never the same seed twice):

* stage 1 (from scratch): the TRAIN sets below, one particle model per set (so 16 different particle shapes), particle
  diameter 115-190 Å, pixel size 0.8-1.7 Å/px, 4096² (3072² at 1.7 Å/px); 30-50 % of the particles labelled
  (jittered by up to 5 % of the diameter).  Defocus (0.8-3.0 µm), astigmatism, B-factor, ice thickness and
  roughness, particle density (5-55 % of the free ice), carbon edges, contamination, aggregates and clutter
  are drawn per micrograph by the simulator.  Micrograph `*_0004` of every even set is held out of the
  updates and scored against its full truth after each epoch to keep the best epoch.
* stage 2: fine-tuned from stage 1 on the same micrographs plus the SHELLS sets (hollow, apoferritin-like
  particles, half of them crowded), at a lower learning rate; two shell micrographs join the held-out ones.
* held-out simulated evaluation: the EVAL sets (other seeds and particle shapes), never seen in training.
* demo: exactly the micrographs `streampick demo` shows (its microscope, seed 0, 12 micrographs, a new
  particle shape on every micrograph).
* real (optional, `--real`): EMPIAR-10017 (CryoPPP reference), 10146 and 10028 from ../shared/data/real,
  converted to MRC in WORK (never into the repository).

Every model is picked with the particle about 18.75 px across at the working scale (8 Å/px for 150 Å, the
card's ratio), NMS radius half the diameter, a 40 Å edge margin, and scored with greedy matching within half
the diameter (``streampick.evaluate.evaluate_sets``, what `streampick evaluate` runs).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

NAME = "streampick-sim-resnet8-u32"
REPO = Path(__file__).resolve().parents[1]
WORKING_PIXEL_SIZE, CARD_DIAMETER = 8.0, 150.0  # the card: 150 Å particles at 8 Å/px (18.75 px across)

# (seed, particle diameter Å, pixel size Å, edge px, micrographs, labelled fraction)
TRAIN = [
    (101, 150, 1.0, 4096, 5, 0.4), (102, 150, 1.0, 4096, 5, 0.3), (103, 120, 1.0, 4096, 5, 0.5),
    (104, 180, 1.3, 4096, 5, 0.4), (105, 135, 0.8, 4096, 5, 0.3), (106, 165, 1.7, 3072, 5, 0.5),
    (107, 190, 1.2, 4096, 5, 0.4), (108, 125, 1.1, 4096, 5, 0.3), (109, 160, 1.0, 4096, 5, 0.5),
    (110, 140, 1.4, 4096, 5, 0.4), (111, 115, 0.9, 4096, 5, 0.3), (112, 170, 1.0, 4096, 5, 0.5),
    (113, 150, 1.2, 4096, 5, 0.4), (114, 185, 1.6, 3072, 5, 0.3), (115, 130, 1.0, 4096, 5, 0.5),
    (116, 155, 0.85, 4096, 5, 0.4),
]
# stage 2 adds hollow shells (apoferritin-like), half of them crowded: (seed, diameter Å, pixel Å, edge px,
# micrographs, labelled fraction, coverage low, coverage high)
SHELLS = [(121, 120, 1.0, 4096, 5, 0.4, 0.05, 0.55), (122, 130, 1.2, 4096, 5, 0.3, 0.35, 0.6),
          (123, 150, 1.0, 4096, 5, 0.5, 0.05, 0.55), (124, 170, 1.4, 4096, 5, 0.4, 0.35, 0.6),
          (125, 110, 0.9, 4096, 5, 0.3, 0.35, 0.6), (126, 190, 1.6, 3072, 5, 0.5, 0.05, 0.55)]
SHELL_EVAL = [(221, 140, 1.1, 4096, 4, 0.0, 0.2, 0.6)]
EVAL = [(201, 150, 1.0, 4096, 4, 0.0), (202, 130, 1.2, 4096, 4, 0.0), (203, 175, 0.9, 4096, 4, 0.0),
        (204, 160, 1.5, 4096, 4, 0.0)]
DEMO_SEED, DEMO_N, DEMO_DIAMETER = 0, 12, 150.0  # streampick demo's defaults

# stage 2: from stage 1, on stage 1's micrographs plus SHELLS
FINETUNE_OPTIONS = ["--target-pixel-size", str(WORKING_PIXEL_SIZE), "--particle-diameter", str(CARD_DIAMETER),
                    "-m", "streampick-sim-resnet8-u32.stage1.pt", "--objective", "ge-binomial", "--epochs", "3",
                    "--steps", "400", "--lr", "5e-4", "--seed", "2"]
TRAIN_OPTIONS = ["--target-pixel-size", str(WORKING_PIXEL_SIZE), "--particle-diameter", str(CARD_DIAMETER),
                 "--architecture", "resnet8", "--units", "32", "--objective", "ge-binomial",
                 "--epochs", "8", "--steps", "500", "--lr", "1e-3", "--seed", "1"]

# Real sets: (folder, micrograph glob, reference folder, pixel size Å, particle diameter px)
REAL = [("empiar10017_bgal_cryosegnet", "micrographs/*.jpg", "coords_cryoppp", 1.77, 108),
        ("empiar10146_apoferritin_autocryopicker", "micrographs/*.png", "coords", 1.7, 64),
        ("empiar10028_80s_promptsam", "micrographs/*.png", "coords", 5.4, 56)]
MODELS = [NAME, "topaz:resnet16_u64", "topaz:resnet8_u32"]


def streampick(*words: str) -> None:
    command = [sys.executable, "-m", "streampick", *words]
    print("+", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True)


def set_name(seed: int) -> str:
    return f"s{seed}"


# -------------------------------------------------------------------------------------------------- data

def make_data(work: Path) -> None:
    for seed, diameter, pixel, size, n, fraction in TRAIN + EVAL:
        streampick("simulate", str(work / "sim" / set_name(seed)), "--n", str(n), "--seed", str(seed),
                   "--size", str(size), "--pixel-size", str(pixel), "--diameter", str(diameter),
                   "--label-fraction", str(fraction))
    for seed, diameter, pixel, size, n, fraction, low, high in SHELLS + SHELL_EVAL:
        streampick("simulate", str(work / "sim" / set_name(seed)), "--n", str(n), "--seed", str(seed),
                   "--size", str(size), "--pixel-size", str(pixel), "--diameter", str(diameter),
                   "--label-fraction", str(fraction), "--particle-shape", "shell", "--coverage", str(low),
                   str(high))
    _merge_training_sets(work, "train", [seed for seed, *_ in TRAIN])
    _merge_training_sets(work, "train2", [seed for seed, *_ in TRAIN + SHELLS])
    _demo_data(work / "demo")


def _merge_training_sets(work: Path, folder: str, seeds: list[int]) -> None:
    """One folder of uniquely named links to every training micrograph, with its labels and full truth."""
    from streampick.io.coords import read_coordinates, write_star, write_table

    train = work / folder
    shutil.rmtree(train, ignore_errors=True)
    (train / "micrographs").mkdir(parents=True)
    labels, total, count = [], 0, 0
    for seed in seeds:
        source = work / "sim" / set_name(seed)
        for mrc in sorted((source / "micrographs").glob("*.mrc")):
            (train / "micrographs" / f"{set_name(seed)}_{mrc.name}").symlink_to(mrc.resolve())
        for name, picks in read_coordinates(source / "labels.txt").items():
            labels.append((f"{set_name(seed)}_{name}", picks))
        for star in sorted((source / "truth").glob("*.star")):
            (picks,) = read_coordinates(star).values()
            write_star(train / "truth" / f"{set_name(seed)}_{star.name}", picks)
            total, count = total + len(picks), count + 1
    write_table(train / "labels.txt", labels)
    (train / "expected_particles.txt").write_text(f"{total / count:.0f}\n")
    print(f"training set: {count} micrographs, {total} particles ({total / count:.0f} per micrograph), "
          f"{sum(len(p) for _, p in labels)} labelled")


def _demo_data(out: Path) -> None:
    """The demo's micrographs, exactly as its microscope renders them (written at once, not on a schedule)."""
    from streampick.microscope import run_microscope

    run_microscope(out / "micrographs", DEMO_N, interval_s=0.0, slow_write_s=0.0, seed=DEMO_SEED,
                   write_modes=("copy",), particle_diameter_a=DEMO_DIAMETER, truth_dir=out / "truth")


# ------------------------------------------------------------------------------------------------- train

STAGE1 = f"{NAME}.stage1.pt"


def held_out_names(shells: bool = False) -> list[str]:
    """Micrograph 0004 of every even-numbered set (stage 2: also of the 2nd and 5th shell sets)."""
    names = [f"{set_name(seed)}_sim_0004" for i, (seed, *_) in enumerate(TRAIN) if i % 2 == 0]
    return names + ([f"{set_name(seed)}_sim_0004" for seed, *_ in SHELLS[1::3]] if shells else [])


def _stage_words(work: Path, stage: int) -> list[str]:
    """``streampick train`` arguments of stage 1 (from scratch, compact particles) or 2 (fine-tuned from
    stage 1 with the hollow shells added)."""
    folder = "train" if stage == 1 else "train2"
    expected = (work / folder / "expected_particles.txt").read_text().strip()
    options = TRAIN_OPTIONS if stage == 1 else FINETUNE_OPTIONS
    return ["--micrographs", f"{folder}/micrographs/*.mrc", "--labels", f"{folder}/labels.txt",
            "-o", STAGE1 if stage == 1 else f"{NAME}.pt", "--expected-particles", expected, *options,
            "--test-micrographs", *held_out_names(shells=stage == 2), "--test-reference", f"{folder}/truth/*.star"]


def train(work: Path, stage: int) -> None:
    words = _stage_words(work, stage)
    for i, word in enumerate(words):  # expand the globs here, as a shell would
        if "*" in word:
            words[i:i + 1] = sorted(str(p.relative_to(work)) for p in work.glob(word))
    print("+ (in", work, ")", flush=True)
    subprocess.run([sys.executable, "-m", "streampick", "train", *words], check=True, cwd=work)


def train_command(work: Path, stage: int) -> str:
    return "streampick train " + " ".join(_stage_words(work, stage))


# -------------------------------------------------------------------------------------------- evaluation

def _scaled(diameter_a: float) -> tuple[str, str]:
    """Working pixel size and NMS radius that put a ``diameter_a`` particle at the card's 18.75 px."""
    return f"{WORKING_PIXEL_SIZE * diameter_a / CARD_DIAMETER:.3f}", f"{diameter_a / 2:.1f}A"


def _pick(model: str, micrographs: list[Path], out: Path, diameter_a: float) -> dict:
    from streampick.io.coords import read_coordinates

    target, radius = _scaled(diameter_a)
    if not (out / "candidates.txt").is_file():
        streampick("-q", "pick", *map(str, micrographs), "-o", str(out), "--model", model,
                   "--target-pixel-size", target, "--radius", radius, "--edge-margin", "40A")
    return read_coordinates(out / "candidates.txt")


def _read_refs(files: list[Path]) -> dict:
    from streampick.io.coords import read_coordinates

    refs = {}
    for path in files:
        for name, picks in read_coordinates(path).items():
            refs[Path(name).stem if name.endswith(".mrc") else name] = picks
    return refs


def _scaled_picks(picks: dict, factor: float) -> dict:
    from streampick.picks import Picks

    return {k: Picks.from_arrays(p.x / factor, p.y / factor, p.score) for k, p in picks.items()}


def _sets(work: Path, real: Path | None) -> list[dict]:
    """Every evaluation set: name, micrographs, reference files, diameter Å, match radius px."""
    sets = []
    for group, prefix, specs in (("held-out simulated", "sim", EVAL), ("held-out shells", "shells", SHELL_EVAL)):
        for seed, diameter, pixel, *_ in specs:
            folder = work / "sim" / set_name(seed)
            sets.append(dict(group=group, name=f"{prefix} {set_name(seed)} ({diameter} Å, {pixel} Å/px)",
                             mics=sorted((folder / "micrographs").glob("*.mrc")),
                             refs=sorted((folder / "truth").glob("*.star")), diameter=diameter,
                             radius=diameter / 2 / pixel))
    sets.append(dict(group="demo", name=f"demo (seed {DEMO_SEED}, {DEMO_N} micrographs)",
                     mics=sorted((work / "demo" / "micrographs").glob("*.mrc")),
                     refs=sorted((work / "demo" / "truth").glob("*.star")), diameter=DEMO_DIAMETER,
                     radius=DEMO_DIAMETER / 2))
    if real is not None:
        for folder, pattern, ref_dir, pixel, diameter_px in REAL:
            mics, refs = _convert_real(real / folder, pattern, ref_dir, pixel, work / "real" / folder)
            sets.append(dict(group="real", name=folder, mics=mics, refs=refs, diameter=diameter_px * pixel,
                             radius=diameter_px / 2))
    return sets


def _convert_real(source: Path, pattern: str, ref_dir: str, pixel: float, out: Path) -> tuple[list, list]:
    """8/16-bit images → float32 MRC with the pixel size (array frame kept: the CSVs are in it)."""
    import mrcfile
    from PIL import Image

    from streampick.io.coords import read_coordinates, write_star

    mics, refs = [], []
    for image in sorted(source.glob(pattern)):
        stem = image.name.split(".bin_avg")[0] if ".bin_avg" in image.name else image.stem
        safe = stem.replace(".", "_")
        mrc, star = out / "micrographs" / f"{safe}.mrc", out / "reference" / f"{safe}.star"
        if not mrc.is_file():
            mrc.parent.mkdir(parents=True, exist_ok=True)
            data = np.asarray(Image.open(image), dtype=np.float32)
            with mrcfile.new(mrc, overwrite=True) as handle:
                handle.set_data(data)
                handle.voxel_size = pixel
        (picks,) = read_coordinates(source / ref_dir / f"{stem}.csv").values()
        write_star(star, picks)
        mics.append(mrc)
        refs.append(star)
    return mics, refs


def evaluate(work: Path, real: Path | None, models: list[str]) -> dict:
    from streampick.evaluate import evaluate_sets
    from streampick.nets import load_model

    table = {}
    for spec in models:
        model = str(work / f"{NAME}.pt") if spec == NAME else spec
        threshold = load_model(model).card.threshold
        rows, pooled = {}, {}
        for s in _sets(work, real):
            out = work / "picks" / spec.replace(":", "_") / s["name"].split(" (")[0].replace(" ", "_")
            picks = _pick(model, s["mics"], out, s["diameter"])
            refs = _read_refs(s["refs"])
            result = evaluate_sets(picks, refs, s["radius"])
            rows[s["name"]] = _row(result, threshold, len(refs))
            if s["group"] == "held-out simulated":  # pool after scaling each set's radius to 1
                scale = s["radius"]
                pooled.update({f"{s['name']}/{k}": v for k, v in _scaled_picks(picks, scale).items()})
                pooled.setdefault("_refs", {}).update(
                    {f"{s['name']}/{k}": v for k, v in _scaled_picks(refs, scale).items()})
            print(f"{spec:24s} {s['name']:48s} AP {result.ap:.3f}  best F1 {result.best_f1:.3f} at "
                  f"{result.best_threshold:.2f}", flush=True)
        refs = pooled.pop("_refs")
        result = evaluate_sets(pooled, refs, 1.0)
        rows["held-out simulated, pooled"] = _row(result, threshold, len(refs))
        print(f"{spec:24s} {'held-out simulated, pooled':48s} AP {result.ap:.3f}  best F1 "
              f"{result.best_f1:.3f} at {result.best_threshold:.2f}", flush=True)
        table[spec] = rows
    (work / "evaluation.json").write_text(json.dumps(table, indent=1) + "\n")
    return table


def _row(result, threshold: float | None, n_micrographs: int) -> dict:
    row = {"ap": round(result.ap, 3), "best_f1": round(result.best_f1, 3),
           "best_threshold": round(result.best_threshold, 2), "n_micrographs": n_micrographs,
           "n_reference": result.n_ref}
    if threshold is not None:  # the picks a STAR file holds: score >= the card's threshold
        precision, recall, f1, n = result.at_threshold(threshold)
        row["at_card_threshold"] = {"threshold": threshold, "precision": round(precision, 3),
                                    "recall": round(recall, 3), "f1": round(f1, 3), "n_picks": n}
    return row


# ------------------------------------------------------------------------------------------------- cards

def set_threshold(work: Path) -> None:
    """card.threshold = the score of best F1 against the full truth of the held-out simulated sets (pooled)."""
    table = evaluate(work, None, [NAME])[NAME]
    pooled = table["held-out simulated, pooled"]
    demo = next(v for k, v in table.items() if k.startswith("demo"))
    _edit_card(work, threshold=round(pooled["best_threshold"], 2), metrics={
        "threshold_method": "score of the best F1 against the full simulated truth, pooled over the held-out "
                            "simulated sets (seeds 201-204, 16 micrographs; greedy matching within half the "
                            "diameter, particle at 18.75 px)",
        "held_out_simulated": {k: v for k, v in table.items() if k.startswith("sim ") or "pooled" in k},
        "demo": demo})


def _edit_card(work: Path, threshold: float | None = None, metrics: dict | None = None) -> None:
    from streampick.nets import load_model, save_model

    path = work / f"{NAME}.pt"
    model = load_model(path)
    card = model.card
    if threshold is not None:
        card.threshold = threshold
    card.metrics = {**card.metrics, **(metrics or {})}
    card.command = f"stage 1: {train_command(work, 1)}; stage 2: {train_command(work, 2)}"
    card.training_data = (
        f"simulated only: {sum(s[4] for s in TRAIN + SHELLS)} micrographs from `streampick simulate` "
        f"(models/make_default.py). Stage 1, from scratch: seeds {TRAIN[0][0]}-{TRAIN[-1][0]}, 16 compact "
        "particle shapes, diameter 115-190 Å, pixel size 0.8-1.7 Å/px, defocus 0.8-3.0 µm, ice 250-600 Å, "
        "5-55 % coverage, carbon edges, contamination, aggregates and clutter drawn per micrograph. Stage 2, "
        f"fine-tuned from stage 1 on the same plus seeds {SHELLS[0][0]}-{SHELLS[-1][0]}: 6 hollow-shell "
        "(apoferritin-like) shapes, diameter 110-190 Å, half of them crowded (35-60 % coverage). 30-50 % of "
        f"particles labelled; {len(held_out_names(shells=True))} micrographs held out for epoch selection against "
        "their full truth. No real micrographs.")
    save_model(path, model)


def install(work: Path) -> None:
    for suffix in (".pt", ".card.json"):
        shutil.copyfile(work / f"{NAME}{suffix}", REPO / "models" / f"{NAME}{suffix}")
    print(f"installed {NAME} into {REPO / 'models'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["data", "train", "finetune", "threshold", "evaluate", "install"])
    parser.add_argument("work", type=Path, help="scratch folder outside the repository")
    parser.add_argument("--real", type=Path, help="../shared/data/real, for the real-data rows")
    parser.add_argument("--models", nargs="+", default=MODELS)
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.step == "data":
        make_data(work)
    elif args.step in ("train", "finetune"):
        train(work, 1 if args.step == "train" else 2)
    elif args.step == "threshold":
        set_threshold(work)
    elif args.step == "evaluate":
        table = evaluate(work, args.real.resolve() if args.real else None, args.models)
        _edit_card(work, metrics={"evaluation": table[NAME]} if NAME in table else None)
    else:
        install(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
