"""The one value every stage after scoring passes around: a set of picks on one micrograph.

Coordinates are in the *original* micrograph's pixels (x = column, y = row of the MRC data array), scores
are the model's logits (uncalibrated; higher is more particle-like).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Picks:
    """Particle centres and scores on one micrograph, sorted by descending score."""

    x: np.ndarray
    y: np.ndarray
    score: np.ndarray

    def __post_init__(self) -> None:
        if not (len(self.x) == len(self.y) == len(self.score)):
            raise ValueError("x, y and score must have the same length")

    def __len__(self) -> int:
        return len(self.score)

    @classmethod
    def empty(cls) -> "Picks":
        zero = np.zeros(0, dtype=np.float64)
        return cls(zero, zero.copy(), zero.copy())

    @classmethod
    def from_arrays(cls, x, y, score=None) -> "Picks":
        """Build picks from array-likes, sorting by descending score (NaN scores for score-less sets)."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        score = np.full(len(x), np.nan) if score is None else np.asarray(score, dtype=np.float64)
        order = np.argsort(-score, kind="stable") if not np.isnan(score).all() else np.arange(len(x))
        return cls(x[order], y[order], score[order])

    def above(self, threshold: float) -> "Picks":
        """The picks whose score is at least ``threshold``."""
        keep = self.score >= threshold
        return Picks(self.x[keep], self.y[keep], self.score[keep])

    @property
    def has_scores(self) -> bool:
        return len(self.score) > 0 and not np.isnan(self.score).all()
