"""The automatic threshold (streampick.train.threshold) on hand-built pick sets with known truth."""
from __future__ import annotations

import numpy as np
import pytest

from streampick.picks import Picks
from streampick.train.threshold import count_threshold, estimate_threshold, pu_curve


def picks(scores, start=0.0):
    """Picks 100 px apart along a row, with these scores."""
    scores = np.asarray(scores, dtype=float)
    return Picks.from_arrays(start + 100.0 * np.arange(len(scores)), np.full(len(scores), 50.0), scores)


def test_count_rule_gives_the_score_of_the_expected_count():
    # 2 micrographs, 3 expected per micrograph: the 6th highest of all scores.
    sets = {"a": picks([9, 7, 5, 3, 1]), "b": picks([8, 6, 4, 2, 0])}
    estimate = estimate_threshold(sets, {}, 3, radius=10, method="count")
    assert estimate.value == 4.0 and estimate.method == "count"
    assert estimate.picks_per_micrograph == 3.0 and estimate.count_micrographs == 2
    assert estimate.precision is None and estimate.note == ""  # no labels: no PU estimate
    assert sum(len(p.above(estimate.value)) for p in sets.values()) == 6


def test_count_rule_with_ties_fewer_candidates_and_none():
    scores = np.array([5, 4, 3, 3, 3, 2, 1.0])
    assert count_threshold(scores, 1, 4) == 3.0  # 5 picks at 3.0 is nearer 4 than 2 picks at 4.0
    assert count_threshold(scores, 1, 3) == 4.0  # 2 and 5 are equally near 3: the higher threshold
    assert count_threshold(scores, 2, 10) == 1.0  # fewer candidates than expected: keep them all
    assert count_threshold(np.zeros(0), 1, 3) is None
    estimate = estimate_threshold({"a": picks([2, 1])}, {}, 5, radius=10, method="count")
    assert estimate.value == 1.0 and "fewer than the expected" in estimate.note
    empty = estimate_threshold({"a": Picks.empty()}, {}, 5, radius=10)
    assert empty.value is None and empty.picks_per_micrograph == 0


def test_micrographs_without_candidates_count():
    sets = {"a": picks([9, 8, 7, 6]), "b": Picks.empty()}
    assert estimate_threshold(sets, {}, 1, radius=10).value == 8.0  # 2 picks over 2 micrographs


def synthetic(rng, n_mics=20, per_mic=100, fp_per_mic=100, label_fraction=0.3):
    """Particles on a grid; the model scores particles ~N(1, 1) and false positives ~N(-1, 1); the labels are a
    random ``label_fraction`` of the particles.  Returns (picks, labels, truth) by micrograph."""
    sets, labels, truth = {}, {}, {}
    for i in range(n_mics):
        xy = np.stack(np.meshgrid(np.arange(10) * 100.0, np.arange(10) * 100.0), -1).reshape(-1, 2)[:per_mic]
        fp = xy[:fp_per_mic] + 50.0  # between the particles, > 10 px from any
        xs = np.concatenate([xy[:, 0], fp[:, 0]])
        ys = np.concatenate([xy[:, 1], fp[:, 1]])
        scores = np.concatenate([rng.normal(1, 1, len(xy)), rng.normal(-1, 1, len(fp))])
        name = f"m{i}"
        sets[name] = Picks.from_arrays(xs, ys, scores)
        chosen = rng.random(len(xy)) < label_fraction
        labels[name] = Picks.from_arrays(xy[chosen, 0], xy[chosen, 1])
        truth[name] = Picks.from_arrays(xy[:, 0], xy[:, 1])
    return sets, labels, truth


def test_pu_estimate_matches_the_truth_on_a_synthetic_case():
    from streampick.evaluate import evaluate_sets

    rng = np.random.default_rng(0)
    sets, labels, truth = synthetic(rng)
    true = evaluate_sets(sets, truth, 10)
    curve = pu_curve(sets, labels, 100, 10)
    for t in (1.0, 0.5, 0.0, -0.5):
        i = int(np.searchsorted(-curve.thresholds, -t, side="right")) - 1
        p, r, f1, n = true.at_threshold(float(curve.thresholds[i]))
        assert curve.n_picks[i] == n
        assert curve.recall[i] == pytest.approx(r, abs=0.06)  # ~600 labels: sd of the estimate ~0.02
        # the precision estimate is the recall estimate scaled by the expected count (exact here) per pick
        assert curve.precision[i] == pytest.approx(min(1.0, p * curve.recall[i] / r), rel=1e-9)
        assert curve.f1[i] == pytest.approx(f1, abs=0.06)
    held = [f"m{i}" for i in range(10)]  # recall from these micrographs' labels; counts over all 20
    # Both rules land near the best F1 against the complete truth; F1 against the sparse labels does not.
    for method in ("count", "pu-f1"):
        estimate = estimate_threshold(sets, labels, 100, 10, held_out=held, method=method)
        assert estimate.method == method and estimate.estimate_micrographs == "held-out (10)"
        assert true.at_threshold(estimate.value)[2] >= true.best_f1 - 0.025
        assert estimate.f1 == pytest.approx(true.at_threshold(estimate.value)[2], abs=0.04)
    # Equal classes: the best F1 is where picks ≈ particles, i.e. the count rule's threshold.
    count = estimate_threshold(sets, labels, 100, 10, held_out=held, method="count")
    naive = evaluate_sets(sets, labels, 10).best_threshold  # F1 against the sparse labels: too few picks
    assert naive > count.value and true.at_threshold(naive)[2] < true.best_f1 - 0.02
    assert count.picks_per_micrograph == pytest.approx(100, abs=0.5)
    assert count.precision == pytest.approx(count.recall, abs=0.01)
    # The default: the lower of the two thresholds, as near the best F1.
    lower = estimate_threshold(sets, labels, 100, 10, held_out=held)
    assert lower.method == "lower" and lower.value == min(lower.count_value, lower.pu_f1_value)
    assert true.at_threshold(lower.value)[2] >= true.best_f1 - 0.025 and "the lower of" in lower.note


def test_the_lower_rule_keeps_more_picks_when_the_expected_count_is_too_low():
    from streampick.evaluate import evaluate_sets

    rng = np.random.default_rng(2)
    sets, labels, truth = synthetic(rng)
    true = evaluate_sets(sets, truth, 10)
    held = [f"m{i}" for i in range(10)]
    # the user's count misses 30 % of the particles (as counts from incomplete picks do)
    count = estimate_threshold(sets, labels, 70, 10, held_out=held, method="count")
    lower = estimate_threshold(sets, labels, 70, 10, held_out=held)
    assert lower.value < count.value and lower.picks_per_micrograph > count.picks_per_micrograph
    assert true.at_threshold(lower.value)[2] > true.at_threshold(count.value)[2] + 0.02
    assert "pu-f1's" in lower.note


def test_without_held_out_micrographs_the_estimate_is_marked_optimistic_and_pu_f1_falls_back():
    rng = np.random.default_rng(1)
    sets, labels, _ = synthetic(rng, n_mics=4)
    estimate = estimate_threshold(sets, labels, 100, 10)
    assert estimate.estimate_micrographs == "training (4, optimistic)" and estimate.n_labels > 0
    for method in ("pu-f1", "lower"):  # no labels: the count rule
        fallback = estimate_threshold(sets, {}, 100, 10, method=method)
        assert fallback.method == "count" and f"count rule instead of {method}" in fallback.note
        assert fallback.value == estimate.count_value
    card = estimate.to_dict()
    assert card["method"] == "lower" and card["value"] == pytest.approx(estimate.value)
    assert set(card) >= {"estimated_precision", "estimated_recall", "estimated_f1", "count_micrographs",
                         "estimate_micrographs", "expected_particles", "picks_per_micrograph"}


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown threshold method"):
        estimate_threshold({"a": picks([1])}, {}, 1, 10, method="f1")
    with pytest.raises(ValueError, match="no micrographs"):
        estimate_threshold({}, {}, 1, 10)
    with pytest.raises(ValueError, match="positive"):
        estimate_threshold({"a": picks([1])}, {}, 0, 10)
    with pytest.raises(ValueError, match="held-out micrographs without picks"):
        estimate_threshold({"a": picks([1])}, {}, 1, 10, held_out=["b"])
