"""Pick files read against a set of micrographs: names matched, y flipped on request, rows outside dropped
with a message.  Shared by training (labels, negatives, held-out references), evaluation and the daemon's
live labels, so that all three match names, flip and check bounds the same way.

Every fault is one line through ``report`` and only the faulty part is skipped: a file that cannot be read,
a micrograph name that matches no micrograph (or several), picks outside the image.  Nothing else is dropped.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from streampick.errors import CoordinateFileError
from streampick.io.coords import read_coordinates
from streampick.io.names import match_candidates, match_name
from streampick.picks import Picks

log = logging.getLogger(__name__)
Report = Callable[[str], None]
EDGE_TOLERANCE = 1.0
"""Picks up to this many pixels beyond the image edge still count as inside (the 0/1-based and pixel centre or
corner conventions of other programs differ by up to a pixel)."""


def flip_y(picks: Picks, height: int) -> Picks:
    """``y → height − 1 − y``: between a frame whose first row is the top and one whose first row is the bottom
    (EMPIAR-10017's JPEGs are flipped against the MRC files their STAR picks were made on)."""
    return Picks(picks.x, (height - 1) - picks.y, picks.score)


def read_pick_sets(paths: Sequence[str | Path], shapes: Mapping[str, tuple[int, int]], *, what: str = "label",
                   flip: bool = False, report: Report = log.warning) -> dict[str, Picks]:
    """Read pick files and keep the picks that name a known micrograph and lie inside it.

    Args:
        paths: pick files in any format :func:`~streampick.io.coords.read_coordinates` reads.
        shapes: ``{micrograph name: (height, width)}`` in original pixels; looked up only for the names that
            pick files refer to (the daemon passes a lazy mapping that reads headers on demand).
        what: the files' role in messages (``label``, ``reference``, ...).
        flip: map y to height − 1 − y before the bounds check (see :func:`flip_y`).
        report: called with one line per fault; the faulty file or picks are skipped.

    Returns:
        ``{micrograph name: Picks}`` in original pixels, the picks of several files joined.
    """
    names = list(shapes)
    out: dict[str, list[Picks]] = {}
    for path in paths:
        try:
            groups = read_coordinates(path)
        except CoordinateFileError as err:
            report(f"{what} file {err} (file skipped)")
            continue
        for key, picks in groups.items():
            name = match_name(key, names)
            if name is None:
                candidates = match_candidates(key, names)
                more = " ..." if len(candidates) > 4 else ""
                why = (f"matches several micrographs ({', '.join(candidates[:4])}{more})" if candidates
                       else "is not among the micrographs given")
                report(f"{what} file {path}: micrograph '{key}' {why} ({len(picks)} picks skipped)")
                continue
            shape = tuple(shapes[name])
            if flip:
                picks = flip_y(picks, shape[0])
            out.setdefault(name, []).append(inside(picks, shape, f"{what} file {path}", name, report))
    return {name: join(parts) for name, parts in out.items()}


def inside(picks: Picks, shape: tuple[int, int], where: str, name: str, report: Report) -> Picks:
    """The picks within the image (with :data:`EDGE_TOLERANCE`); one message for those outside."""
    height, width = shape
    lo = -EDGE_TOLERANCE
    bad = (picks.x < lo) | (picks.x > width - 1 + EDGE_TOLERANCE) | (picks.y < lo) | \
          (picks.y > height - 1 + EDGE_TOLERANCE)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        report(f"{where}: {int(bad.sum())} of {len(picks)} picks on '{name}' lie outside its {width}x{height} "
               f"image (e.g. x={picks.x[first]:g}, y={picks.y[first]:g}; skipped)")
    keep = ~bad
    return Picks(picks.x[keep], picks.y[keep], picks.score[keep])


def join(parts: list[Picks]) -> Picks:
    """One set of the picks of several files on the same micrograph (kept sorted by descending score)."""
    if len(parts) == 1:
        return parts[0]
    return Picks.from_arrays(*(np.concatenate([getattr(p, a) for p in parts]) for a in ("x", "y", "score")))
