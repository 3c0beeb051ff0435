"""The streaming benchmark's latency mode, in miniature: a real daemon, a lander process, a subscriber."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from streampick import streambench
from streampick.nets import Model, ModelCard, build, save_model


@pytest.fixture
def tiny_model(tmp_path) -> Path:
    """A small untrained resnet8 (the benchmark's plumbing is under test, not the picker)."""
    torch.manual_seed(0)
    path = tmp_path / "model" / "tiny.pt"
    path.parent.mkdir()
    card = ModelCard(name="tiny", architecture="resnet8", units=32, pixel_size=8.0, particle_diameter=150.0,
                     threshold=0.0, version="7")
    save_model(path, Model(build("resnet8", 32).eval(), card))
    return path


def test_latency_mode_reports_every_landed_micrograph(tmp_path, tiny_model):
    work = tmp_path / "work"
    work.mkdir()
    settings = streambench.settings_for("latency", str(tiny_model), n=3, interval=0.5, size=512,
                                        slow_write_s=0.2, workdir=str(work), timeout_s=60)
    result = streambench.run_mode("latency", settings)

    assert result["complete"] and not result["missing"]
    assert [row["name"] for row in result["rows"]] == ["mic_00000", "mic_00001", "mic_00002"]
    assert sorted(row["mode"] for row in result["rows"]) == sorted(streambench.WRITE_MODES)
    for row in result["rows"]:
        assert row["received"] is not None
        assert row["written"] <= row["complete"] <= row["started"] <= row["committed"] <= row["published"]
        assert row["received"] >= row["published"]
    for _, start, end in streambench.SEGMENTS:
        stats = result["summary"][f"{start}→{end}"]
        assert stats["n"] == 3 and 0.0 <= stats["min"] <= stats["median"] <= stats["max"]
    assert list(work.iterdir()) == []  # the temporary folder is gone

    report = streambench.markdown_report([result], command="test", date="2026-01-01", machine="test machine")
    assert "#### Latency" in report and "received live: 3 of 3 landed" in report
    assert "median ≤ 1.5 s" in report and "p95 ≤ 3 s" in report


@pytest.mark.slow
def test_finetune_mode_measures_latency_idle_training_and_idle_again(tmp_path, tiny_model):
    work = tmp_path / "work"
    work.mkdir()
    settings = streambench.settings_for("finetune", str(tiny_model), n=2, interval=0.5, size=512,
                                        slow_write_s=0.2, workdir=str(work))
    result = streambench.run_mode("finetune", settings)

    assert result["complete"]
    assert [p["latency"]["n"] for p in result["phases"].values()] == [2, 2, 2]
    assert result["checks"]["start"]["state"] == "training" and result["checks"]["end"]["state"] == "training"
    assert result["checks"]["cancel"]["cancelled"]
    assert result["summary"]["ratio"] > 0
    report = streambench.markdown_report([result], command="test", date="2026-01-01", machine="test machine")
    assert "#### Latency while fine-tuning" in report and "| training |" in report
