"""The completeness check on real files (MRC files written by mrcfile), driven by a fake clock.

The tracker's clock is injected, so time passes only when a test says so; the files, ``os.stat`` and the
MRC size test are the real ones (``stat`` and ``is_whole`` are wrapped only to count calls).  Clock steps
are binary fractions, so that sums such as 0.25 + 0.25 are exact.
"""
from __future__ import annotations

import os
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from streampick.daemon.completeness import CompletenessTracker, default_is_whole

HEADER = 1024
SIDE = 64
MRC_SIZE = HEADER + SIDE * SIDE * 4  # 64 x 64 float32


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Counting:
    """A real function, counting its calls."""

    def __init__(self, function) -> None:
        self.function = function
        self.calls = 0

    def __call__(self, path):
        self.calls += 1
        return self.function(path)


@pytest.fixture(scope="module")
def mrc_bytes(tmp_path_factory) -> bytes:
    """The bytes of a real 64 x 64 float32 micrograph written by mrcfile."""
    path = tmp_path_factory.mktemp("mrc") / "whole.mrc"
    data = np.random.default_rng(0).normal(size=(SIDE, SIDE)).astype(np.float32)
    with mrcfile.new(path) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = 1.06
    raw = path.read_bytes()
    assert len(raw) == MRC_SIZE
    return raw


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def tracker(clock: FakeClock, **options) -> CompletenessTracker:
    options = {"settle_seconds": 0.5, "give_up_seconds": 600.0, **options}
    return CompletenessTracker(clock=clock, **options)


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as stream:
        stream.write(data)


def is_quiet(report) -> bool:
    return not (report.ready or report.given_up or report.vanished)


# ------------------------------------------------------------------------------------------ ready

def test_a_whole_file_is_ready_only_after_it_has_settled(tmp_path, clock, mrc_bytes):
    mic = tmp_path / "mic.mrc"
    mic.write_bytes(mrc_bytes)
    checker = tracker(clock)
    checker.touch(mic)
    assert is_quiet(checker.poll())  # the first look starts the settle time
    clock.advance(0.25)
    assert is_quiet(checker.poll())
    clock.advance(0.25)
    assert checker.poll().ready == [mic]
    assert checker.pending() == 0 and checker.next_check() is None
    clock.advance(10)
    assert is_quiet(checker.poll())  # reported once


def test_a_file_written_in_place_in_chunks_is_ready_once_whole_and_settled(tmp_path, clock, mrc_bytes):
    mic = tmp_path / "mic.mrc"
    mic.write_bytes(mrc_bytes[:HEADER + 100])  # header first
    is_whole = Counting(default_is_whole)
    checker = tracker(clock, is_whole=is_whole)
    checker.touch(mic)
    checker.poll()
    for start in range(HEADER + 100, MRC_SIZE, 4096):
        clock.advance(0.75)  # longer than the settle time: the partial file has settled ...
        assert is_quiet(checker.poll())  # ... but is not whole
        append(mic, mrc_bytes[start:start + 4096])
        checker.touch(mic)  # the watcher's "modified" event
        assert is_quiet(checker.poll())
    assert mic.read_bytes() == mrc_bytes
    clock.advance(0.25)
    assert is_quiet(checker.poll())  # whole, but not yet settled
    clock.advance(0.25)
    assert checker.poll().ready == [mic]
    assert is_whole.calls == 5  # once per settled size, never before settling


def test_growth_is_noticed_without_events(tmp_path, clock, mrc_bytes):
    mic = tmp_path / "mic.mrc"
    mic.write_bytes(mrc_bytes[:HEADER])
    checker = tracker(clock)
    checker.touch(mic)
    checker.poll()
    clock.advance(0.5)
    assert is_quiet(checker.poll())
    append(mic, mrc_bytes[HEADER:])  # no touch: the event was missed
    clock.advance(checker.next_check())
    assert is_quiet(checker.poll())  # the change is seen, and the settle time starts again
    clock.advance(0.5)
    assert checker.poll().ready == [mic]


def test_a_temp_file_renamed_into_place_is_ready_under_its_final_name(tmp_path, clock, mrc_bytes):
    temp, final = tmp_path / ".mic.mrc.Xyz123", tmp_path / "mic.mrc"
    temp.write_bytes(mrc_bytes)
    checker = tracker(clock)
    checker.touch(temp)  # a late event for the temporary name
    os.rename(temp, final)
    checker.touch(final)
    report = checker.poll()
    assert report.vanished == [temp] and not report.ready
    clock.advance(0.5)
    assert checker.poll().ready == [final]


def test_an_event_during_the_settle_time_starts_it_again(tmp_path, clock, mrc_bytes):
    mic = tmp_path / "mic.mrc"
    mic.write_bytes(mrc_bytes)
    checker = tracker(clock)
    checker.touch(mic)
    checker.poll()
    clock.advance(0.25)
    checker.touch(mic)
    assert is_quiet(checker.poll())
    clock.advance(0.25)
    assert is_quiet(checker.poll())
    clock.advance(0.25)
    assert checker.poll().ready == [mic]


def test_a_ready_file_touched_again_is_tracked_again(tmp_path, clock, mrc_bytes):
    mic = tmp_path / "mic.mrc"
    mic.write_bytes(mrc_bytes)
    checker = tracker(clock, settle_seconds=0.0)
    checker.touch(mic)
    assert checker.poll().ready == [mic]  # no settle time: ready at the first look
    checker.touch(mic)
    assert checker.pending() == 1
    assert checker.poll().ready == [mic]


@pytest.mark.parametrize("name, content", [("movie.eer", b"II*\0 an EER is refused unread"),
                                           ("mic.tif", b"garbage, not a TIFF at all"),
                                           ("mic.png", b"garbage, not a PNG at all")])
def test_other_files_are_ready_on_size_stability_alone(tmp_path, clock, name, content):
    """Files whose end cannot be checked (EER, garbage under an image name) are ready once their size settles;
    TIFF, PNG and JPEG files with their signature must also have their end (tests/test_image_formats.py)."""
    path = tmp_path / name
    path.write_bytes(content)
    checker = tracker(clock)
    checker.touch(path)
    checker.poll()
    clock.advance(0.5)
    append(path, b"more")
    assert is_quiet(checker.poll())  # it grew: the settle time starts again
    clock.advance(0.5)
    assert checker.poll().ready == [path]


# ------------------------------------------------------------------------------------------ given up, vanished

def test_a_stalled_partial_file_is_given_up_exactly_once(tmp_path, clock, mrc_bytes):
    mic = tmp_path / "mic.mrc"
    mic.write_bytes(mrc_bytes[:HEADER + 100])
    stat, is_whole = Counting(os.stat), Counting(default_is_whole)
    checker = tracker(clock, stat=stat, is_whole=is_whole)
    checker.touch(mic)
    checker.poll()
    polls = 1
    for _ in range(20):
        clock.advance(29.5)
        assert is_quiet(checker.poll())
        polls += 1
    assert clock.now == 1590.0 and checker.next_check() == pytest.approx(1.0)  # looked at every second
    clock.advance(10.0)
    report = checker.poll()
    polls += 1
    assert [path for path, _ in report.given_up] == [mic] and not report.ready
    reason = report.given_up[0][1]
    assert reason == (f"{mic}: never became a whole MRC (header promises {MRC_SIZE} bytes, "
                      f"file has {HEADER + 100}) after 600 s without a change")
    assert stat.calls == polls and is_whole.calls == 1  # one stat per poll; one test per size
    assert checker.pending() == 0 and checker.next_check() is None
    for _ in range(3):
        clock.advance(1000)
        assert is_quiet(checker.poll())  # not again
    checker.touch(mic)  # a later event tracks it again
    assert checker.pending() == 1


def test_a_slow_but_progressing_write_is_never_given_up(tmp_path, clock, mrc_bytes):
    mic = tmp_path / "mic.mrc"
    mic.write_bytes(mrc_bytes[:HEADER])
    checker = tracker(clock, give_up_seconds=10.0)
    checker.touch(mic)
    chunks = range(HEADER, MRC_SIZE, 2048)  # 8 chunks, one every 8 s: 64 s in all, against 10 s
    for start in chunks:
        for _ in range(8):
            clock.advance(1.0)
            report = checker.poll()
            assert not report.given_up and not report.ready
        append(mic, mrc_bytes[start:start + 2048])  # no events: the tracker's own looks see the growth
    clock.advance(1.0)
    assert is_quiet(checker.poll())
    clock.advance(1.0)
    assert checker.poll().ready == [mic]


def test_an_over_long_or_garbage_mrc_is_handed_on_once_settled_so_reading_reports_it(tmp_path, clock,
                                                                                    mrc_bytes):
    long, garbage, blank = tmp_path / "long.mrc", tmp_path / "garbage.mrc", tmp_path / "blank.mrc"
    long.write_bytes(mrc_bytes + b"\0" * 8)
    garbage.write_bytes(b"\1" * 2000)
    blank.write_bytes(b"\0" * 2000)  # a pre-allocated file whose header is not written yet
    checker = tracker(clock, give_up_seconds=5.0)
    for path in (long, garbage, blank):
        checker.touch(path)
    checker.poll()
    clock.advance(0.5)
    assert sorted(checker.poll().ready) == sorted([long, garbage])
    clock.advance(5.0)
    (given_up,) = checker.poll().given_up
    assert given_up[0] == blank and "no readable MRC header; file has 2000 bytes" in given_up[1]
    assert "\n" not in given_up[1]


def test_a_file_that_disappears_is_reported_as_vanished(tmp_path, clock, mrc_bytes):
    mic = tmp_path / "mic.mrc"
    mic.write_bytes(mrc_bytes[:HEADER + 100])
    checker = tracker(clock)
    checker.touch(mic)
    checker.touch(tmp_path / "never_existed.mrc")
    assert checker.poll().vanished == [tmp_path / "never_existed.mrc"]
    mic.unlink()
    clock.advance(0.5)
    assert checker.poll().vanished == [mic]
    assert checker.pending() == 0


# ------------------------------------------------------------------------------------------ next_check

def test_next_check_says_when_a_poll_has_work(tmp_path, clock, mrc_bytes):
    whole, partial = tmp_path / "whole.mrc", tmp_path / "partial.mrc"
    whole.write_bytes(mrc_bytes)
    partial.write_bytes(mrc_bytes[:HEADER])
    checker = tracker(clock, give_up_seconds=2.25)
    assert checker.next_check() is None
    checker.touch(whole)
    assert checker.next_check() == 0.0  # not looked at yet
    checker.poll()
    assert checker.next_check() == 0.5  # the end of the settle time
    clock.advance(0.25)
    assert checker.next_check() == 0.25
    checker.touch(partial)
    assert checker.next_check() == 0.0
    checker.poll()
    assert checker.next_check() == 0.25
    clock.advance(0.25)
    assert checker.poll().ready == [whole]
    assert checker.next_check() == 0.25  # partial's settle time
    clock.advance(0.25)
    checker.poll()
    assert checker.next_check() == 1.0  # settled, not whole: looked at again every second
    clock.advance(1.0)
    checker.poll()
    assert checker.next_check() == 0.75  # ... but no later than the give-up time
    clock.advance(0.75)
    assert [path for path, _ in checker.poll().given_up] == [partial]
    assert checker.next_check() is None


@pytest.mark.parametrize("settle, give_up", [(-1.0, 600.0), (5.0, 1.0)])
def test_bad_times_are_refused(settle, give_up):
    with pytest.raises(ValueError):
        CompletenessTracker(settle_seconds=settle, give_up_seconds=give_up)
