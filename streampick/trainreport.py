"""Markdown for the training benchmark's results (:mod:`streampick.trainbench`, ``streampick bench --train``).

:func:`markdown_report` is a pure function of the JSON-ready results dict: the setup, the held-out AP rows,
the update-time table, the π robustness table and the issue's targets with measured values and verdicts.
"""
from __future__ import annotations

from .topazcli import topaz_disk_pixels
from .train.objectives import disk_pixel_count
from .trainbench import FLOOR


def _f(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown_report(results: dict, *, command: str, date: str) -> str:
    """The results as a Markdown section: setup, held-out AP, update time, π robustness, the targets."""
    return "\n".join([*_setup_lines(results, command, date), "", *_ap_table(results), "", *_timing_table(results),
                      "", *_pi_table(results), "", *_targets_table(results)])


def _setup_lines(results: dict, command: str, date: str) -> list[str]:
    config, data = results["config"], results["data"]
    load = "/".join(map(str, results["load_at_start"])), "/".join(map(str, results["load_at_end"]))
    lines = [f"### Training benchmark, {date}", "", f"- machine: {results['machine']}",
             f"- command: `{command}` ({results['wall_s'] / 60:.1f} min in all; load average 1/5/15 min "
             f"{load[0]} at start, {load[1]} at end); torch threads {results['threads']} for both engines' "
             "training runs",
             f"- data: {config['n']} simulated {config['size']}² micrographs at {config['pixel_size']:g} Å/px "
             f"(seed {config['seed']}), trained and picked at {config['target_pixel_size']:g} Å/px "
             f"({'×'.join(map(str, data['working_shape']))}); {len(data['train'])} training micrographs with "
             f"{data['n_labels']} labels ({config['label_fraction']:.0%} of each one's true particles, jittered), "
             f"{len(data['test'])} held out with {data['n_truth_test']} true particles; true particles per "
             f"training micrograph {data['expected_particles']:.2f} → π {data['pi']:.5f}, labelled fraction "
             f"{data['labelled_fraction']:.5f}, π_u {data['pi_u']:.5f} (disk of radius {config['radius']}: "
             f"{disk_pixel_count(config['radius'])} px)",
             f"- training: resnet8, 32 units, GE-binomial, minibatch {config['batch_size']} (1/16 labelled "
             f"positives), lr {config['lr']:g}, label radius {config['radius']} px, {config['epochs']} epochs × "
             f"{config['steps']} = {config['epochs'] * config['steps']} updates; AP of the last weights on the "
             f"held-out micrographs against their full truth (greedy matching within {config['diameter'] / 2:g} Å, "
             f"picks above logit {FLOOR:g})"]
    if results.get("topaz_skipped"):
        lines.append(f"- {results['topaz_skipped']}")
    if results.get("topaz_data"):
        td = results["topaz_data"]
        literal = td["literal_pi"]
        lines.append(f"- topaz preprocess of the {config['n']} micrographs: {td['preprocess_s']:.0f} s; Topaz's "
                     f"own p_obs {td['p_observed_topaz']:.5f} ({topaz_disk_pixels(config['radius'])} px per label); "
                     f"`topaz train --pi {literal['pi']:.5f}` (the true π) runs as: {literal['method']}")
    if results.get("pretrained_skipped"):
        lines.append(f"- {results['pretrained_skipped']}")
    return lines


def _ap_table(results: dict) -> list[str]:
    lines = ["| engine | start | π setting | method | π | π_u | updates | held-out AP | AP per epoch (0 = start) "
             "| s/update, wall (CPU), median | training wall s | rest of machine, cores |", "|" + "---|" * 12]
    for row in results["rows"]:
        curve = ", ".join(_f(a, 2) for a in row["ap_per_epoch"]) if row.get("ap_per_epoch") else "–"
        lines.append(f"| {row['engine']} ({row['precision']}) | {row['start']} | {row['pi_setting']} | "
                     f"{row['method']} | {_f(row['pi'], 5)} | {_f(row['pi_u'], 5)} | {row['updates']} | "
                     f"**{_f(row['ap'])}** | {curve} | {_f(row['s_per_update'])} ({_f(row['cpu_s_per_update'])}) | "
                     f"{row['wall_s']:.0f} | "
                     f"{row['other_cores']:.2f} |")
    return lines


def _timing_table(results: dict) -> list[str]:
    config = results["config"]
    topaz = {e["threads"]: e for e in results["timing"] if e["engine"].startswith("topaz")}
    lines = [f"Seconds per {config['batch_size']}-example update, resnet8_u32, CPU ({config['timing_repeats']} "
             f"interleaved repeats of {config['timing_steps']} updates per engine and thread count; median per repeat "
             f"after {config['timing_warmup']} warm-up updates, then the median of the repeats; CPU = the "
             "process's CPU time, all threads):", "",
             "| engine | precision | torch threads | wall s/update | per repeat | CPU s/update | Topaz ÷ this, wall "
             "(CPU), same threads | rest of machine, cores (per repeat) |", "|---|---|---|---|---|---|---|---|"]
    for e in results["timing"]:
        base = topaz.get(e["threads"], {})
        lines.append(f"| {e['engine']} | {e['precision']} | {e['threads']} | **{_f(e['median'])}** | "
                     f"{', '.join(_f(s) for s in e['per_repeat'])} | {_f(e['cpu_median'])} | "
                     f"{_ratio(base.get('median'), e['median'])} ({_ratio(base.get('cpu_median'), e['cpu_median'])})"
                     f" | {', '.join(f'{c:.2f}' for c in e['other_cores'])} |")
    return lines


def _ratio(base: float | None, value: float | None) -> str:
    return "–" if not base or not value else f"{base / value:.1f}×"


def _pi_table(results: dict) -> list[str]:
    lines = ["| π factor | expected particles | π | π_u | held-out AP | ΔAP vs 1× | within ±0.05 |",
             "|---|---|---|---|---|---|---|"]
    for row in results["pi_robustness"]:
        ok = "yes" if abs(row["delta_ap"]) < 0.05 else "**no**"
        lines.append(f"| {row['pi_factor']:g}× | {row['expected_particles']:.2f} | {row['pi']:.5f} | "
                     f"{row['pi_u']:.5f} | {row['ap']:.3f} | {row['delta_ap']:+.3f} | {ok} |")
    return lines


def _targets_table(results: dict) -> list[str]:
    auto = [e for e in results["timing"] if e["precision"].startswith("auto")]
    deltas = [r["delta_ap"] for r in results["pi_robustness"]]
    low, high, worst = min(deltas), max(deltas), max(map(abs, deltas))
    lines = ["| target (issue 4) | measured | |", "|---|---|---|"]
    for start in ("scratch", "pretrained"):
        ours = next((r for r in results["rows"] if r["engine"] == "streampick" and r["start"] == start), None)
        topaz = next((r for r in results["rows"] if r["engine"].startswith("topaz") and r["start"] == start
                      and r["pi_setting"].startswith("--pi")), None)
        if ours is not None and topaz is not None:
            lines.append(f"| held-out AP ≥ Topaz's (same labels, size, updates; from {start}) | {ours['ap']:.3f} vs "
                         f"{topaz['ap']:.3f} | {'met' if ours['ap'] >= topaz['ap'] else '**missed**'} |")
        elif ours is not None:
            lines.append(f"| held-out AP ≥ Topaz's (from {start}) | {ours['ap']:.3f} (Topaz not run) | – |")
    for e in auto:
        wall, cpu = e["median"], e["cpu_median"]
        verdict = "met" if wall is not None and wall <= 0.25 else "**missed** (wall)"
        lines.append(f"| ≤ 0.25 s per 256-example update ({e['threads']} thread{'s' if e['threads'] > 1 else ''}) | "
                     f"{_f(wall)} s wall, {_f(cpu)} s CPU | {verdict} |")
    lines.append(f"| π 0.5–1.5× changes AP by < 0.05 | ΔAP from {low:+.3f} to {high:+.3f} | "
                 f"{'met' if worst < 0.05 else '**missed**'} |")
    return lines
