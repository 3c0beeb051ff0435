"""The engine benchmark in miniature: `streampick bench` simulates micrographs, picks them in a fresh process and
reports per-stage timings, peak RSS and AP against the simulated truth."""
from __future__ import annotations

import json

from streampick.cli import main

STAGES = ("read", "downsample", "normalize", "score", "extract", "write")


def test_the_engine_benchmark_times_every_stage_and_scores_the_picks(tmp_path, capsys):
    out = tmp_path / "engine.json"
    assert main(["-q", "bench", "--n", "2", "--size", "1024", "--pixel-size", "2", "--models",
                 "streampick-sim-resnet8-u32", "--strides", "2", "--precisions", "float32", "--json", str(out)]) == 0
    report = capsys.readouterr()
    (row,) = json.loads(out.read_text())
    assert row["model"] == "streampick-sim-resnet8-u32" and row["mode"] == "fast (stride 2), float32"
    assert all(row[stage] >= 0 for stage in STAGES) and row["score"] > 0
    assert row["end_to_end"] >= sum(row[stage] for stage in STAGES) * 0.9
    assert row["peak_rss_mib"] > 50
    assert 0.3 < row["ap"] <= 1.0  # the shipped model on its own kind of data
    assert "| streampick | streampick-sim-resnet8-u32 |" in report.out
    assert "placeholder" not in report.err  # the simulated data's pixel size is known: no header warning


def test_a_data_folder_without_micrographs_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "empty" / "micrographs").mkdir(parents=True)
    for folder in (tmp_path / "missing", tmp_path / "empty"):
        assert main(["bench", "--data", str(folder)]) == 2
        error = capsys.readouterr().err.strip()
        assert error.count("\n") == 0 and f"--data {folder} has no micrographs/*.mrc" in error
