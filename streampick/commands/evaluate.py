"""Score picks against reference picks: streampick evaluate --predicted P... --reference R... --radius PX

On each micrograph, predicted picks are matched one-to-one to reference picks within --radius pixels of
the original micrograph (greedy: in descending score order each pick takes the nearest free reference, the
PASCAL/COCO rule; or --method hungarian: the assignment with most matches, then least total distance,
Topaz's rule).  All picks are then ranked by score together to report the average precision, the best F1
with its score threshold, precision and recall, and the counts; --threshold adds the figures for picks
scoring at least that.  A pick set without scores (no score column, or crYOLO's and CASSPER's figure of
merit -999) is evaluated at all its picks: precision, recall and F1, no AP.

Files: RELION STAR (3.0 or 3.1+, per micrograph or combined), cryoSPARC .cs, crYOLO .cbox, EMAN/crYOLO .box,
Topaz tables and CSV with an x/y header, in any mix; several files are merged.  Micrographs are matched by
name: a per-micrograph file named <name>_<suffix>.star matches <name>, and <name>.csv matches an image with
extra suffixes such as <name>.bin_avg.png.  Predictions on micrographs missing from the reference are
ignored (and reported); reference micrographs without predictions count as misses.  Published reference
sets are often incomplete, so the precision measured here understates the real one.

--micrographs (MRC, TIFF, PNG, JPEG; only their headers are read) names the micrographs and gives their
sizes: picks are then matched to these names, and picks outside an image are reported and skipped.
--flip-y maps y to H - 1 - y (H = image height) in the reference picks (or in the predicted ones, or both),
for pick files made on a vertically flipped copy of the images (EMPIAR-10017's STARs against its JPEGs).
--merge-reference PX takes reference picks closer than PX pixels as one particle, for derived references that
list a particle several times.

Example:
    streampick evaluate --predicted picks/picks.star --reference truth.star --radius 30 --plot pr.png
    streampick evaluate --predicted crYOLO/*.star --reference coords_cryoppp/*.csv --radius 54 \\
        --micrographs micrographs/*.jpg --flip-y predicted
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ConfigError, StreampickError
from ..picks import Picks

if TYPE_CHECKING:
    from rich.table import Table

    from ..evaluate import EvalResult

_RADIUS = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(a|å|px)?\s*$", re.IGNORECASE)
_FLIP_CHOICES = ("reference", "predicted", "both")


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--predicted", nargs="+", type=Path, required=True, metavar="FILE",
                        help="predicted pick files (merged): STAR, .cs, .cbox, .box, Topaz table, CSV")
    parser.add_argument("--reference", nargs="+", type=Path, required=True, metavar="FILE",
                        help="reference pick files (merged), same formats")
    parser.add_argument("--radius", required=True,
                        help="match radius in pixels of the original micrographs (30 or 30px), or in Å with "
                             "--pixel-size (54A)")
    parser.add_argument("--micrographs", nargs="+", type=Path, metavar="IMAGE",
                        help="the micrographs (MRC, TIFF, PNG, JPEG; headers only): match picks to these names, "
                             "skip picks outside each image (reported); needed by --flip-y")
    parser.add_argument("--flip-y", nargs="?", const="reference", choices=_FLIP_CHOICES, metavar="WHICH",
                        help="map y to H - 1 - y (H = image height) in the reference picks (default), or in the "
                             "'predicted' ones, or 'both'; needs --micrographs")
    parser.add_argument("--pixel-size", type=float, metavar="Å", help="Å per pixel, for a --radius in Å")
    parser.add_argument("--merge-reference", type=float, metavar="PX",
                        help="take reference picks closer than PX pixels to each other as one particle (their "
                             "mean position), for a derived reference that lists particles more than once "
                             "(EMPIAR-10146's in ../shared: 5,448 rows, 2,771 particles at 10 px)")
    parser.add_argument("--method", choices=("greedy", "hungarian"), default="greedy",
                        help="matching rule (default: greedy)")
    parser.add_argument("--threshold", type=float, help="also report picks with score >= this")
    parser.add_argument("--plot", type=Path, metavar="PNG",
                        help="write the precision-recall curve (needs matplotlib)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the results and the curve as JSON")


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..evaluate import evaluate_sets, plot_pr
    from ..io.atomic import atomic_write_text

    console = Console()
    radius = radius_pixels(args.radius, args.pixel_size)
    if args.flip_y and not args.micrographs:
        raise ConfigError("evaluate: --flip-y needs --micrographs (the image heights)")
    notes: list[str] = []
    if args.micrographs:
        shapes = read_shapes(args.micrographs, notes.append)
        flip = args.flip_y or ""
        ref = read_against(args.reference, shapes, "reference", flip in ("reference", "both"), notes.append)
        pred = read_against(args.predicted, shapes, "predicted", flip in ("predicted", "both"), notes.append)
    else:
        ref = read_merged(args.reference)
        pred = align_names(read_merged(args.predicted), ref)
    if args.merge_reference:
        ref, merged = merge_reference(ref, args.merge_reference)
        notes.append(f"merged {merged} reference rows lying within {args.merge_reference:g} px of another into "
                     f"{sum(len(p) for p in ref.values())} particles")
    for note in notes:
        console.print(f"[yellow]{note}[/]", soft_wrap=True)
    try:
        result = evaluate_sets(pred, ref, radius, args.method)
        at = result.at_threshold(args.threshold) if args.threshold is not None and result.has_scores else None
    except ValueError as err:
        raise StreampickError(f"evaluate: {err}") from None
    console.print(_table(result, args.threshold, at, n_mics=(len(ref), sum(1 for k in ref if k in pred))))
    if result.n_pred_ignored:
        ignored = result.ignored_micrographs
        names = ", ".join(ignored[:5]) + (" ..." if len(ignored) > 5 else "")
        console.print(f"[yellow]ignored {result.n_pred_ignored} predictions on "
                      f"{len(ignored)} micrographs not in the reference: {names}[/]")
    if args.threshold is not None and at is None:
        console.print("[yellow]the predictions have no scores: --threshold does not apply[/]")
    if args.plot:
        try:
            plot_pr(result, args.plot)
        except ImportError as err:
            raise StreampickError(str(err)) from None
    if args.json:
        threshold = None if at is None else dict(zip(("threshold", "precision", "recall", "f1", "n_picks"),
                                                     (args.threshold, *at)))
        doc = {"summary": result.summary(), "at_threshold": threshold, "curve": result.curve()}
        atomic_write_text(args.json, json.dumps(doc, indent=1) + "\n")
    return 0


def merge_reference(ref: dict[str, Picks], within: float) -> tuple[dict[str, Picks], int]:
    """Each micrograph's reference with picks closer than ``within`` pixels merged; and how many rows went."""
    from ..evaluate import merge_duplicates

    merged = {name: merge_duplicates(picks, within) for name, picks in ref.items()}
    return merged, sum(len(p) for p in ref.values()) - sum(len(p) for p in merged.values())


def radius_pixels(text: str, pixel_size: float | None) -> float:
    """``30`` or ``30px`` → 30 pixels; ``54A`` → 54 / pixel_size pixels."""
    match = _RADIUS.match(str(text))
    if not match:
        raise ConfigError(f"evaluate: --radius '{text}' is not a length (write e.g. 30, 30px or 54A)")
    value, unit = float(match.group(1)), (match.group(2) or "px").lower()
    if unit == "px":
        return value
    if pixel_size is None or not pixel_size > 0:
        raise ConfigError(f"evaluate: --radius {text} is in Å: give --pixel-size (Å per pixel)")
    return value / pixel_size


def read_shapes(paths: list[Path], report) -> dict[str, tuple[int, int]]:
    """``{name: (height, width)}`` of the micrographs from their headers; unreadable ones reported, skipped."""
    from ..errors import MicrographError
    from ..io.micrograph import micrograph_shape

    shapes: dict[str, tuple[int, int]] = {}
    for path in paths:
        try:
            shape = micrograph_shape(path)
        except MicrographError as err:
            report(f"{err} (micrograph skipped)")
            continue
        if path.stem in shapes:
            raise StreampickError(f"evaluate: {path}: a second micrograph named '{path.stem}': names must be unique")
        shapes[path.stem] = shape
    if not shapes:
        raise StreampickError("evaluate: none of the --micrographs could be read")
    return shapes


def read_against(paths: list[Path], shapes: dict[str, tuple[int, int]], what: str, flip: bool,
                 report) -> dict[str, Picks]:
    """Pick files matched to the micrographs' names, y-flipped if asked, picks outside the images skipped."""
    from ..io.picksets import read_pick_sets

    return read_pick_sets(paths, shapes, what=what, flip=flip, report=report)


def read_merged(paths: list[Path]) -> dict[str, Picks]:
    """Read pick files into one ``{micrograph key: Picks}``; the picks of a repeated key are joined."""
    from ..io.coords import read_coordinates
    from ..io.names import micrograph_key

    merged: dict[str, Picks] = {}
    for path in paths:
        for name, picks in read_coordinates(path).items():
            name = micrograph_key(name)
            merged[name] = _join(merged.get(name), picks)
    return merged


def align_names(pred: dict[str, Picks], ref: dict[str, Picks]) -> dict[str, Picks]:
    """Rename predicted micrographs to the reference's names where they match
    (:func:`~streampick.io.names.match_name`: ``mic_001_autopick`` → ``mic_001``, ``x`` → ``x.bin_avg``)."""
    from ..io.names import match_name

    out: dict[str, Picks] = {}
    names = list(ref)
    for name, picks in pred.items():
        target = match_name(name, names) or name
        out[target] = _join(out.get(target), picks)
    return out


def _join(old: Picks | None, new: Picks) -> Picks:
    if old is None:
        return new
    return Picks.from_arrays(np.r_[old.x, new.x], np.r_[old.y, new.y], np.r_[old.score, new.score])


def _table(result: EvalResult, threshold: float | None, at: tuple | None, n_mics: tuple[int, int]) -> Table:
    from rich.table import Table

    table = Table(title=f"{result.method} matching, radius {result.radius:g} px", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("micrographs", f"{n_mics[0]} in reference, {n_mics[1]} with predictions")
    table.add_row("picks", f"{result.n_pred} predicted, {result.n_ref} reference, {result.n_tp} matched")
    table.add_row("AP", "n/a (no scores)" if result.ap is None else f"{result.ap:.4f}")
    if result.has_scores or not result.n_pred:
        where = "all picks" if result.best_threshold is None else f"score >= {result.best_threshold:.4g}"
        table.add_row("max F1", f"{result.best_f1:.4f} at {where}")
    else:
        table.add_row("F1", f"{result.best_f1:.4f} at all picks (no scores to rank them)")
    table.add_row("  precision / recall", f"{result.best_precision:.4f} / {result.best_recall:.4f}")
    if at is not None:
        precision, recall, f1, n = at
        table.add_row(f"at score >= {threshold:g}",
                      f"P {precision:.4f}  R {recall:.4f}  F1 {f1:.4f}  ({n} picks)")
    return table
