"""The watcher: name matching, the start-up scan, and one shared suite run on both observers (inotify, polling).

Observer tests write real files in tmp_path and wait on a queue with timeouts, never with fixed sleeps.  To
show that a path was *not* reported, a sentinel file is written afterwards and the events are collected until
the sentinel arrives: both observers deliver events in order, so anything earlier has arrived by then.
"""
from __future__ import annotations

import os
import queue
import time
from pathlib import Path

import pytest

from streampick.daemon.watcher import WatchSettings, matches, scan_existing, start_observer
from streampick.errors import ConfigError

EVENT_TIMEOUT = 5.0  # seconds to wait for an event that must come
CONTENT = b"MRC-ish bytes " * 64  # the watcher never reads files, so any content will do


# ------------------------------------------------------------------------------------------ matching

@pytest.mark.parametrize("name, expected", [
    ("FoilHole_1_Data_2_fractions.mrc", True),
    ("a.b.mrc", True),
    (".a.mrc.Xyz123", False),  # rsync's temporary name
    (".a.mrc", False),  # hidden temporary name
    ("x.mrc.tmp", False),
    ("x.mrc.part", False),
    ("x.mrc.partial", False),
    ("x.mrc~", False),
    ("notes.txt", False),
    ("x.MRC", False),  # patterns are case-sensitive
    ("x.mrcs", False),
])
def test_matches_default_patterns(name, expected):
    assert matches(Path("/data/session/GridSquare_1") / name, WatchSettings(folder=Path("/data"))) is expected


def test_ignore_patterns_win_over_patterns():
    everything = WatchSettings(folder=Path("/data"), patterns=("*",))
    assert matches(Path("/data/notes.txt"), everything)
    assert not matches(Path("/data/.a.mrc.Xyz123"), everything)
    nothing_ignored = WatchSettings(folder=Path("/data"), ignore_patterns=())
    assert matches(Path("/data/.a.mrc"), nothing_ignored)


def test_settings_reject_a_bare_string_and_a_bad_poll_interval():
    with pytest.raises(ConfigError, match="watch.patterns"):
        WatchSettings(folder=Path("/data"), patterns="*.mrc")
    with pytest.raises(ConfigError, match="watch.poll_interval"):
        WatchSettings(folder=Path("/data"), poll_interval=0)


# ------------------------------------------------------------------------------------------ start-up scan

def write(path: Path, mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(CONTENT)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_scan_existing_lists_matching_files_oldest_first(tmp_path):
    c = write(tmp_path / "c.mrc", 1_000)
    a = write(tmp_path / "a.mrc", 3_000)
    b = write(tmp_path / "b.mrc", 2_000)
    e = write(tmp_path / "e.mrc", 4_000)
    d = write(tmp_path / "d.mrc", 4_000)  # same mtime as e.mrc: by name
    write(tmp_path / "notes.txt", 500)
    write(tmp_path / ".f.mrc.Xyz123", 500)
    write(tmp_path / "sub" / "s.mrc", 500)
    (tmp_path / "dir.mrc").mkdir()  # a folder with a matching name is not a file
    assert scan_existing(WatchSettings(folder=tmp_path)) == [c, b, a, d, e]


def test_scan_existing_recurses_only_when_asked(tmp_path):
    top = write(tmp_path / "top.mrc", 2_000)
    deep = write(tmp_path / "GridSquare_1" / "Data" / "deep.mrc", 1_000)
    assert scan_existing(WatchSettings(folder=tmp_path)) == [top]
    assert scan_existing(WatchSettings(folder=tmp_path, recursive=True)) == [deep, top]


@pytest.mark.parametrize("make", ["missing", "file"])
def test_scan_existing_needs_an_existing_folder(tmp_path, make):
    folder = tmp_path / "incoming"
    if make == "file":
        folder.write_bytes(b"")
    with pytest.raises(ConfigError, match="^watch.folder: .*incoming") as err:
        scan_existing(WatchSettings(folder=folder))
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------ observers

@pytest.fixture(params=[False, True], ids=["inotify", "polling"])
def observe(request, tmp_path):
    """Start an observer of the chosen kind on ``tmp_path / "in"``; returns its queue of reported paths."""
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    observers = []

    def start(on_path=None, **options) -> queue.Queue:
        paths: queue.Queue = queue.Queue()
        settings = WatchSettings(folder=folder, polling=request.param, poll_interval=0.1, **options)
        observers.append(start_observer(settings, on_path or paths.put))
        return paths

    yield start
    for observer in observers:
        observer.stop()
        observer.join()


def collect_until(paths: queue.Queue, wanted: Path) -> list[Path]:
    """Every path reported up to and including the first report of ``wanted``."""
    seen = []
    deadline = time.monotonic() + EVENT_TIMEOUT
    while wanted not in seen:
        remaining = deadline - time.monotonic()
        try:
            seen.append(paths.get(timeout=max(remaining, 0.001)))
        except queue.Empty:
            pytest.fail(f"{wanted.name} not reported within {EVENT_TIMEOUT} s; got {seen}")
    return seen


def test_a_file_written_in_place_is_reported(observe, tmp_path):
    paths = observe()
    write(tmp_path / "in" / "notes.txt")
    mic = tmp_path / "in" / "mic_001.mrc"
    with open(mic, "wb") as stream:  # header first, then the rest, as a microscope writes
        stream.write(CONTENT[:100])
        stream.flush()
        stream.write(CONTENT[100:])
    assert set(collect_until(paths, mic)) == {mic}


@pytest.mark.parametrize("temp_name", [".mic_002.mrc.Xyz123", "mic_002.mrc.part"])
def test_a_temp_file_renamed_into_place_is_reported_under_its_final_name_only(observe, tmp_path, temp_name):
    paths = observe()
    temp, final = tmp_path / "in" / temp_name, tmp_path / "in" / "mic_002.mrc"
    write(temp)
    os.rename(temp, final)
    seen = collect_until(paths, final)
    sentinel = write(tmp_path / "in" / "sentinel.mrc")
    seen += collect_until(paths, sentinel)
    assert set(seen) == {final, sentinel}


@pytest.mark.parametrize("recursive", [True, False], ids=["recursive", "flat"])
def test_a_file_in_a_subfolder_is_reported_only_when_recursive(observe, tmp_path, recursive):
    paths = observe(recursive=recursive)
    nested = write(tmp_path / "in" / "sub" / "mic_003.mrc")
    if recursive:
        assert set(collect_until(paths, nested)) == {nested}
    else:
        sentinel = write(tmp_path / "in" / "sentinel.mrc")
        assert set(collect_until(paths, sentinel)) == {sentinel}


@pytest.mark.parametrize("polling", [False, True], ids=["inotify", "polling"])
@pytest.mark.parametrize("make", ["missing", "file"])
def test_start_observer_needs_an_existing_folder(tmp_path, polling, make):
    folder = tmp_path / "incoming"
    if make == "file":
        folder.write_bytes(b"")
    settings = WatchSettings(folder=folder, polling=polling, poll_interval=0.1)
    with pytest.raises(ConfigError, match="^watch.folder: .*incoming"):
        start_observer(settings, lambda path: None)


def test_reading_a_file_reports_nothing(observe, tmp_path):
    mic = write(tmp_path / "in" / "mic_004.mrc")
    paths = observe()
    assert mic.read_bytes() == CONTENT  # the daemon's own reads must not come back as events
    sentinel = write(tmp_path / "in" / "sentinel.mrc")
    assert set(collect_until(paths, sentinel)) == {sentinel}


def test_a_failing_callback_does_not_stop_the_watching(observe, tmp_path):
    paths: queue.Queue = queue.Queue()
    first, second = tmp_path / "in" / "mic_005.mrc", tmp_path / "in" / "mic_006.mrc"

    def fail_on_first(path: Path) -> None:
        if path == first:
            raise RuntimeError("queue full")
        paths.put(path)

    observe(on_path=fail_on_first)
    write(first)
    write(second)
    assert set(collect_until(paths, second)) == {second}
