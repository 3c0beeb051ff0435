"""Particle-level evaluation of picks against reference picks (method notes §5).

Predictions are matched one-to-one to reference picks within a radius ``R`` (distance ``<= R`` counts), then
ranked by descending score to give precision and recall at every score threshold and the average precision

    AP = sum_k precision_k * (new true positives at k) / n_ref.

Two matching rules are offered; they differ only where references lie closer than ``2R``:

* ``greedy`` (PASCAL/COCO): predictions in descending score order each take the *nearest* still-unmatched
  reference within ``R`` (ties in distance go to the lower reference index).
* ``hungarian`` (Topaz's rule): a one-to-one assignment that first maximises the number of pairs within ``R``
  and among those minimises the total distance, computed without looking at scores; the matches are then
  fixed and the predictions ranked by score.

Ties in score: precision and recall are computed only at *distinct* score values, all predictions that share
a score entering together (as Topaz and scikit-learn do), so AP does not depend on the order of tied picks.
Pick sets without scores (all NaN) are evaluated as one set: precision, recall and F1 of all picks, AP None.

Everything here is pure computation except :func:`plot_pr`, which writes a PNG (matplotlib, optional).
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .picks import Picks

METHODS = ("greedy", "hungarian")


def _xy(picks: Picks) -> np.ndarray:
    return np.column_stack([picks.x, picks.y]).astype(np.float64, copy=False)


def _candidate_pairs(pred_xy: np.ndarray, ref_xy: np.ndarray, radius: float
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (prediction, reference) pair within ``radius``: prediction and reference indices, distances."""
    empty = (np.zeros(0, np.intp), np.zeros(0, np.intp), np.zeros(0))
    if len(pred_xy) == 0 or len(ref_xy) == 0 or radius < 0:
        return empty
    from scipy.spatial import cKDTree

    # Query slightly wide, then apply the exact rule d <= radius with numpy's arithmetic.
    hits = cKDTree(ref_xy).query_ball_point(pred_xy, r=radius * (1 + 1e-9) + 1e-12)
    counts = np.fromiter((len(h) for h in hits), dtype=np.intp, count=len(hits))
    if counts.sum() == 0:
        return empty
    pi = np.repeat(np.arange(len(pred_xy)), counts)
    ri = np.fromiter((j for h in hits for j in h), dtype=np.intp, count=int(counts.sum()))
    dist = np.hypot(pred_xy[pi, 0] - ref_xy[ri, 0], pred_xy[pi, 1] - ref_xy[ri, 1])
    keep = dist <= radius
    return pi[keep], ri[keep], dist[keep]


def _score_order(score: np.ndarray) -> np.ndarray:
    """Descending-score order, stable (stored order among ties and for a score-less set)."""
    if len(score) == 0 or np.isnan(score).all():
        return np.arange(len(score))
    if np.isnan(score).any():
        raise ValueError("some picks have scores and some do not (NaN); cannot rank them")
    return np.argsort(-score, kind="stable")


def _check_inputs(ref_xy: np.ndarray, radius: float) -> np.ndarray:
    ref_xy = np.asarray(ref_xy, dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(radius) or radius < 0:
        raise ValueError(f"radius must be a finite number >= 0, got {radius}")
    return ref_xy


def match_greedy(pred: Picks, ref_xy: np.ndarray, radius: float) -> np.ndarray:
    """Greedy matching: in descending score order, each prediction takes the nearest unmatched reference.

    Args:
        pred: predicted picks; taken in descending score order (stable: ties, and a score-less set, keep
            their stored order).
        ref_xy: reference centres, shape (N, 2), columns x, y.
        radius: match radius in pixels; a pair at distance exactly ``radius`` matches.

    Returns:
        Boolean array, one entry per prediction (in ``pred``'s order): True where it is a true positive.
    """
    ref_xy = _check_inputs(ref_xy, radius)
    is_tp = np.zeros(len(pred), dtype=bool)
    pi, ri, dist = _candidate_pairs(_xy(pred), ref_xy, radius)
    rank = np.empty(len(pred), dtype=np.intp)
    rank[_score_order(pred.score)] = np.arange(len(pred))
    order = np.lexsort((ri, dist, rank[pi]))
    taken = np.zeros(len(ref_xy), dtype=bool)
    # Pairs sorted by rank, then distance: the first free reference of each prediction in turn wins.
    for p, r in zip(pi[order].tolist(), ri[order].tolist()):
        if not is_tp[p] and not taken[r]:
            is_tp[p] = True
            taken[r] = True
    return is_tp


def match_hungarian(pred: Picks, ref_xy: np.ndarray, radius: float) -> np.ndarray:
    """Assignment matching: most pairs within ``radius``, then least total distance; scores are not used.

    Solved per connected component of the "within radius" graph, so large sparse sets stay fast.

    Args:
        pred: predicted picks.
        ref_xy: reference centres, shape (N, 2), columns x, y.
        radius: match radius in pixels; a pair at distance exactly ``radius`` matches.

    Returns:
        Boolean array, one entry per prediction (in ``pred``'s order): True where it is assigned a reference.
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    ref_xy = _check_inputs(ref_xy, radius)
    n_pred, n_ref = len(pred), len(ref_xy)
    is_tp = np.zeros(n_pred, dtype=bool)
    pi, ri, dist = _candidate_pairs(_xy(pred), ref_xy, radius)
    if len(pi) == 0:
        return is_tp
    graph = coo_matrix((np.ones(len(pi)), (pi, n_pred + ri)), shape=(n_pred + n_ref,) * 2)
    _, label = connected_components(graph, directed=False)
    big = 1.0 + 2.0 * (radius + 1.0) * min(n_pred, n_ref)  # exceeds any sum of in-radius distances
    edge_label = label[pi]
    order = np.argsort(edge_label, kind="stable")
    bounds = np.flatnonzero(np.diff(edge_label[order])) + 1
    for group in np.split(order, bounds):
        rows, row_idx = np.unique(pi[group], return_inverse=True)
        cols, col_idx = np.unique(ri[group], return_inverse=True)
        if len(rows) == 1 or len(cols) == 1:  # a star: one pair is kept, the closest
            is_tp[pi[group][np.argmin(dist[group])]] = True
            continue
        cost = np.full((len(rows), len(cols)), big)
        cost[row_idx, col_idx] = dist[group]
        r, c = linear_sum_assignment(cost)
        is_tp[rows[r[cost[r, c] < big]]] = True
    return is_tp


def _distinct_ends(scores: np.ndarray | None, n: int) -> np.ndarray:
    """Indices (exclusive ends) of the groups of equal scores in a descending-sorted array."""
    if scores is None or n == 0:
        return np.arange(1, n + 1)
    change = np.flatnonzero(scores[1:] != scores[:-1]) + 1
    return np.append(change, n)


def pr_curve(is_tp_sorted: np.ndarray, n_ref: int, scores: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall after each prediction (or each group of equal scores).

    Args:
        is_tp_sorted: true-positive flags of the predictions sorted by descending score.
        n_ref: number of reference picks (> 0).
        scores: the sorted scores; when given, tied scores form one step (see the module docstring).

    Returns:
        ``(precision, recall)``, one entry per step.
    """
    if n_ref <= 0:
        raise ValueError("n_ref must be positive: there are no reference picks")
    is_tp_sorted = np.asarray(is_tp_sorted, dtype=bool)
    ends = _distinct_ends(None if scores is None else np.asarray(scores), len(is_tp_sorted))
    tp = np.cumsum(is_tp_sorted)[ends - 1] if len(ends) else np.zeros(0)
    return tp / ends, tp / n_ref


def average_precision(is_tp_sorted: np.ndarray, n_ref: int, scores: np.ndarray | None = None) -> float:
    """AP = sum over steps of precision x (new true positives) / n_ref (arguments as :func:`pr_curve`)."""
    precision, recall = pr_curve(is_tp_sorted, n_ref, scores)
    gained = np.diff(recall, prepend=0.0)
    return float(np.sum(precision * gained))


def _f1(precision: np.ndarray | float, recall: np.ndarray | float) -> np.ndarray:
    p, r = np.asarray(precision, dtype=float), np.asarray(recall, dtype=float)
    total = p + r
    return np.divide(2 * p * r, total, out=np.zeros_like(total), where=total > 0)


@dataclass(frozen=True, eq=False)
class EvalResult:
    """Pooled precision/recall of a pick set against references.

    The curve arrays have one entry per distinct score (descending): ``precision[i]``, ``recall[i]``,
    ``f1[i]`` and ``n_picks[i]`` describe the picks with score >= ``thresholds[i]``.  For a score-less set
    they are empty, ``ap`` and ``best_threshold`` are None and ``best_*`` describe all picks.  Precision of
    an empty pick set is taken as 0.  ``scores`` and ``is_tp`` hold every pooled prediction, ranked;
    ``n_pred_ignored`` counts the predictions on the ``ignored_micrographs`` (absent from the reference).
    """

    method: str
    radius: float
    ap: float | None
    n_pred: int
    n_ref: int
    n_tp: int
    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    n_picks: np.ndarray
    best_f1: float
    best_threshold: float | None
    best_precision: float
    best_recall: float
    n_pred_ignored: int = 0
    ignored_micrographs: tuple[str, ...] = ()
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    is_tp: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool), repr=False)

    @property
    def has_scores(self) -> bool:
        """Whether the predictions carry scores (otherwise there is no ranking, no AP)."""
        return self.ap is not None

    def at_threshold(self, threshold: float) -> tuple[float, float, float, int]:
        """Precision, recall, F1 and pick count of the picks with score >= ``threshold``.

        Raises:
            ValueError: the predictions have no scores.
        """
        if not self.has_scores:
            raise ValueError("the predicted picks have no scores: a threshold does not apply")
        keep = self.scores >= threshold
        n, tp = int(keep.sum()), int(self.is_tp[keep].sum())
        precision, recall = (tp / n if n else 0.0), tp / self.n_ref
        return precision, recall, float(_f1(precision, recall)), n

    def summary(self) -> dict:
        """The scalar results as a JSON-ready dict (no curve)."""
        return {"method": self.method, "radius": self.radius, "ap": self.ap, "n_pred": self.n_pred,
                "n_ref": self.n_ref, "n_tp": self.n_tp, "best_f1": self.best_f1,
                "best_threshold": self.best_threshold, "best_precision": self.best_precision,
                "best_recall": self.best_recall, "n_pred_ignored": self.n_pred_ignored,
                "ignored_micrographs": list(self.ignored_micrographs)}

    def curve(self) -> dict:
        """The precision-recall curve as a JSON-ready dict of lists."""
        return {"threshold": self.thresholds.tolist(), "precision": self.precision.tolist(),
                "recall": self.recall.tolist(), "f1": self.f1.tolist(), "n_picks": self.n_picks.tolist()}


def _result(scores: np.ndarray, is_tp: np.ndarray, n_ref: int, method: str, radius: float,
            ignored: dict[str, int]) -> EvalResult:
    """Rank pooled predictions and build the :class:`EvalResult`."""
    order = _score_order(scores)
    scores, is_tp = scores[order], is_tp[order]
    n_pred, n_tp = len(scores), int(is_tp.sum())
    common = dict(method=method, radius=float(radius), n_pred=n_pred, n_ref=n_ref, n_tp=n_tp,
                  n_pred_ignored=sum(ignored.values()), ignored_micrographs=tuple(sorted(ignored)),
                  scores=scores, is_tp=is_tp)
    if n_pred and np.isnan(scores).all():
        precision, recall = n_tp / n_pred, n_tp / n_ref
        empty = np.zeros(0)
        return EvalResult(ap=None, thresholds=empty, precision=empty, recall=empty, f1=empty,
                          n_picks=np.zeros(0, dtype=np.intp), best_f1=float(_f1(precision, recall)),
                          best_threshold=None, best_precision=precision, best_recall=recall, **common)
    ends = _distinct_ends(scores, n_pred)
    precision, recall = pr_curve(is_tp, n_ref, scores)
    f1 = _f1(precision, recall)
    thresholds = scores[ends - 1]
    best = int(np.argmax(f1)) if n_pred else None  # the first (highest-threshold) maximum
    return EvalResult(
        ap=average_precision(is_tp, n_ref, scores), thresholds=thresholds, precision=precision,
        recall=recall, f1=f1, n_picks=ends, best_f1=0.0 if best is None else float(f1[best]),
        best_threshold=None if best is None else float(thresholds[best]),
        best_precision=0.0 if best is None else float(precision[best]),
        best_recall=0.0 if best is None else float(recall[best]), **common)


def evaluate_sets(pred: dict[str, Picks], ref: dict[str, Picks], radius: float,
                  method: str = "greedy") -> EvalResult:
    """Evaluate picks on many micrographs: match within each micrograph, then rank all picks together.

    Args:
        pred: predicted picks by micrograph name.
        ref: reference picks by micrograph name (the same names as ``pred``).
        radius: match radius in pixels (distance <= radius matches).
        method: ``"greedy"`` or ``"hungarian"`` (see the module docstring).

    Returns:
        The pooled :class:`EvalResult`.  Micrographs in ``ref`` without predictions count their references
        as misses; predictions on micrographs absent from ``ref`` are left out and counted in
        ``n_pred_ignored`` / ``ignored_micrographs``.

    Raises:
        ValueError: unknown method, bad radius, no reference picks at all, or scores present on some
            predictions and missing (NaN) on others.
    """
    if method not in METHODS:
        raise ValueError(f"unknown matching method {method!r}; choose from {', '.join(METHODS)}")
    match = match_greedy if method == "greedy" else match_hungarian
    n_ref = sum(len(p) for p in ref.values())
    if n_ref == 0:
        raise ValueError("the reference has no picks: precision/recall are undefined")
    scores, flags = [np.zeros(0)], [np.zeros(0, dtype=bool)]
    for name, ref_picks in ref.items():
        picks = pred.get(name)
        if picks is not None and len(picks):
            flags.append(match(picks, _xy(ref_picks), radius))
            scores.append(np.asarray(picks.score, dtype=np.float64))
    ignored = {name: len(p) for name, p in pred.items() if name not in ref}
    return _result(np.concatenate(scores), np.concatenate(flags), n_ref, method, radius, ignored)


def merge_duplicates(picks: Picks, within: float) -> Picks:
    """One centre per cluster of picks linked by distances below ``within`` (the clusters' mean position,
    best score): for references whose derivation listed one particle several times."""
    n = len(picks)
    if n < 2:
        return picks
    xy = np.c_[picks.x, picks.y]
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    d2 = ((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1)
    for i, j in zip(*np.nonzero(np.triu(d2 < within * within, 1))):
        parent[root(i)] = root(j)
    labels = np.array([root(i) for i in range(n)])
    _, cluster = np.unique(labels, return_inverse=True)
    count = np.bincount(cluster)
    x = np.bincount(cluster, picks.x) / count
    y = np.bincount(cluster, picks.y) / count
    score = np.full(len(count), np.nan)
    if picks.has_scores:
        score = np.full(len(count), -np.inf)
        np.maximum.at(score, cluster, picks.score)
    return Picks.from_arrays(x, y, score)


def plot_pr(result: EvalResult, path: str | Path, *, title: str | None = None) -> None:
    """Write the precision-recall curve of ``result`` as a PNG (needs matplotlib).

    Args:
        result: an :class:`EvalResult`.
        path: output PNG path, written atomically.
        title: plot title; default names the method, radius and AP.

    Raises:
        ImportError: matplotlib is not installed (``pip install streampick[plot]``).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:  # optional dependency
        raise ImportError("plotting needs matplotlib: pip install 'streampick[plot]'") from err
    from .io.atomic import atomic_write_bytes

    fig = Figure(figsize=(4.5, 4.0), dpi=120)
    FigureCanvasAgg(fig)  # the Agg canvas, without touching pyplot's global backend
    ax = fig.add_subplot()
    if result.has_scores and len(result.recall):
        ax.step(np.r_[0.0, result.recall], np.r_[result.precision[0], result.precision], where="pre",
                label="precision-recall")
        ax.plot([result.best_recall], [result.best_precision], "o",
                label=f"max F1 {result.best_f1:.3f} at score {result.best_threshold:.3g}")
    else:
        ax.plot([result.best_recall], [result.best_precision], "o",
                label=f"all picks, F1 {result.best_f1:.3f}")
    ap = "n/a" if result.ap is None else f"{result.ap:.3f}"
    ax.set(xlim=(0, 1.02), ylim=(0, 1.02), xlabel="recall", ylabel="precision",
           title=title or f"{result.method} matching, R = {result.radius:g} px, AP = {ap}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())
