"""Where picks go on disk: the files RELION, cryoSPARC, Topaz and EMAN users read.

Per micrograph: ``<stem>_<suffix>.star`` (RELION autopick STAR, picks at or above the threshold) and
``box/<stem>.box`` (EMAN, a real box size).  For the whole run: ``picks.star`` (combined STAR with
``_rlnMicrographName``, picks at or above the threshold) and ``candidates.txt`` (Topaz table with *every*
candidate above the floor and its score, so the threshold can be changed later without re-picking).
All files are written atomically.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from .io.coords import star_path, write_box, write_combined_star, write_star, write_table
from .pick import PickResult


def write_micrograph_outputs(result: PickResult, out_dir: Path, *, threshold: float, box_size: int,
                             suffix: str = "autopick") -> list[Path]:
    """Write one micrograph's STAR and box files; returns their paths."""
    picks = result.picks.above(threshold)
    star = star_path(result.path, out_dir, suffix)
    write_star(star, picks)
    box = out_dir / "box" / f"{result.path.stem}.box"
    write_box(box, picks, box_size)
    return [star, box]


def write_run_outputs(results: Iterable[PickResult], out_dir: Path, *, threshold: float) -> list[Path]:
    """Write the combined STAR (above threshold) and the candidates table (everything above the floor)."""
    results = list(results)
    combined = out_dir / "picks.star"
    write_combined_star(combined, [(str(r.path), r.picks.above(threshold)) for r in results])
    table = out_dir / "candidates.txt"
    write_table(table, [(str(r.path), r.picks) for r in results])
    return [combined, table]
