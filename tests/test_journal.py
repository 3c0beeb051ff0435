"""The journal's exactly-once bookkeeping, on a real SQLite file (including a crash between steps)."""
from __future__ import annotations

import multiprocessing
import os
import signal

import pytest

from streampick.daemon.journal import Journal


def message(seq: int) -> dict:
    return {"seq": seq, "picks": {"x": [1.0], "y": [2.0], "score": [0.5]}}


def test_observe_is_idempotent_and_remembers_the_landing_time(tmp_path):
    clock = iter([10.0, 11.0, 12.0]).__next__
    with Journal(tmp_path / "j.sqlite", clock=clock) as journal:
        first = journal.observe("/data/a.mrc", 100, 1.0)
        again = journal.observe("/data/a.mrc", 100, 1.0)
    assert first == again and first.state == "waiting" and first.landed == 10.0


def test_commit_is_once_per_key_and_carries_its_seq(tmp_path):
    with Journal(tmp_path / "j.sqlite") as journal:
        mic = journal.observe("/data/a.mrc", 100, 1.0)
        first = journal.commit_result(mic.id, "sha:1", "v1", 0, message)
        second = journal.commit_result(mic.id, "sha:1", "v1", 0, lambda seq: pytest.fail("built twice"))
        assert first.seq == second.seq and first.message["seq"] == first.seq
        assert journal.micrograph(mic.id).state == "done"
        other = journal.commit_result(mic.id, "sha:1", "v2", 0, message)  # a new model version
        assert other.seq == first.seq + 1
        assert [r.seq for r in journal.unpublished()] == [first.seq, other.seq]
        journal.mark_published(first.seq)
        assert [r.seq for r in journal.unpublished()] == [other.seq]
        assert [r.seq for r in journal.results_since(first.seq)] == [other.seq]
        assert journal.counts()["results"] == 2 and journal.counts()["published"] == 1


def test_reprocess_starts_a_new_generation(tmp_path):
    with Journal(tmp_path / "j.sqlite") as journal:
        mic = journal.observe("/data/a.mrc", 100, 1.0)
        journal.commit_result(mic.id, "sha:1", "v1", 0, message)
        assert journal.bump_generation(mic.id) == 1
        assert journal.micrograph(mic.id).state == "queued"
        again = journal.commit_result(mic.id, "sha:1", "v1", journal.generation(mic.id), message)
        assert again.generation == 1 and journal.counts()["results"] == 2
        assert [r.generation for r in journal.iter_latest_results("v1", generation=1)] == [1]


def test_a_failed_file_is_retried_only_when_it_changes(tmp_path):
    with Journal(tmp_path / "j.sqlite") as journal:
        mic = journal.observe("/data/a.mrc", 100, 1.0)
        journal.set_state(mic.id, "failed", error="bad")
        assert journal.observe("/data/a.mrc", 100, 1.0).state == "failed"
        assert journal.observe("/data/a.mrc", 200, 2.0).state == "waiting"


def _commit_then_die(path: str) -> None:
    journal = Journal(path)
    mic = journal.observe("/data/a.mrc", 100, 1.0)
    journal.commit_result(mic.id, "sha:1", "v1", 0, message)
    os.kill(os.getpid(), signal.SIGKILL)  # no close, no cleanup: as kill -9 between commit and publish


def test_a_commit_survives_kill_9_and_is_offered_for_resending(tmp_path):
    path = str(tmp_path / "j.sqlite")
    process = multiprocessing.get_context("spawn").Process(target=_commit_then_die, args=(path,))
    process.start()
    process.join(60)
    assert process.exitcode == -signal.SIGKILL
    with Journal(path) as journal:
        (pending,) = journal.unpublished()
        assert pending.identity == "sha:1" and pending.message["seq"] == pending.seq
        assert journal.micrographs_in("done")[0].path == "/data/a.mrc"
