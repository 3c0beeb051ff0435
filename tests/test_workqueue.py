"""The work queue's order: new arrivals before backlog before re-picks, FIFO within, retries delayed."""
from __future__ import annotations

import threading

from streampick.daemon.workqueue import BACKLOG, NEW, REPICK, WorkQueue


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_new_arrivals_overtake_the_backlog_and_repicks():
    work, clock = WorkQueue(), FakeClock()
    work.put(1, "old_a", BACKLOG)
    work.put(2, "old_b", BACKLOG)
    work.put(3, "repick", REPICK)
    work.put(4, "new_a", NEW)
    work.put(5, "new_b", NEW)
    assert not work.put(4, "new_a", NEW)  # already queued
    order = [work.get(0.0, clock).path for _ in range(5)]
    assert order == ["new_a", "new_b", "old_a", "old_b", "repick"]
    assert work.get(0.0, clock) is None


def test_a_retry_waits_until_its_time_and_pause_holds_everything():
    work, clock = WorkQueue(), FakeClock()
    work.put(1, "retry", NEW, not_before=clock.now + 30)
    work.put(2, "later", BACKLOG)
    assert work.get(0.0, clock).path == "later"
    assert work.get(0.0, clock) is None
    clock.now += 31
    work.pause()
    assert work.get(0.0, clock) is None and len(work) == 1
    work.resume()
    assert work.get(0.0, clock).path == "retry"


def test_get_wakes_up_when_an_item_arrives():
    work = WorkQueue()
    import time

    got = []
    reader = threading.Thread(target=lambda: got.append(work.get(5.0, time.monotonic)))
    reader.start()
    work.put(7, "x", NEW)
    reader.join(5)
    assert got and got[0].micrograph_id == 7


def test_max_priority_leaves_repicks_queued_for_later():
    work, clock = WorkQueue(), FakeClock()
    work.put(1, "a", REPICK)
    work.put(2, "b", REPICK)
    assert work.get(0.0, clock, max_priority=BACKLOG) is None  # only re-picks: none taken
    work.put(3, "c", NEW)
    assert work.get(0.0, clock, max_priority=BACKLOG).path == "c"
    assert len(work) == 2 and work.get(0.0, clock).path == "a"  # without the limit, re-picks come out
