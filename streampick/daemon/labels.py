"""User labels for live fine-tuning: the ``labels/`` folder, checked against the micrographs the daemon knows.

Users (or a GUI) drop pick files into the labels folder: particles in the folder itself, junk (ice, carbon
edge, aggregates) in its ``negatives/`` subfolder, in any format :func:`~streampick.io.coords.read_coordinates`
reads (RELION STAR per micrograph or combined, cryoSPARC ``.cs``, crYOLO ``.cbox``, Topaz table, EMAN ``.box``,
CSV with an x/y header).  Labels
sent over the control socket become files here too (``control/`` and ``negatives/control/``,
:func:`add_control_labels`), so there is one source of truth and it survives a restart.

:func:`collect_labels` reads them all, matches each file's micrographs by name to the micrographs the daemon
has picked, and keeps the picks inside each image; every fault (an unparsable file, a micrograph the daemon
has not seen, coordinates outside the image) is one line through ``report`` and only the faulty part is
skipped.  :func:`write_round_labels` writes what is left as the combined STAR files a training round reads.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io.coords import read_coordinates, write_combined_star, write_star
from ..io.micrograph import micrograph_shape
from ..picks import Picks

LABEL_SUFFIXES = (".star", ".txt", ".tsv", ".box", ".cbox", ".cs", ".csv")
NEGATIVES = "negatives"
CONTROL = "control"
Report = Callable[[str], None]


def label_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """The particle and junk label files under ``folder`` (sorted; hidden, temporary and other files ignored).

    Particle files are anywhere under ``folder`` except under ``folder/negatives``, which holds the junk.
    """
    def files(root: Path, skip: Path | None) -> list[Path]:
        if not root.is_dir():
            return []
        found = []
        for path in root.rglob("*"):
            if skip is not None and skip in path.parents:
                continue
            if path.suffix.lower() in LABEL_SUFFIXES and not path.name.startswith(".") and path.is_file():
                found.append(path)
        return sorted(found)

    negatives = folder / NEGATIVES
    return files(folder, negatives), files(negatives, None)


def fingerprint(paths: list[Path]) -> str:
    """A digest of the files' names, sizes and modification times: changes whenever a label file does."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            continue
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


class MicrographShapes(Mapping):
    """``{micrograph stem: (height, width)}`` of the daemon's micrographs, each shape read from its file's
    header only when a label file names that micrograph (and then remembered).  A micrograph whose header
    can no longer be read (deleted since it was picked) raises :class:`~streampick.errors.MicrographError`."""

    def __init__(self, paths_by_stem: dict[str, str], cache: dict[str, tuple[int, int]] | None = None) -> None:
        self.paths = paths_by_stem
        self.cache = {} if cache is None else cache

    def __getitem__(self, stem: str) -> tuple[int, int]:
        path = self.paths[stem]
        if path not in self.cache:
            self.cache[path] = micrograph_shape(path)
        return self.cache[path]

    def __iter__(self) -> Iterator[str]:
        return iter(self.paths)

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class LabelSet:
    """The usable labels: picks by micrograph stem (original pixels), and each stem's micrograph path."""

    positives: dict[str, Picks]
    negatives: dict[str, Picks]
    paths: dict[str, str]

    @property
    def micrographs(self) -> list[str]:
        """Stems of the micrographs with at least one labelled particle, sorted."""
        return sorted(stem for stem, picks in self.positives.items() if len(picks))

    def count(self) -> tuple[int, int]:
        """(labelled particles, labelled junk picks)."""
        return (sum(len(p) for p in self.positives.values()), sum(len(p) for p in self.negatives.values()))

    def digest(self) -> str:
        """A digest of the labels' content: equal digests, same training data."""
        digest = hashlib.sha256()
        for kind, groups in (("+", self.positives), ("-", self.negatives)):
            for stem in sorted(groups):
                digest.update(f"{kind}{self.paths.get(stem)}\n".encode())
                digest.update(np.round(np.column_stack([groups[stem].x, groups[stem].y]), 2).tobytes())
        return digest.hexdigest()


def collect_labels(positive_files: list[Path], negative_files: list[Path], micrographs: dict[str, str],
                   report: Report, shape_cache: dict[str, tuple[int, int]] | None = None) -> LabelSet:
    """Read the label files and keep what names a known micrograph and lies inside it.

    Args:
        positive_files, negative_files: label files (see :func:`label_files`).
        micrographs: ``{stem: path}`` of the micrographs the daemon has picked.
        report: called with one line per fault; the faulty file or picks are skipped.
        shape_cache: ``{path: shape}`` kept between calls, so each header is read once.
    """
    from ..train.data import read_labels  # one matching and bounds check, shared with `streampick train`

    shapes = MicrographShapes(micrographs, shape_cache)
    positives = read_labels(positive_files, shapes, what="label", report=report)
    negatives = read_labels(negative_files, shapes, what="negative label", report=report)
    used = set(positives) | set(negatives)
    return LabelSet(positives, negatives, {stem: micrographs[stem] for stem in used})


def write_round_labels(folder: Path, labels: LabelSet) -> tuple[Path, Path | None]:
    """Write the labels as combined STAR files in ``folder`` (atomically); returns (particles, junk or None)."""
    positives = folder / "labels.star"
    write_combined_star(positives, [(labels.paths[s], labels.positives[s]) for s in sorted(labels.positives)])
    if not any(len(p) for p in labels.negatives.values()):
        return positives, None
    negatives = folder / "negatives.star"
    write_combined_star(negatives, [(labels.paths[s], labels.negatives[s]) for s in sorted(labels.negatives)])
    return positives, negatives


def add_control_labels(folder: Path, micrograph: str, picks: Picks, *, negative: bool = False,
                       replace: bool = False) -> tuple[Path, int]:
    """Store labels sent over the control socket as a per-micrograph STAR file under ``folder``.

    Args:
        folder: the labels folder.
        micrograph: the micrograph's name or path (its stem names the file).
        picks: centres in original pixels.
        negative: junk picks rather than particles.
        replace: replace this micrograph's earlier control labels instead of adding to them.

    Returns:
        The file written and how many labels it now holds.
    """
    base = folder / NEGATIVES / CONTROL if negative else folder / CONTROL
    path = base / f"{Path(micrograph).stem}.star"
    if not replace and path.exists():
        old = next(iter(read_coordinates(path).values()), Picks.empty())
        picks = Picks(*(np.concatenate([getattr(old, a), getattr(picks, a)]) for a in ("x", "y", "score")))
    write_star(path, picks)
    return path, len(picks)
