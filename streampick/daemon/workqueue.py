"""The daemon's work queue: micrographs waiting to be picked, new arrivals first.

Entries are small (an id and a path, never image data), so the queue's memory is bounded by the number
of files on disk; the image-holding stages after it are bounded separately.  Priority: new arrivals (0)
before the start-up backlog (1) before re-picks (2); first in, first out within a priority (the backlog
is put in oldest-first).  ``get`` waits with a timeout and honours pause.
"""
from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

NEW, BACKLOG, REPICK = 0, 1, 2


@dataclass(order=True, frozen=True)
class WorkItem:
    """One micrograph to pick."""

    priority: int
    order: int
    micrograph_id: int = field(compare=False)
    path: str = field(compare=False)
    not_before: float = field(default=0.0, compare=False)  # monotonic time; for retries after an error


class WorkQueue:
    """A thread-safe priority queue of :class:`WorkItem` with pause/resume."""

    def __init__(self) -> None:
        self._heap: list[WorkItem] = []
        self._ids: set[int] = set()
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._paused = False
        self._listeners: list[Callable[[], None]] = []

    def listen(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (quick, non-blocking) after each put and resume: for a consumer that waits on other
        things too (the cluster loop waits on its tasks as well as on the queue)."""
        self._listeners.append(callback)

    def _notify_listeners(self) -> None:
        for callback in self._listeners:
            callback()

    def put(self, micrograph_id: int, path: str, priority: int, *, not_before: float = 0.0) -> bool:
        """Queue a micrograph unless it is already queued; returns whether it was added."""
        with self._cond:
            if micrograph_id in self._ids:
                return False
            self._ids.add(micrograph_id)
            heapq.heappush(self._heap, WorkItem(priority, next(self._counter), micrograph_id, path, not_before))
            self._cond.notify()
        self._notify_listeners()
        return True

    def get(self, timeout: float, now, *, max_priority: int | None = None) -> WorkItem | None:
        """The most urgent item whose ``not_before`` has passed, or None after ``timeout`` s (or paused).

        ``now`` is the monotonic clock (injected for tests); with ``max_priority``, only items at least that
        urgent (e.g. ``BACKLOG``: no re-picks) are taken.
        """
        deadline = now() + timeout
        with self._cond:
            while True:
                item = None if self._paused else self._pop_ready(now(), max_priority)
                if item is not None:
                    return item
                remaining = deadline - now()
                if remaining <= 0:
                    return None
                self._cond.wait(min(remaining, 0.25))

    def _pop_ready(self, now: float, max_priority: int | None = None) -> WorkItem | None:
        waiting = []
        found = None
        while self._heap:
            if max_priority is not None and self._heap[0].priority > max_priority:
                break  # the heap is in priority order: nothing urgent enough is left
            item = heapq.heappop(self._heap)
            if item.not_before <= now:
                found = item
                break
            waiting.append(item)
        for item in waiting:
            heapq.heappush(self._heap, item)
        if found is not None:
            self._ids.discard(found.micrograph_id)
        return found

    def pause(self) -> None:
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()
        self._notify_listeners()

    @property
    def paused(self) -> bool:
        return self._paused

    def __len__(self) -> int:
        with self._cond:
            return len(self._heap)
