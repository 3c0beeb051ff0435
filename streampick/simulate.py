"""Synthetic micrographs with known particle positions, for demos, tests and benchmarks.

The defaults aim at data as hard as real single-particle micrographs, not at a clean demo: at the 8 Å/px
picking scale the particles are faint, the ice is textured and dark spots are not all particles.

The physics model, in order:

1. **Particle.**  One asymmetric 3-D density per dataset: a few hundred isotropic 3-D Gaussian blobs grouped
   in 3-5 ellipsoidal "domains" of unequal size inside a sphere of the given diameter, re-centred on its
   centre of mass and scaled to the volume of a protein filling 30 % of that sphere (a 150 Å particle is
   then 5.3·10⁵ Å³, ~430 kDa at 1.23 Å³/Da: a β-galactosidase-like size, not a solid ball).  Or, with
   ``particle_shape="shell"``, a hollow shell (cavity 2/3 of the diameter, uneven subunit patches, the same
   protein volume): projections are rings with a light centre, like apoferritin.
2. **Projection.**  Each particle gets a uniform random 3-D rotation (random unit quaternion).  Rotating the
   blob centres and dropping z projects the density analytically: the projection of a 3-D Gaussian is the
   2-D Gaussian with the same width.  All blob centres of all particles are splatted (bilinear, its mean
   blur divided out) onto one grid and blurred by the blob Gaussian in Fourier space: no pixel loop, no
   per-particle patch.  That grid is up to 8x coarser than the image where the blob width allows (the
   blurred projection has no power beyond k = 0.68/σ), and the filtered contrast is Fourier-interpolated
   to full size, so a 4096² micrograph costs one full-size inverse FFT.  The projected protein thickness
   (Å) becomes a phase shift φ = σ_e · ΔV · t (σ_e the interaction constant, ΔV the protein-minus-ice
   contrast potential, default 1.8 V: protein ≈ 6.3 V against vitreous ice ≈ 4.5 V; published estimates
   of ΔV span ~1.5-2.6 V).
3. **Clutter.**  Small protein fragments (denatured or dissociated protein, debris), 6000 per µm² (about
   1000 on a 4096² field at 1 Å/px), at uniformly random places (over particles, carbon and all): random
   ellipsoids of log-uniform diameter 0.15-0.6 particle diameters (23-90 Å for 150 Å), 30-60 % filled,
   made of the particle's blobs and projected the same way.  The larger ones look like small particles
   and are not in the truth.
4. **Ice.**  Per micrograph a mean thickness t₀ (250-600 Å) and a thickness texture δt: a Gaussian random
   field with a von Kármán power spectrum (k² + k_c²)^(-α/2), α = 3 (a Brownian rough surface), k_c =
   1/1000 Å (longer undulations are the smooth gradient of step 6), scaled so that its 50-200 Å band has
   an rms of 5-12 Å (drawn per micrograph).  δt adds the phase σ_e · V_ice · δt (V_ice = 4.5 V) and, with
   an energy filter, the zero-loss amplitude −δt/λ_in (λ_in = 3500 Å, the inelastic mean free path of
   ice at 300 kV).  After the CTF its 50-200 Å band is about as strong as the particles' own signal in
   that band (about 0.65-1.6x at the ends of the roughness range): blotches of particle size everywhere.
5. **CTF and envelope (weak phase).**  Contrast = F⁻¹[E · (CTF · F φ − F δt/λ_in)], with
   CTF = −2(√(1−A²)·sin χ + A·cos χ), χ = π λ Δf k² − π/2 Cs λ³ k⁴ (Δf > 0 underfocus, with up to 300 Å
   astigmatism), and E = exp(−B k²/4) · sinc(kx p) · sinc(ky p): a B-factor (drawn in 50-150 Å² per
   micrograph: residual motion, drift, partial coherence, radiation damage) and the pixel-aperture MTF of
   a counting detector with pixel p.  300 kV, Cs 2.7 mm, A = 0.07; defocus drawn in 0.8-3.0 µm per
   micrograph.  Particles are dark at low frequency.  On some micrographs a carbon film adds a mean phase
   step and an amorphous phase texture (Thon-ring texture after the CTF).
6. **Attenuation.**  A smooth multiplicative gradient (ramp plus one low-frequency wave, ±8 %: thickness
   gradient and illumination); on some micrographs the edge of a carbon hole (an arc of a 1.2 µm circle):
   behind it intensity drops by 15-25 %; a few ice-contamination blobs (200-1200 Å, irregular outline,
   60-90 % opaque); the zero-loss fraction exp(−t₀/λ_in) of the mean thickness (0.84-0.93).
7. **Counts.**  Expected electrons per pixel = dose · pixel² · attenuation · (1 + contrast) with 40 e/Å²,
   then shot noise in its Gaussian approximation (exact enough at ≥ 10 e/px) with the detector's excess
   noise: variance = counts / DQE(0), DQE(0) = 0.7.  With the sinc MTF on the signal and white noise,
   DQE(k) = 0.7 · sinc²: 0.28 at Nyquist, like a counting camera.  The image is float32 counts, like a
   summed, motion-corrected micrograph.

Layout: particle disks cover a fraction of the free ice drawn in 5-55 % per micrograph, from sparse to
crowded (random sequential addition, centres ≥ 0.8 diameter apart, so dense micrographs have touching
particles); a few aggregates (clumps of 3-8 overlapping particles).

Ground truth: the centres (projected centres of mass) of the isolated particles.  They lie wholly inside
the image, at least one radius away from carbon and contamination and one diameter away from aggregate
members.  **Aggregates and clutter are not pickable and are not in the truth**: a picker that picks them
is charged false positives, as with a curated reference set.

Measured at the defaults (1 Å/px, 150 Å particles, noise-free images against their noise): the per-pixel
SNR at 1 Å/px inside particle disks (variance of the noise-free particle signal over the noise variance,
detector noise included) is 0.004, 0.008, 0.011 and 0.014 at 0.8, 1.5, 2.2 and 3.0 µm defocus (0.006 to
0.020 against shot noise alone); after 8x8 binning (8 Å/px) it is 0.24 to 0.9.  The particles are
invisible in the raw image and faint but findable at 8 Å/px.  Calibration against a real picker (Topaz's
general pretrained resnet16_u64 through ``streampick pick`` at 8 Å/px, greedy matching within half a
diameter, six 4096² micrographs per seed): AP 0.62-0.92 over seeds 0-3, 5 and 8, mean 0.75 (AP ≈ 0.72 on
real EMPIAR-10017); the smaller resnet8_u32 scores ~0.04-0.08 lower.  Single micrographs range from ~0.4
(rough ice, few particles) to ~0.97 (smooth ice, high defocus), so six-micrograph sets vary by ±0.1.
A 4096² micrograph takes ~0.3-0.5 s on two cores.

Honest limits: no multislice or dynamical scattering (weak-phase only, although carbon is not weak); no
solvent-excluded volume, hydration shell or atom-level detail (blob size ~7 Å for 150 Å particles, so
nothing beyond ~10 Å resolution is real); the ice texture is a phenomenological random field, not water
structure (the nearly incompressible amorphous ice adds little white structural noise at k < 1/16 Å⁻¹,
which is left out), and ice thickness does not change the particle contrast except through the zero-loss
dose; particles all sit at one height (no defocus spread through the ice), never on carbon and never cross
the image border; no beam-induced motion or frame structure beyond the B-factor; no inelastic image
(energy filter assumed); orientation is uniform (real data often have preferred views) and the particle
is rigid (no conformational or compositional heterogeneity); the carbon and ice textures are band-limited
like the particles (nothing beyond the coarse grid's Nyquist, 1/8 Å⁻¹ at the defaults).
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
_PROTEIN_FILL = 0.30  # fraction of the bounding sphere filled by protein (~430 kDa at 150 Å)


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
    return _protein_model(centres, volumes, sigma, diameter_a)


def make_shell_model(rng: np.random.Generator, diameter_a: float = 150.0, inner_fraction: float = 0.67,
                     n_blobs: int = 300) -> ParticleModel:
    """Draw a hollow protein shell, like apoferritin (outer 120 Å, cavity 80 Å) or a virus-like capsid.

    Blobs fill the spherical shell between ``inner_fraction`` of the radius and the radius with slightly
    uneven density (a few denser patches, as subunits make), so projections are rings with a light centre:
    a picker trained on compact particles tends to pick their rims.

    Args:
        rng: random generator (draw one model per dataset).
        diameter_a: outer diameter, Å.
        inner_fraction: cavity radius over outer radius, within [0, 0.9].
        n_blobs: number of Gaussian blobs.

    Returns:
        The :class:`ParticleModel` (same protein volume rule as :func:`make_particle_model`).

    Raises:
        ValueError: ``inner_fraction`` outside [0, 0.9].
    """
    if not 0 <= inner_fraction <= 0.9:
        raise ValueError(f"inner_fraction must be within [0, 0.9], got {inner_fraction}")
    radius = diameter_a / 2
    sigma = 0.045 * diameter_a
    inner, outer = inner_fraction * radius + sigma, radius - 1.5 * sigma
    direction = rng.standard_normal((n_blobs, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    # uniform in the shell's volume: r³ uniform between inner³ and outer³
    r = (inner**3 + rng.uniform(0, 1, (n_blobs, 1)) * (outer**3 - inner**3)) ** (1 / 3)
    centres = direction * r
    patches = rng.standard_normal((int(rng.integers(6, 25)), 3))
    patches /= np.linalg.norm(patches, axis=1, keepdims=True)
    volumes = rng.gamma(4.0, 0.25, n_blobs) * (1 + 0.5 * (direction @ patches.T).max(axis=1))
    centres -= np.average(centres, axis=0, weights=volumes)
    return _protein_model(centres, volumes, sigma, diameter_a)


def _protein_model(centres: np.ndarray, volumes: np.ndarray, sigma: float, diameter_a: float) -> ParticleModel:
    """The model with its blob volumes scaled to a protein filling ``_PROTEIN_FILL`` of the bounding sphere."""
    volumes = volumes * (_PROTEIN_FILL * (4 / 3) * np.pi * (diameter_a / 2) ** 3 / volumes.sum())
    return ParticleModel(centres, volumes, float(sigma), float(diameter_a))


PARTICLE_SHAPES = {"blobs": make_particle_model, "shell": make_shell_model}


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


def _particle_points(rng: np.random.Generator, model: ParticleModel, centres_xy: np.ndarray, pixel_size: float
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Projected blob centres (pixels, x y) and volumes (Å³) of randomly rotated copies of ``model``."""
    if len(centres_xy) == 0:
        return np.zeros((0, 2)), np.zeros(0)
    rotations = _random_rotations(rng, len(centres_xy))
    projected = np.einsum("nij,bj->nbi", rotations[:, :2, :], model.centres) / pixel_size
    xy = (projected + centres_xy[:, None, :]).reshape(-1, 2)
    return xy, np.tile(model.volumes, len(centres_xy))


def _place_clutter(rng: np.random.Generator, shape: tuple[int, int], pixel_size: float, model: ParticleModel,
                   rate_per_um2: float, size: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, int]:
    """Small protein fragments scattered at random: blob centres (pixels), volumes (Å³) and their number.

    Fragment diameters are log-uniform in ``size`` (fractions of the particle diameter); each is a random
    ellipsoid filled 30-60 % with protein, made of blobs of the particle's mean blob volume (at least one).
    """
    h, w = shape
    n = int(rng.poisson(rate_per_um2 * h * w * pixel_size**2 / 1e8))
    if n == 0:
        return np.zeros((0, 2)), np.zeros(0), 0
    radius = 0.5 * model.diameter_a * np.exp(rng.uniform(np.log(size[0]), np.log(size[1]), n))
    volume = rng.uniform(0.3, 0.6, n) * (4 / 3) * np.pi * radius**3
    counts = np.maximum(1, np.rint(volume / model.volumes.mean())).astype(np.int64)
    owner = np.repeat(np.arange(n), counts)
    axes = radius[:, None] * rng.uniform(0.6, 1.4, (n, 3))
    local = _in_ball(rng, int(counts.sum())) * axes[owner]
    rotations = _random_rotations(rng, n)
    centres = np.column_stack([rng.uniform(0, w, n), rng.uniform(0, h, n)])
    xy = np.einsum("nij,nj->ni", rotations[owner, :2, :], local) / pixel_size + centres[owner]
    return xy, (volume / counts)[owner], n


def _splat(shape: tuple[int, int], xy: np.ndarray, volumes: np.ndarray, pixel_size: float) -> np.ndarray:
    """Projected protein thickness (Å, before the blob blur): ``volumes`` (Å³) splatted bilinearly."""
    h, w = shape
    if len(xy) == 0:
        return np.zeros(shape, dtype=np.float32)
    x0, y0 = np.floor(xy[:, 0]).astype(np.int64), np.floor(xy[:, 1]).astype(np.int64)
    fx, fy = xy[:, 0] - x0, xy[:, 1] - y0
    weight = volumes / pixel_size**2
    index, values = [], []
    for dx, dy, wt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy),
                       (1, 1, fx * fy)):
        xi, yi = x0 + dx, y0 + dy
        inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        index.append(yi[inside] * w + xi[inside])
        values.append((weight * wt)[inside])
    image = np.bincount(np.concatenate(index), weights=np.concatenate(values), minlength=h * w)
    return image.astype(np.float32).reshape(shape)


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


def _ctf_filter(shape: tuple[int, int], pixel_size: float, ctf: dict[str, float]) -> np.ndarray:
    """2·CTF on the rfft2 grid (float32), no envelope: turns a phase spectrum into a contrast spectrum."""
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
    out *= np.float32(-2)
    return out


def _envelope(shape: tuple[int, int], pixel_size: float, bfactor: float, detector_pixel: float) -> np.ndarray:
    """B-factor envelope exp(−B k²/4) times the detector's pixel-aperture MTF sinc(kx p)·sinc(ky p)."""
    ky, kx = _frequencies(shape, pixel_size)
    out = np.exp(np.float32(-bfactor / 4) * (kx * kx + ky * ky))
    out *= np.sinc(ky * np.float32(detector_pixel)) * np.sinc(kx * np.float32(detector_pixel))
    return out


def _ice_texture(rng: np.random.Generator, shape: tuple[int, int], pixel_size: float, rms_a: float,
                 exponent: float, corner_a: float = 1000.0) -> np.ndarray:
    """Spectrum (rfft2 grid) of a Gaussian random field of ice thickness (Å), power ∝ (k² + k_c²)^(-α/2).

    A power law 1/k^α (α = ``exponent``) above k_c = 1 / ``corner_a``, flat below (a von Kármán spectrum:
    undulations longer than ~1000 Å are left to the smooth gradient).  Scaled so that the part of the field
    between 50 and 200 Å wavelengths has standard deviation ``rms_a``; the whole field is larger.
    """
    ky, kx = _frequencies(shape, pixel_size)
    k2 = kx * kx + ky * ky
    power = (k2 + np.float32(1 / corner_a**2)) ** np.float32(-exponent / 2)
    power[0, 0] = 0
    columns = np.full(k2.shape[1], 2.0, dtype=np.float32)  # each rfft column but the first stands for two
    columns[0] = 1
    if shape[1] % 2 == 0:
        columns[-1] = 1
    band = (k2 >= np.float32(1 / 200**2)) & (k2 <= np.float32(1 / 50**2))
    n = shape[0] * shape[1]
    band_var = float((power * columns)[band].sum()) / n
    if band_var <= 0:  # an image smaller than the band: scale the whole field instead
        band_var = float((power * columns).sum()) / n
    amplitude = np.sqrt(power * np.float32(n * rms_a**2 / max(band_var, 1e-30) / 2))
    spectrum = rng.standard_normal(k2.shape, dtype=np.float32) * amplitude
    spectrum = spectrum + 1j * (rng.standard_normal(k2.shape, dtype=np.float32) * amplitude)
    return spectrum.astype(np.complex64, copy=False)


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
              clutter: tuple[np.ndarray, np.ndarray], carbon: tuple[float, float, float] | None,
              model: ParticleModel, ctf: dict[str, float], protein_contrast_v: float, carbon_texture: float,
              ice: dict[str, float]) -> np.ndarray:
    """Relative contrast (image / mean zero-loss intensity − 1) of everything but the smooth attenuation.

    Phase: particles, aggregates and clutter (protein minus ice), the carbon film, and the ice-thickness
    texture (ice minus vacuum), all through the CTF; plus the amplitude (zero-loss) part of the ice texture;
    all under the B-factor envelope and the detector MTF.  Built on a grid coarser by :func:`_coarse_factor`
    (particles are band-limited by the blob width; carbon and ice texture beyond that band are left out),
    filtered there and Fourier-interpolated.
    """
    factor = _coarse_factor(shape, pixel_size, model.sigma_a)
    small, coarse_px = (shape[0] // factor, shape[1] // factor), pixel_size * factor
    xy, volumes = _particle_points(rng, model, objects, pixel_size)
    xy, volumes = np.concatenate([xy, clutter[0]]), np.concatenate([volumes, clutter[1]])
    thickness = _splat(small, xy / factor, volumes, coarse_px)
    ky, kx = _frequencies(small, coarse_px)
    sigma_e = interaction_constant(ctf["voltage_kv"])
    # Blob blur, divided by the bilinear splat's mean transfer (sinc^2 per axis) to undo its extra blur.
    weight = np.exp(np.float32(-2 * np.pi**2 * model.sigma_a**2) * (kx * kx + ky * ky))
    weight /= (np.sinc(kx * np.float32(coarse_px)) * np.sinc(ky * np.float32(coarse_px))) ** 2
    weight *= np.float32(sigma_e * protein_contrast_v)
    phase = np.fft.rfft2(thickness)
    phase *= weight
    if carbon is not None:
        cx, cy, radius = carbon
        mask = _carbon_mask(small, (cx / factor, cy / factor, radius / factor), max(1.0, 50 / coarse_px))
        texture = rng.standard_normal(small, dtype=np.float32) * np.float32(carbon_texture / coarse_px)
        texture += np.float32(0.3)  # the mean phase step of the film
        phase += np.fft.rfft2(texture * mask)
    spectrum = phase
    ice_thickness = None
    if ice["roughness_a"] > 0:
        ice_thickness = _ice_texture(rng, small, coarse_px, ice["roughness_a"], ice["exponent"])
        spectrum += ice_thickness * np.float32(sigma_e * ice["potential_v"])
    spectrum *= _ctf_filter(small, coarse_px, ctf)
    if ice_thickness is not None:  # zero-loss attenuation exp(-t / mfp) ≈ 1 - dt / mfp: amplitude contrast
        spectrum -= ice_thickness * np.float32(1 / ice["mfp_a"])
    spectrum *= _envelope(small, coarse_px, ctf["bfactor"], pixel_size)
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


def _draw(rng: np.random.Generator, value: float | tuple[float, float]) -> float:
    """A fixed value, or a uniform draw from a (low, high) range."""
    if np.ndim(value) == 0:
        return float(value)
    low, high = value
    return float(rng.uniform(low, high))


def render_micrograph(
    rng: np.random.Generator, *, shape: tuple[int, int] = (4096, 4096), pixel_size: float = 1.0,
    particle_diameter_a: float = 150.0, n_particles: int | None = None,
    coverage: tuple[float, float] = (0.05, 0.55), dose: float = 40.0,
    defocus_um: tuple[float, float] = (0.8, 3.0), astigmatism_a: float = 300.0, voltage_kv: float = 300.0,
    cs_mm: float = 2.7, amplitude_contrast: float = 0.07,
    bfactor: float | tuple[float, float] = (50.0, 150.0), protein_contrast_v: float = 1.8,
    detector_dqe: float = 0.7, ice_thickness_a: float | tuple[float, float] = (250.0, 600.0),
    ice_roughness_a: float | tuple[float, float] = (5.0, 12.0), ice_texture_exponent: float = 3.0,
    ice_potential_v: float = 4.5, inelastic_mfp_a: float = 3500.0, clutter_per_um2: float = 6000.0,
    clutter_size: tuple[float, float] = (0.15, 0.6), carbon_probability: float = 0.3,
    carbon_texture: float = 0.1, contamination_per_um2: float = 8.0, aggregates_per_um2: float = 10.0,
    ice_gradient: float = 0.08, min_distance: float = 0.8, shot_noise: bool = True,
    model: ParticleModel | None = None,
) -> SimulatedMicrograph:
    """Simulate one micrograph with everything known about it (see the module docstring for the model).

    A parameter given as a ``(low, high)`` range is drawn uniformly per micrograph; a number fixes it.

    Args:
        rng: random generator; the same generator state gives the same micrograph.
        shape: (rows, columns).
        pixel_size: Å per pixel (also the detector pixel, for its MTF).
        particle_diameter_a: particle diameter, Å (ignored when ``model`` is given).
        n_particles: particles to place (fewer if they do not fit); None draws a ``coverage`` fraction of
            the free ice area.
        coverage: range of the fraction of free ice covered by particle disks, drawn per micrograph.
        dose: electrons per Å² incident on the specimen.
        defocus_um: range of the mean underfocus, µm, drawn per micrograph.
        astigmatism_a: largest defocus difference (Å); drawn uniformly from 0 with a random axis.
        voltage_kv, cs_mm, amplitude_contrast: microscope (kV, mm, fraction).
        bfactor: envelope B-factor, Å² (number or range): residual motion, drift, coherence, damage.
        protein_contrast_v: protein-minus-ice mean potential, volts (sets the particle contrast).
        detector_dqe: the detector's DQE at zero frequency (noise variance = counts / DQE).
        ice_thickness_a: mean ice thickness, Å (number or range); the zero-loss fraction is
            exp(−thickness / ``inelastic_mfp_a``).
        ice_roughness_a: standard deviation, Å, of the ice-thickness texture between 50 and 200 Å
            wavelengths (number or range).
        ice_texture_exponent: α of the texture's power spectrum ∝ 1/k^α (above k = 1/1000 Å⁻¹).
        ice_potential_v: mean inner potential of vitreous ice, volts (phase of the thickness texture).
        inelastic_mfp_a: inelastic mean free path in ice, Å (zero-loss attenuation, energy filter in).
        clutter_per_um2: expected protein fragments (denatured protein, debris) per µm².
        clutter_size: range of fragment diameters as fractions of the particle diameter (log-uniform).
        carbon_probability: chance that the micrograph shows a carbon edge.
        carbon_texture: phase noise of the carbon film per 1 Å² pixel, radians.
        contamination_per_um2, aggregates_per_um2: expected counts per µm² of field.
        ice_gradient: amplitude of the smooth intensity gradient (fraction).
        min_distance: smallest centre distance between particles, in diameters.
        shot_noise: add shot and detector noise (False gives the expected counts).
        model: the 3-D particle; None draws one from ``rng``.

    Returns:
        A :class:`SimulatedMicrograph` (image float32 in electrons per pixel, truth (N, 2) x, y).

    Raises:
        ValueError: ``detector_dqe`` outside (0, 1] or ``coverage`` not a range within [0, 0.9].
    """
    shape = (int(shape[0]), int(shape[1]))
    if not 0 < detector_dqe <= 1:
        raise ValueError(f"detector_dqe must be within (0, 1], got {detector_dqe}")
    if not 0 <= coverage[0] <= coverage[1] <= 0.9:
        raise ValueError(f"coverage must be a range within [0, 0.9], got {tuple(coverage)}")
    if model is None:
        model = make_particle_model(rng, particle_diameter_a)
    layout = _layout(rng, shape, pixel_size, model.diameter_a, n_particles, coverage, min_distance,
                     carbon_probability, contamination_per_um2, aggregates_per_um2)
    ctf = {"defocus_a": float(rng.uniform(*defocus_um) * 1e4),
           "astigmatism_a": float(rng.uniform(0, astigmatism_a)),
           "astigmatism_angle": float(rng.uniform(0, np.pi)), "voltage_kv": voltage_kv, "cs_mm": cs_mm,
           "amplitude_contrast": amplitude_contrast, "bfactor": _draw(rng, bfactor)}
    ice = {"thickness_a": _draw(rng, ice_thickness_a), "roughness_a": _draw(rng, ice_roughness_a),
           "exponent": float(ice_texture_exponent), "potential_v": float(ice_potential_v),
           "mfp_a": float(inelastic_mfp_a)}
    clutter_xy, clutter_volumes, n_clutter = _place_clutter(rng, shape, pixel_size, model, clutter_per_um2,
                                                            clutter_size)
    objects = np.concatenate([layout["truth"], layout["aggregates"]])
    image = _contrast(rng, shape, pixel_size, objects, (clutter_xy, clutter_volumes), layout["carbon"], model,
                      ctf, protein_contrast_v, carbon_texture, ice)
    image += 1
    carbon = None
    if layout["carbon"] is not None:
        carbon = _carbon_mask(shape, layout["carbon"], max(1.0, 50 / pixel_size))
    image *= _transmission(rng, shape, pixel_size, ice_gradient, carbon, layout["contamination"])
    zero_loss = float(np.exp(-ice["thickness_a"] / ice["mfp_a"]))
    image *= np.float32(dose * pixel_size**2 * zero_loss)
    if shot_noise:
        noise = rng.standard_normal(shape, dtype=np.float32)
        noise *= np.sqrt(np.maximum(image, 0) * np.float32(1 / detector_dqe))
        image += noise
    info = {"defocus_um": ctf["defocus_a"] / 1e4, "astigmatism_a": ctf["astigmatism_a"],
            "astigmatism_angle_rad": ctf["astigmatism_angle"], "bfactor": ctf["bfactor"],
            "ice_thickness_a": ice["thickness_a"], "ice_roughness_a": ice["roughness_a"],
            "n_particles": len(layout["truth"]), "n_aggregate_members": len(layout["aggregates"]),
            "n_contamination": len(layout["contamination"]), "n_clutter": n_clutter,
            "carbon": layout["carbon"], "coverage": layout["coverage"]}
    return SimulatedMicrograph(image=image, truth=layout["truth"], aggregates=layout["aggregates"],
                               contamination=layout["contamination_xyr"], carbon=layout["carbon"], info=info)


def simulate_micrograph(rng: np.random.Generator, shape: tuple[int, int] = (4096, 4096),
                        pixel_size: float = 1.0, particle_diameter_a: float = 150.0,
                        n_particles: int | None = None, dose: float = 40.0,
                        defocus_um: tuple[float, float] = (0.8, 3.0), **options: Any
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
                     label_jitter_px: float | None = None, particle_shape: str = "blobs",
                     options: Mapping[str, Any] | None = None,
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
        particle_shape: a key of :data:`PARTICLE_SHAPES`: ``blobs`` (compact, asymmetric domains) or
            ``shell`` (hollow, like apoferritin).
        options: other keywords of :func:`render_micrograph` (dose, defocus_um, ...).
        progress: called as ``progress(done, n)`` after each micrograph.

    Returns:
        The content of ``simulation.json``.

    Raises:
        TypeError: an unknown key in ``options``.
        ValueError: ``n`` < 0, ``label_fraction`` outside [0, 1] or an unknown ``particle_shape``.
    """
    from .io.atomic import atomic_write_text
    from .io.coords import write_combined_star, write_star, write_table

    parameters = _micrograph_parameters(shape, pixel_size, particle_diameter_a, options)
    if n < 0 or not 0 <= label_fraction <= 1:
        raise ValueError("n must be >= 0 and label_fraction within [0, 1]")
    if particle_shape not in PARTICLE_SHAPES:
        raise ValueError(f"unknown particle shape {particle_shape!r} (known: {', '.join(PARTICLE_SHAPES)})")
    jitter = 0.05 * particle_diameter_a / pixel_size if label_jitter_px is None else float(label_jitter_px)
    out = Path(out_dir)
    (out / "micrographs").mkdir(parents=True, exist_ok=True)
    model_seq, label_seq, *mic_seqs = np.random.SeedSequence(seed).spawn(n + 2)
    model = PARTICLE_SHAPES[particle_shape](np.random.default_rng(model_seq), particle_diameter_a)
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
            "particle_model": {"shape": particle_shape, **_model_summary(model)},
            "micrographs": infos}
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
