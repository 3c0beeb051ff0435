"""A tiny real run of the training benchmark (`streampick bench --train`), in-process through the CLI.

Four 1024² micrographs at 2 Å/px (256² at the 8 Å/px working scale; two train, two held out), a few updates
of 16 examples: the numbers mean nothing, the structure of the report and of the JSON is what is checked.
Topaz is pointed at a path that does not exist, as on a machine without the reference installation, so its
rows are skipped with the reason; the real comparison is `streampick bench --train` (docs/benchmarks.md).
"""
from __future__ import annotations

import json

import pytest

from streampick.cli import main
from streampick.topazcli import topaz_disk_pixels
from streampick.trainreport import markdown_report


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("trainbench") / "results.json"
    assert main(["-q", "bench", "--train", "--n", "4", "--size", "1024", "--pixel-size", "2", "--epochs", "2",
                 "--steps", "2", "--batch-size", "16", "--timing-repeats", "2", "--timing-steps", "2",
                 "--threads", "1", "--timing-threads", "1", "2",
                 "--pi-factors", "0.5", "1", "--topaz-cli", str(out.parent / "no-topaz"),
                 "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_results_have_the_rows_timings_and_pi_table(results):
    data = results["data"]
    assert data["train"] == ["sim_0000", "sim_0001"] and data["test"] == ["sim_0002", "sim_0003"]
    assert data["working_shape"] == [256, 256]
    assert 0 < data["pi_u"] < data["pi"] < 1 and data["n_labels"] > 0
    (ours,) = results["rows"]
    assert ours["engine"] == "streampick" and ours["updates"] == 4 and ours["method"] == "GE-binomial"
    assert len(ours["ap_per_epoch"]) == 3  # the start, then each epoch
    assert all(0.0 <= ap <= 1.0 for ap in ours["ap_per_epoch"]) and ours["ap"] == ours["ap_per_epoch"][-1]
    assert len(ours["update_seconds"]) == 2  # 2 epochs × 2 updates, the first of each epoch not timed
    timing = results["timing"]
    assert [(e["engine"], e["precision"], e["threads"]) for e in timing] == [
        ("streampick", f"auto = {ours['precision']}", 1), ("streampick", "float32", 1),
        ("streampick", f"auto = {ours['precision']}", 2), ("streampick", "float32", 2)]
    assert all(len(e["per_repeat"]) == len(e["cpu_per_repeat"]) == 2 for e in timing)
    assert all(e["median"] > 0 and e["cpu_median"] > 0 for e in timing)
    pi_rows = results["pi_robustness"]
    assert [row["pi_factor"] for row in pi_rows] == [0.5, 1.0]
    assert pi_rows[1]["delta_ap"] == 0.0 and pi_rows[1]["ap"] == ours["ap"]
    assert pi_rows[0]["pi"] == pytest.approx(0.5 * pi_rows[1]["pi"])
    for row in pi_rows:
        assert 0.0 <= row["ap"] <= 1.0 and row["delta_ap"] == pytest.approx(row["ap"] - ours["ap"])


def test_topaz_rows_are_skipped_with_the_reason_where_topaz_is_absent(results):
    assert "not found" in results["topaz_skipped"] and "no-topaz" in results["topaz_skipped"]
    assert not any(row["engine"].startswith("topaz") for row in results["rows"])
    assert results["topaz_skipped"] in markdown_report(results, command="c", date="d")


def test_markdown_report_has_the_three_tables_and_the_targets(results):
    markdown = markdown_report(results, command="streampick bench --train", date="2026-11-25")
    assert markdown.startswith("### Training benchmark, 2026-11-25")
    assert "`streampick bench --train`" in markdown
    for header in ("| engine | start | π setting |", "| engine | precision | torch threads | wall s/update |",
                   "| π factor |", "| target (issue 4) |"):
        assert header in markdown
    assert "| 0.5× |" in markdown and "| 1× |" in markdown


def test_topaz_counts_seven_times_the_disk_at_radius_three():
    assert topaz_disk_pixels(3) == 7 * 29 == 203
