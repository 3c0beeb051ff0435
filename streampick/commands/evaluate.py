"""Score picks against reference picks: streampick evaluate --predicted P... --reference R... --radius PX

On each micrograph, predicted picks are matched one-to-one to reference picks within --radius pixels of
the original micrograph (greedy: in descending score order each pick takes the nearest free reference, the
PASCAL/COCO rule; or --method hungarian: the assignment with most matches, then least total distance,
Topaz's rule).  All picks are then ranked by score together to report the average precision, the best F1
with its score threshold, precision and recall, and the counts; --threshold adds the figures for picks
scoring at least that.  Pick sets without scores are scored as a whole (no AP).

Files: RELION STAR (per micrograph or combined), Topaz tables, EMAN .box and CSV, in any mix; several files
are merged.  Micrographs are matched by name stem; a per-micrograph file named <stem>_<suffix>.star matches
<stem>.  Predictions on micrographs missing from the reference are ignored (and reported); reference
micrographs without predictions count as misses.  Published reference sets are often incomplete, so the
precision measured here understates the real one.

Example:
    streampick evaluate --predicted picks/picks.star --reference truth.star --radius 30 --plot pr.png
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import StreampickError
from ..picks import Picks

if TYPE_CHECKING:
    from rich.table import Table

    from ..evaluate import EvalResult

_IMAGE_SUFFIXES = (".mrc", ".mrcs", ".tif", ".tiff", ".eer")


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--predicted", nargs="+", type=Path, required=True, metavar="FILE",
                        help="predicted pick files (merged)")
    parser.add_argument("--reference", nargs="+", type=Path, required=True, metavar="FILE",
                        help="reference pick files (merged)")
    parser.add_argument("--radius", type=float, required=True,
                        help="match radius in pixels of the original micrographs")
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

    pred, ref = read_merged(args.predicted), read_merged(args.reference)
    pred = align_names(pred, ref)
    try:
        result = evaluate_sets(pred, ref, args.radius, args.method)
        at = result.at_threshold(args.threshold) if args.threshold is not None and result.has_scores else None
    except ValueError as err:
        raise StreampickError(f"evaluate: {err}") from None
    console = Console()
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


def read_merged(paths: list[Path]) -> dict[str, Picks]:
    """Read pick files into one ``{micrograph stem: Picks}``; the picks of a repeated stem are joined."""
    from ..io.coords import read_coordinates

    merged: dict[str, Picks] = {}
    for path in paths:
        for name, picks in read_coordinates(path).items():
            if Path(name).suffix.lower() in _IMAGE_SUFFIXES:
                name = Path(name).stem
            merged[name] = _join(merged.get(name), picks)
    return merged


def align_names(pred: dict[str, Picks], ref: dict[str, Picks]) -> dict[str, Picks]:
    """Rename predicted micrographs to the reference's names where one is the other plus ``_<suffix>``."""
    out: dict[str, Picks] = {}
    for name, picks in pred.items():
        target = name
        if name not in ref:
            related = [r for r in ref if name.startswith(r + "_") or r.startswith(name + "_")]
            if len(related) == 1:
                target = related[0]
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
    where = "all picks" if result.best_threshold is None else f"score >= {result.best_threshold:.4g}"
    table.add_row("max F1", f"{result.best_f1:.4f} at {where}")
    table.add_row("  precision / recall", f"{result.best_precision:.4f} / {result.best_recall:.4f}")
    if at is not None:
        precision, recall, f1, n = at
        table.add_row(f"at score >= {threshold:g}",
                      f"P {precision:.4f}  R {recall:.4f}  F1 {f1:.4f}  ({n} picks)")
    return table
