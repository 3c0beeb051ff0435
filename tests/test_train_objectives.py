"""The PU objectives on tiny hand-computed cases (numpy, written out here), their gradients, and π."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from streampick.train.objectives import (
    disk_pixel_count,
    ge_binomial_loss,
    ge_kl_loss,
    nnpu_loss,
    objective_loss,
    pn_loss,
    positive_fraction,
    unlabelled_positive_fraction,
)

POS = np.array([2.0, -1.0])
UNL = np.array([0.5, -0.5, 1.5])


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def bce1(x):  # mean −log σ(x)
    return float(np.mean(np.log1p(np.exp(-x))))


def bce0(x):  # mean −log(1 − σ(x))
    return float(np.mean(np.log1p(np.exp(x))))


def test_disk_pixel_count_is_exact_and_topaz_inflates_it_sevenfold_at_radius_3():
    assert [disk_pixel_count(r) for r in (0, 1, 2, 3)] == [1, 5, 13, 29]
    assert disk_pixel_count(3.5) == 37  # offsets with dy² + dx² ≤ 12.25
    # The reference implementation's count since 2024 is a cylinder of 2r+1 disks: (2r+1)× too many pixels.
    r = 3
    cylinder = sum(1 for dz in range(-r, r + 1) for dy in range(-r, r + 1) for dx in range(-r, r + 1)
                   if dy * dy + dx * dx <= r * r)
    assert cylinder == 203 == 7 * disk_pixel_count(3)


def test_positive_fraction_and_unlabelled_fraction():
    assert positive_fraction(100, 3, 512 * 512) == pytest.approx(100 * 29 / 262144)
    assert unlabelled_positive_fraction(0.02, 0.005) == pytest.approx(0.015)
    with pytest.raises(ValueError, match="too low"):
        unlabelled_positive_fraction(0.01, 0.02)
    with pytest.raises(ValueError, match="do not fit"):
        positive_fraction(10_000, 3, 64 * 64)


def test_pn_by_hand():
    pi = 0.1
    expected = pi * bce1(POS) + (1 - pi) * bce0(UNL)
    assert pn_loss(t(POS), t(UNL), pi).item() == pytest.approx(expected, rel=1e-12)


def test_ge_kl_by_hand():
    pi_u = 0.2
    q = sigmoid(UNL).mean()
    kl = pi_u * math.log(pi_u / q) + (1 - pi_u) * math.log((1 - pi_u) / (1 - q))
    assert ge_kl_loss(t(POS), t(UNL), pi_u).item() == pytest.approx(bce1(POS) + 10 * kl, rel=1e-10)
    assert ge_kl_loss(t(POS), t(UNL), pi_u, slack=2).item() == pytest.approx(bce1(POS) + 2 * kl, rel=1e-10)


def test_ge_binomial_by_hand():
    pi_u = 0.3
    s = sigmoid(UNL)
    n, mean, var = len(UNL), s.sum(), (s * (1 - s)).sum()
    k = np.arange(n + 1)
    density = np.exp(-(k - mean) ** 2 / (2 * var))
    p = density / density.sum()
    log_binomial = np.log([math.comb(n, int(j)) * pi_u**j * (1 - pi_u) ** (n - j) for j in k])
    expected = bce1(POS) + 1.0 * -(p * log_binomial).sum()
    assert ge_binomial_loss(t(POS), t(UNL), pi_u).item() == pytest.approx(expected, rel=1e-10)


def test_nnpu_positive_branch_by_hand():
    pi = 0.1
    negative = bce0(UNL) - pi * bce0(POS)
    assert negative > 0
    loss = nnpu_loss(t(POS), t(UNL), pi)
    assert loss.backward.item() == pytest.approx(pi * bce1(POS) + negative, rel=1e-12)
    assert loss.report.item() == pytest.approx(loss.backward.item(), rel=1e-12)


def test_nnpu_steps_on_the_negative_part_alone_when_it_goes_below_zero():
    pos, unl, pi = np.array([5.0, 4.0]), np.array([-5.0, -6.0]), 0.5
    negative = bce0(unl) - pi * bce0(pos)
    assert negative < 0
    p, u = t(pos).requires_grad_(), t(unl).requires_grad_()
    loss = nnpu_loss(p, u, pi)
    assert loss.backward.item() == pytest.approx(-negative, rel=1e-12)  # raise the negative risk back to 0
    assert loss.report.item() == pytest.approx(pi * bce1(pos), rel=1e-12)  # the clipped risk
    loss.backward.backward()
    # d(−r)/d(pos) = +π·σ(pos)/|P| > 0: descending on −r lowers the positives' logits, raising r.
    np.testing.assert_allclose(p.grad.numpy(), pi * sigmoid(pos) / 2, rtol=1e-10)


def test_labelled_negatives_add_a_weighted_bce_term_to_every_objective():
    neg = np.array([0.3, -2.0])
    for name in ("ge-binomial", "ge-kl", "pn", "nnpu"):
        base = objective_loss(name, t(POS), t(UNL), t([]), pi=0.1, pi_u=0.05)
        with_neg = objective_loss(name, t(POS), t(UNL), t(neg), pi=0.1, pi_u=0.05, negative_weight=0.5)
        assert (with_neg.backward - base.backward).item() == pytest.approx(0.5 * bce0(neg), rel=1e-10)
        assert (with_neg.report - base.report).item() == pytest.approx(0.5 * bce0(neg), rel=1e-10)


@pytest.mark.parametrize("name", ["ge-binomial", "ge-kl", "pn", "nnpu"])
def test_gradients_are_finite_even_for_saturated_logits(name):
    for scale in (1.0, 60.0):
        torch.manual_seed(0)
        pos = (torch.randn(16) * scale).requires_grad_()
        unl = (torch.randn(240) * scale).requires_grad_()
        neg = (torch.randn(8) * scale).requires_grad_()
        loss = objective_loss(name, pos, unl, neg, pi=0.02, pi_u=0.015)
        loss.backward.backward()
        assert torch.isfinite(loss.backward) and torch.isfinite(loss.report)
        assert all(torch.isfinite(x.grad).all() for x in (pos, unl, neg))


def test_empty_positive_set_and_unknown_objective():
    loss = objective_loss("ge-binomial", t([]), t(UNL), t([]), pi=0.1, pi_u=0.05)
    assert torch.isfinite(loss.backward)
    with pytest.raises(ValueError, match="unknown objective"):
        objective_loss("bogus", t(POS), t(UNL), t([]), pi=0.1)
    with pytest.raises(ValueError, match="pi_u"):
        objective_loss("ge-kl", t(POS), t(UNL), t([]), pi=0.1)
