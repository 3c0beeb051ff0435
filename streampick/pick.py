"""The picking engine: one function per stage, chained for one micrograph or a batch.

read (``io.micrograph``) → downsample (Fourier crop to the working pixel size) → normalize (GMM) → score
(``score``) → extract (``extract``).  Everything here is a pure function of its inputs plus the model;
writing outputs is the caller's job (``outputs``), so the CLI, the daemon and the benchmark share this code.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from .device import scoring_dtype
from .errors import ConfigError, MicrographError
from .extract import extract_picks, smooth_scores
from .io.micrograph import Micrograph, read_micrograph
from .nets.checkpoint import Model
from .picks import Picks
from .preprocess import GMMFit, downsample, normalize
from .score import score_batch

_LENGTH = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(a|å|px)?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Length:
    """A length given in Ångström (``unit='A'``) or in original micrograph pixels (``unit='px'``)."""

    value: float
    unit: str = "A"

    @classmethod
    def parse(cls, text: str | float, key: str = "length") -> "Length":
        """Parse ``"70"``, ``"70A"`` (Å) or ``"9px"`` (original micrograph pixels)."""
        match = _LENGTH.match(str(text))
        if not match:
            raise ConfigError(f"{key}: '{text}' is not a length (write e.g. 70A or 9px)")
        unit = "px" if (match.group(2) or "a").lower() == "px" else "A"
        return cls(float(match.group(1)), unit)

    def pixels(self, pixel_size: float) -> float:
        """This length in pixels of size ``pixel_size`` Å (for px lengths, original pixels of that size)."""
        return self.value if self.unit == "px" else self.value / pixel_size


@dataclass(frozen=True)
class PickSettings:
    """How to pick.  Lengths in Å or original pixels; the working scale by pixel size or factor."""

    target_pixel_size: float | None = None  # Å/px of the working scale (default: the model card's)
    downsample_factor: float | None = None  # alternative to target_pixel_size, e.g. 8
    radius: Length | None = None  # NMS radius (default: half the model card's particle diameter)
    edge_margin: Length = Length(0.0)
    floor: float = -6.0  # lowest score kept as a candidate
    dense: bool = False
    score_stride: int = 2  # fast mode: score exactly every Nth working pixel, interpolate between
    precision: str = "auto"  # network precision: auto (bfloat16 where native), float32, bfloat16
    pixel_size: float | None = None  # override of the micrograph header's pixel size
    smoothing: Length | None = None  # σ of the score map's Gaussian smoothing (default: the model card's)


def settings_from_options(options: dict) -> PickSettings:
    """PickSettings from the validated 'picking' config section (see config.example.yaml)."""
    return PickSettings(
        target_pixel_size=options["target_pixel_size"], downsample_factor=options["downsample"],
        radius=Length.parse(options["radius"], "picking.radius") if options["radius"] else None,
        edge_margin=Length.parse(options["edge_margin"], "picking.edge_margin"), floor=options["floor"],
        dense=options["dense"], score_stride=options["score_stride"], precision=options["precision"],
        pixel_size=options["pixel_size"],
        smoothing=None if options["smoothing"] is None else Length.parse(options["smoothing"], "picking.smoothing"))


@dataclass
class Prepared:
    """A micrograph downsampled and normalized, ready to score."""

    micrograph: Micrograph
    image: torch.Tensor  # (h, w) normalized, on the scoring device
    scaled_pixel_size: float
    gmm: GMMFit
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def scale(self) -> tuple[float, float]:
        """(y, x) original pixels per working-scale pixel."""
        (h0, w0), (h1, w1) = self.micrograph.data.shape, self.image.shape
        return h0 / h1, w0 / w1


@dataclass
class PickResult:
    """Everything one micrograph's picking produced."""

    path: Path
    shape: tuple[int, int]
    pixel_size: float
    scaled_pixel_size: float
    picks: Picks
    gmm: GMMFit
    timings: dict[str, float]


def working_pixel_size(settings: PickSettings, model: Model, pixel_size: float) -> float:
    """The pixel size (Å) at which to score a micrograph of ``pixel_size``.

    Raises:
        ConfigError: neither the settings nor the model card say.
    """
    if settings.downsample_factor is not None:
        return pixel_size * settings.downsample_factor
    target = settings.target_pixel_size or model.card.pixel_size
    if target is None:
        raise ConfigError(f"model '{model.card.name}' has no working pixel size in its card: "
                          "give a target pixel size or a downsampling factor")
    return target


def nms_radius(settings: PickSettings, model: Model) -> Length:
    """The NMS radius: as set, else half the particle diameter on the model card."""
    if settings.radius is not None:
        return settings.radius
    if model.card.particle_diameter:
        return Length(model.card.particle_diameter / 2)
    raise ConfigError(f"model '{model.card.name}' has no particle diameter in its card: give a radius")


def smoothing_length(settings: PickSettings, model: Model) -> Length:
    """σ of the score map's smoothing: as set, else the model card's (Å; 0 on cards without one)."""
    return settings.smoothing if settings.smoothing is not None else Length(model.card.smoothing)


def prepare(micrograph: Micrograph, target_pixel_size: float, device: torch.device) -> Prepared:
    """Downsample ``micrograph`` to ``target_pixel_size`` and normalize it with the per-micrograph GMM."""
    timings = {}
    start = time.perf_counter()
    image = torch.from_numpy(np.ascontiguousarray(micrograph.data)).to(device)
    small, scaled_pixel_size = downsample(image, micrograph.pixel_size, target_pixel_size)
    timings["downsample"] = time.perf_counter() - start
    start = time.perf_counter()
    normalized, gmm = normalize(small)
    timings["normalize"] = time.perf_counter() - start
    return Prepared(micrograph, normalized, scaled_pixel_size, gmm, timings)


def read_and_prepare(path: str | Path, model: Model, settings: PickSettings, device: torch.device, *,
                     mmap: bool = True) -> Prepared:
    """Read a micrograph and prepare it at ``model``'s working scale (its timings include the read).

    Raises:
        MicrographError: the file cannot be used (incomplete, corrupt, unreadable).
    """
    start = time.perf_counter()
    micrograph = read_micrograph(path, settings.pixel_size, mmap=mmap)
    read_time = time.perf_counter() - start
    prepared = prepare(micrograph, working_pixel_size(settings, model, micrograph.pixel_size), device)
    prepared.timings["read"] = read_time
    return prepared


def score_and_extract(batch: list[Prepared], model: Model, settings: PickSettings) -> list[PickResult]:
    """Score a batch of prepared micrographs of one shape and extract their picks."""
    start = time.perf_counter()
    stride = 1 if settings.dense else min(settings.score_stride, model.net.stride)
    images = torch.stack([p.image for p in batch])
    maps = score_batch(model.net, images, out_stride=stride, dtype=scoring_dtype(images.device, settings.precision))
    per_image = (time.perf_counter() - start) / len(batch)
    radius, smoothing = nms_radius(settings, model), smoothing_length(settings, model)
    results = []
    for prepared, score_map in zip(batch, maps):
        start = time.perf_counter()
        original = prepared.micrograph
        to_scaled = prepared.scaled_pixel_size / original.pixel_size  # original px per scaled px
        score_map = smooth_scores(score_map, smoothing.pixels(original.pixel_size) / to_scaled)
        picks = extract_picks(score_map, radius=radius.pixels(original.pixel_size) / to_scaled,
                              floor=settings.floor, scale=prepared.scale,
                              edge_margin=settings.edge_margin.pixels(original.pixel_size) / to_scaled)
        timings = dict(prepared.timings, score=per_image, extract=time.perf_counter() - start)
        results.append(PickResult(original.path, original.data.shape, original.pixel_size,
                                  prepared.scaled_pixel_size, picks, prepared.gmm, timings))
    return results


@dataclass
class PickFailure:
    """A micrograph that could not be picked, and why (one line)."""

    path: Path
    error: MicrographError


def pick_micrographs(paths: Iterable[str | Path], model: Model, settings: PickSettings, device: torch.device,
                     batch_size: int = 1) -> Iterator[PickResult | PickFailure]:
    """Pick each micrograph in ``paths``, scoring up to ``batch_size`` same-shape images at once.

    A micrograph that cannot be read yields a :class:`PickFailure` and the others go on.  Results come in
    input order except that a failure is reported as soon as it happens.
    """
    pending: list[Prepared] = []
    for path in paths:
        try:
            prepared = read_and_prepare(path, model, settings, device)
        except MicrographError as err:
            yield PickFailure(Path(path), err)
            continue
        if pending and pending[0].image.shape != prepared.image.shape:
            yield from score_and_extract(pending, model, settings)
            pending = []
        pending.append(prepared)
        if len(pending) >= batch_size:
            yield from score_and_extract(pending, model, settings)
            pending = []
    if pending:
        yield from score_and_extract(pending, model, settings)


def pick_micrograph(micrograph: Micrograph | str | Path, model: Model, *, target_pixel_size: float | None = None,
                    radius: str | float | None = None, floor: float = -6.0, dense: bool = False,
                    pixel_size: float | None = None) -> Picks:
    """Pick one micrograph: the convenience front door for scripts.

    Args:
        micrograph: a :class:`Micrograph` or the path of a micrograph file (MRC, TIFF, PNG, JPEG).
        model: from :func:`streampick.load_model`; scoring runs on the device its weights are on.
        target_pixel_size: working scale in Å/px (default: the model card's).
        radius: NMS radius, ``"70A"`` / ``70`` (Å) or ``"9px"`` (default: half the card's particle diameter).
        floor: lowest score kept.
        dense: exact dense scoring instead of strided + refinement.
        pixel_size: Å per pixel of a micrograph read from a path: overrides an MRC header, and is needed for
            TIFF, PNG and JPEG.

    Returns:
        Every candidate above ``floor``, in original-micrograph pixels, by descending score.
    """
    if not isinstance(micrograph, Micrograph):
        micrograph = read_micrograph(micrograph, pixel_size)
    settings = PickSettings(target_pixel_size=target_pixel_size, floor=floor, dense=dense,
                            radius=None if radius is None else Length.parse(radius, "radius"))
    device = next(model.net.parameters()).device
    prepared = prepare(micrograph, working_pixel_size(settings, model, micrograph.pixel_size), device)
    return score_and_extract([prepared], model, settings)[0].picks
