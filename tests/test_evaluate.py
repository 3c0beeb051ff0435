"""Particle-level evaluation: matching rules, AP, F1, pooling, on cases small enough to check by hand."""
from __future__ import annotations

import numpy as np
import pytest

from streampick.evaluate import (
    average_precision,
    evaluate_sets,
    match_greedy,
    match_hungarian,
    plot_pr,
    pr_curve,
)
from streampick.picks import Picks


def picks(xy, scores=None) -> Picks:
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    return Picks.from_arrays(xy[:, 0], xy[:, 1], scores)


# ----------------------------------------------------------------------------------------------- matching


def test_greedy_takes_nearest_free_reference_in_score_order():
    ref = np.array([[0.0, 0.0], [10.0, 0.0]])
    pred = picks([[9.0, 0.0], [1.0, 0.0], [0.5, 0.0]], [0.9, 0.8, 0.7])
    assert match_greedy(pred, ref, 3.0).tolist() == [True, True, False]


def test_greedy_and_hungarian_differ_when_references_are_closer_than_two_radii():
    # refs 8 apart, radius 5: the top pick sits nearer B but could use A; the second can only use B.
    ref = np.array([[0.0, 0.0], [8.0, 0.0]])
    pred = picks([[4.5, 0.0], [12.0, 0.0]], [0.9, 0.5])
    assert match_greedy(pred, ref, 5.0).tolist() == [True, False]
    assert match_hungarian(pred, ref, 5.0).tolist() == [True, True]
    refs = {"m": picks(ref)}
    assert evaluate_sets({"m": pred}, refs, 5.0, "greedy").ap == pytest.approx(0.5)
    assert evaluate_sets({"m": pred}, refs, 5.0, "hungarian").ap == pytest.approx(1.0)


def test_hungarian_prefers_closer_pairs_among_maximum_matchings():
    ref = np.array([[0.0, 0.0]])
    pred = picks([[3.0, 0.0], [1.0, 0.0]], [0.9, 0.1])  # the lower-scored pick is closer
    assert match_hungarian(pred, ref, 5.0).tolist() == [False, True]
    assert match_greedy(pred, ref, 5.0).tolist() == [True, False]


def test_radius_is_inclusive():
    ref = np.array([[0.0, 0.0]])
    pred = picks([[3.0, 4.0]], [1.0])  # distance exactly 5
    for match in (match_greedy, match_hungarian):
        assert match(pred, ref, 5.0).tolist() == [True]
        assert match(pred, ref, 4.999).tolist() == [False]
        assert match(picks([[0.0, 0.0]], [1.0]), ref, 0.0).tolist() == [True]
        with pytest.raises(ValueError):
            match(pred, ref, -1.0)


def test_empty_inputs():
    for match in (match_greedy, match_hungarian):
        assert match(Picks.empty(), np.zeros((3, 2)), 5.0).tolist() == []
        assert match(picks([[1, 1]], [1.0]), np.zeros((0, 2)), 5.0).tolist() == [False]


def brute_force_greedy(pred_xy, scores, ref_xy, radius):
    is_tp = np.zeros(len(pred_xy), dtype=bool)
    taken = np.zeros(len(ref_xy), dtype=bool)
    for i in np.argsort(-scores, kind="stable"):
        d = np.hypot(*(ref_xy - pred_xy[i]).T)
        d[taken | (d > radius)] = np.inf
        j = int(np.argmin(d))
        if np.isfinite(d[j]):
            is_tp[i], taken[j] = True, True
    return is_tp


def test_greedy_equals_brute_force_on_2000_random_points():
    rng = np.random.default_rng(0)
    ref = rng.uniform(0, 1000, (2000, 2))
    pred_xy = np.concatenate([ref[:1500] + rng.normal(0, 6, (1500, 2)), rng.uniform(0, 1000, (500, 2))])
    pred = picks(pred_xy, rng.normal(size=2000))
    expected = brute_force_greedy(np.column_stack([pred.x, pred.y]), pred.score, ref, 10.0)
    got = match_greedy(pred, ref, 10.0)
    np.testing.assert_array_equal(got, expected)
    # Hungarian finds a maximum matching: never fewer pairs than greedy, and as many as any matching.
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_bipartite_matching

    d = np.hypot(pred.x[:, None] - ref[:, 0], pred.y[:, None] - ref[:, 1])
    best = (maximum_bipartite_matching(csr_matrix(d <= 10.0), perm_type="column") >= 0).sum()
    assert match_hungarian(pred, ref, 10.0).sum() == best >= got.sum()


# -------------------------------------------------------------------------------------------- AP and F1


def test_average_precision_by_hand():
    # TP, FP, TP with 3 references: (1 * 1 + 2/3 * 1) / 3
    flags = np.array([True, False, True])
    precision, recall = pr_curve(flags, 3)
    np.testing.assert_allclose(precision, [1, 0.5, 2 / 3])
    np.testing.assert_allclose(recall, [1 / 3, 1 / 3, 2 / 3])
    assert average_precision(flags, 3) == pytest.approx((1 + 2 / 3) / 3)
    with pytest.raises(ValueError):
        pr_curve(flags, 0)


def test_tied_scores_enter_together():
    # Two picks with the same score, one right one wrong: one step at P = 0.5, whatever their order.
    for flags in ([True, False], [False, True]):
        assert average_precision(np.array(flags), 2, scores=np.array([1.0, 1.0])) == pytest.approx(0.25)
    ref = {"m": picks([[0, 0], [50, 50]])}
    result = evaluate_sets({"m": picks([[0, 0], [20, 20]], [1.0, 1.0])}, ref, 3.0)
    assert result.thresholds.tolist() == [1.0] and result.ap == pytest.approx(0.25)


def test_max_f1_and_threshold():
    # T, T, F, F, T with 4 references: F1 = .4, .667, .571, .5, .667 -> the first maximum (threshold 0.8).
    ref_xy = [[i * 100.0, 0.0] for i in range(4)]
    pred = picks([[0, 0], [100, 0], [50, 500], [60, 500], [200, 0]], [0.9, 0.8, 0.7, 0.6, 0.5])
    result = evaluate_sets({"m": pred}, {"m": picks(ref_xy)}, 5.0)
    assert (result.n_pred, result.n_ref, result.n_tp) == (5, 4, 3)
    assert result.best_f1 == pytest.approx(2 / 3)
    assert result.best_threshold == 0.8
    assert (result.best_precision, result.best_recall) == (1.0, 0.5)
    assert result.ap == pytest.approx((1 * 0.25 + 1 * 0.25 + 0.6 * 0.25) / 1)
    precision, recall, f1, n = result.at_threshold(0.55)
    assert (precision, recall, n) == (0.5, 0.5, 4) and f1 == pytest.approx(0.5)
    assert result.at_threshold(5.0) == (0.0, 0.0, 0.0, 0)


def test_scoreless_picks_are_scored_as_a_set():
    ref = picks([[0, 0], [100, 0], [200, 0], [300, 0]])
    pred = picks([[1, 0], [101, 0], [500, 500]])  # no scores: NaN
    result = evaluate_sets({"m": pred}, {"m": ref}, 5.0)
    assert result.ap is None and not result.has_scores and result.best_threshold is None
    assert (result.best_precision, result.best_recall) == (pytest.approx(2 / 3), 0.5)
    assert result.best_f1 == pytest.approx(4 / 7)
    with pytest.raises(ValueError):
        result.at_threshold(0.0)


def test_mixed_scores_are_refused():
    pred = Picks(np.array([0.0, 1.0]), np.array([0.0, 1.0]), np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="NaN"):
        evaluate_sets({"m": pred}, {"m": picks([[0, 0]])}, 5.0)


# ------------------------------------------------------------------------------------------------ pooling


def test_pooled_over_micrographs():
    ref = {"a": picks([[0, 0], [100, 100]]), "b": picks([[10, 10]]), "c": picks([[5, 5]])}
    pred = {"a": picks([[1, 1], [300, 300]], [0.9, 0.3]), "b": picks([[10, 12]], [0.6]),
            "d": picks([[0, 0], [1, 1]], [1.0, 2.0])}
    result = evaluate_sets(pred, ref, 5.0)
    # ranking .9 T, .6 T, .3 F over 4 references ("c" has no predictions: a miss)
    assert result.ap == pytest.approx(0.5)
    assert (result.n_pred, result.n_ref, result.n_tp) == (3, 4, 2)
    assert result.n_pred_ignored == 2 and result.ignored_micrographs == ("d",)
    assert result.summary()["n_pred_ignored"] == 2
    assert len(result.curve()["precision"]) == 3


def test_pooled_errors_and_empty_predictions():
    ref = {"a": picks([[0, 0]])}
    assert evaluate_sets({}, ref, 5.0).ap == 0.0
    with pytest.raises(ValueError):
        evaluate_sets({}, {"a": Picks.empty()}, 5.0)
    with pytest.raises(ValueError):
        evaluate_sets({}, ref, 5.0, method="nearest")


def test_plot_pr_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    ref = {"m": picks([[0, 0], [100, 0]])}
    result = evaluate_sets({"m": picks([[0, 0], [50, 50]], [1.0, 0.5])}, ref, 5.0)
    plot_pr(result, tmp_path / "pr.png")
    plot_pr(evaluate_sets({"m": picks([[0, 0]])}, ref, 5.0), tmp_path / "pr_scoreless.png")
    for name in ("pr.png", "pr_scoreless.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
