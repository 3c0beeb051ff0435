"""Extraction: logit map in, particle picks out (non-maximum suppression, method.md §4).

``nms`` gives exactly what greedy NMS gives (take the highest remaining pixel, suppress a disk around
it, repeat) without a Python loop over all pixels.  Each pixel gets a distinct integer key that orders pixels
as a stable descending sort of the scores would (score first, then raster order), so no sort of the map is
needed.  Vectorized rounds then select every live pixel that is the highest live pixel of its (2r+1)² window
(no live pixel within r outranks it, and every dead one was suppressed by an earlier greedy pick, so greedy NMS
takes it too) and suppress disks around those picks; the few pixels still alive after the rounds go through the
plain greedy loop, which is exact on them for the same reason.  The window maximum is a sliding maximum built
from log2(2r+1) shifted element-wise maxima per axis, so a round costs a few passes over the map whatever r is.
Before NMS the map may be smoothed with a Gaussian (:func:`smooth_scores`, the model card's ``smoothing``):
a pick's score then sums the evidence around its centre rather than one pixel's, which ranks particles better
on real micrographs (docs/benchmarks.md, issue 7).  Peaks are refined to sub-pixel precision with a parabola
through the map's 3-point neighbourhood (not across the map's border), and scaled back to the original
micrograph's pixels.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .picks import Picks

_MAX_ROUNDS = 6  # vectorized rounds at most; they stop early once few pixels are left alive
_GREEDY_BELOW = 256  # live pixels few enough for the plain greedy loop
_DEAD = torch.iinfo(torch.int64).min


def _ordered_keys(score_map: torch.Tensor, floor: float) -> torch.Tensor:
    """Distinct int64 keys, higher for a higher score and, among equal scores, for an earlier pixel (raster
    order); pixels below ``floor`` (or NaN) get the dead key."""
    scores = score_map.float().reshape(-1) + 0.0  # + 0.0 turns -0.0 into 0.0, which a sort treats as equal
    bits = scores.view(torch.int32).to(torch.int64)
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)  # float order as integer order
    n = scores.numel()
    shift = max(1, int(n - 1).bit_length())
    tie_break = (n - 1) - torch.arange(n, device=score_map.device, dtype=torch.int64)
    keys = (ordered << shift) | tie_break
    return torch.where(scores >= floor, keys, torch.full_like(keys, _DEAD)).reshape(score_map.shape)


def _sliding_max(padded: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """Max over the windows [i - radius, i + radius] along ``dim`` of a tensor padded by ``radius`` on both
    sides of ``dim`` (the result has the unpadded size there)."""
    size = padded.shape[dim] - 2 * radius
    k = 2 * radius + 1
    span, level = 1, padded
    while span * 2 <= k:  # level[i] = max(padded[i : i + 2 span]) after each step
        length = level.shape[dim] - span
        level = torch.maximum(level.narrow(dim, 0, length), level.narrow(dim, span, length))
        span *= 2
    return torch.maximum(level.narrow(dim, 0, size), level.narrow(dim, k - span, size))


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
    keys = _ordered_keys(score_map, floor)
    pad = max(int(np.ceil(radius)), 1)  # the window's half-width; a dead border of that width
    live = torch.full((height + 2 * pad, width + 2 * pad), _DEAD, dtype=torch.int64, device=score_map.device)
    inner = live[pad:pad + height, pad:pad + width]  # a view: dead (picked or suppressed) pixels get the dead key
    inner.copy_(keys)
    dy, dx = _disk_offsets(radius)
    disk = (dy * live.shape[1] + dx).to(score_map.device)  # the disk as offsets in the flat padded map
    flat = live.view(-1)
    picked_rows, picked_cols = [], []
    for _ in range(_MAX_ROUNDS):
        alive = inner != _DEAD
        if int(alive.sum()) <= _GREEDY_BELOW:
            break
        window_max = _sliding_max(_sliding_max(live, pad, 1), pad, 0)
        rows, cols = torch.nonzero(alive & (inner == window_max), as_tuple=True)
        picked_rows.append(rows)
        picked_cols.append(cols)
        centres = (rows + pad) * live.shape[1] + (cols + pad)
        flat[(centres[:, None] + disk[None]).reshape(-1)] = _DEAD
    rows, cols = _greedy_rest(inner.cpu().numpy(), radius)
    picked_rows.append(torch.from_numpy(rows).to(score_map.device))
    picked_cols.append(torch.from_numpy(cols).to(score_map.device))
    rows, cols = torch.cat(picked_rows), torch.cat(picked_cols)
    order = torch.argsort(keys[rows, cols], descending=True)
    return rows[order].cpu().numpy(), cols[order].cpu().numpy()


def _greedy_rest(live: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Plain greedy NMS over the pixels the vectorized rounds left alive (key above the dead key), best
    first."""
    dead = np.iinfo(np.int64).min
    rows, cols = np.nonzero(live != dead)
    if len(rows) == 0:
        return rows.astype(np.int64), cols.astype(np.int64)
    order = np.argsort(-live[rows, cols], kind="stable")
    rows, cols = rows[order], cols[order]
    r = int(np.floor(radius))
    offsets = np.arange(-r, r + 1)
    disk = offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius * radius
    pad = r
    suppressed = np.zeros((live.shape[0] + 2 * pad, live.shape[1] + 2 * pad), dtype=bool)
    keep = []
    for index, (row, col) in enumerate(zip(rows.tolist(), cols.tolist())):
        if suppressed[row + pad, col + pad]:
            continue
        keep.append(index)
        suppressed[row:row + 2 * pad + 1, col:col + 2 * pad + 1] |= disk
    keep = np.asarray(keep, dtype=np.int64)
    return rows[keep].astype(np.int64), cols[keep].astype(np.int64)


def _refine(score_map: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel offsets from a parabola through each peak and its two neighbours along each axis (none along
    an axis where the peak is on the map's border: with one neighbour the parabola would put it outside)."""
    height, width = score_map.shape

    def offset(minus: np.ndarray, centre: np.ndarray, plus: np.ndarray) -> np.ndarray:
        curvature = minus - 2 * centre + plus
        with np.errstate(divide="ignore", invalid="ignore"):
            step = np.where(curvature < 0, 0.5 * (minus - plus) / curvature, 0.0)
        return np.clip(step, -0.5, 0.5)

    r0, r1 = np.clip(rows - 1, 0, height - 1), np.clip(rows + 1, 0, height - 1)
    c0, c1 = np.clip(cols - 1, 0, width - 1), np.clip(cols + 1, 0, width - 1)
    centre = score_map[rows, cols]
    dy = np.where((rows > 0) & (rows < height - 1), offset(score_map[r0, cols], centre, score_map[r1, cols]), 0.0)
    dx = np.where((cols > 0) & (cols < width - 1), offset(score_map[rows, c0], centre, score_map[rows, c1]), 0.0)
    return rows + dy, cols + dx


def smooth_scores(score_map: torch.Tensor, sigma: float) -> torch.Tensor:
    """``score_map`` (H, W) convolved with a normalized Gaussian of standard deviation ``sigma`` map pixels
    (separable, truncated at 3σ, edges extended by reflection); returned unchanged when ``sigma`` ≤ 0."""
    if sigma <= 0:
        return score_map
    half = max(1, int(np.ceil(3 * sigma)))
    height, width = score_map.shape
    half = min(half, height - 1, width - 1)  # reflection needs fewer pad pixels than the map has
    if half < 1:
        return score_map
    offsets = torch.arange(-half, half + 1, dtype=torch.float32, device=score_map.device)
    kernel = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    image = score_map.float()[None, None]
    image = F.conv2d(F.pad(image, (half, half, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    image = F.conv2d(F.pad(image, (0, 0, half, half), mode="reflect"), kernel.view(1, 1, -1, 1))
    return image[0, 0]


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
