"""The real micrograph sets with reference picks under ``../shared/data/real`` (issue 7), as the accuracy
benchmark reads them: where each set's files are, its particle diameter in pixels, its train/test split and
the clean-up its reference needs.

Pure description plus small pure helpers; nothing here is copied from the data.  Each set's README there is
the source of these facts (pixel sizes are only approximate, so the sets are used in pixels).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .evaluate import merge_duplicates
from .io.micrograph import micrograph_shape
from .io.picksets import read_pick_sets
from .picks import Picks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RealSet:
    """One real set: globs relative to ``<root>/<folder>``, the particle diameter in pixels."""

    key: str  # "10017"
    title: str
    folder: str
    micrographs: str
    reference: str
    diameter_px: float
    merge_duplicates_px: float | None = None  # reference centres closer than this are one particle
    published: tuple[tuple[str, str], ...] = ()  # (picker, glob of its pick files)
    published_flip_y: bool = False  # those files' y runs the other way (EMPIAR-10017's STARs on its JPEGs)


SETS: tuple[RealSet, ...] = (
    RealSet("10017", "EMPIAR-10017 β-galactosidase", "empiar10017_bgal_cryosegnet", "micrographs/*.jpg",
            "coords_cryoppp/*.csv", 108.0,
            published=(("crYOLO", "coords_cassper_paper/crYOLO/*.star"),
                       ("CASSPER", "coords_cassper_paper/CASSPER/*.star"),
                       ("Gautomatch", "coords_cassper_paper/Gautomatch/*.star")),
            published_flip_y=True),
    # The derived 10146 reference repeats most particles: 5,448 rows, 2,771 distinct centres (clusters of
    # 2-11 rows within 10 px; distinct particles are >= 50 px apart).  See docs/accuracy.md.
    RealSet("10146", "EMPIAR-10146 apoferritin", "empiar10146_apoferritin_autocryopicker", "micrographs/*.png",
            "coords/*.csv", 64.0, merge_duplicates_px=10.0),
    RealSet("10028", "EMPIAR-10028 80S ribosome", "empiar10028_80s_promptsam", "micrographs/*.png",
            "coords/*.csv", 56.0),
)


def find_set(key: str) -> RealSet:
    """The set called ``key`` (``10017``, ``10146``, ``10028``)."""
    for realset in SETS:
        if realset.key == key:
            return realset
    raise KeyError(f"unknown real set '{key}' (known: {', '.join(s.key for s in SETS)})")


@dataclass(frozen=True)
class SetFiles:
    """A set's micrographs split into halves, and its reference picks by micrograph name (original pixels)."""

    realset: RealSet
    train: tuple[Path, ...]
    test: tuple[Path, ...]
    reference: dict[str, Picks]  # merged duplicates where the set needs it
    raw_reference: dict[str, Picks]  # the rows as shipped (the same as ``reference`` where nothing is merged)
    shapes: dict[str, tuple[int, int]]  # (height, width) of every micrograph, by name

    @property
    def raw_reference_count(self) -> int:
        """Reference rows before merging."""
        return sum(len(p) for p in self.raw_reference.values())

    def names(self, half: str) -> list[str]:
        return [p.stem for p in (self.train if half == "train" else self.test)]

    def paths(self, half: str) -> tuple[Path, ...]:
        return self.train if half == "train" else self.test


def split_halves(paths: Sequence[Path]) -> tuple[tuple[Path, ...], tuple[Path, ...]]:
    """Micrographs sorted by file name: the first ``n // 2`` train, the rest test."""
    ordered = sorted(paths, key=lambda p: p.name)
    half = len(ordered) // 2
    return tuple(ordered[:half]), tuple(ordered[half:])


def load_set(root: Path, realset: RealSet, report: Callable[[str], None] = log.warning) -> SetFiles:
    """The set's micrographs (split) and reference picks, read with the shared pick-file readers.

    Raises:
        FileNotFoundError: the set's folder or micrographs are missing under ``root``.
    """
    folder = root / realset.folder
    paths = sorted(folder.glob(realset.micrographs))
    if not paths:
        raise FileNotFoundError(f"{folder}: no micrographs matching {realset.micrographs}")
    train, test = split_halves(paths)
    shapes = {p.stem: micrograph_shape(p) for p in paths}
    raw = read_pick_sets(sorted(folder.glob(realset.reference)), shapes, what="reference", report=report)
    reference = raw
    if realset.merge_duplicates_px:
        reference = {name: merge_duplicates(picks, realset.merge_duplicates_px) for name, picks in raw.items()}
    return SetFiles(realset, train, test, reference, raw, shapes)


def published_picks(root: Path, files: SetFiles, glob: str, report: Callable[[str], None] = log.warning
                    ) -> dict[str, Picks]:
    """A published picker's picks on the set's micrographs (y flipped where the set says so)."""
    folder = root / files.realset.folder
    return read_pick_sets(sorted(folder.glob(glob)), files.shapes, what="published pick",
                          flip=files.realset.published_flip_y, report=report)


def sample_picks(reference: Mapping[str, Picks], names: Sequence[str], fraction: float, seed: int
                 ) -> dict[str, Picks]:
    """A random ``fraction`` of all the picks on ``names`` (drawn together, without replacement, seeded): the
    sparse labels a user would give."""
    pool = [(name, i) for name in names for i in range(len(reference.get(name, Picks.empty())))]
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(pool), size=round(fraction * len(pool)), replace=False) if pool else []
    keep: dict[str, list[int]] = {name: [] for name in names}
    for k in chosen:
        name, i = pool[k]
        keep[name].append(i)
    out = {}
    for name, rows in keep.items():
        rows = np.sort(np.asarray(rows, dtype=np.intp))
        picks = reference.get(name, Picks.empty())
        out[name] = Picks(picks.x[rows], picks.y[rows], picks.score[rows])
    return out
