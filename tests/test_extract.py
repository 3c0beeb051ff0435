"""Non-maximum suppression against a brute-force greedy reference, refinement, margins and scaling."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from streampick.extract import extract_picks, nms, smooth_scores


def brute_force_nms(score_map: np.ndarray, radius: float, floor: float) -> np.ndarray:
    """Greedy NMS by the definition: highest remaining pixel first, suppress its disk, repeat."""
    values = score_map.ravel()
    height, width = score_map.shape
    rows, cols = np.divmod(np.arange(values.size), width)
    suppressed = np.zeros(values.size, dtype=bool)
    picked = []
    for index in np.argsort(-values, kind="stable"):
        if values[index] < floor:
            break
        if suppressed[index]:
            continue
        picked.append(index)
        suppressed |= (rows - rows[index]) ** 2 + (cols - cols[index]) ** 2 <= radius * radius
    return np.array(picked, dtype=np.int64)


def smooth_map(seed: int, size: int = 160, blur: int = 7) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(1, 1, size + blur - 1, size + blur - 1, generator=generator)
    return F.avg_pool2d(noise, blur, stride=1)[0, 0] * 4


@pytest.mark.parametrize("radius", [1.0, 3.0, 4.5, 8.0, 13.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_nms_equals_brute_force(radius, seed):
    score_map = smooth_map(seed)
    rows, cols = nms(score_map, radius, floor=-0.5)
    assert len(rows) > 5
    np.testing.assert_array_equal(rows * score_map.shape[1] + cols,
                                  brute_force_nms(score_map.numpy(), radius, -0.5))


def test_nms_with_ties_breaks_them_in_raster_order_like_a_stable_sort():
    score_map = torch.round(smooth_map(3) * 2) / 2  # many exactly equal values
    rows, cols = nms(score_map, 5.0, floor=0.0)
    np.testing.assert_array_equal(rows * score_map.shape[1] + cols,
                                  brute_force_nms(score_map.numpy(), 5.0, 0.0))


def test_nms_on_a_ramp_where_the_vectorized_rounds_leave_most_pixels_to_the_greedy_loop():
    yy, xx = torch.meshgrid(torch.arange(70.0), torch.arange(60.0), indexing="ij")
    score_map = -(yy * 0.37 + xx * 0.11)  # one window maximum per round: the rounds stop with most pixels alive
    rows, cols = nms(score_map, 3.5, floor=-1e9)
    np.testing.assert_array_equal(rows * 60 + cols, brute_force_nms(score_map.numpy(), 3.5, -1e9))


def test_nms_orders_negative_scores_and_signed_zeros_like_a_stable_sort():
    score_map = torch.round(smooth_map(5, size=90) * 3) / 3 - 0.4  # mostly negative, many ties
    score_map[::7, ::5] = -0.0
    score_map[3::7, ::5] = 0.0
    for dtype in (torch.float32, torch.bfloat16):
        cast = score_map.to(dtype)
        rows, cols = nms(cast, 4.0, floor=-3.0)
        np.testing.assert_array_equal(rows * 90 + cols, brute_force_nms(cast.float().numpy(), 4.0, -3.0))


def test_nms_of_a_map_below_the_floor_is_empty():
    rows, cols = nms(torch.full((50, 40), -10.0), 3.0, floor=-6.0)
    assert len(rows) == 0 and len(cols) == 0


def test_subpixel_refinement_finds_an_off_grid_gaussian_peak():
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    centre_y, centre_x = 30.3, 21.7
    score_map = 5 - ((yy - centre_y) ** 2 + (xx - centre_x) ** 2) / 18.0
    picks = extract_picks(score_map, radius=10, floor=0.0, scale=(8.0, 8.0))
    assert len(picks) == 1
    assert picks.x[0] == pytest.approx(centre_x * 8, abs=0.4)
    assert picks.y[0] == pytest.approx(centre_y * 8, abs=0.4)


def test_scores_are_descending_and_edge_margin_drops_border_picks():
    score_map = smooth_map(4)
    everything = extract_picks(score_map, radius=4, floor=-1.0)
    inner = extract_picks(score_map, radius=4, floor=-1.0, edge_margin=10)
    assert np.all(np.diff(everything.score) <= 0)
    assert 0 < len(inner) < len(everything)
    assert inner.x.min() >= 9.5 and inner.y.min() >= 9.5
    assert inner.x.max() <= 160 - 1 - 9.5 and inner.y.max() <= 160 - 1 - 9.5
    # the margin only removes picks: every inner pick is also a pick without the margin
    assert set(zip(inner.x.round(3), inner.y.round(3))) <= set(zip(everything.x.round(3), everything.y.round(3)))


def test_smoothing_keeps_a_flat_map_flat_and_spreads_a_spike_into_a_unit_gaussian():
    flat = torch.full((40, 50), -2.5)
    assert smooth_scores(flat, 0.0) is flat
    torch.testing.assert_close(smooth_scores(flat, 1.5), flat)  # reflected edges add no bias
    spike = torch.zeros(41, 41)
    spike[20, 20] = 1.0
    spread = smooth_scores(spike, 2.0)
    assert float(spread.sum()) == pytest.approx(1.0, abs=1e-5)
    assert float(spread[20, 20]) == pytest.approx(1 / (2 * np.pi * 2.0 ** 2), rel=0.02)
    assert float(spread[20, 22]) == pytest.approx(float(spread[20, 20]) * np.exp(-0.5), rel=0.02)  # 1 σ away
    torch.testing.assert_close(spread, spread.flip(0))
    torch.testing.assert_close(spread, spread.T)
    tiny = smooth_scores(torch.randn(2, 3), 5.0)  # a map smaller than the kernel
    assert tiny.shape == (2, 3) and torch.isfinite(tiny).all()


def test_smoothing_ranks_a_broad_particle_peak_above_a_taller_one_pixel_spike():
    y, x = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    score_map = 2.0 * torch.exp(-((y - 20) ** 2 + (x - 20) ** 2) / (2 * 3.0 ** 2))  # a particle's broad peak
    score_map[45, 45] = 2.5  # one noisy pixel, higher than the particle's centre
    raw = extract_picks(score_map, radius=8, floor=-10)
    assert (round(raw.x[0]), round(raw.y[0])) == (45, 45)
    smoothed = extract_picks(smooth_scores(score_map, 1.5), radius=8, floor=-10)
    assert (round(smoothed.x[0]), round(smoothed.y[0])) == (20, 20)
    assert smoothed.score[0] == pytest.approx(2.0 * 3.0 ** 2 / (3.0 ** 2 + 1.5 ** 2), rel=0.02)


def test_a_peak_on_the_border_is_not_refined_outside_the_map():
    score_map = torch.zeros(20, 20)
    score_map[5, 0], score_map[5, 1] = 3.0, 1.0  # rising towards the left edge
    score_map[19, 10], score_map[18, 10] = 2.0, 1.0  # rising towards the bottom edge
    picks = extract_picks(score_map, radius=3, floor=0.5)
    assert list(zip(picks.x, picks.y)) == [(0.0, 5.0), (10.0, 19.0)]
