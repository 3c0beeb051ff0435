"""Rolling statistics the daemon publishes: throughput, latency percentiles, error count."""
from __future__ import annotations

import collections
import threading

import numpy as np


class RollingStats:
    """Latency (file complete → published) of the last ``window`` micrographs and completions per minute."""

    def __init__(self, window: int = 100) -> None:
        self._latencies: collections.deque[float] = collections.deque(maxlen=window)
        self._done_times: collections.deque[float] = collections.deque(maxlen=10_000)
        self._lock = threading.Lock()
        self.errors = 0

    def record(self, complete: float, published: float) -> None:
        with self._lock:
            self._latencies.append(max(0.0, published - complete))
            self._done_times.append(published)

    def record_error(self) -> None:
        with self._lock:
            self.errors += 1

    def snapshot(self, now: float) -> dict:
        """``throughput_per_min`` over the last 60 s and ``latency_s`` {median, p95, n}."""
        with self._lock:
            latencies = np.array(self._latencies, dtype=float)
            recent = sum(1 for t in self._done_times if now - t <= 60.0)
        latency = {"median": None, "p95": None, "n": int(len(latencies))}
        if len(latencies):
            latency.update(median=float(np.median(latencies)), p95=float(np.percentile(latencies, 95)))
        return {"throughput_per_min": float(recent), "latency_s": latency, "errors": self.errors}
