"""Train a picker from sparse particle picks: streampick train --micrographs M... --labels L... -o model.pt

Positive-unlabeled learning (Bepler et al. 2019; objectives GE-binomial (default), GE-KL, PN, nnPU): each
labelled centre marks a disk of --radius working pixels as particle, every other pixel is unlabelled, and the
network learns from receptive-field crops, with π = expected particles per micrograph × disk pixels /
micrograph pixels.  Micrographs are downsampled and normalized once, as `streampick pick` does, at
--target-pixel-size (or --downsample).  Micrographs: MRC, or single-image TIFF, PNG or JPEG (these need
--pixel-size).  Labels: RELION STAR (3.0 or 3.1+, per micrograph or combined), cryoSPARC .cs, crYOLO .cbox,
EMAN/crYOLO .box, Topaz tables or CSV with an x/y header, matched to micrographs by name (extra suffixes and
dots allowed: May08_03.15.02.csv labels May08_03.15.02.bin_avg.png); --flip-y for labels whose y runs the
other way; --negatives adds junk picks (ice, carbon edge, aggregates) as labelled negatives.  Faulty label
files, unknown micrographs and coordinates outside the image are reported and skipped.

Held-out micrographs (--test-fraction, --test-micrographs, or --k-fold K) are picked after each epoch and
the particle-level AP against their labels (or --test-reference) is reported; the best epoch's weights are
written with a model card (working pixel size, particle diameter, data, AP per epoch, objective, π, command)
and a default score threshold for `streampick pick` and the daemon: by default the lower of the score at
which the kept model's picks number --expected-particles per micrograph on all micrographs given and the
maximum of a PU-corrected F1 (--threshold-method; docs/training.md, "Automatic threshold").
With --k-fold, one model per fold gives the AP mean ± sd, and the model written is refit on all
micrographs for the folds' median best epoch count.

Start from --model (a streampick .pt, topaz:resnet8_u32, a Topaz .sav) or from scratch (default: resnet8,
32 units).  Example:
    streampick train --micrographs sim/micrographs/*.mrc --labels sim/labels.txt -o model.pt \\
        --target-pixel-size 8 --particle-diameter 150 --expected-particles 60
"""
from __future__ import annotations

import argparse
import logging
import shlex
from pathlib import Path

from ..config import DEFAULT_SMOOTHING
from ..train.progress import JsonProgress, exit_when_stdin_closes
from ._types import non_negative, positive_float, positive_int

log = logging.getLogger(__name__)


def add_args(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument("--micrographs", nargs="+", type=Path, required=True, metavar="IMAGE",
                      help="micrographs: MRC, or single-image TIFF, PNG, JPEG (with --pixel-size)")
    data.add_argument("--labels", nargs="+", type=Path, required=True, metavar="FILE",
                      help="particle picks (RELION STAR, cryoSPARC .cs, crYOLO .cbox, .box, Topaz table, CSV with "
                           "an x/y header; merged), matched to micrographs by name")
    data.add_argument("--negatives", nargs="+", type=Path, default=[], metavar="FILE",
                      help="junk picks used as labelled negatives (same formats)")
    data.add_argument("-o", "--output", type=Path, required=True, help="the model file to write (.pt)")
    scale = data.add_mutually_exclusive_group()
    scale.add_argument("--target-pixel-size", type=positive_float, help="working pixel size in Å")
    scale.add_argument("--downsample", type=positive_float, help="downsampling factor instead")
    data.add_argument("--pixel-size", type=positive_float,
                      help="Å per pixel of the micrographs: overrides MRC headers; needed for TIFF, PNG, JPEG")
    data.add_argument("--flip-y", action="store_true",
                      help="the pick files' y runs the other way: map y to H - 1 - y (H = image height) for the "
                           "labels, negatives and --test-reference (e.g. EMPIAR-10017's STARs on its JPEGs)")
    data.add_argument("--particle-diameter", type=positive_float,
                      help="Å: NMS and matching radius for the held-out AP (default: the start model's card)")
    data.add_argument("--smoothing", type=non_negative, metavar="Å",
                      help="σ (Å) of the Gaussian smoothing of the score map before NMS, stored in the card and "
                           "used by the held-out AP, the threshold, pick and the daemon (default: the start "
                           "model's card, or 3/32 x the particle diameter when it has none; 0: none; "
                           "docs/training.md, Score smoothing)")
    data.add_argument("--expected-particles", type=positive_float, required=True,
                      help="expected particles per micrograph, for π (a rough count is enough: 0.5-1.5x "
                           "changes little; it cannot be estimated from sparse labels)")
    model = parser.add_argument_group("model")
    start = model.add_mutually_exclusive_group()
    start.add_argument("-m", "--model", help="start from: a .pt checkpoint, topaz:resnet8_u32, a Topaz .sav")
    start.add_argument("--architecture", default=None,
                       help="train from scratch: resnet8 (default), resnet16, conv31, conv63, conv127")
    model.add_argument("--units", type=positive_int, default=32, help="units of a new model (default 32)")
    fit = parser.add_argument_group("training")
    fit.add_argument("--objective", choices=["ge-binomial", "ge-kl", "pn", "nnpu"], default="ge-binomial")
    fit.add_argument("--radius", type=non_negative, default=3.0, help="label disk radius, working px (3)")
    fit.add_argument("--epochs", type=positive_int, default=10)
    fit.add_argument("--steps", type=positive_int, default=1000, help="updates per epoch (1000)")
    fit.add_argument("--batch-size", type=positive_int, default=256)
    fit.add_argument("--lr", type=positive_float, default=2e-4)
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--positive-fraction", type=positive_float, default=1 / 16,
                     help="share of labelled positives per minibatch (1/16)")
    fit.add_argument("--slack", type=positive_float, help="GE term weight (ge-binomial 1, ge-kl 10)")
    fit.add_argument("--negative-weight", type=non_negative, default=1.0, help="weight of BCE(negatives, 0)")
    fit.add_argument("--max-angle", type=non_negative, default=0.0,
                     help="random rotation within ± degrees on top of 90° turns and flips (0: none)")
    fit.add_argument("--no-augment", action="store_true", help="no rotations or flips")
    fit.add_argument("--autoencoder", type=non_negative, default=0.0, metavar="W",
                     help="add W x the mean squared error of reconstructing each training crop from its feature "
                          "vector (a training-only decoder, not saved in the model), like Topaz's --autoencoder: a "
                          "regularizer meant for very few labels. 0: off (default). Costs ~1.5x per update; on "
                          "simulated data with 5-90 labels W = 0.3-3 did not change the best held-out AP. Topaz "
                          "sums the error over its 63x63 reconstruction: Topaz's W x 3969 = ours")
    fit.add_argument("--time-limit", type=positive_float, metavar="SECONDS",
                     help="stop updating after this many seconds of training (the epoch under way ends there and "
                          "is evaluated); default: no limit")
    fit.add_argument("--precision", choices=["auto", "float32", "bfloat16"], default="auto",
                     help="training precision (auto: bfloat16 where the hardware is native)")
    fit.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    split = parser.add_argument_group("held-out evaluation").add_mutually_exclusive_group()
    split.add_argument("--test-fraction", type=non_negative, default=0.2,
                       help="share of labelled micrographs held out (0.2; 0: none, keep the last epoch)")
    split.add_argument("--test-micrographs", nargs="+", metavar="NAME", help="hold out these micrographs")
    split.add_argument("--k-fold", type=positive_int, metavar="K", help="K-fold cross-validation, then refit")
    parser.add_argument("--threshold-method", choices=["lower", "count", "pu-f1"], default="lower",
                        help="how the card's default threshold is chosen from the kept model's picks (docs/"
                             "training.md, Automatic threshold): count: the score at which the picks number "
                             "--expected-particles per micrograph over all micrographs given; pu-f1: the maximum "
                             "of a PU-corrected F1 (recall on the held-out labels); lower (default): the lower "
                             "of the two, i.e. the more picks")
    parser.add_argument("--test-reference", nargs="+", type=Path, metavar="FILE",
                        help="evaluate held-out micrographs against these picks instead of their labels")
    run = parser.add_argument_group("running")
    run.add_argument("--threads", type=positive_int, help="CPU threads for torch (default: torch's choice)")
    run.add_argument("--progress", choices=["bar", "json"], default="bar",
                     help="bar (default) or json: one JSON object per line on stdout (start, step, epoch, "
                          "warning, done), for programs that drive training, such as the daemon")
    run.add_argument("--exit-with-stdin", action="store_true",
                     help="exit as soon as stdin closes (the daemon's trainer: dies with its parent)")


def main(args: argparse.Namespace) -> int:
    from ..device import select_device
    from ..train.data import load_training_data
    from ..train.loop import TrainOptions

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.exit_with_stdin:
        exit_when_stdin_closes()
    json_progress = JsonProgress(args.epochs * args.steps) if args.progress == "json" else None
    device = select_device(args.device)
    start = _start_model(args, device)
    target, diameter = _scale_and_diameter(args, start.card)
    if args.smoothing is not None:
        start.card.smoothing = args.smoothing
    elif not start.card.smoothing:
        start.card.smoothing = DEFAULT_SMOOTHING * diameter
    data = load_training_data(args.micrographs, args.labels, args.negatives, target_pixel_size=target,
                              downsample=args.downsample, pixel_size=args.pixel_size, device=device,
                              flip_y=args.flip_y, **({"report": json_progress.warning} if json_progress else {}))
    options = TrainOptions(
        objective=args.objective, epochs=args.epochs, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
        radius=args.radius, positive_fraction=args.positive_fraction, slack=args.slack,
        negative_weight=args.negative_weight, augment=not args.no_augment, max_angle=args.max_angle,
        precision=args.precision, seed=args.seed, autoencoder=args.autoencoder,
        time_limit=args.time_limit)
    reference = _read_reference(args.test_reference, data, args.flip_y) if args.test_reference else None
    if args.k_fold:
        outcome, extra, n_test = _cross_validate(args, device, data, options, diameter, reference, json_progress)
    else:
        outcome, extra, n_test = _train_split(args, start, data, options, diameter, reference, json_progress)
    threshold = _threshold(args, outcome.model, data, set(extra.get("test_micrographs", [])), diameter)
    card = _save(args, outcome, data, n_test, diameter, extra, threshold)
    if json_progress:
        json_progress.emit("done", output=str(args.output), name=card.name, version=card.version,
                           start_ap=outcome.history[0].ap, best_ap=outcome.best_ap, best_epoch=outcome.best_epoch,
                           threshold=card.threshold)
    return 0


def _start_model(args: argparse.Namespace, device):
    """The starting model: loaded (--model), or built fresh from a seeded generator."""
    import torch

    from ..nets import Model, ModelCard, build, load_model

    if args.model:
        return load_model(args.model, device)
    architecture = args.architecture or "resnet8"
    torch.manual_seed(args.seed)
    net = build(architecture, args.units)
    card = ModelCard(name=args.output.stem, architecture=architecture, units=args.units,
                     batch_norm=architecture.startswith("conv"), source="scratch")
    return Model(net.to(device), card)


def _scale_and_diameter(args: argparse.Namespace, card) -> tuple[float | None, float]:
    from ..errors import ConfigError

    target = args.target_pixel_size
    if target is None and args.downsample is None:
        target = card.pixel_size
        if target is None:
            raise ConfigError("train: give --target-pixel-size or --downsample (the start model's card has no "
                              "working pixel size)")
    diameter = args.particle_diameter or card.particle_diameter
    if diameter is None:
        raise ConfigError("train: give --particle-diameter in Å (the start model's card has none)")
    return target, diameter


def _read_reference(paths: list[Path], data, flip_y: bool) -> dict:
    from ..train.data import read_labels

    shapes = {m.name: tuple(m.prepared.micrograph.data.shape) for m in data}
    return read_labels(paths, shapes, what="test reference", flip_y=flip_y)


def _train_split(args, start, data, options, diameter, reference, json_progress):
    from ..train.loop import split_micrographs, train

    train_set, test_set = split_micrographs(data, test_fraction=args.test_fraction,
                                            test_names=args.test_micrographs, seed=args.seed)
    log.info("training on %d micrographs, %d held out: %s", len(train_set), len(test_set),
             ", ".join(m.name for m in test_set) or "none")
    if json_progress:
        json_progress.emit("start", train=[m.name for m in train_set], test=[m.name for m in test_set],
                           total_steps=json_progress.total)
    with json_progress or _Bar(options, folds=1) as bar:
        result = train(start, train_set, test_set, options, expected_particles=args.expected_particles,
                       particle_diameter=diameter, reference=reference, callbacks=bar.callbacks(0),
                       from_scratch=not args.model)
    _print_history(result.history)
    extra = {"train_micrographs": [m.name for m in train_set], "test_micrographs": [m.name for m in test_set]}
    return result, extra, len(test_set)


def _cross_validate(args, device, data, options, diameter, reference, json_progress):
    from ..train.loop import cross_validate

    def fresh():
        return _start_model(args, device)

    with json_progress or _Bar(options, folds=args.k_fold + 1) as bar:
        cv = cross_validate(fresh, data, args.k_fold, options, expected_particles=args.expected_particles,
                            particle_diameter=diameter, reference=reference, callbacks=bar.callbacks,
                            from_scratch=not args.model)
    for i, fold in enumerate(cv.folds):
        log.info("fold %d: best held-out AP %s at epoch %d", i + 1, _fmt(fold.best_ap), fold.best_epoch)
    sd = f" ± {cv.sd_ap:.3f}" if cv.sd_ap is not None else ""
    log.info("%d-fold held-out AP %s%s; refit on all %d micrographs for %d epochs", args.k_fold,
             _fmt(cv.mean_ap), sd, len(data), cv.refit.history[-1].epoch)
    extra = {"k_fold": args.k_fold, "fold_ap": [f.best_ap for f in cv.folds], "fold_best_epoch":
             [f.best_epoch for f in cv.folds], "mean_ap": cv.mean_ap, "sd_ap": cv.sd_ap,
             "fold_micrographs": cv.fold_names}
    return cv.refit, extra, 0


class _Bar:
    """A rich progress bar over all updates (and folds), showing the last loss and held-out AP."""

    def __init__(self, options, folds: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.steps = options.epochs * options.steps
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("loss {task.fields[loss]}  AP {task.fields[ap]}"),
                                 TimeRemainingColumn(), transient=False)
        self.folds = folds

    def __enter__(self) -> "_Bar":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def callbacks(self, fold: int):
        from ..train.loop import Callbacks

        name = "training" if self.folds == 1 else (f"fold {fold + 1}" if fold < self.folds - 1 else "refit")
        task = self.progress.add_task(name, total=self.steps, loss="-", ap="-")

        def step(done: int, loss: float) -> None:
            self.progress.update(task, completed=done, loss=f"{loss:.3f}")

        def epoch(record) -> None:
            self.progress.update(task, ap=_fmt(record.ap))

        return Callbacks(step=step, epoch=epoch)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _print_history(history) -> None:
    for record in history:
        loss = "-" if record.loss is None else f"{record.loss:.4f}"
        log.info("epoch %d: loss %s, held-out AP %s (%.1f s)", record.epoch, loss, _fmt(record.ap),
                 record.seconds)


def _threshold(args, model, data, test_names: set[str], diameter: float):
    """The card's automatic threshold (streampick.train.threshold), from the kept model's picks on every
    micrograph given (held-out ones give the PU estimate; with none held out, the training ones do)."""
    from ..train.loop import automatic_threshold

    estimate = automatic_threshold(model, [m for m in data if m.name not in test_names],
                                   [m for m in data if m.name in test_names],
                                   expected_particles=args.expected_particles, particle_diameter=diameter,
                                   method=args.threshold_method)
    if estimate.value is None:
        log.warning("no automatic threshold: the model finds no candidate on the training micrographs")
    else:
        f1 = "" if estimate.f1 is None else (f"; estimated precision {estimate.precision:.2f}, recall "
                                             f"{estimate.recall:.2f} on {estimate.estimate_micrographs} micrographs")
        log.info("automatic threshold %.3f (%s rule: %.1f picks per micrograph on %d micrographs, expected %g%s)",
                 estimate.value, estimate.method, estimate.picks_per_micrograph, estimate.count_micrographs,
                 args.expected_particles, f1)
    if estimate.note:
        log.warning("automatic threshold: %s", estimate.note)
    return estimate


def _save(args, result, data, n_test: int, diameter: float, extra: dict, threshold):
    import datetime

    from .. import __version__
    from ..nets import Model, save_model

    card = result.model.card
    pixel_size = args.target_pixel_size or data[0].prepared.scaled_pixel_size
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    n_pos = sum(len(m.positives) for m in data)
    n_neg = sum(len(m.negatives) for m in data)
    card.name, card.pixel_size, card.particle_diameter = args.output.stem, float(pixel_size), float(diameter)
    card.threshold, card.version = threshold.value, f"{args.output.stem}-{stamp}"
    card.source = f"streampick {__version__} train, from {args.model or 'scratch'}"
    card.training_data = (f"{len(data)} micrographs ({len(data) - n_test} training, {n_test} held out) from "
                          f"{_folders(args.micrographs)}; {n_pos} labelled particles from "
                          f"{', '.join(p.name for p in args.labels)}; {n_neg} labelled negatives")
    card.metrics = {**result.metrics(), "objective": args.objective, "pi": result.prior.pi,
                    "pi_u": result.prior.pi_u, "labelled_fraction": result.prior.labelled_fraction,
                    "expected_particles": args.expected_particles, "radius_px": args.radius,
                    "autoencoder": args.autoencoder, "threshold": threshold.to_dict(),
                    "streampick_version": __version__, **extra}
    card.command = _command_line(args)
    save_model(args.output, Model(result.model.net, card))
    log.info("wrote %s (best held-out AP %s at epoch %d)", args.output, _fmt(result.best_ap), result.best_epoch)
    return card


def _folders(paths: list[Path]) -> str:
    folders = sorted({str(p.parent) for p in paths})
    return ", ".join(folders[:3]) + (" ..." if len(folders) > 3 else "")


def _command_line(args: argparse.Namespace) -> str:
    """The command as given (options reconstructed from the parsed arguments; defaults included)."""
    words = ["streampick", "train"]
    for key, value in sorted(vars(args).items()):
        if key.startswith("_") or key in ("command", "verbose", "quiet", "progress", "exit_with_stdin") \
                or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            words.append(flag)
        elif isinstance(value, list):
            if value:
                words += [flag, *map(str, value)]
        else:
            words += [flag, str(value)]
    return shlex.join(words)
