"""Training objectives for positive-unlabeled picking (method.md §3) and the class prior π they need.

Every objective is a pure function of the logits of the labelled positives ``pos`` and of the unlabelled
pixels ``unl`` of one minibatch (1-D tensors), the class prior and its options, returning a scalar tensor:

* :func:`pn_loss`: π·BCE(P, 1) + (1−π)·BCE(U, 0): unlabelled pixels treated as negatives.
* :func:`ge_kl_loss`: BCE(P, 1) + slack·KL(π_u ‖ mean σ(U)) (generalized expectation, slack 10).
* :func:`ge_binomial_loss`: BCE(P, 1) + slack·H, H the cross-entropy between the classifier's distribution
  of the number of positives among U and Binomial(|U|, π_u) (slack 1; the default objective).
* :func:`nnpu_loss`: π·BCE(P, 1) + max(0, BCE(U, 0) − π·BCE(P, 0)) (Kiryo et al. 2017); returns the value to
  backpropagate and the value to report, which differ when the negative risk goes below zero.

BCE is the mean binary cross-entropy with logits over the set (0 for an empty set).  Labelled negatives (junk
picks: ice, carbon edge, aggregates) are not part of any of these formulas: :func:`objective_loss` adds
``negative_weight · BCE(N, 0)`` to every objective, the weight 1 by default being that of the unlabelled
set's negative risk (≈ 1 − π) in PN and nnPU and that of the positive term in the GE objectives, so a junk
pick counts like a certain negative and never more than a labelled particle.

π is the expected fraction of positive pixels: expected particles per micrograph × pixels in a disk of the
label radius / pixels per micrograph (:func:`positive_fraction`).  The disk is counted exactly
(:func:`disk_pixel_count`: 29 pixels at r = 3), not (2r+1)× that as the reference implementation has since
2024.  π_u, the positive fraction the GE objectives expect among the unlabelled pixels, is π minus the
fraction of pixels that are labelled positive (:func:`unlabelled_positive_fraction`).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

OBJECTIVES = ("ge-binomial", "ge-kl", "pn", "nnpu")
DEFAULT_SLACK = {"ge-binomial": 1.0, "ge-kl": 10.0}
_EPS = 1e-7


def disk_pixel_count(radius: float) -> int:
    """Number of integer offsets (dy, dx) with dy² + dx² ≤ radius² (29 at radius 3, 1 at radius 0)."""
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    r = math.floor(radius)
    offsets = torch.arange(-r, r + 1, dtype=torch.float64)
    return int(((offsets[:, None] ** 2 + offsets[None, :] ** 2) <= radius * radius).sum())


def positive_fraction(particles_per_micrograph: float, radius: float, micrograph_pixels: float) -> float:
    """π: the expected fraction of pixels that lie within ``radius`` of a particle centre.

    Args:
        particles_per_micrograph: expected number of particles on one micrograph.
        radius: label disk radius in working pixels.
        micrograph_pixels: pixels of one micrograph at the working scale (h × w).

    Returns:
        π in (0, 1).

    Raises:
        ValueError: a non-positive count or size, or π ≥ 1 (more disk pixels than the micrograph has).
    """
    if particles_per_micrograph <= 0 or micrograph_pixels <= 0:
        raise ValueError("expected particles and micrograph pixels must be positive")
    pi = particles_per_micrograph * disk_pixel_count(radius) / micrograph_pixels
    if pi >= 1:
        raise ValueError(f"π = {pi:.3g}: {particles_per_micrograph:g} disks of radius {radius:g} do not fit in "
                         f"{micrograph_pixels:g} pixels")
    return pi


def unlabelled_positive_fraction(pi: float, labelled_fraction: float) -> float:
    """π_u = π − (fraction of pixels labelled positive): what the GE objectives expect among U.

    Raises:
        ValueError: π_u ≤ 0, i.e. the labels already cover as many pixels as π expects in all.
    """
    pi_u = pi - labelled_fraction
    if pi_u <= 0:
        raise ValueError(f"the labelled positives already cover {labelled_fraction:.3g} of the pixels, not less "
                         f"than π = {pi:.3g}: the expected number of particles per micrograph is too low")
    return pi_u


def bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    """Mean binary cross-entropy of ``logits`` against a constant ``target`` (0 for an empty tensor)."""
    if logits.numel() == 0:
        return logits.sum()  # a zero that keeps the graph and dtype
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def pn_loss(pos: torch.Tensor, unl: torch.Tensor, pi: float) -> torch.Tensor:
    """PN: π·BCE(P, 1) + (1−π)·BCE(U, 0)."""
    return pi * bce(pos, 1.0) + (1 - pi) * bce(unl, 0.0)


def ge_kl_loss(pos: torch.Tensor, unl: torch.Tensor, pi_u: float, slack: float = 10.0) -> torch.Tensor:
    """GE-KL: BCE(P, 1) + slack·KL(Bernoulli(π_u) ‖ Bernoulli(q)), q = mean σ(U).

    Args:
        pos: logits of the labelled positives.
        unl: logits of the unlabelled pixels (at least one).
        pi_u: expected positive fraction among the unlabelled pixels, in (0, 1).
        slack: weight of the KL term.
    """
    log_n = math.log(unl.numel())
    log_q = torch.logsumexp(F.logsigmoid(unl), 0) - log_n  # log mean σ(U), stable for saturated logits
    log_1mq = torch.logsumexp(F.logsigmoid(-unl), 0) - log_n
    kl = pi_u * (math.log(pi_u) - log_q) + (1 - pi_u) * (math.log(1 - pi_u) - log_1mq)
    return bce(pos, 1.0) + slack * kl


def ge_binomial_loss(pos: torch.Tensor, unl: torch.Tensor, pi_u: float, slack: float = 1.0) -> torch.Tensor:
    """GE-binomial: BCE(P, 1) + slack·H(p, Binomial(n, π_u)), n = |U|.

    p is the classifier's distribution of the number of positives k = 0 … n among U: the normal with mean
    μ = Σσ(U) and variance v = Σσ(1−σ) evaluated at the integers and normalized over them (a discretized
    normal; v is floored at 1e-6 so saturated logits stay finite).  H = −Σ_k p(k)·log Binomial(k; n, π_u).

    Args:
        pos: logits of the labelled positives.
        unl: logits of the unlabelled pixels (at least one).
        pi_u: expected positive fraction among the unlabelled pixels, in (0, 1).
        slack: weight of the cross-entropy term.
    """
    n = unl.numel()
    p = torch.sigmoid(unl)
    mean, var = p.sum(), (p * (1 - p)).sum().clamp_min(1e-6)
    k = torch.arange(n + 1, dtype=p.dtype, device=p.device)
    model = torch.softmax(-(k - mean) ** 2 / (2 * var), 0)
    log_binomial = (math.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)
                    + k * math.log(pi_u) + (n - k) * math.log(1 - pi_u))
    return bce(pos, 1.0) + slack * -(model * log_binomial).sum()


class NNPULoss(NamedTuple):
    """nnPU's two values: ``backward`` to differentiate, ``report`` the (non-negative) risk to show."""

    backward: torch.Tensor
    report: torch.Tensor


def nnpu_loss(pos: torch.Tensor, unl: torch.Tensor, pi: float, beta: float = 0.0, gamma: float = 1.0
              ) -> NNPULoss:
    """nnPU: π·BCE(P, 1) + max(0, BCE(U, 0) − π·BCE(P, 0)).

    When the negative risk r = BCE(U, 0) − π·BCE(P, 0) falls below −β, the step is taken on the negative
    part alone: ``backward = −γ·r`` (a step that raises r back towards zero, Kiryo et al.'s rule), while the
    reported value is still the clipped risk.

    Args:
        pos: logits of the labelled positives.
        unl: logits of the unlabelled pixels (a sample of all pixels, labelled ones included).
        pi: π.
        beta: tolerance below zero before the correction step (0 by default).
        gamma: size of the correction step.
    """
    positive_risk = pi * bce(pos, 1.0)
    negative_risk = bce(unl, 0.0) - pi * bce(pos, 0.0)
    report = positive_risk + negative_risk.clamp_min(0.0)
    if negative_risk.item() < -beta:
        return NNPULoss(-gamma * negative_risk, report)
    return NNPULoss(positive_risk + negative_risk, report)


def objective_loss(name: str, pos: torch.Tensor, unl: torch.Tensor, neg: torch.Tensor, *, pi: float,
                   pi_u: float | None = None, slack: float | None = None, negative_weight: float = 1.0
                   ) -> NNPULoss:
    """One objective by name plus the labelled negatives' term: ``(backward, report)`` for every objective.

    Args:
        name: one of :data:`OBJECTIVES`.
        pos, unl, neg: logits of the labelled positives, unlabelled pixels and labelled negatives.
        pi: π (PN, nnPU).
        pi_u: π_u (GE objectives; required for them).
        slack: the GE term's weight (default 1 for GE-binomial, 10 for GE-KL).
        negative_weight: weight of BCE(N, 0).

    Raises:
        ValueError: an unknown objective, or a GE objective without ``pi_u``.
    """
    if name in DEFAULT_SLACK:
        if pi_u is None:
            raise ValueError(f"objective {name} needs pi_u")
        slack = DEFAULT_SLACK[name] if slack is None else slack
        fn = ge_binomial_loss if name == "ge-binomial" else ge_kl_loss
        value = fn(pos, unl, pi_u, slack)
        parts = NNPULoss(value, value.detach())
    elif name == "pn":
        value = pn_loss(pos, unl, pi)
        parts = NNPULoss(value, value.detach())
    elif name == "nnpu":
        parts = nnpu_loss(pos, unl, pi)
    else:
        raise ValueError(f"unknown objective {name!r} (known: {', '.join(OBJECTIVES)})")
    junk = negative_weight * bce(neg, 0.0)
    return NNPULoss(parts.backward + junk, parts.report.detach() + junk.detach())
