"""Real-data accuracy benchmark (issue 7): ``streampick bench --accuracy ../shared/data/real``.

For each real set with reference picks (:mod:`~streampick.realsets`): micrographs sorted by name, the first
half trains, the second half is scored, and nothing about the test half is used before it is scored.  The
sets are in pixels (their pixel sizes are approximate), so every micrograph is read at a nominal 1 px = 1 unit
and the working scale is a downsampling factor: the particle diameter in pixels over the particle's size in
working pixels ("across").  Rows:

* (a) Topaz's pretrained resnet16_u64 and (b) our shipped default model, with no labels: the "across" is
  chosen from :attr:`AccuracyConfig.acrosses` by the AP on the train half.
* (c) fine-tuned on the train half from a random 30 % of its reference picks (seed 0), at a fixed "across",
  with everything training does (reading, preprocessing, label sampling, updates, the automatic threshold)
  inside :attr:`AccuracyConfig.time_limit` seconds of wall time.
* the published pickers' picks where a set has them (EMPIAR-10017), scored the same way, without scores.

Columns on the test half: AP, max F1 with its precision and recall, F1 at the automatic threshold (the model
card's), recall within the top 1.5 × (reference count) picks of each micrograph, seconds per micrograph end
to end from the file (median), training wall time.  Matching is greedy within half the particle diameter.
:mod:`~streampick.accuracyreport` writes the Markdown, PR-curve plots and overlays.
"""
from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .config import DEFAULT_MODEL, DEFAULT_SMOOTHING
from .evaluate import EvalResult, evaluate_sets, match_greedy
from .io.micrograph import read_micrograph
from .nets.checkpoint import Model, load_model, prepare_for_inference, resolve_model_path
from .pick import Length, PickSettings, Prepared, pick_micrographs, prepare, score_and_extract
from .picks import Picks
from .realsets import SETS, RealSet, SetFiles, find_set, load_set, published_picks, sample_picks, split_halves
from .train.data import LabelledMicrograph, working_centres
from .train.loop import TrainOptions, automatic_threshold, train
from .train.threshold import ThresholdEstimate

log = logging.getLogger(__name__)
NOMINAL_PIXEL_SIZE = 1.0  # the sets are used in pixels: 1 px = 1 "Å" for every length below
FLOOR = -1e4  # keep every NMS candidate: AP and the top-k recall need the whole ranking


@dataclass(frozen=True)
class AccuracyConfig:
    """What the accuracy benchmark runs (defaults: the protocol of issue 7)."""

    root: Path
    sets: tuple[str, ...] = tuple(s.key for s in SETS)
    pretrained: str = "topaz:resnet16_u64"
    default_model: str = DEFAULT_MODEL
    # rows (a), (b): the particle size in working px with the best train-half AP
    acrosses: tuple[float, ...] = (8.0, 10.0, 12.0, 14.0, 16.0, 18.0, 20.0, 22.0, 24.0)
    finetune_start: str = "streampick-sim-resnet8-u32"
    finetune_across: float = 16.0
    label_fraction: float = 0.3
    seed: int = 0
    steps: int = 400
    batch_size: int = 256
    lr: float = 1e-3
    label_radius: float = 2.0  # working px (the particle 16 px across)
    smoothing: float = DEFAULT_SMOOTHING * 16.0  # working px (1.5): σ of the score map's smoothing, in (c)'s card
    time_limit: float = 100.0  # seconds for everything training does
    top_factor: float = 1.5  # recall within the top top_factor × (reference count) picks of each micrograph


@dataclass
class Row:
    """One row of a set's table: a pick set on the test half and how it scored."""

    label: str
    kind: str  # pretrained | default | finetuned | published
    picks: dict[str, Picks] = field(repr=False)
    result: EvalResult = field(repr=False)
    across: float | None = None
    threshold: float | None = None  # the automatic threshold (model card), if any
    at_threshold: tuple[float, float, float, int] | None = None  # P, R, F1, picks
    top_recall: float | None = None
    seconds_per_micrograph: float | None = None
    training_seconds: float | None = None
    train_ap_by_across: dict[float, float] = field(default_factory=dict)
    raw_reference_ap: float | None = None  # against the reference with its duplicate rows (10146)
    note: str = ""

    def summary(self) -> dict:
        res = self.result
        return {"label": self.label, "kind": self.kind, "across": self.across, "ap": res.ap,
                "max_f1": res.best_f1, "max_f1_precision": res.best_precision, "max_f1_recall": res.best_recall,
                "max_f1_threshold": res.best_threshold, "threshold": self.threshold,
                "at_threshold": None if self.at_threshold is None else dict(
                    zip(("precision", "recall", "f1", "picks"), self.at_threshold)),
                "top_recall": self.top_recall, "n_pred": res.n_pred, "n_ref": res.n_ref,
                "seconds_per_micrograph": self.seconds_per_micrograph, "training_seconds": self.training_seconds,
                "train_ap_by_across": {str(k): v for k, v in self.train_ap_by_across.items()},
                "raw_reference_ap": self.raw_reference_ap, "note": self.note}


@dataclass(frozen=True)
class Completeness:
    """Does the reference miss particles?  Image darkness where row (c)'s best picks are.

    The test micrographs at row (c)'s working scale, normalized, averaged over a disk of 0.4 particle
    diameters, in σ of the micrograph (particles are dark in every set here).  "Top picks": each
    micrograph's (reference count) best picks.  If the unmatched ones are as dark as the matched ones and
    far from the background, they sit on particles that the reference lacks, and a picker that finds every
    particle measures a precision of about ``1 - n_unmatched / n_top`` at the reference count.
    """

    matched: float  # median darkness at top picks that match a reference particle
    unmatched: float  # ... at top picks that match none
    background: float  # ... at random points ≥ one diameter from every reference particle and top pick
    n_top: int
    n_unmatched: int

    def verdict(self) -> str:
        """What the unmatched top picks look like: ``"particles"`` (within a quarter of the particle contrast
        of the matched picks), ``"background"`` (as close to the background), ``"mixed"`` (between), or
        ``"undecided"`` when particles and background differ by under 0.2 σ (hollow or faint particles: the
        disk average cannot tell them apart)."""
        contrast = self.background - self.matched
        if not contrast >= 0.2:  # also NaN
            return "undecided"
        if abs(self.unmatched - self.matched) <= 0.25 * contrast:
            return "particles"
        if abs(self.unmatched - self.background) <= 0.25 * contrast:
            return "background"
        return "mixed"


@dataclass
class SetResult:
    """A set's rows, files and what the report needs to draw."""

    files: SetFiles
    rows: list[Row]
    completeness: Completeness | None = None


def run_benchmark(config: AccuracyConfig, progress: Callable[[str], None] = log.info,
                  realsets: Sequence[RealSet] | None = None) -> list[SetResult]:
    """Run every configured set (see the module docstring); ``realsets`` replaces the sets named by
    ``config.sets`` (for other data laid out the same way)."""
    results = []
    for realset in realsets if realsets is not None else [find_set(key) for key in config.sets]:
        files = load_set(config.root, realset, report=progress)
        progress(f"{realset.title}: {len(files.train)} train / {len(files.test)} test micrographs, "
                 f"{sum(len(files.reference[n]) for n in files.names('test') if n in files.reference)} "
                 "test references")
        rows = [pretrained_row(config, files, config.pretrained, "(a) Topaz pretrained resnet16_u64",
                               "pretrained", progress),
                default_row(config, files, progress),
                finetuned_row(config, files, progress)]
        for picker, glob in realset.published:
            rows.append(published_row(config, files, picker, glob, progress))
        if realset.merge_duplicates_px:
            for row in rows:
                row.raw_reference_ap = evaluate_sets(row.picks, _on(files.raw_reference, files.names("test")),
                                                     realset.diameter_px / 2).ap
        finetuned = next(row for row in rows if row.kind == "finetuned")
        results.append(SetResult(files, rows, reference_completeness(files, finetuned.picks,
                                                                     config.finetune_across, config.seed)))
    return results


def validate_threshold_rules(config: AccuracyConfig, progress: Callable[[str], None] = log.info,
                             realsets: Sequence[RealSet] | None = None) -> dict[str, dict]:
    """The automatic-threshold rules compared on the train halves alone (the test halves are never read):
    within each set's train half, sorted by name, the first half is fine-tuned on as for row (c) (a random
    ``label_fraction`` of its reference picks), and the second half is picked and scored against its whole
    reference.  F1 at each rule's threshold (count, pu-f1 and their lower, the default) beside the best F1
    any threshold reaches there: how the default rule was chosen (:mod:`streampick.train.threshold`)."""
    out = {}
    for realset in realsets if realsets is not None else [find_set(key) for key in config.sets]:
        files = load_set(config.root, realset, report=progress)
        first, second = split_halves(files.train)
        within = dataclasses.replace(files, train=first, test=second)
        model, estimate, _, _ = finetune(config, within)
        result = score_test_half(config, within, model, config.finetune_across, "validation", "finetuned",
                                 estimate.value).result
        rules = {"count": estimate.count_value, "pu-f1": estimate.pu_f1_value, "lower": estimate.value}
        row = {"fine-tuned on": len(first), "scored on": len(second), "AP": result.ap, "best F1": result.best_f1,
               **{f"F1 {rule}": None if v is None else result.at_threshold(v)[2] for rule, v in rules.items()}}
        out[realset.key] = row
        progress(f"{realset.title}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                                  for k, v in row.items()))
    return out


# ---------------------------------------------------------------------------------------------- rows


def pretrained_row(config: AccuracyConfig, files: SetFiles, spec: str, label: str, kind: str,
                   progress: Callable[[str], None]) -> Row:
    """A model used as shipped: the scale best on the train half, then the test half picked end to end."""
    model = load_model(spec)
    diameter = files.realset.diameter_px
    train_ap = {}
    micrographs = [read_micrograph(p, NOMINAL_PIXEL_SIZE) for p in files.train]
    for across in config.acrosses:
        settings = _settings(diameter, across)
        picks = {m.path.stem: score_and_extract([prepare(m, diameter / across, _device(model))], model,
                                                settings)[0].picks for m in micrographs}
        train_ap[across] = evaluate_sets(picks, _on(files.reference, files.names("train")), diameter / 2).ap
        progress(f"  {label}: particle {across:g} px across, train-half AP {train_ap[across]:.3f}")
    across = max(train_ap, key=lambda a: (train_ap[a], -a))  # ties: the coarser, faster scale
    threshold = model.card.threshold if kind == "default" else None
    row = score_test_half(config, files, model, across, label, kind, threshold)
    row.train_ap_by_across = train_ap
    return row


def default_row(config: AccuracyConfig, files: SetFiles, progress: Callable[[str], None]) -> Row:
    """Row (b): the default model, or, when the default was trained on this set's labels, its twin trained
    the same way without them (``models/leave-one-out/``, models/make_simreal.py)."""
    key = files.realset.key
    spec, label = config.default_model, f"(b) default model {config.default_model}"
    if key in load_model(spec).card.metrics.get("real_sets_trained", []):
        spec = str(leave_one_out_path(config.default_model, key))
        label = f"(b) default model's twin trained without {key}"
    return pretrained_row(config, files, spec, label, "default", progress)


def leave_one_out_path(spec: str, key: str) -> Path:
    """Where the twin of model ``spec`` (a shipped name or a path) trained without real set ``key`` is:
    ``leave-one-out/<name>-without-<key>.pt`` beside the model's file.

    Raises:
        FileNotFoundError: it is missing (the bench must not score a set with a model that saw it).
    """
    model_file = resolve_model_path(spec)
    path = model_file.parent / "leave-one-out" / f"{model_file.stem}-without-{key}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the default model was trained on set {key}, and its twin trained "
                                "without it is missing (models/make_simreal.py builds it)")
    return path


def finetuned_row(config: AccuracyConfig, files: SetFiles, progress: Callable[[str], None]) -> Row:
    """Row (c): fine-tune on sparse train-half labels within the time limit, then pick the test half."""
    model, estimate, seconds, steps = finetune(config, files)
    progress(f"  (c) fine-tuned: {steps} updates, {seconds:.1f} s for everything training does")
    label = (f"(c) fine-tuned from {config.finetune_start.split(':')[-1]}, "
             f"{config.label_fraction:.0%} of train-half picks")
    row = score_test_half(config, files, model, config.finetune_across, label, "finetuned", estimate.value)
    row.training_seconds = seconds
    row.note = f"{steps} updates of {config.batch_size}"
    # the automatic threshold is the lower of the two rules' (training's default); each rule alone, for reference
    for rule, value in (("count", estimate.count_value), ("pu-f1", estimate.pu_f1_value)):
        if value is not None:
            row.note += f"; the {rule} rule alone: {value:.3g} (F1 {row.result.at_threshold(value)[2]:.3f})"
    return row


def finetune(config: AccuracyConfig, files: SetFiles) -> tuple[Model, ThresholdEstimate, float, int]:
    """Train from ``config.finetune_start`` on a random ``label_fraction`` of the train half's reference picks.

    Returns (model with its card threshold, the threshold estimate (``value`` is the card's: the lower rule),
    wall seconds of everything, updates done).  The
    expected particle count for π and the threshold is the train half's mean reference count, as a user
    would estimate it; nothing from the test half is read.
    """
    start = time.perf_counter()
    diameter, across = files.realset.diameter_px, config.finetune_across
    factor = diameter / across
    model = load_model(config.finetune_start)
    model = Model(model.net, dataclasses.replace(model.card, pixel_size=factor * NOMINAL_PIXEL_SIZE,
                                                 particle_diameter=diameter * NOMINAL_PIXEL_SIZE, threshold=None,
                                                 smoothing=config.smoothing * factor * NOMINAL_PIXEL_SIZE))
    device = _device(model)
    names = files.names("train")
    prepared = [prepare(read_micrograph(p, NOMINAL_PIXEL_SIZE), factor * NOMINAL_PIXEL_SIZE, device)
                for p in files.train]
    labels = sample_picks(files.reference, names, config.label_fraction, config.seed)
    train_set = [LabelledMicrograph(name, p, labels[name], Picks.empty()) for name, p in zip(names, prepared)]
    expected = float(np.mean([len(files.reference.get(n, Picks.empty())) for n in names]))
    spent = time.perf_counter() - start
    # the updates get what is left after loading and a margin for the threshold's scoring of the train half
    margin = 2.0 * len(prepared) * _score_seconds_estimate(prepared[0].image.numel())
    options = TrainOptions(epochs=1, steps=config.steps, batch_size=config.batch_size, lr=config.lr,
                           radius=config.label_radius, seed=config.seed,
                           time_limit=max(1.0, config.time_limit - spent - margin))
    result = train(model, train_set, [], options, expected_particles=expected, particle_diameter=diameter)
    estimate = automatic_threshold(result.model, train_set, [], expected_particles=expected,
                                   particle_diameter=diameter)
    trained = Model(result.model.net, dataclasses.replace(result.model.card, threshold=estimate.value))
    return trained, estimate, time.perf_counter() - start, result.history[-1].steps


def _score_seconds_estimate(pixels: int) -> float:
    """A generous guess of a resnet8_u32 scoring's seconds at this many working pixels on a 2-core CPU."""
    return 0.05 + pixels * 5e-7


def published_row(config: AccuracyConfig, files: SetFiles, picker: str, glob: str,
                  progress: Callable[[str], None]) -> Row:
    """A published picker's picks (no scores) on the test half."""
    picks = published_picks(config.root, files, glob, report=progress)
    test = files.names("test")
    picks = {n: picks.get(n, Picks.empty()) for n in test}
    result = evaluate_sets(picks, _on(files.reference, test), files.realset.diameter_px / 2)
    return Row(f"{picker} (published picks)", "published", picks, result,
               top_recall=top_recall(picks, _on(files.reference, test), files.realset.diameter_px / 2,
                                     config.top_factor))


def score_test_half(config: AccuracyConfig, files: SetFiles, model: Model, across: float, label: str, kind: str,
                    threshold: float | None) -> Row:
    """Pick the test half end to end from the files (read, downsample, normalize, score, extract) and score."""
    diameter = files.realset.diameter_px
    settings = dataclasses.replace(_settings(diameter, across), pixel_size=NOMINAL_PIXEL_SIZE)
    model = prepare_for_inference(model, _device(model))
    picks, seconds = {}, []
    for result in pick_micrographs(files.test, model, settings, _device(model)):
        if not hasattr(result, "picks"):
            raise RuntimeError(f"{result.path}: {result.error}")
        picks[result.path.stem] = result.picks
        seconds.append(sum(result.timings.values()))
    reference = _on(files.reference, files.names("test"))
    evaluation = evaluate_sets(picks, reference, diameter / 2)
    at = None if threshold is None else evaluation.at_threshold(threshold)
    return Row(label, kind, picks, evaluation, across=across, threshold=threshold, at_threshold=at,
               top_recall=top_recall(picks, reference, diameter / 2, config.top_factor),
               seconds_per_micrograph=statistics.median(seconds))


# ---------------------------------------------------------------------------------------------- measures


def top_recall(picks: Mapping[str, Picks], reference: Mapping[str, Picks], radius: float, factor: float
               ) -> float:
    """Recall when each micrograph keeps only its ``factor`` × (reference count) best picks (all picks of a
    score-less set)."""
    kept = {}
    for name, ref in reference.items():
        mine = picks.get(name, Picks.empty())
        if mine.has_scores:
            k = int(round(factor * len(ref)))
            mine = Picks(mine.x[:k], mine.y[:k], mine.score[:k])
        kept[name] = mine
    result = evaluate_sets(kept, dict(reference), radius)
    return result.n_tp / result.n_ref


def reference_completeness(files: SetFiles, picks: Mapping[str, Picks], across: float, seed: int = 0
                           ) -> Completeness:
    """The :class:`Completeness` check of ``picks`` on the test half (the image read at ``across``)."""
    diameter = files.realset.diameter_px
    factor = diameter / across
    disk_radius = 0.4 * across
    offsets = np.arange(-int(disk_radius), int(disk_radius) + 1)
    dy, dx = np.meshgrid(offsets, offsets, indexing="ij")
    disk = (dx**2 + dy**2 <= disk_radius**2).astype(np.float32)
    kernel = torch.from_numpy(disk / disk.sum())[None, None]
    rng = np.random.default_rng(seed)
    values: dict[str, list[np.ndarray]] = {"matched": [], "unmatched": [], "background": []}
    for path, name in zip(files.test, files.names("test")):
        prepared = prepare(read_micrograph(path, NOMINAL_PIXEL_SIZE), factor, torch.device("cpu"))
        smooth = torch.nn.functional.conv2d(prepared.image[None, None].float(), kernel,
                                            padding="same")[0, 0].numpy()
        reference = files.reference.get(name, Picks.empty())
        mine = picks.get(name, Picks.empty())
        mine = Picks(mine.x[:len(reference)], mine.y[:len(reference)], mine.score[:len(reference)])
        matched = match_greedy(mine, np.stack([reference.x, reference.y], axis=1), diameter / 2)
        values["matched"].append(_values_at(smooth, prepared, mine.x[matched], mine.y[matched]))
        values["unmatched"].append(_values_at(smooth, prepared, mine.x[~matched], mine.y[~matched]))
        height, width = prepared.micrograph.data.shape
        probe = rng.uniform([diameter / 2] * 2, [width - diameter / 2, height - diameter / 2], (400, 2))
        taken = np.concatenate([np.stack([reference.x, reference.y], 1), np.stack([mine.x, mine.y], 1)])
        if len(taken):
            far = np.min(np.hypot(probe[:, None, 0] - taken[None, :, 0], probe[:, None, 1] - taken[None, :, 1]),
                         axis=1) > diameter
            probe = probe[far]
        values["background"].append(_values_at(smooth, prepared, probe[:, 0], probe[:, 1]))
    median = {k: float(np.median(np.concatenate(v))) if sum(map(len, v)) else float("nan")
              for k, v in values.items()}
    n_unmatched = sum(map(len, values["unmatched"]))
    return Completeness(median["matched"], median["unmatched"], median["background"],
                        n_unmatched + sum(map(len, values["matched"])), n_unmatched)


def _values_at(image: np.ndarray, prepared: Prepared, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``image`` (at ``prepared``'s working scale) at the pixels nearest to ``x``, ``y`` (original pixels)."""
    rows, cols = working_centres(prepared, Picks.from_arrays(x, y)).T
    return image[rows, cols]


def _on(picks: Mapping[str, Picks], names: Sequence[str]) -> dict[str, Picks]:
    return {name: picks.get(name, Picks.empty()) for name in names}


def _settings(diameter: float, across: float) -> PickSettings:
    return PickSettings(downsample_factor=diameter / across, radius=Length(diameter / 2, "px"), floor=FLOOR)


def _device(model: Model) -> torch.device:
    return next(model.net.parameters()).device

