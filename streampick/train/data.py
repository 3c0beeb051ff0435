"""Training data: micrographs preprocessed once, their labelled picks, and the per-pixel label maps.

Each micrograph is read with our reader, Fourier-downsampled and GMM-normalized with the engine's own
:func:`~streampick.pick.prepare` (so training sees exactly what picking sees) and kept in RAM as a float32
tensor.  Labels come from any file :func:`~streampick.io.coords.read_coordinates` reads (RELION STAR per
micrograph or combined, cryoSPARC ``.cs``, crYOLO ``.cbox``, Topaz tables, EMAN ``.box``, CSV), matched to
micrographs by name (:func:`~streampick.io.names.match_name`: extra suffixes on either side and dotted names
allowed), optionally y-flipped, and stay in original-micrograph pixels on the :class:`LabelledMicrograph`;
:func:`label_map` rasterizes them at the working scale as disks of radius r: positive (particles), negative
(junk picks) or unlabelled.

Faults in label files never stop the run: a file that cannot be parsed, a micrograph name that matches no
micrograph, coordinates outside the image each get one line through ``report`` and are skipped;
:func:`load_training_data` raises only when no labelled positive remains at all.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import MicrographError, StreampickError
from ..io.micrograph import read_micrograph
from ..io.names import match_name
from ..io.picksets import read_pick_sets
from ..pick import Prepared, prepare
from ..picks import Picks

log = logging.getLogger(__name__)

UNLABELLED, POSITIVE, NEGATIVE = 0, 1, 2
__all__ = ["LabelledMicrograph", "label_map", "load_micrographs", "load_training_data", "match_name", "read_labels"]
Report = Callable[[str], None]


@dataclass
class LabelledMicrograph:
    """One preprocessed micrograph and its labels (centres in original pixels, x = column, y = row)."""

    name: str
    prepared: Prepared
    positives: Picks
    negatives: Picks

    @property
    def image(self) -> torch.Tensor:
        """The normalized image at the working scale, (h, w) float32."""
        return self.prepared.image


def load_micrographs(paths: Sequence[str | Path], *, target_pixel_size: float | None = None,
                     downsample: float | None = None, pixel_size: float | None = None,
                     device: torch.device | str = "cpu", report: Report = log.warning) -> list[Prepared]:
    """Read and preprocess micrographs once: downsample to the working scale and GMM-normalize.

    Args:
        paths: micrographs (MRC, TIFF, PNG, JPEG).
        target_pixel_size: working pixel size in Å (or give ``downsample``).
        downsample: downsampling factor instead of a target pixel size.
        pixel_size: override of the MRC headers' pixel size (Å); needed for TIFF, PNG and JPEG.
        device: where the normalized images live (the training device).
        report: called with a one-line message for each micrograph that cannot be read (it is skipped).

    Returns:
        The prepared micrographs, in input order, unreadable ones left out.

    Raises:
        StreampickError: neither or both of ``target_pixel_size`` and ``downsample``, or two micrographs
            with the same name stem.
    """
    if (target_pixel_size is None) == (downsample is None):
        raise StreampickError("give exactly one of a target pixel size and a downsampling factor")
    prepared, seen = [], set()
    for path in paths:
        try:
            micrograph = read_micrograph(path, pixel_size)
        except MicrographError as err:
            report(f"{err} (skipped)")
            continue
        stem = Path(path).stem
        if stem in seen:
            raise StreampickError(f"{path}: a second micrograph named '{stem}': names must be unique")
        seen.add(stem)
        target = target_pixel_size if downsample is None else micrograph.pixel_size * downsample
        prepared.append(prepare(micrograph, target, torch.device(device)))
    return prepared


def read_labels(paths: Sequence[str | Path], shapes: Mapping[str, tuple[int, int]], *, what: str = "label",
                flip_y: bool = False, report: Report = log.warning) -> dict[str, Picks]:
    """Read label files and keep the picks that name a known micrograph and lie inside it.

    Args:
        paths: coordinate files in any format :func:`~streampick.io.coords.read_coordinates` reads.
        shapes: ``{micrograph stem: (height, width)}`` in original pixels.
        what: the files' role in messages (``label``, ``negative``).
        flip_y: map y to height − 1 − y (labels made on a vertically flipped copy of the images).
        report: called with one line per fault (an unreadable file, an unknown micrograph, coordinates
            outside the image); the faulty part is skipped.

    Returns:
        ``{micrograph stem: Picks}`` in original pixels, the picks of several files joined.
    """
    return read_pick_sets(paths, shapes, what=what, flip=flip_y, report=report)


def load_training_data(micrograph_paths: Sequence[str | Path], label_paths: Sequence[str | Path],
                       negative_paths: Sequence[str | Path] = (), *, target_pixel_size: float | None = None,
                       downsample: float | None = None, pixel_size: float | None = None,
                       device: torch.device | str = "cpu", flip_y: bool = False, report: Report = log.warning
                       ) -> list[LabelledMicrograph]:
    """Micrographs preprocessed once, with their labelled particles and junk picks.

    Args:
        micrograph_paths: micrographs (MRC, TIFF, PNG, JPEG), named by their file stem.
        label_paths: files of particle picks (positives).
        negative_paths: files of junk picks (labelled negatives), optional.
        target_pixel_size, downsample, pixel_size, device: as for :func:`load_micrographs`.
        flip_y: the label files' y runs the other way (see :func:`read_labels`).
        report: called with one line per skipped micrograph, file or set of picks.

    Returns:
        One :class:`LabelledMicrograph` per readable micrograph (micrographs without labels included: they
        still give unlabelled pixels).

    Raises:
        StreampickError: no micrograph could be read, or no labelled particle remains.
    """
    prepared = load_micrographs(micrograph_paths, target_pixel_size=target_pixel_size, downsample=downsample,
                                pixel_size=pixel_size, device=device, report=report)
    if not prepared:
        raise StreampickError("none of the micrographs could be read")
    shapes = {p.micrograph.path.stem: tuple(p.micrograph.data.shape) for p in prepared}
    positives = read_labels(label_paths, shapes, what="label", flip_y=flip_y, report=report)
    negatives = read_labels(negative_paths, shapes, what="negative", flip_y=flip_y, report=report)
    if sum(len(p) for p in positives.values()) == 0:
        raise StreampickError("no usable labelled particle: every label file was skipped or matched no "
                              "micrograph (see the messages above)")
    return [LabelledMicrograph(stem, p, positives.get(stem, Picks.empty()), negatives.get(stem, Picks.empty()))
            for stem, p in zip(shapes, prepared)]


def working_centres(prepared: Prepared, picks: Picks) -> np.ndarray:
    """Centres in original pixels as (row, column) pixel indices of the working-scale image, shape (N, 2)
    int64 (clipped into the image)."""
    sy, sx = prepared.scale
    h, w = prepared.image.shape
    rows = np.clip(np.rint(picks.y / sy), 0, h - 1)
    cols = np.clip(np.rint(picks.x / sx), 0, w - 1)
    return np.column_stack([rows, cols]).astype(np.int64)


def disk_offsets(radius: float) -> np.ndarray:
    """The integer offsets (dy, dx) with dy² + dx² ≤ radius², shape (K, 2)."""
    r = int(np.floor(radius))
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    inside = dy**2 + dx**2 <= radius * radius
    return np.column_stack([dy[inside], dx[inside]])


def label_map(micrograph: LabelledMicrograph, radius: float) -> torch.Tensor:
    """Per-pixel labels at the working scale: disks of ``radius`` pixels around each label centre.

    Returns:
        (h, w) uint8 on the CPU: :data:`POSITIVE` within a particle disk, :data:`NEGATIVE` within a junk disk
        that touches no particle disk (a particle label wins), :data:`UNLABELLED` elsewhere.
    """
    h, w = micrograph.image.shape
    out = np.full((h, w), UNLABELLED, dtype=np.uint8)
    offsets = disk_offsets(radius)
    for picks, value in ((micrograph.negatives, NEGATIVE), (micrograph.positives, POSITIVE)):
        if len(picks) == 0:
            continue
        pixels = (working_centres(micrograph.prepared, picks)[:, None, :] + offsets[None]).reshape(-1, 2)
        inside = (pixels[:, 0] >= 0) & (pixels[:, 0] < h) & (pixels[:, 1] >= 0) & (pixels[:, 1] < w)
        out[pixels[inside, 0], pixels[inside, 1]] = value
    return torch.from_numpy(out)
