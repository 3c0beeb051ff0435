"""The real-set helpers of the accuracy benchmark: split, duplicate merging, label sampling, top-k recall, and
the sets themselves where ../shared is present."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streampick.accuracybench import top_recall
from streampick.evaluate import merge_duplicates
from streampick.picks import Picks
from streampick.realsets import SETS, load_set, published_picks, sample_picks, split_halves


def test_split_halves_sorts_by_name_and_gives_the_extra_one_to_test():
    paths = [Path(f"/x/{n}.png") for n in ("c", "a", "e", "b", "d")]
    train, test = split_halves(paths)
    assert [p.stem for p in train] == ["a", "b"]
    assert [p.stem for p in test] == ["c", "d", "e"]


def test_merge_duplicates_joins_chains_and_keeps_distinct_particles():
    picks = Picks.from_arrays([100, 101, 103, 300, 300.5, 500], [50, 50, 51, 80, 80, 400])
    merged = merge_duplicates(picks, 10.0)
    assert len(merged) == 3
    centres = sorted(zip(np.round(merged.x, 2), np.round(merged.y, 2)))
    assert centres == [(101.33, 50.33), (300.25, 80.0), (500.0, 400.0)]
    assert not merged.has_scores


def test_merge_duplicates_keeps_the_best_score_of_a_cluster():
    picks = Picks.from_arrays([10, 12, 90], [10, 10, 90], [0.5, 2.0, 1.0])
    merged = merge_duplicates(picks, 5.0)
    assert sorted(merged.score.tolist()) == [1.0, 2.0]


def test_sample_picks_draws_the_fraction_over_all_micrographs_reproducibly():
    reference = {"a": Picks.from_arrays(np.arange(60), np.arange(60)),
                 "b": Picks.from_arrays(np.arange(40), np.arange(40)), "test": Picks.from_arrays([1], [1])}
    first = sample_picks(reference, ["a", "b"], 0.3, seed=0)
    again = sample_picks(reference, ["a", "b"], 0.3, seed=0)
    other = sample_picks(reference, ["a", "b"], 0.3, seed=1)
    assert set(first) == {"a", "b"}
    assert sum(len(p) for p in first.values()) == 30
    assert all(np.array_equal(first[n].x, again[n].x) for n in first)
    assert any(not np.array_equal(first[n].x, other[n].x) for n in first)
    assert set(first["a"].x) <= set(reference["a"].x)


def test_top_recall_keeps_k_times_the_reference_count_per_micrograph():
    reference = {"m": Picks.from_arrays([0, 100, 200, 300], [0, 0, 0, 0])}
    # the two best picks are false, then the four true ones
    picks = {"m": Picks.from_arrays([50, 150, 0, 100, 200, 300], [500, 500, 0, 0, 0, 0], [9, 8, 7, 6, 5, 4])}
    assert top_recall(picks, reference, 10, 1.0) == pytest.approx(0.5)  # top 4: two false, two true
    assert top_recall(picks, reference, 10, 1.5) == pytest.approx(1.0)  # top 6
    scoreless = {"m": Picks.from_arrays([0, 100], [0, 0])}
    assert top_recall(scoreless, reference, 10, 1.0) == pytest.approx(0.5)


@pytest.mark.parametrize("realset", SETS, ids=lambda s: s.key)
def test_real_sets_load_with_their_documented_splits_and_counts(realset, real_data):
    files = load_set(real_data, realset, report=pytest.fail)
    sizes = {"10017": (10, 10), "10146": (8, 9), "10028": (5, 5)}[realset.key]
    assert (len(files.train), len(files.test)) == sizes
    assert [p.name for p in files.train + files.test] == sorted(p.name for p in files.train + files.test)
    total = sum(len(p) for p in files.reference.values())
    expected = {"10017": 13021, "10146": 2771, "10028": 865}[realset.key]
    assert files.raw_reference_count == {"10146": 5448}.get(realset.key, expected)
    assert abs(total - expected) <= 0.01 * expected


def test_published_10017_picks_need_and_get_the_y_flip(real_data):
    realset = SETS[0]
    files = load_set(real_data, realset, report=pytest.fail)
    picks = published_picks(real_data, files, realset.published[0][1], report=pytest.fail)
    assert sum(len(p) for p in picks.values()) == 12395  # crYOLO, README total
    assert not next(iter(picks.values())).has_scores  # crYOLO's -999 figure of merit: no scores
    from streampick.evaluate import evaluate_sets
    result = evaluate_sets(picks, files.reference, realset.diameter_px / 2)
    assert result.best_precision > 0.8 and result.best_recall > 0.8  # README: P 0.868, R 0.826 on all 20
