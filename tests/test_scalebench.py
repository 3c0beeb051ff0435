"""The scale-out benchmark in miniature: a real daemon on a real Dask LocalCluster with the emulated device."""
from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("distributed", reason="Dask distributed is not installed (pip install 'streampick[dask]')")

from streampick import scalebench  # noqa: E402
from streampick.streambench import Workspace  # noqa: E402


def test_scale_mode_picks_everything_and_reports_rate_and_overhead(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    settings = dataclasses.replace(scalebench.default_settings(n=12, interval=0.01), workdir=str(work))
    (result,) = scalebench.run_benchmark([1], settings, emulated_s=0.02, progress=lambda message: None)
    assert result["complete"] and result["landed"] == 12 and result["summary"]["n"] == 12
    summary = result["summary"]
    assert summary["ideal_per_s"] == pytest.approx(50.0) and summary["per_s"] > 0
    assert summary["overhead"]["n"] == 12 and summary["orchestration"]["n"] == 12
    # 12 micrographs land faster than one worker picks them: the backlog goes out in tasks of up to 4, and the
    # daemon + Dask part excludes the batch-mates' device time
    assert 1.0 < summary["task_size"]["mean"] <= 4.0
    assert summary["orchestration"]["median"] <= summary["overhead"]["median"]
    assert summary["stages"]["score"]["median"] >= 0.02  # the emulated device time was held
    assert list(work.iterdir()) == []  # the temporary folder is gone
    report = scalebench.markdown_report([result], command="test", date="2026-01-01", machine="test machine")
    assert "emulated device" in report and "| 1 |" in report
    scalebench.plot_throughput([result], tmp_path / "scale.png")
    assert (tmp_path / "scale.png").stat().st_size > 1000


def test_deferred_cleanup_keeps_every_run_folder_until_the_benchmark_ends(tmp_path):
    settings = dataclasses.replace(scalebench.default_settings(n=2), workdir=str(tmp_path))
    with scalebench.deferred_cleanup(settings) as runs:
        assert runs.keep and runs.workdir != str(tmp_path)
        with Workspace(runs) as workspace:
            (workspace.out / "picks.star").write_text("data_\n")
        assert (workspace.out / "picks.star").exists()  # a run's files outlive the run
    assert list(tmp_path.iterdir()) == []  # and all go at the end
