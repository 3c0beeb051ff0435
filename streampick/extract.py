"""Extraction: logit map in, particle picks out (non-maximum suppression, method.md §4).

``nms`` gives exactly what greedy NMS gives (take the highest remaining pixel, suppress a disk around
it, repeat) without a Python loop over all pixels: a vectorized round selects every pixel that is the maximum of its
(2r+1)² window (such a pixel has no higher pixel within r, so greedy NMS takes it too) and suppresses disks
around those picks; the pixels still alive then go through the plain greedy loop, which is exact on them
because every pixel the round suppressed lies within r of a higher pick.
Peaks are refined to sub-pixel precision with a parabola through the map's 3-point neighbourhood, and
scaled back to the original micrograph's pixels.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .picks import Picks

_POOLED_ROUNDS = 1  # rounds of window maxima over the whole map; the pixels left go through plain greedy


def _window_max(values: torch.Tensor, radius: int) -> torch.Tensor:
    """Max over a (2r+1)² window, computed separably (rows then columns)."""
    k = 2 * radius + 1
    v = values[None, None]
    v = F.max_pool2d(v, (1, k), stride=1, padding=(0, radius))
    v = F.max_pool2d(v, (k, 1), stride=1, padding=(radius, 0))
    return v[0, 0]


def _disk_offsets(radius: float) -> tuple[torch.Tensor, torch.Tensor]:
    r = int(np.floor(radius))
    dy, dx = torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="ij")
    inside = dy * dy + dx * dx <= radius * radius
    return dy[inside], dx[inside]


def nms(score_map: torch.Tensor, radius: float, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Greedy non-maximum suppression over all pixels of ``score_map`` scoring at least ``floor``.

    Args:
        score_map: (H, W) logits.
        radius: suppression radius in map pixels (a pick suppresses pixels within this distance).
        floor: pixels below it are never picked.

    Returns:
        (rows, cols) integer arrays of the picks, in descending score order.  Ties are broken by raster
        order (earlier pixel first), as a stable sort of the brute-force reference would.
    """
    height, width = score_map.shape
    # Work on ranks instead of scores: a total order (ties broken by raster order, as a stable sort would),
    # exact in float32 for up to 2**24 candidates.
    flat = score_map.reshape(-1)
    candidates = torch.nonzero(flat >= floor, as_tuple=True)[0]
    order = torch.sort(flat[candidates], descending=True, stable=True).indices
    ranks = torch.full((height * width,), -1.0, device=score_map.device)
    ranks[candidates[order]] = torch.arange(len(order), 0, -1, dtype=torch.float32, device=score_map.device)
    remaining = ranks.reshape(height, width).clone()
    dy, dx = _disk_offsets(radius)
    dy, dx = dy.to(score_map.device), dx.to(score_map.device)
    window = max(int(np.ceil(radius)), 1)
    picked_rows, picked_cols = [], []
    for _ in range(_POOLED_ROUNDS):
        alive = remaining > 0
        if not bool(alive.any()):
            break
        is_peak = alive & (remaining >= _window_max(remaining, window))
        rows, cols = torch.nonzero(is_peak, as_tuple=True)
        picked_rows.append(rows)
        picked_cols.append(cols)
        sy = (rows[:, None] + dy[None]).clamp(0, height - 1)
        sx = (cols[:, None] + dx[None]).clamp(0, width - 1)
        inside = ((rows[:, None] + dy[None]) == sy) & ((cols[:, None] + dx[None]) == sx)
        remaining[sy[inside], sx[inside]] = -1.0
    rows, cols = _greedy_rest(remaining.cpu().numpy(), radius)
    picked_rows.append(torch.from_numpy(rows).to(score_map.device))
    picked_cols.append(torch.from_numpy(cols).to(score_map.device))
    rows, cols = torch.cat(picked_rows), torch.cat(picked_cols)
    order = torch.argsort(ranks.reshape(height, width)[rows, cols], descending=True)
    return rows[order].cpu().numpy(), cols[order].cpu().numpy()


def _greedy_rest(remaining: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Plain greedy NMS over the few pixels the pooled rounds left alive (rank > 0), best first."""
    rows, cols = np.nonzero(remaining > 0)
    if len(rows) == 0:
        return rows.astype(np.int64), cols.astype(np.int64)
    order = np.argsort(-remaining[rows, cols], kind="stable")
    rows, cols = rows[order], cols[order]
    r = int(np.floor(radius))
    offsets = np.arange(-r, r + 1)
    disk = offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius * radius
    pad = r
    suppressed = np.zeros((remaining.shape[0] + 2 * pad, remaining.shape[1] + 2 * pad), dtype=bool)
    keep = []
    for index, (row, col) in enumerate(zip(rows.tolist(), cols.tolist())):
        if suppressed[row + pad, col + pad]:
            continue
        keep.append(index)
        suppressed[row:row + 2 * pad + 1, col:col + 2 * pad + 1] |= disk
    keep = np.asarray(keep, dtype=np.int64)
    return rows[keep].astype(np.int64), cols[keep].astype(np.int64)


def _refine(score_map: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel offsets from a parabola through each peak and its two neighbours along each axis."""
    height, width = score_map.shape

    def offset(minus: np.ndarray, centre: np.ndarray, plus: np.ndarray) -> np.ndarray:
        curvature = minus - 2 * centre + plus
        with np.errstate(divide="ignore", invalid="ignore"):
            step = np.where(curvature < 0, 0.5 * (minus - plus) / curvature, 0.0)
        return np.clip(step, -0.5, 0.5)

    r0, r1 = np.clip(rows - 1, 0, height - 1), np.clip(rows + 1, 0, height - 1)
    c0, c1 = np.clip(cols - 1, 0, width - 1), np.clip(cols + 1, 0, width - 1)
    centre = score_map[rows, cols]
    dy = offset(score_map[r0, cols], centre, score_map[r1, cols])
    dx = offset(score_map[rows, c0], centre, score_map[rows, c1])
    return rows + dy, cols + dx


def extract_picks(score_map: torch.Tensor, *, radius: float, floor: float, scale: tuple[float, float] = (1, 1),
                  edge_margin: float = 0.0) -> Picks:
    """Picks from one logit map, in original-micrograph pixels.

    Args:
        score_map: (H, W) logits at the working scale.
        radius: NMS radius in map pixels.
        floor: lowest score kept (keep it low: every candidate is kept so thresholds can change later).
        scale: (y, x) original pixels per map pixel.
        edge_margin: drop picks whose centre is closer than this to the border (map pixels).

    Returns:
        Picks sorted by descending score, x/y in the original micrograph's pixel frame.
    """
    rows, cols = nms(score_map, radius, floor)
    height, width = score_map.shape
    if edge_margin > 0:
        keep = (rows >= edge_margin) & (cols >= edge_margin) & (rows <= height - 1 - edge_margin) \
            & (cols <= width - 1 - edge_margin)
        rows, cols = rows[keep], cols[keep]
    values = score_map.detach().cpu().numpy()
    y, x = _refine(values, rows, cols)
    return Picks(x * scale[1], y * scale[0], values[rows, cols].astype(np.float64))
