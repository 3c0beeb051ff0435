"""Synthetic micrographs with known particle positions, for demos, tests and benchmarks.

The physics model, in order:

1. **Particle.**  One asymmetric 3-D density per dataset: a few hundred isotropic 3-D Gaussian blobs grouped
   in 3-5 ellipsoidal "domains" of unequal size inside a sphere of the given diameter, re-centred on its
   centre of mass and scaled to the volume of a protein filling ~45 % of that sphere.
2. **Projection.**  Each particle gets a uniform random 3-D rotation (random unit quaternion).  Rotating the
   blob centres and dropping z projects the density analytically: the projection of a 3-D Gaussian is the
   2-D Gaussian with the same width.  All blob centres of all particles are splatted (bilinear, its mean
   blur divided out) onto one grid and blurred by the blob Gaussian in Fourier space: no pixel loop, no
   per-particle patch.  That grid is up to 8x coarser than the image where the blob width allows (the
   blurred projection has no power beyond k = 0.68/σ), and the filtered phase is Fourier-interpolated to
   full size, so a 4096² micrograph costs one full-size inverse FFT.  The projected protein thickness
   (Å) becomes a phase shift φ = σ_e · ΔV · t (σ_e the interaction constant, ΔV the protein-vs-ice
   contrast potential, default 2.6 V ≈ 7.1 V − 4.5 V).
3. **CTF (weak phase).**  Image / incident intensity = 1 + 2·F⁻¹[CTF · F φ], with
   CTF = −(√(1−A²)·sin χ + A·cos χ), χ = π λ Δf k² − π/2 Cs λ³ k⁴ (Δf > 0 underfocus, with a small
   astigmatism), times a B-factor envelope exp(−B k²/4).  300 kV, Cs 2.7 mm, A = 0.07 by default; defocus
   drawn per micrograph.  Particles are dark at low frequency.
4. **Specimen.**  A smooth multiplicative ice-thickness gradient (ramp plus one low-frequency wave);
   on some micrographs the edge of a carbon hole (an arc of a 1.2 µm circle): behind it intensity drops by
   15-25 % and a random amorphous-carbon phase texture (which the CTF turns into Thon-ring texture) is added;
   a few ice-contamination blobs (200-1200 Å, irregular outline, 60-90 % opaque); a few aggregates
   (clumps of 3-8 overlapping particles).
5. **Counts.**  Expected electrons per pixel = dose · pixel² · transmission · (1 + contrast), then shot noise
   in its Gaussian approximation (exact enough at ≥ 10 e/px).  The image is float32 counts, like a summed
   motion-corrected micrograph.

Ground truth: the centres (projected centres of mass) of the isolated particles.  Particles do not overlap
(centres ≥ 0.9 diameter apart), lie wholly inside the image, at least one radius away from carbon and
contamination and one diameter away from aggregate members.  **Aggregates are not pickable and are not in
the truth**: a picker that picks them is charged false positives, as with a curated reference set.

At the defaults (1 Å/px, 40 e/Å², 150 Å particles) the per-pixel SNR inside particle disks (variance of
the noise-free particle signal over the shot-noise variance) measures 0.04, 0.07 and 0.10 at 1.0, 1.75
and 2.5 µm defocus: the particles are faint in the raw image and obvious after binning to 8 Å/px.

Honest limits: no multislice or dynamical scattering (weak-phase only, although carbon is not weak); no
solvent-excluded volume, hydration shell or atom-level detail (blob size ~7 Å for 150 Å particles, so
nothing beyond ~10 Å resolution is real); no detector MTF/DQE, no beam-induced motion, drift or frame
structure; no inelastic background or energy-filter effects; ice thickness modulates intensity only, not
contrast; no structured ice background; particles never sit on carbon or cross the image border;
orientation is uniform (real data often has preferred views); the carbon texture is band-limited like
the particles (no Thon rings beyond the coarse grid's Nyquist, 1/8 Å⁻¹ at the defaults).
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .picks import Picks

HOLE_DIAMETER_A = 12_000.0  # a 1.2 µm hole in the carbon film
_PROTEIN_FILL = 0.45  # fraction of the bounding sphere filled by protein


@dataclass(frozen=True)
class ParticleModel:
    """A 3-D particle made of Gaussian blobs, centred on its centre of mass.

    ``centres`` (B, 3) and ``sigma_a`` in Å; ``volumes`` (B,) in Å³ of protein carried by each blob.
    """

    centres: np.ndarray
    volumes: np.ndarray
    sigma_a: float
    diameter_a: float


@dataclass
class SimulatedMicrograph:
    """One simulated micrograph, its ground truth and the geometry of what is not pickable.

    Coordinates are pixels, x = column, y = row.  ``carbon`` is ``(cx, cy, radius)`` of the hole: carbon
    lies where the distance to ``(cx, cy)`` exceeds ``radius``; ``contamination`` rows are
    ``(x, y, r_max)``; ``aggregates`` holds the centre of every aggregate member.
    """

    image: np.ndarray
    truth: np.ndarray
    aggregates: np.ndarray
    contamination: np.ndarray
    carbon: tuple[float, float, float] | None
    info: dict[str, Any] = field(default_factory=dict)

    def blocked(self, xy: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """True for points on carbon or contamination, or within ``margin`` pixels of them."""
        return _blocked(np.asarray(xy, dtype=np.float64).reshape(-1, 2), self.carbon, self.contamination,
                        margin)


def make_particle_model(rng: np.random.Generator, diameter_a: float = 150.0, n_blobs: int = 300
                        ) -> ParticleModel:
    """Draw an asymmetric, protein-like blob density.

    Args:
        rng: random generator (the model is fixed once drawn: draw one per dataset).
        diameter_a: diameter of the bounding sphere, Å.
        n_blobs: number of Gaussian blobs.

    Returns:
        The :class:`ParticleModel`.
    """
    radius = diameter_a / 2
    sigma = 0.045 * diameter_a
    n_domains = int(rng.integers(3, 6))
    domain_centres = _in_ball(rng, n_domains) * 0.6 * radius
    shares = rng.dirichlet(np.full(n_domains, 2.0))
    counts = rng.multinomial(n_blobs, shares)
    points = []
    for centre, count in zip(domain_centres, counts):  # each domain: blobs filling a random ellipsoid
        axes = rng.uniform(0.4, 0.65) * radius * rng.uniform(0.6, 1.4, 3)
        rotation = _random_rotations(rng, 1)[0]
        points.append(centre + (_in_ball(rng, count) * axes) @ rotation.T)
    centres = np.concatenate(points)
    volumes = rng.gamma(4.0, 0.25, len(centres))
    for _ in range(2):  # clip into the sphere, re-centre on the centre of mass
        centres = _clip_to_ball(centres, radius - 1.5 * sigma)
        centres -= np.average(centres, axis=0, weights=volumes)
    volumes *= _PROTEIN_FILL * (4 / 3) * np.pi * radius**3 / volumes.sum()
    return ParticleModel(centres, volumes, float(sigma), float(diameter_a))


def _in_ball(rng: np.random.Generator, n: int) -> np.ndarray:
    direction = rng.standard_normal((n, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    return direction * rng.uniform(0, 1, (n, 1)) ** (1 / 3)


def _clip_to_ball(points: np.ndarray, radius: float) -> np.ndarray:
    norm = np.linalg.norm(points, axis=1, keepdims=True)
    return points * np.minimum(1.0, radius / np.maximum(norm, 1e-12))


def _random_rotations(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` uniformly random rotation matrices (from random unit quaternions), shape (n, 3, 3)."""
    q = rng.standard_normal((n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], axis=1)


# ------------------------------------------------------------------------------------------------ layout


def _blocked(xy: np.ndarray, carbon: tuple[float, float, float] | None, contamination: np.ndarray,
             margin: float) -> np.ndarray:
    out = np.zeros(len(xy), dtype=bool)
    if carbon is not None:
        cx, cy, radius = carbon
        out |= np.hypot(xy[:, 0] - cx, xy[:, 1] - cy) > radius - margin
    for x, y, r_max in contamination:
        out |= np.hypot(xy[:, 0] - x, xy[:, 1] - y) < r_max + margin
    return out


def _place_carbon(rng: np.random.Generator, shape: tuple[int, int], pixel_size: float
                  ) -> tuple[float, float, float]:
    """A hole edge crossing the image: carbon covers roughly 10-40 % of it."""
    h, w = shape
    angle = rng.uniform(0, 2 * np.pi)
    direction = np.array([np.cos(angle), np.sin(angle)])
    half_extent = 0.5 * (abs(direction[0]) * w + abs(direction[1]) * h)
    edge = np.array([w / 2, h / 2]) + rng.uniform(0.2, 0.8) * half_extent * direction
    radius = HOLE_DIAMETER_A / 2 / pixel_size
    cx, cy = edge - radius * direction
    return float(cx), float(cy), float(radius)


def _place_contamination(rng: np.random.Generator, shape: tuple[int, int], pixel_size: float,
                         rate_per_um2: float) -> list[dict[str, Any]]:
    h, w = shape
    n = rng.poisson(rate_per_um2 * h * w * pixel_size**2 / 1e8)
    blobs = []
    for _ in range(n):
        r0 = rng.uniform(100.0, 600.0) / pixel_size
        harmonics = rng.uniform(0, 0.12, 3) / np.arange(1, 4)
        blobs.append({"x": float(rng.uniform(0, w)), "y": float(rng.uniform(0, h)), "r0": float(r0),
                      "harmonics": harmonics.tolist(), "phases": rng.uniform(0, 2 * np.pi, 3).tolist(),
                      "opacity": float(rng.uniform(0.6, 0.9)),
                      "r_max": float(r0 * (1 + harmonics.sum()))})
    return blobs


def _place_aggregates(rng: np.random.Generator, shape: tuple[int, int], diameter_px: float,
                      expected: float, free: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Centres of the members of clumps of 3-8 overlapping particles (on ice)."""
    members = []
    for _ in range(rng.poisson(expected)):
        seed = _uniform_points(rng, shape, 1, diameter_px)
        if not free(seed)[0]:
            continue
        clump = [seed[0]]
        for _ in range(int(rng.integers(2, 8))):
            step = rng.uniform(0.45, 0.7) * diameter_px
            angle = rng.uniform(0, 2 * np.pi)
            anchor = clump[int(rng.integers(len(clump)))]
            clump.append(anchor + step * np.array([np.cos(angle), np.sin(angle)]))
        members.extend(clump)
    return np.array(members, dtype=np.float64).reshape(-1, 2)


def _uniform_points(rng: np.random.Generator, shape: tuple[int, int], n: int, margin: float) -> np.ndarray:
    h, w = shape
    return np.column_stack([rng.uniform(margin, w - margin, n), rng.uniform(margin, h - margin, n)])


def _place_particles(rng: np.random.Generator, shape: tuple[int, int], n: int, min_dist: float,
                     margin: float, free: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Random sequential addition: up to ``n`` centres, pairwise >= ``min_dist`` apart, all ``free``."""
    if n <= 0 or min(shape) <= 2 * margin:
        return np.zeros((0, 2))
    candidates = _uniform_points(rng, shape, 30 * n + 100, margin)
    candidates = candidates[free(candidates)]
    cells: dict[tuple[int, int], list[int]] = {}
    accepted: list[np.ndarray] = []
    for point in candidates:
        cx, cy = int(point[0] // min_dist), int(point[1] // min_dist)
        near = [j for dx in (-1, 0, 1) for dy in (-1, 0, 1) for j in cells.get((cx + dx, cy + dy), ())]
        if any(np.hypot(*(accepted[j] - point)) < min_dist for j in near):
            continue
        cells.setdefault((cx, cy), []).append(len(accepted))
        accepted.append(point)
        if len(accepted) == n:
            break
    return np.array(accepted, dtype=np.float64).reshape(-1, 2)


def _layout(rng: np.random.Generator, shape: tuple[int, int], pixel_size: float, diameter_a: float,
            n_particles: int | None, coverage: tuple[float, float], min_distance: float,
            carbon_probability: float, contamination_per_um2: float, aggregates_per_um2: float
            ) -> dict[str, Any]:
    """Where the carbon, contamination, aggregates and particles go (all in pixels)."""
    diameter = diameter_a / pixel_size
    radius = diameter / 2
    carbon = _place_carbon(rng, shape, pixel_size) if rng.uniform() < carbon_probability else None
    contamination = _place_contamination(rng, shape, pixel_size, contamination_per_um2)
    geometry = np.array([[b["x"], b["y"], b["r_max"]] for b in contamination]).reshape(-1, 3)
    area_um2 = shape[0] * shape[1] * pixel_size**2 / 1e8
    aggregates = _place_aggregates(rng, shape, diameter, aggregates_per_um2 * area_um2,
                                   lambda xy: ~_blocked(xy, carbon, geometry, diameter))

    def free(xy: np.ndarray) -> np.ndarray:
        ok = ~_blocked(xy, carbon, geometry, radius)
        for member in aggregates:
            ok &= np.hypot(xy[:, 0] - member[0], xy[:, 1] - member[1]) >= diameter
        return ok

    drawn = float(rng.uniform(*coverage))
    if n_particles is None:
        probe = _uniform_points(rng, shape, 4000, radius) if min(shape) > diameter else np.zeros((0, 2))
        free_area = free(probe).mean() * (shape[0] - diameter) * (shape[1] - diameter) if len(probe) else 0.0
        n_particles = int(round(drawn * free_area / (np.pi * radius**2)))
    truth = _place_particles(rng, shape, n_particles, min_distance * diameter, radius, free)
    return {"carbon": carbon, "contamination": contamination, "contamination_xyr": geometry,
            "aggregates": aggregates, "truth": truth, "coverage": drawn, "n_requested": n_particles}


# --------------------------------------------------------------------------------------------- rendering


def _splat(shape: tuple[int, int], model: ParticleModel, centres_xy: np.ndarray, pixel_size: float,
           rng: np.random.Generator) -> np.ndarray:
    """Projected protein volume per pixel (Å, before the blob blur) of randomly rotated particles."""
    h, w = shape
    image = np.zeros(h * w, dtype=np.float32)
    if len(centres_xy) == 0:
        return image.reshape(shape)
    rotations = _random_rotations(rng, len(centres_xy))
    projected = np.einsum("nij,bj->nbi", rotations[:, :2, :], model.centres) / pixel_size
    xy = (projected + centres_xy[:, None, :]).reshape(-1, 2)
    weight = np.tile(model.volumes / pixel_size**2, len(centres_xy))
    x0, y0 = np.floor(xy[:, 0]).astype(np.int64), np.floor(xy[:, 1]).astype(np.int64)
    fx, fy = xy[:, 0] - x0, xy[:, 1] - y0
    corners = ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy))
    for dx, dy, wt in corners:
        xi, yi = x0 + dx, y0 + dy
        inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        np.add.at(image, yi[inside] * w + xi[inside], (weight * wt)[inside].astype(np.float32))
    return image.reshape(shape)


def _frequencies(shape: tuple[int, int], pixel_size: float) -> tuple[np.ndarray, np.ndarray]:
    """Spatial frequencies (Å⁻¹, float32) of the rfft2 grid: ky as a column, kx as a row."""
    ky = (np.fft.fftfreq(shape[0]) / pixel_size).astype(np.float32)[:, None]
    kx = (np.fft.rfftfreq(shape[1]) / pixel_size).astype(np.float32)[None, :]
    return ky, kx


def wavelength_a(voltage_kv: float) -> float:
    """Relativistic electron wavelength in Å at ``voltage_kv`` kilovolts."""
    volts = voltage_kv * 1e3
    return float(12.2643 / np.sqrt(volts * (1 + 0.978466e-6 * volts)))


def interaction_constant(voltage_kv: float) -> float:
    """σ_e in rad / (V·Å): the phase shift per volt of potential per Å of path."""
    volts, rest_energy = voltage_kv * 1e3, 510_998.95
    return float(2 * np.pi / (wavelength_a(voltage_kv) * volts)
                 * (rest_energy + volts) / (2 * rest_energy + volts))


def _ctf_filter(shape: tuple[int, int], pixel_size: float, ctf: dict[str, float], extra_b: float = 0.0
                ) -> np.ndarray:
    """2·CTF·envelope on the rfft2 grid (float32): turns a phase spectrum into a contrast spectrum.

    ``extra_b`` adds to the envelope's B-factor (a Gaussian blur folded into the same exponential).
    """
    ky, kx = _frequencies(shape, pixel_size)
    lam = wavelength_a(ctf["voltage_kv"])
    mean_df, astig, angle = ctf["defocus_a"], ctf["astigmatism_a"], ctf["astigmatism_angle"]
    kx2, ky2 = kx * kx, ky * ky
    k2 = kx2 + ky2
    # chi = pi lam df(theta) k^2 - pi/2 Cs lam^3 k^4, with df(theta) k^2 written without angles.
    chi = k2 * np.float32(np.pi * lam * mean_df)
    chi += np.float32(np.pi * lam * astig / 2 * np.cos(2 * angle)) * (kx2 - ky2)
    chi += np.float32(np.pi * lam * astig * np.sin(2 * angle)) * (ky * kx)
    chi -= np.float32(np.pi / 2 * ctf["cs_mm"] * 1e7 * lam**3) * (k2 * k2)
    # sqrt(1 - A^2) sin(chi) + A cos(chi) = sin(chi + asin A)
    chi += np.float32(np.arcsin(ctf["amplitude_contrast"]))
    out = np.sin(chi, out=chi)
    k2 *= np.float32(-(ctf["bfactor"] + extra_b) / 4)
    out *= np.exp(k2, out=k2)
    out *= np.float32(-2)
    return out


def _carbon_mask(shape: tuple[int, int], carbon: tuple[float, float, float], width_px: float) -> np.ndarray:
    """0 on ice, 1 on carbon, a linear ramp ``width_px`` wide across the edge (float32)."""
    cx, cy, radius = carbon
    dx = (np.arange(shape[1], dtype=np.float32) - np.float32(cx)) ** 2
    dy = (np.arange(shape[0], dtype=np.float32) - np.float32(cy)) ** 2
    mask = np.add.outer(dy, dx)
    np.sqrt(mask, out=mask)
    mask -= np.float32(radius - width_px / 2)
    mask *= np.float32(1 / width_px)
    return np.clip(mask, 0, 1, out=mask)


def _coarse_factor(shape: tuple[int, int], pixel_size: float, sigma_a: float) -> int:
    """Largest coarsening (<= 8, dividing both sides) whose Nyquist still passes the blob spectrum.

    The projected density is blurred by the blob Gaussian, whose transfer exp(-2 pi^2 sigma^2 k^2) is below
    1e-4 beyond k = 0.683 / sigma: nothing of it is lost on a grid with Nyquist above that.
    """
    limit = int(0.5 * sigma_a / (0.683 * pixel_size))
    for factor in range(min(8, limit), 1, -1):
        if shape[0] % factor == 0 and shape[1] % factor == 0 and min(shape) // factor >= 32:
            return factor
    return 1


def _fourier_upsample(spectrum: np.ndarray, small: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """Inverse rfft2 of a ``small`` grid's spectrum onto the finer grid ``shape`` (band-limited)."""
    if small == shape:
        return np.fft.irfft2(spectrum, s=shape).astype(np.float32, copy=False)
    h, w = small
    n_pos, n_neg, n_col = (h - 1) // 2 + 1, (h - 1) // 2, (w - 1) // 2 + 1  # Nyquist row/column dropped
    full = np.zeros((shape[0], shape[1] // 2 + 1), dtype=np.complex64)
    scale = np.float32(shape[0] * shape[1] / (h * w))
    full[:n_pos, :n_col] = spectrum[:n_pos, :n_col] * scale
    if n_neg:
        full[-n_neg:, :n_col] = spectrum[-n_neg:, :n_col] * scale
    return np.fft.irfft2(full, s=shape).astype(np.float32, copy=False)


def _contrast(rng: np.random.Generator, shape: tuple[int, int], pixel_size: float, objects: np.ndarray,
              carbon: tuple[float, float, float] | None, model: ParticleModel, ctf: dict[str, float],
              protein_contrast_v: float, carbon_texture: float) -> np.ndarray:
    """Relative image contrast (image / incident − 1) of particles and carbon, through the CTF.

    The phase is built on a grid coarser by :func:`_coarse_factor` (particles are band-limited by the blob
    width; carbon texture beyond that band is left out), filtered there and Fourier-interpolated.
    """
    factor = _coarse_factor(shape, pixel_size, model.sigma_a)
    small, coarse_px = (shape[0] // factor, shape[1] // factor), pixel_size * factor
    thickness = _splat(small, model, objects / factor, coarse_px, rng)
    ky, kx = _frequencies(small, coarse_px)
    # Blob blur, divided by the bilinear splat's mean transfer (sinc^2 per axis) to undo its extra blur.
    weight = np.exp(np.float32(-2 * np.pi**2 * model.sigma_a**2) * (kx * kx + ky * ky))
    weight /= (np.sinc(kx * np.float32(coarse_px)) * np.sinc(ky * np.float32(coarse_px))) ** 2
    weight *= np.float32(interaction_constant(ctf["voltage_kv"]) * protein_contrast_v)
    spectrum = np.fft.rfft2(thickness)
    spectrum *= weight
    if carbon is not None:
        cx, cy, radius = carbon
        mask = _carbon_mask(small, (cx / factor, cy / factor, radius / factor), max(1.0, 50 / coarse_px))
        texture = rng.standard_normal(small, dtype=np.float32) * np.float32(carbon_texture / coarse_px)
        texture += np.float32(0.3)  # the mean phase step of the film
        spectrum += np.fft.rfft2(texture * mask)
    spectrum *= _ctf_filter(small, coarse_px, ctf)
    return _fourier_upsample(spectrum, small, shape)


def _transmission(rng: np.random.Generator, shape: tuple[int, int], pixel_size: float, ice_gradient: float,
                  carbon: np.ndarray | None, contamination: list[dict[str, Any]]) -> np.ndarray:
    """Smooth multiplicative attenuation: ice gradient × carbon film × contamination (float32)."""
    h, w = shape
    y = np.linspace(-0.5, 0.5, h, dtype=np.float32)
    x = np.linspace(-0.5, 0.5, w, dtype=np.float32)
    gx, gy = rng.uniform(-ice_gradient, ice_gradient, 2)
    wave = rng.uniform(0, ice_gradient / 2)
    (fx, fy), (px, py) = rng.uniform(0.3, 1.2, 2), rng.uniform(0, 2 * np.pi, 2)
    out = np.add.outer(1 + np.float32(gy) * y, np.float32(gx) * x)
    out += np.multiply.outer(np.float32(wave) * np.cos(2 * np.pi * fy * y + py, dtype=np.float32),
                             np.cos(2 * np.pi * fx * x + px, dtype=np.float32))
    if carbon is not None:
        out *= 1 - np.float32(rng.uniform(0.15, 0.25)) * carbon
    edge = max(1.0, 30.0 / pixel_size)
    for blob in contamination:
        _darken_blob(out, blob, edge)
    return out


def _darken_blob(image: np.ndarray, blob: dict[str, Any], edge_px: float) -> None:
    """Multiply an irregular, soft-edged opaque blob into ``image`` (in place, within its bounding box)."""
    h, w = image.shape
    reach = blob["r_max"] + edge_px
    x0, x1 = max(0, int(blob["x"] - reach)), min(w, int(blob["x"] + reach) + 2)
    y0, y1 = max(0, int(blob["y"] - reach)), min(h, int(blob["y"] + reach) + 2)
    if x0 >= x1 or y0 >= y1:
        return
    dx = np.arange(x0, x1, dtype=np.float32) - np.float32(blob["x"])
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(blob["y"])
    rho, theta = np.hypot(dx, dy), np.arctan2(dy, dx)
    outline = np.ones_like(theta)
    for k, (amp, phase) in enumerate(zip(blob["harmonics"], blob["phases"]), start=2):
        outline += np.float32(amp) * np.cos(k * theta + np.float32(phase))
    inside = np.clip((outline * np.float32(blob["r0"]) - rho) / np.float32(edge_px) + 0.5, 0, 1)
    image[y0:y1, x0:x1] *= 1 - np.float32(blob["opacity"]) * inside


# ------------------------------------------------------------------------------------------ public API


def render_micrograph(
    rng: np.random.Generator, *, shape: tuple[int, int] = (4096, 4096), pixel_size: float = 1.0,
    particle_diameter_a: float = 150.0, n_particles: int | None = None,
    coverage: tuple[float, float] = (0.12, 0.4), dose: float = 40.0,
    defocus_um: tuple[float, float] = (1.0, 2.5), astigmatism_a: float = 300.0, voltage_kv: float = 300.0,
    cs_mm: float = 2.7, amplitude_contrast: float = 0.07, bfactor: float = 60.0,
    protein_contrast_v: float = 2.6, carbon_probability: float = 0.3, carbon_texture: float = 0.1,
    contamination_per_um2: float = 8.0, aggregates_per_um2: float = 10.0, ice_gradient: float = 0.08,
    min_distance: float = 0.9, shot_noise: bool = True, model: ParticleModel | None = None,
) -> SimulatedMicrograph:
    """Simulate one micrograph with everything known about it (see the module docstring for the model).

    Args:
        rng: random generator; the same generator state gives the same micrograph.
        shape: (rows, columns).
        pixel_size: Å per pixel.
        particle_diameter_a: particle diameter, Å (ignored when ``model`` is given).
        n_particles: particles to place (fewer if they do not fit); None draws a ``coverage`` fraction of
            the free ice area.
        coverage: range of the fraction of free ice covered by particle disks, drawn per micrograph.
        dose: electrons per Å².
        defocus_um: range of the mean underfocus, µm, drawn per micrograph.
        astigmatism_a: largest defocus difference (Å); drawn uniformly from 0 with a random axis.
        voltage_kv, cs_mm, amplitude_contrast, bfactor: microscope (kV, mm, fraction, Å²).
        protein_contrast_v: protein-minus-ice mean potential, volts (sets the particle contrast).
        carbon_probability: chance that the micrograph shows a carbon edge.
        carbon_texture: phase noise of the carbon film per 1 Å² pixel, radians.
        contamination_per_um2, aggregates_per_um2: expected counts per µm² of field.
        ice_gradient: amplitude of the smooth intensity gradient (fraction).
        min_distance: smallest centre distance between particles, in diameters.
        shot_noise: add Poisson noise (False gives the expected counts).
        model: the 3-D particle; None draws one from ``rng``.

    Returns:
        A :class:`SimulatedMicrograph` (image float32 in electrons per pixel, truth (N, 2) x, y).
    """
    shape = (int(shape[0]), int(shape[1]))
    if model is None:
        model = make_particle_model(rng, particle_diameter_a)
    layout = _layout(rng, shape, pixel_size, model.diameter_a, n_particles, coverage, min_distance,
                     carbon_probability, contamination_per_um2, aggregates_per_um2)
    ctf = {"defocus_a": float(rng.uniform(*defocus_um) * 1e4),
           "astigmatism_a": float(rng.uniform(0, astigmatism_a)),
           "astigmatism_angle": float(rng.uniform(0, np.pi)), "voltage_kv": voltage_kv, "cs_mm": cs_mm,
           "amplitude_contrast": amplitude_contrast, "bfactor": bfactor}
    objects = np.concatenate([layout["truth"], layout["aggregates"]])
    image = _contrast(rng, shape, pixel_size, objects, layout["carbon"], model, ctf, protein_contrast_v,
                      carbon_texture)
    image += 1
    carbon = None
    if layout["carbon"] is not None:
        carbon = _carbon_mask(shape, layout["carbon"], max(1.0, 50 / pixel_size))
    image *= _transmission(rng, shape, pixel_size, ice_gradient, carbon, layout["contamination"])
    image *= np.float32(dose * pixel_size**2)
    if shot_noise:
        noise = rng.standard_normal(shape, dtype=np.float32)
        noise *= np.sqrt(np.maximum(image, 0))
        image += noise
    info = {"defocus_um": ctf["defocus_a"] / 1e4, "astigmatism_a": ctf["astigmatism_a"],
            "astigmatism_angle_rad": ctf["astigmatism_angle"], "n_particles": len(layout["truth"]),
            "n_aggregate_members": len(layout["aggregates"]), "n_contamination": len(layout["contamination"]),
            "carbon": layout["carbon"], "coverage": layout["coverage"]}
    return SimulatedMicrograph(image=image, truth=layout["truth"], aggregates=layout["aggregates"],
                               contamination=layout["contamination_xyr"], carbon=layout["carbon"], info=info)


def simulate_micrograph(rng: np.random.Generator, shape: tuple[int, int] = (4096, 4096),
                        pixel_size: float = 1.0, particle_diameter_a: float = 150.0,
                        n_particles: int | None = None, dose: float = 40.0,
                        defocus_um: tuple[float, float] = (1.0, 2.5), **options: Any
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Simulate one micrograph: :func:`render_micrograph` reduced to ``(image, truth)``.

    Args:
        rng, shape, pixel_size, particle_diameter_a, n_particles, dose, defocus_um: as for
            :func:`render_micrograph`.
        **options: any other keyword of :func:`render_micrograph` (an unknown one raises TypeError).

    Returns:
        ``(image, truth)``: float32 (rows, columns) electrons per pixel, and (N, 2) particle centres x, y.
    """
    sim = render_micrograph(rng, shape=shape, pixel_size=pixel_size, particle_diameter_a=particle_diameter_a,
                            n_particles=n_particles, dose=dose, defocus_um=defocus_um, **options)
    return sim.image, sim.truth


# ----------------------------------------------------------------------------------------------- dataset

_DATASET_KEYS = ("shape", "pixel_size", "particle_diameter_a", "model")


def simulate_dataset(out_dir: str | Path, n: int, seed: int = 0, *, shape: tuple[int, int] = (4096, 4096),
                     pixel_size: float = 1.0, particle_diameter_a: float = 150.0, label_fraction: float = 0.3,
                     label_jitter_px: float | None = None, options: Mapping[str, Any] | None = None,
                     progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Write a synthetic dataset: micrographs, ground truth, sparse labels and the parameters.

    Layout of ``out_dir``: ``micrographs/sim_0000.mrc`` … (float32, voxel size set), ``truth/sim_0000.star``
    per micrograph, ``truth.star`` (all, with ``_rlnMicrographName``), ``labels.txt`` (a Topaz-style table
    of a random ``label_fraction`` of all true particles, each moved by a uniform random offset within a
    disk of radius ``label_jitter_px``: the sparse labels a user would click) and ``simulation.json``.
    One particle model is drawn per dataset; micrograph ``i`` depends only on ``seed`` and ``i``.

    Args:
        out_dir: output folder (created; files in it are replaced).
        n: number of micrographs.
        seed: random seed; the same seed gives identical files.
        shape, pixel_size, particle_diameter_a: as for :func:`render_micrograph`.
        label_fraction: fraction of the true particles written to ``labels.txt``.
        label_jitter_px: largest label offset in pixels; None means 5 % of the particle diameter.
        options: other keywords of :func:`render_micrograph` (dose, defocus_um, ...).
        progress: called as ``progress(done, n)`` after each micrograph.

    Returns:
        The content of ``simulation.json``.

    Raises:
        TypeError: an unknown key in ``options``.
        ValueError: ``n`` < 0 or ``label_fraction`` outside [0, 1].
    """
    from .io.atomic import atomic_write_text
    from .io.coords import write_combined_star, write_star, write_table

    parameters = _micrograph_parameters(shape, pixel_size, particle_diameter_a, options)
    if n < 0 or not 0 <= label_fraction <= 1:
        raise ValueError("n must be >= 0 and label_fraction within [0, 1]")
    jitter = 0.05 * particle_diameter_a / pixel_size if label_jitter_px is None else float(label_jitter_px)
    out = Path(out_dir)
    (out / "micrographs").mkdir(parents=True, exist_ok=True)
    model_seq, label_seq, *mic_seqs = np.random.SeedSequence(seed).spawn(n + 2)
    model = make_particle_model(np.random.default_rng(model_seq), particle_diameter_a)
    truths, infos = [], []
    for i, mic_seq in enumerate(mic_seqs):
        name = f"sim_{i:04d}"
        sim = render_micrograph(np.random.default_rng(mic_seq), model=model, **parameters)
        _write_mrc(out / "micrographs" / f"{name}.mrc", sim.image, pixel_size)
        write_star(out / "truth" / f"{name}.star", Picks.from_arrays(sim.truth[:, 0], sim.truth[:, 1]))
        truths.append((name, sim.truth))
        infos.append({"name": name, **sim.info})
        if progress is not None:
            progress(i + 1, n)
    write_combined_star(out / "truth.star", [(f"micrographs/{name}.mrc", Picks.from_arrays(t[:, 0], t[:, 1]))
                                             for name, t in truths])
    labels = _sparse_labels(np.random.default_rng(label_seq), truths, label_fraction, jitter, shape)
    write_table(out / "labels.txt", labels)
    meta = {"streampick_version": __version__, "seed": seed, "n": n, "label_fraction": label_fraction,
            "label_jitter_px": jitter, "n_truth": int(sum(len(t) for _, t in truths)),
            "n_labels": int(sum(len(p) for _, p in labels)), "micrograph_parameters": parameters,
            "particle_model": _model_summary(model), "micrographs": infos}
    atomic_write_text(out / "simulation.json", json.dumps(meta, indent=1, default=_json_default) + "\n")
    return meta


def _model_summary(model: ParticleModel) -> dict[str, Any]:
    return {"n_blobs": len(model.volumes), "sigma_a": model.sigma_a, "diameter_a": model.diameter_a,
            "protein_volume_a3": float(model.volumes.sum())}


def _micrograph_parameters(shape: tuple[int, int], pixel_size: float, particle_diameter_a: float,
                           options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Every keyword of :func:`render_micrograph` with its value for this dataset (``model`` aside)."""
    import inspect

    defaults = {name: p.default for name, p in inspect.signature(render_micrograph).parameters.items()
                if p.kind is inspect.Parameter.KEYWORD_ONLY and name != "model"}
    options = dict(options or {})
    unknown = sorted(set(options) - set(defaults) | set(options) & set(_DATASET_KEYS))
    if unknown:
        raise TypeError(f"simulate_dataset: unknown or reserved micrograph option(s): {', '.join(unknown)}")
    return {**defaults, "shape": (int(shape[0]), int(shape[1])), "pixel_size": float(pixel_size),
            "particle_diameter_a": float(particle_diameter_a), **options}


def _sparse_labels(rng: np.random.Generator, truths: list[tuple[str, np.ndarray]], fraction: float,
                   jitter: float, shape: tuple[int, int]) -> list[tuple[str, Picks]]:
    """A random ``fraction`` of all true centres, each moved uniformly within ``jitter`` pixels."""
    total = sum(len(t) for _, t in truths)
    chosen = np.zeros(total, dtype=bool)
    chosen[rng.choice(total, size=int(round(fraction * total)), replace=False)] = True
    labels, start = [], 0
    for name, truth in truths:
        xy = truth[chosen[start:start + len(truth)]]
        start += len(truth)
        angle = rng.uniform(0, 2 * np.pi, len(xy))
        offset = jitter * np.sqrt(rng.uniform(0, 1, len(xy)))
        x = np.clip(xy[:, 0] + offset * np.cos(angle), 0, shape[1] - 1)
        y = np.clip(xy[:, 1] + offset * np.sin(angle), 0, shape[0] - 1)
        labels.append((name, Picks.from_arrays(x, y)))
    return labels


def _write_mrc(path: Path, image: np.ndarray, pixel_size: float) -> None:
    """Write a float32 MRC under a hidden temporary name in the same folder, then rename it into place.

    The header label names streampick instead of mrcfile's creation time, so a seed gives identical bytes.
    """
    import secrets

    import mrcfile

    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(np.asarray(image, dtype=np.float32))
            mrc.voxel_size = pixel_size
            mrc.header.label[0] = f"streampick {__version__} simulate".encode()  # no timestamp: reproducible
            mrc.header.nlabl = 1
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
