"""The training loop: Adam on minibatches of crops, particle-level AP on held-out micrographs after each epoch.

:func:`train` runs ``epochs`` × ``steps`` updates of a picker network with one of the PU objectives
(:mod:`~streampick.train.objectives`) on crops from :class:`~streampick.train.sampler.CropSampler`.  Before
the first update and after each epoch it picks the held-out micrographs with the engine itself
(:func:`~streampick.pick.score_and_extract` on their already-prepared images, with a copy of the model
prepared for inference, NMS radius = half the particle diameter) and measures the **particle-level** average
precision against their labels (greedy matching within half the particle diameter,
:func:`~streampick.evaluate.evaluate_sets`), or against a separate, more complete reference when one is
given.  The weights with the best held-out AP are
kept (the starting weights too: fine-tuning that does not help returns the start model); without held-out
micrographs the last epoch's weights are kept.  With ``TrainOptions.autoencoder`` W > 0 a training-only decoder
(:mod:`~streampick.train.autoencoder`) adds W × the crops' reconstruction error to the loss; it is not part of
the returned model.  :func:`automatic_threshold` then picks the user's micrographs with the kept model and
chooses its default score threshold (:mod:`~streampick.train.threshold`).

Splits are by micrograph (:func:`split_micrographs`, :func:`k_folds`); only labelled micrographs are ever
held out.  :func:`cross_validate` trains one model per fold, reports the mean ± sd of the folds' best APs,
then refits on all micrographs for the median of the folds' best epoch counts and returns that model: with
few labels every labelled micrograph is worth training on, and the fold models' APs are the honest estimate
of how well the refit model generalizes (the best fold's own AP would be an optimistic one).
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..device import scoring_dtype
from ..errors import ConfigError
from ..evaluate import evaluate_sets
from ..nets.checkpoint import Model, prepare_for_inference
from ..pick import Length, PickSettings, score_and_extract
from ..picks import Picks
from .autoencoder import CropDecoder, build_decoder, reconstruction_error
from .data import NEGATIVE, POSITIVE, UNLABELLED, LabelledMicrograph, label_map
from .objectives import OBJECTIVES, objective_loss, positive_fraction, unlabelled_positive_fraction
from .sampler import CropSampler
from .threshold import ThresholdEstimate, estimate_threshold


@dataclass(frozen=True)
class TrainOptions:
    """How to train (defaults: the paper's, method.md §3)."""

    objective: str = "ge-binomial"
    epochs: int = 10
    steps: int = 1000  # updates per epoch
    batch_size: int = 256
    lr: float = 2e-4
    radius: float = 3.0  # label disk radius, working pixels
    positive_fraction: float = 1 / 16  # share of labelled positives per minibatch
    slack: float | None = None  # GE term weight (default 1 for ge-binomial, 10 for ge-kl)
    negative_weight: float = 1.0  # weight of BCE(labelled negatives, 0)
    augment: bool = True  # random 90° rotations and flips
    max_angle: float = 0.0  # further random rotation within ± this many degrees
    precision: str = "auto"  # float32, bfloat16, or auto: bfloat16 where native (same AP, ~2x faster on CPU)
    seed: int = 0
    autoencoder: float = 0.0  # weight of the crop-reconstruction MSE (train.autoencoder); 0: no decoder at all
    time_limit: float | None = None  # seconds of updates after which training stops (the epoch ends early)


@dataclass(frozen=True)
class Prior:
    """The class prior: π, the labelled positive pixel fraction, and π_u = π − that fraction."""

    pi: float
    labelled_fraction: float
    pi_u: float


@dataclass
class EpochRecord:
    """One epoch's summary: mean reported loss (with the autoencoder, the PU loss + W × reconstruction MSE),
    held-out AP (None without held-out references), the wall time of its updates plus its evaluation, and
    the mean reconstruction MSE (None without the autoencoder).  Epoch 0 is the starting model, before any
    update."""

    epoch: int
    steps: int
    loss: float | None
    ap: float | None
    seconds: float
    reconstruction: float | None = None


@dataclass
class TrainResult:
    """What :func:`train` returns: the kept weights (best held-out AP, else the last) and the history."""

    model: Model
    best_epoch: int
    best_ap: float | None
    history: list[EpochRecord]
    prior: Prior
    seconds_per_step: float

    def metrics(self) -> dict:
        """The history as a JSON-ready dict for the model card."""
        metrics = {"held_out_ap": [r.ap for r in self.history], "loss": [r.loss for r in self.history],
                   "epoch_seconds": [round(r.seconds, 2) for r in self.history], "best_epoch": self.best_epoch,
                   "best_ap": self.best_ap, "seconds_per_step": round(self.seconds_per_step, 4)}
        if any(r.reconstruction is not None for r in self.history):
            metrics["reconstruction_mse"] = [r.reconstruction for r in self.history]
        return metrics


@dataclass
class Callbacks:
    """Progress hooks: ``step(done, loss)`` after every update, ``epoch(record)`` after each evaluation."""

    step: Callable[[int, float], None] = lambda done, loss: None
    epoch: Callable[[EpochRecord], None] = lambda record: None


def class_prior(train_set: Sequence[LabelledMicrograph], expected_particles: float, radius: float) -> Prior:
    """π from the expected particles per micrograph and the mean micrograph size at the working scale, and
    π_u from the fraction of training pixels the labelled particle disks cover.

    Raises:
        ConfigError: π ≥ 1, or the labels already cover π (the expected count is too low).
    """
    pixels = [m.image.numel() for m in train_set]
    try:
        pi = positive_fraction(expected_particles, radius, float(np.mean(pixels)))
        labelled = sum(int((label_map(m, radius) == POSITIVE).sum()) for m in train_set) / sum(pixels)
        return Prior(pi, labelled, unlabelled_positive_fraction(pi, labelled))
    except ValueError as err:
        raise ConfigError(f"expected particles per micrograph ({expected_particles:g}): {err}") from None


def held_out_ap(model: Model, test_set: Sequence[LabelledMicrograph], particle_diameter: float,
                reference: dict[str, Picks] | None = None) -> float | None:
    """Particle-level AP of ``model`` on the held-out micrographs (None when they have no reference picks).

    Picks are extracted as ``streampick pick`` would (fast scoring, NMS radius half the particle diameter)
    and matched greedily within half the particle diameter (in original pixels of the first micrograph).

    Args:
        model: the model; it is not changed (a copy prepared for inference is scored: eval mode, and
            channels_last on a CPU, the fast format for scoring).
        test_set: held-out micrographs with their labels.
        particle_diameter: Å.
        reference: reference picks by micrograph name; default each micrograph's labelled positives.
    """
    if not test_set:
        return None
    pred = pick_prepared(model, test_set, particle_diameter)
    if reference is None:
        ref = {m.name: m.positives for m in test_set}
    else:
        ref = {m.name: reference.get(m.name, Picks.empty()) for m in test_set}
    if sum(len(p) for p in ref.values()) == 0:
        return None
    radius = particle_diameter / 2 / test_set[0].prepared.micrograph.pixel_size
    return evaluate_sets(pred, ref, radius).ap


def pick_prepared(model: Model, micrographs: Sequence[LabelledMicrograph], particle_diameter: float
                  ) -> dict[str, Picks]:
    """Every candidate of ``model`` on each micrograph, by name, as ``streampick pick`` finds them (fast
    scoring, NMS radius half the particle diameter, the default floor), in original pixels.  ``model`` is not
    changed: a copy prepared for inference on the micrographs' device is scored."""
    if not micrographs:
        return {}
    settings = PickSettings(radius=Length(particle_diameter / 2))
    scorer = prepare_for_inference(Model(copy.deepcopy(model.net), model.card), micrographs[0].image.device)
    return {m.name: score_and_extract([m.prepared], scorer, settings)[0].picks for m in micrographs}


def automatic_threshold(model: Model, train_set: Sequence[LabelledMicrograph],
                        test_set: Sequence[LabelledMicrograph], *, expected_particles: float,
                        particle_diameter: float, method: str = "lower") -> ThresholdEstimate:
    """The model card's default threshold (:mod:`~streampick.train.threshold`; by default the lower of the count
    rule's, over every micrograph, training and held-out, and the PU-corrected F1's), with the PU-corrected
    precision/recall/F1 estimated on the held-out micrographs (on the training ones, optimistic, when none is
    held out).

    Raises:
        ValueError: no micrographs at all, or an unknown method.
    """
    micrographs = [*train_set, *test_set]
    if not micrographs:
        raise ValueError("no micrographs to choose a threshold on")
    picks = pick_prepared(model, micrographs, particle_diameter)
    labels = {m.name: m.positives for m in micrographs}
    radius = particle_diameter / 2 / micrographs[0].prepared.micrograph.pixel_size
    return estimate_threshold(picks, labels, expected_particles, radius, held_out=[m.name for m in test_set],
                              method=method)


def make_sampler(net: torch.nn.Module, train_set: Sequence[LabelledMicrograph], options: TrainOptions
                 ) -> CropSampler:
    """The crop sampler for ``net``'s receptive field over ``train_set``'s images and label maps."""
    return CropSampler([m.image for m in train_set], [label_map(m, options.radius) for m in train_set],
                       net.width, positive_fraction=options.positive_fraction,
                       exclude_labelled=options.objective != "nnpu", augment=options.augment,
                       max_angle=options.max_angle, seed=options.seed)


def train(model: Model, train_set: Sequence[LabelledMicrograph], test_set: Sequence[LabelledMicrograph],
          options: TrainOptions, *, expected_particles: float, particle_diameter: float,
          reference: dict[str, Picks] | None = None, callbacks: Callbacks | None = None,
          from_scratch: bool = False) -> TrainResult:
    """Train ``model`` in place and return the best weights by held-out AP (see the module docstring).

    Args:
        model: the starting model (pretrained or freshly built), on the training device.
        train_set: micrographs to draw examples from.
        test_set: held-out micrographs (may be empty: then the last epoch is kept).
        options: :class:`TrainOptions`.
        expected_particles: expected particles per micrograph (for π).
        particle_diameter: Å (NMS and matching radius of the held-out AP).
        reference: picks to evaluate the held-out micrographs against instead of their labels.
        callbacks: progress hooks.
        from_scratch: the model is freshly initialized: set its classifier bias to logit(π) first, so every
            pixel starts at the prior rather than at σ = 0.5 (whose huge GE penalty otherwise drives all
            logits far negative in the first steps, from which a fresh network recovers slowly).

    Returns:
        A :class:`TrainResult` whose ``model`` is a copy holding the kept weights, in eval mode.

    Raises:
        ConfigError: an unknown objective, or π out of range.
    """
    if options.objective not in OBJECTIVES:
        raise ConfigError(f"unknown objective '{options.objective}' (known: {', '.join(OBJECTIVES)})")
    callbacks = callbacks or Callbacks()
    prior = class_prior(train_set, expected_particles, options.radius)
    # contiguous weights: bf16 training is faster so (load_model gives channels_last on a CPU, for scoring)
    net = model.net.to(memory_format=torch.contiguous_format)
    if from_scratch:
        with torch.no_grad():
            net.classifier.bias.fill_(math.log(prior.pi / (1 - prior.pi)))
    device = next(net.parameters()).device
    dtype = scoring_dtype(device, options.precision)
    sampler = make_sampler(net, train_set, options)
    optimizer = torch.optim.Adam(net.parameters(), lr=options.lr)
    decoder = None
    if options.autoencoder > 0:  # training-only: beside the net, never in it (nor in its checkpoint)
        decoder = build_decoder(net, options.seed).train()
        optimizer.add_param_group({"params": list(decoder.parameters())})
    evaluate = functools.partial(held_out_ap, model, test_set, particle_diameter, reference)
    start = time.perf_counter()
    history = [EpochRecord(0, 0, None, evaluate(), time.perf_counter() - start)]
    callbacks.epoch(history[0])
    best = _Best()
    best.offer(history[0].ap, 0, model)
    step_seconds: list[float] = []
    net.train()
    deadline = None if options.time_limit is None else time.perf_counter() + options.time_limit
    for epoch in range(1, options.epochs + 1):
        start, losses, errors = time.perf_counter(), [], []
        for step in range(options.steps):
            if deadline is not None and time.perf_counter() >= deadline:
                break
            loss, error = _step(net, sampler, optimizer, options, prior, device, dtype, decoder)
            losses.append(loss)
            if error is not None:
                errors.append(error)
            callbacks.step((epoch - 1) * options.steps + step + 1, loss)
        if not losses and options.steps:  # the time limit fell at an epoch boundary
            break
        step_seconds.append((time.perf_counter() - start) / max(len(losses), 1))
        ap = evaluate()
        history.append(EpochRecord(epoch, len(losses), float(np.mean(losses)) if losses else None, ap,
                                   time.perf_counter() - start, float(np.mean(errors)) if errors else None))
        callbacks.epoch(history[-1])
        best.offer(ap, epoch, model)
        if len(losses) < options.steps:
            break
    if best.model is None:  # nothing held out: keep the last weights
        best.model, best.epoch = _snapshot(model), history[-1].epoch
    return TrainResult(best.model, best.epoch, best.ap, history, prior,
                       float(np.median(step_seconds)) if step_seconds else 0.0)


@dataclass
class _Best:
    """The best weights seen so far by held-out AP (the first of equals)."""

    ap: float | None = None
    epoch: int = 0
    model: Model | None = None

    def offer(self, ap: float | None, epoch: int, model: Model) -> None:
        if ap is not None and (self.ap is None or ap > self.ap):
            self.ap, self.epoch, self.model = ap, epoch, _snapshot(model)


def _snapshot(model: Model) -> Model:
    """A copy of ``model`` (weights and card) in eval mode, on the CPU, in the training's contiguous format (to
    pick with it at full speed, pass it through ``prepare_for_inference``)."""
    return Model(copy.deepcopy(model.net).cpu().eval(), copy.deepcopy(model.card))


def _step(net: torch.nn.Module, sampler: CropSampler, optimizer: torch.optim.Optimizer, options: TrainOptions,
          prior: Prior, device: torch.device, dtype: torch.dtype, decoder: CropDecoder | None = None
          ) -> tuple[float, float | None]:
    """One update on one minibatch; returns the reported loss (+ W × reconstruction MSE with a decoder) and
    the reconstruction MSE (None without a decoder)."""
    batch = sampler.sample(options.batch_size)
    crops, kind = batch.crops.to(device), batch.kind.to(device)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        if decoder is None:
            logits = net(crops).flatten(1)[:, 0].float()  # the receptive-field crop gives one output pixel
        else:
            features = net.embed(crops)
            logits = net.classifier(features).flatten(1)[:, 0].float()
            error = reconstruction_error(decoder, features, crops)
    loss = objective_loss(options.objective, logits[kind == POSITIVE], logits[kind == UNLABELLED],
                          logits[kind == NEGATIVE], pi=prior.pi, pi_u=prior.pi_u, slack=options.slack,
                          negative_weight=options.negative_weight)
    backward, report, reconstruction = loss.backward, float(loss.report), None
    if decoder is not None:
        backward = backward + options.autoencoder * error
        reconstruction = float(error.detach())
        report += options.autoencoder * reconstruction
    optimizer.zero_grad(set_to_none=True)
    backward.backward()
    optimizer.step()
    return report, reconstruction


# ---------------------------------------------------------------------------------------------- splits


def split_micrographs(data: Sequence[LabelledMicrograph], *, test_fraction: float = 0.2,
                      test_names: Sequence[str] | None = None, seed: int = 0
                      ) -> tuple[list[LabelledMicrograph], list[LabelledMicrograph]]:
    """Split by micrograph into (train, held out).

    Args:
        data: all micrographs.
        test_fraction: share of the *labelled* micrographs held out, drawn at random (at least one when the
            fraction is > 0 and two or more are labelled; micrographs without labels always train).
        test_names: hold out exactly these micrographs (by stem) instead.
        seed: seed of the draw (numpy).

    Raises:
        ConfigError: an unknown test name, or nothing left to train on.
    """
    if test_names is not None:
        names = {m.name for m in data}
        unknown = [n for n in test_names if n not in names]
        if unknown:
            raise ConfigError(f"--test-micrographs: unknown micrograph(s) {', '.join(unknown)}")
        held = set(test_names)
    else:
        labelled = [m.name for m in data if len(m.positives)]
        n = int(round(test_fraction * len(labelled)))
        n = max(n, 1) if test_fraction > 0 and len(labelled) >= 2 else n
        n = min(n, len(labelled) - 1)
        held = set(np.random.default_rng(seed).permutation(labelled)[:max(n, 0)].tolist())
    train_set = [m for m in data if m.name not in held]
    if not any(len(m.positives) for m in train_set):
        raise ConfigError("no labelled micrograph is left to train on after holding out the test micrographs")
    return train_set, [m for m in data if m.name in held]


def k_folds(data: Sequence[LabelledMicrograph], k: int, seed: int = 0) -> list[list[str]]:
    """``k`` disjoint sets of labelled micrograph names (shuffled, sizes differing by at most one).

    Raises:
        ConfigError: k < 2 or more folds than labelled micrographs.
    """
    labelled = [m.name for m in data if len(m.positives)]
    if k < 2 or k > len(labelled):
        raise ConfigError(f"--k-fold {k}: needs 2 ≤ K ≤ the number of labelled micrographs ({len(labelled)})")
    order = np.random.default_rng(seed).permutation(labelled).tolist()
    return [order[i::k] for i in range(k)]


@dataclass
class CrossValidation:
    """Per-fold results, the mean ± sd of their best held-out APs, and the model refit on all data."""

    folds: list[TrainResult]
    mean_ap: float | None
    sd_ap: float | None
    refit: TrainResult
    fold_names: list[list[str]] = field(default_factory=list)


def cross_validate(start: Callable[[], Model], data: Sequence[LabelledMicrograph], k: int,
                   options: TrainOptions, *, expected_particles: float, particle_diameter: float,
                   reference: dict[str, Picks] | None = None,
                   callbacks: Callable[[int], Callbacks] | None = None, from_scratch: bool = False
                   ) -> CrossValidation:
    """K-fold cross-validation by micrograph, then a refit on everything (see the module docstring).

    Args:
        start: returns a fresh starting model each time it is called (same weights every time).
        data: all micrographs.
        k: number of folds.
        options, expected_particles, particle_diameter, reference, from_scratch: as for :func:`train`.
        callbacks: ``callbacks(fold)`` gives the hooks of fold 0 … k−1, and of the refit (fold k).
    """
    folds = k_folds(data, k, options.seed)
    hooks = callbacks or (lambda fold: Callbacks())
    results = []
    for i, names in enumerate(folds):
        train_set, test_set = split_micrographs(data, test_names=names)
        results.append(train(start(), train_set, test_set, options, expected_particles=expected_particles,
                             particle_diameter=particle_diameter, reference=reference, callbacks=hooks(i),
                             from_scratch=from_scratch))
    aps = [r.best_ap for r in results if r.best_ap is not None]
    epochs = int(round(statistics.median(r.best_epoch for r in results)))
    refit = train(start(), list(data), [], dataclasses.replace(options, epochs=epochs),
                  expected_particles=expected_particles, particle_diameter=particle_diameter, callbacks=hooks(k),
                  from_scratch=from_scratch)
    return CrossValidation(results, statistics.mean(aps) if aps else None,
                           statistics.stdev(aps) if len(aps) > 1 else None, refit, folds)
