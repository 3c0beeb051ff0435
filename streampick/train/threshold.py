"""The automatic score threshold: chosen from what a user really gives (issue 7, capability 3).

Scores are logits, not calibrated across datasets (method.md §4), so a trained model carries its own default
threshold in its card (``ModelCard.threshold``).  Only two things are known about the user's data: sparse
labels (a fraction of the particles, ideally a random one) and the expected number of particles per
micrograph ``E``.  F1 against the sparse labels alone is biased (every unlabelled particle counts as a false
positive, so it prefers far too few picks).  Two rules that are not, both from the kept model's candidates
(after non-maximum suppression, every candidate above the floor) on ``M`` micrographs:

* **count**: the score at which the picks number ``E`` per micrograph on average over *all*
  ``M`` micrographs given to training, held-out and training ones alike (the ``round(E × M)``-th highest
  candidate score, or the nearest count that ties allow).  It does not use the labels, so training
  micrographs serve as well as held-out ones, and more micrographs average out how far each one's particle
  count is from ``E``.  Where ``E`` is right, precision = recall at that threshold.
* **pu-f1**: the maximum of a PU-corrected F1.  When the labels are a random subset of the particles, the
  recall of the labelled particles ``R(t)`` estimates the recall of all particles without bias; the true
  positives are then ``R(t) × E × M`` and the precision ``P(t) = R(t) × E × M / n(t)`` (``n(t)``: picks
  with score ≥ ``t`` on all ``M`` micrographs), ``F1 = 2PR / (P + R)``.  ``R(t)`` is measured on the held-out
  micrographs only (on training micrographs the labelled particles score higher than the others: ``R`` is
  optimistic there), so it carries the noise of a recall measured on a few dozen labels.

* **lower** (the default): the lower of the two thresholds, so the more picks.  When ``E`` is right the
  count rule's is usually the lower one; when ``E`` is too low (counted from picks that miss particles, as
  expert references on real micrographs do) the count rule keeps too few, and the PU-corrected F1 then asks
  for more.  A missed particle is lost to every later step, while 2D classification removes extra picks.

Whichever rule is chosen, the estimate also gives ``P``, ``R`` and ``F1`` at the chosen threshold (at the
count rule's threshold all three ≈ ``R(t)``), stored in the model card beside it, with both rules' values.

Measured with ``python -m streampick.thresholdbench`` (docs/training.md, "Automatic threshold"; 32 models,
10 simulated datasets, F1 against the complete truth on 10 micrographs per dataset that training never saw,
compared with the best F1 any threshold reaches there): the count rule's F1 was on average 0.013 below the
best (median 0.006, worst 0.049); counting on the held-out micrographs only, 0.044 (worst 0.136); pu-f1 on
the held-out micrographs, 0.026 (worst 0.098); F1 against the sparse labels, 0.103 (worst 0.330); logit 0,
0.211.  With ``E`` off by ×0.85 / ×1.15 the count rule's mean gap was 0.029 / 0.020, by ×0.7 / ×1.3
0.069 / 0.041.  The recall estimate ``R(t)`` was unbiased on the held-out micrographs (error +0.001 ± 0.030),
but on new micrographs the estimated F1 was optimistic by 0.09 ± 0.10 (up to 0.34): one or two held-out
micrographs are a small sample.  On those 9 of the models whose pu-f1 threshold took its recall on the held-out
micrographs and its counts on all of them (as here), the lower of the two was always the count rule's, at the
right ``E`` and with ``E`` off by ×0.7 or ×1.3: ``lower`` loses nothing there.  On real micrographs, validated
within the train halves of the three EMPIAR sets only (the first half of each train half fine-tuned on 30 % of
its reference picks, the second half scored against its whole reference; the test halves untouched), F1 at
the count / pu-f1 / lower threshold was 0.782 / 0.855 / 0.855 (EMPIAR-10017), 0.954 / 0.955 / 0.955 (10146)
and 0.731 / 0.806 / 0.806 (10028), against a best of 0.863, 0.958 and 0.807: there the reference counts
(``E``) miss particles, and pu-f1 gave the lower threshold every time.  Hence ``lower`` is the default.

Everything here is pure computation on picks; picking the micrographs is the caller's job
(:func:`streampick.train.loop.pick_prepared`).
"""
from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np

from ..evaluate import evaluate_sets
from ..picks import Picks

METHODS = ("lower", "count", "pu-f1")


@dataclass(frozen=True)
class PUCurve:
    """PU-corrected precision/recall/F1 per distinct candidate score (descending), pooled over micrographs.

    ``recall`` is that of the labelled particles (unbiased for all particles when the labels are a random
    subset); ``precision`` = recall × expected total / picks, clipped to [0, 1].
    """

    thresholds: np.ndarray
    n_picks: np.ndarray
    recall: np.ndarray
    precision: np.ndarray
    f1: np.ndarray


@dataclass(frozen=True)
class ThresholdEstimate:
    """A threshold and how it was derived (JSON-ready through :meth:`to_dict`, for ``card.metrics``).

    ``value`` is None only when there is no candidate at all.  ``precision``, ``recall`` and ``f1`` are the
    PU-corrected estimates at ``value`` on the ``estimate_micrographs`` (None without labels there).
    ``count_value`` and ``pu_f1_value`` are what each rule gives, whichever was chosen.
    """

    method: str
    value: float | None
    count_micrographs: int  # micrographs whose candidates were counted
    estimate_micrographs: str  # where P/R/F1 were estimated: "held-out (N)" or "training (N, optimistic)"
    n_labels: int  # labelled particles on the estimate micrographs
    expected_particles: float
    picks_per_micrograph: float
    precision: float | None
    recall: float | None
    f1: float | None
    count_value: float | None
    pu_f1_value: float | None
    note: str = ""

    def to_dict(self) -> dict:
        def num(v):
            return None if v is None else round(float(v), 6)

        return {"method": self.method, "value": self.value, "count_micrographs": self.count_micrographs,
                "estimate_micrographs": self.estimate_micrographs, "n_labels": self.n_labels,
                "expected_particles": self.expected_particles,
                "picks_per_micrograph": round(self.picks_per_micrograph, 3),
                "estimated_precision": num(self.precision), "estimated_recall": num(self.recall),
                "estimated_f1": num(self.f1), "count_value": num(self.count_value),
                "pu_f1_value": num(self.pu_f1_value), "note": self.note}


def pooled_scores(picks: Mapping[str, Picks]) -> np.ndarray:
    """Every candidate's score over all micrographs, descending."""
    scores = [np.asarray(p.score, dtype=np.float64) for p in picks.values() if len(p)]
    return -np.sort(-np.concatenate(scores)) if scores else np.zeros(0)


def count_threshold(scores: np.ndarray, n_micrographs: int, expected_particles: float) -> float | None:
    """The candidate score at which the picks at or above it number ``E`` per micrograph on average, as
    nearly as the scores allow: of the distinct scores, the one whose pick count is nearest ``E × M``
    (the higher on a tie; scores computed in bfloat16 tie often).  The lowest score when there are fewer
    candidates than ``E × M``; None when there are none.

    Args:
        scores: all candidate scores on the ``M`` micrographs (any order).
        n_micrographs: ``M`` (micrographs without a candidate count too).
        expected_particles: ``E`` > 0.
    """
    if expected_particles <= 0 or n_micrographs <= 0:
        raise ValueError("expected_particles and n_micrographs must be positive")
    scores = -np.sort(-np.asarray(scores, dtype=np.float64))
    if len(scores) == 0:
        return None
    ends = np.append(np.flatnonzero(scores[1:] != scores[:-1]) + 1, len(scores))  # picks at each distinct score
    best = int(np.argmin(np.abs(ends - expected_particles * n_micrographs)))  # argmin: the first, higher one
    return float(scores[ends[best] - 1])


def pu_curve(picks: Mapping[str, Picks], labels: Mapping[str, Picks], expected_particles: float,
             radius: float, recall_on: Collection[str] = ()) -> PUCurve | None:
    """The PU-corrected curve (see the module docstring) at every distinct candidate score; None when there
    is no labelled particle or no candidate.

    Args:
        picks: candidates by micrograph (every micrograph considered, even one without candidates): the pick
            counts ``n(t)`` and the expected total ``E × M`` are over all of them.
        labels: labelled particles by micrograph (same names; a micrograph absent here has no labels).
        expected_particles: ``E``, particles per micrograph.
        radius: match radius in the picks' pixels (half the particle diameter).
        recall_on: the micrographs whose labelled particles give the recall ``R(t)`` (the held-out ones);
            default all.
    """
    names = [name for name in picks if name in set(recall_on)] or list(picks)
    ref = {name: labels.get(name, Picks.empty()) for name in names}
    scores = pooled_scores(picks)
    if sum(len(p) for p in ref.values()) == 0 or len(scores) == 0:
        return None
    matched = evaluate_sets({name: picks[name] for name in names}, ref, radius)  # ranked scores, TP flags
    ends = np.append(np.flatnonzero(scores[1:] != scores[:-1]) + 1, len(scores))
    thresholds = scores[ends - 1]
    above = np.searchsorted(-matched.scores, -thresholds, side="right")  # recall-set picks with score ≥ t
    recall = np.concatenate([[0], np.cumsum(matched.is_tp)])[above] / matched.n_ref
    precision = np.clip(recall * expected_particles * len(picks) / ends, 0.0, 1.0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    return PUCurve(thresholds, ends, recall, precision, f1)


def at_threshold(curve: PUCurve, value: float) -> tuple[float, float, float] | None:
    """The curve's (precision, recall, F1) for the picks with score ≥ ``value`` (None: no pick is that high)."""
    i = int(np.searchsorted(-curve.thresholds, -value, side="right")) - 1  # the last threshold ≥ value
    return None if i < 0 else (float(curve.precision[i]), float(curve.recall[i]), float(curve.f1[i]))


def estimate_threshold(picks: Mapping[str, Picks], labels: Mapping[str, Picks], expected_particles: float,
                       radius: float, *, held_out: Collection[str] = (), method: str = "lower"
                       ) -> ThresholdEstimate:
    """Choose a score threshold from the model's candidates on the user's micrographs (module docstring).

    Args:
        picks: the model's candidates by micrograph name (score-sorted, after NMS, above the floor) on every
            micrograph considered, training and held-out alike (a micrograph without candidates must still
            be a key: it counts in the count rule).
        labels: the sparse labelled particles by micrograph name, in the same pixels.
        expected_particles: expected particles per micrograph (the user's figure, as given to training).
        radius: match radius for the PU estimate, in the picks' pixels (half the particle diameter).
        held_out: the names (keys of ``picks``) of the micrographs the model was not trained on: the PU
            estimate and the pu-f1 rule use these alone; when there are none they use all micrographs, and
            the estimate is marked optimistic.
        method: ``"lower"`` (the lower of the two rules' thresholds), ``"count"`` (on every micrograph in
            ``picks``) or ``"pu-f1"``; ``lower`` and ``pu-f1`` fall back to ``count`` where no labelled particle
            is available.

    Raises:
        ValueError: an unknown method, no micrographs, a held-out name not in ``picks``, or
            expected_particles ≤ 0.
    """
    if method not in METHODS:
        raise ValueError(f"unknown threshold method {method!r} (known: {', '.join(METHODS)})")
    if not picks:
        raise ValueError("no micrographs to choose a threshold on")
    if not (expected_particles > 0 and math.isfinite(expected_particles)):
        raise ValueError(f"expected_particles must be a positive number, got {expected_particles}")
    unknown = sorted(set(held_out) - set(picks))
    if unknown:
        raise ValueError(f"held-out micrographs without picks: {', '.join(unknown)}")
    scores = pooled_scores(picks)
    m = len(picks)
    count_value = count_threshold(scores, m, expected_particles)
    names = [name for name in picks if name in set(held_out)] or list(picks)
    where = f"held-out ({len(names)})" if held_out else f"training ({len(names)}, optimistic)"
    curve = pu_curve(picks, labels, expected_particles, radius, recall_on=names)
    pu_value = None if curve is None else float(curve.thresholds[int(np.argmax(curve.f1))])
    notes = []
    if len(scores) < expected_particles * m:
        notes.append(f"only {len(scores)} candidates on {m} micrographs, fewer than the expected "
                     f"{expected_particles:g} per micrograph: the threshold keeps them all")
    chosen, value = method, {"count": count_value, "pu-f1": pu_value}.get(method)
    if method == "lower":
        value = min((v for v in (count_value, pu_value) if v is not None), default=None)
        if count_value is not None and pu_value is not None:
            notes.append(f"the lower of the count rule's {count_value:.4g} and the pu-f1 rule's {pu_value:.4g}: "
                         + ("pu-f1's" if pu_value < count_value else "the count rule's"))
    if pu_value is None and method != "count":
        chosen, value = "count", count_value
        notes.append(f"no labelled particle to estimate recall on: the count rule instead of {method}")
    estimate = at_threshold(curve, value) if curve is not None and value is not None else None
    precision, recall, f1 = estimate if estimate is not None else (None, None, None)
    kept = int(np.sum(scores >= value)) if value is not None else 0
    n_labels = sum(len(labels.get(name, Picks.empty())) for name in names)
    return ThresholdEstimate(chosen, value, m, where, n_labels, float(expected_particles), kept / m, precision,
                             recall, f1, count_value, pu_value, "; ".join(notes))
