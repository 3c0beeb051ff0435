"""The live monitor's logic: what the daemon's messages add up to, and how to draw it in a terminal.

Two pure halves, so that both are tested without a socket or a terminal:

* :class:`MonitorState` takes every message the daemon publishes (``picks``, ``stats``, ``error``,
  ``heartbeat``) with the local time it arrived, and keeps what a person watching a session wants: the
  latest stats, how long the daemon has been silent, a bounded history of particles, carbon fraction and
  latency per micrograph, the candidate scores of the latest micrographs, the recent errors, the model,
  and live fine-tuning (``training``: the round's progress and the held-out AP of each model version).
  A picks message re-sent after a daemon crash repeats its ``key`` and is counted once; a jump in ``seq``
  (messages this monitor missed) is counted as a gap; background re-picks with a new model version are
  counted apart and stay out of the live history (their latency is not the microscope's).
* :func:`render` turns a state into a rich renderable for a given width (80 and 120 columns look right):
  a header with the connection state, four small panels (throughput, latency, queue, counts), particles
  per micrograph as a sparkline of unicode blocks, the score histogram with the threshold marked, a
  session panel (model, threshold, carbon fraction, sequence), the training panel (once labels have
  arrived) and the recent errors.

``streampick.commands.monitor`` feeds the state from a ZMQ SUB socket and redraws with ``rich.live``.

Example::

    state = MonitorState(endpoint="tcp://127.0.0.1:5555")
    state.update("stats", stats_message, now=time.time())
    Console().print(render(state, time.time(), width=100))
"""
from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

BLOCKS = " ▁▂▃▄▅▆▇█"
ASCII_BLOCKS = " .:-=+*#%@"  # for terminals that cannot show the unicode blocks
_HIST_ROWS = 4  # text rows of the score histogram


@dataclass(frozen=True)
class PickRecord:
    """One micrograph's result, as the history keeps it."""

    time: float  # when the daemon published it (its clock), else when it arrived
    name: str
    n_picks: int
    carbon_fraction: float | None
    latency_s: float | None  # published - complete (else - landed), daemon clock


@dataclass(frozen=True)
class ErrorRecord:
    """One ``error`` message."""

    time: float
    path: str
    stage: str
    message: str


@dataclass
class MonitorState:
    """Everything the monitor knows about the daemon, built from its messages alone.

    Times given to :meth:`update` are the monitor's own clock (arrival times), so that ages such as
    "daemon silent for 12 s" do not depend on the daemon host's clock.

    Attributes:
        endpoint: The PUB endpoint shown in the header.
        history_size: Micrographs kept in :attr:`history`.
        score_micrographs: Micrographs whose candidate scores make the histogram.
        error_size: Errors kept in :attr:`errors`.
        key_memory: Result keys remembered for de-duplication.
        silent_after_s: Silence after which the daemon is shown as silent.
    """

    endpoint: str = ""
    history_size: int = 200
    score_micrographs: int = 20
    error_size: int = 10
    key_memory: int = 100_000
    silent_after_s: float = 10.0

    stats: dict[str, Any] | None = None
    status: dict[str, Any] | None = None
    heartbeat: dict[str, Any] | None = None
    model: dict[str, Any] | None = None
    threshold: float | None = None
    floor: float | None = None
    daemon_state: str | None = None
    first_heard: float | None = None
    last_heard: float | None = None
    last_heartbeat: float | None = None
    last_seq: int | None = None
    seq_gaps: int = 0
    seq_missed: int = 0
    training: dict[str, Any] | None = None
    executor: dict[str, Any] | None = None  # the stats' executor: the Dask workers' figures
    repicks: int = 0
    results: int = 0
    duplicates: int = 0
    replays: int = 0
    n_errors: int = 0
    malformed: int = 0
    history: deque[PickRecord] = field(init=False, repr=False)
    scores: deque[np.ndarray] = field(init=False, repr=False)
    errors: deque[ErrorRecord] = field(init=False, repr=False)
    _keys: dict[str, None] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.history = deque(maxlen=self.history_size)
        self.scores = deque(maxlen=self.score_micrographs)
        self.errors = deque(maxlen=self.error_size)
        self._keys = {}

    # ------------------------------------------------------------------------------------------ input

    def update(self, topic: str, message: dict[str, Any], now: float) -> None:
        """Take one published message.

        Args:
            topic: ``picks``, ``stats``, ``error`` or ``heartbeat``; other topics (a newer daemon may add
                some) only show that the daemon is alive.
            message: The decoded JSON payload (anything but a dict counts as malformed).
            now: Arrival time on the monitor's clock (Unix seconds).
        """
        if not isinstance(message, dict):
            self.malformed += 1
            return
        if self.first_heard is None:
            self.first_heard = now
        self.last_heard = now
        handler = {"picks": self._on_picks, "stats": self._on_stats, "error": self._on_error,
                   "heartbeat": self._on_heartbeat, "training": self._on_training}.get(topic)
        if handler is not None:
            handler(message, now)

    def apply_status(self, reply: dict[str, Any]) -> None:
        """Take the control endpoint's answer to ``status`` (fills counts until the first stats message).

        Args:
            reply: ``{"ok": true, state, counts, queue_depth, threshold, model, last_seq, uptime_s}``.
        """
        if not isinstance(reply, dict) or not reply.get("ok"):
            return
        self.status = reply
        self.daemon_state = self.daemon_state or _text(reply.get("state"))
        self.model = self.model or _dict_or_none(reply.get("model"))
        if self.threshold is None:
            self.threshold = _number(reply.get("threshold"))

    def note_malformed(self) -> None:
        """Count a message that could not be decoded."""
        self.malformed += 1

    def _on_picks(self, message: dict[str, Any], now: float) -> None:
        key = message.get("key")
        if isinstance(key, str):
            if key in self._keys:
                self.duplicates += 1
                return
            self._remember(key)
        self.results += 1
        self.replays += bool(message.get("replay"))
        self._note_seq(message.get("seq"))
        if message.get("repick"):
            self.repicks += 1
            return
        self.model = _dict_or_none(message.get("model")) or self.model
        self.threshold = _number(message.get("threshold"), self.threshold)
        self.floor = _number(message.get("floor"), self.floor)
        picks = message.get("picks") if isinstance(message.get("picks"), dict) else {}
        scores = np.asarray(_float_list(picks.get("score")), dtype=np.float32)
        self.scores.append(scores[np.isfinite(scores)])
        self.history.append(_pick_record(message, now))

    def _on_stats(self, message: dict[str, Any], now: float) -> None:
        self.stats = message
        self.daemon_state = _text(message.get("state")) or self.daemon_state
        self.model = _dict_or_none(message.get("model")) or self.model
        self.threshold = _number(message.get("threshold"), self.threshold)
        self.training = _dict_or_none(message.get("training")) or self.training
        self.executor = _dict_or_none(message.get("executor")) or self.executor

    def _on_training(self, message: dict[str, Any], now: float) -> None:
        self.training = message

    def _on_heartbeat(self, message: dict[str, Any], now: float) -> None:
        self.heartbeat = message
        self.last_heartbeat = now
        self.daemon_state = _text(message.get("state")) or self.daemon_state

    def _on_error(self, message: dict[str, Any], now: float) -> None:
        self.n_errors += 1
        self.errors.append(ErrorRecord(time=_number(message.get("time"), now),
                                       path=str(message.get("path", "")), stage=str(message.get("stage", "")),
                                       message=str(message.get("message", ""))))

    def _remember(self, key: str) -> None:
        self._keys[key] = None
        if len(self._keys) > self.key_memory:  # forget the oldest (dicts keep insertion order)
            del self._keys[next(iter(self._keys))]

    def _note_seq(self, seq: Any) -> None:
        if not isinstance(seq, int) or isinstance(seq, bool):
            return
        if self.last_seq is not None and seq > self.last_seq + 1:
            self.seq_gaps += 1
            self.seq_missed += seq - self.last_seq - 1
        self.last_seq = seq if self.last_seq is None else max(self.last_seq, seq)

    # ---------------------------------------------------------------------------------------- derived

    def counts(self) -> dict[str, Any]:
        """The daemon's counts: from the latest stats message, else from the status reply, else empty."""
        source = self.stats if self.stats is not None else self.status
        counts = source.get("counts") if source else None
        return counts if isinstance(counts, dict) else {}

    def latest(self, name: str) -> Any:
        """A field of the latest stats message, else of the status reply (None when neither has it)."""
        for source in (self.stats, self.status):
            if source and source.get(name) is not None:
                return source[name]
        return None

    def heartbeat_age(self, now: float) -> float | None:
        """Seconds since the last heartbeat arrived (None before the first)."""
        return None if self.last_heartbeat is None else max(0.0, now - self.last_heartbeat)

    def silent_for(self, now: float) -> float | None:
        """Seconds since any message arrived (None before the first)."""
        return None if self.last_heard is None else max(0.0, now - self.last_heard)

    def connection(self, now: float) -> str:
        """``waiting`` (nothing heard yet), ``live``, or ``silent`` (nothing for ``silent_after_s``)."""
        silent = self.silent_for(now)
        if silent is None:
            return "waiting"
        return "silent" if silent > self.silent_after_s else "live"

    def particle_counts(self) -> np.ndarray:
        """Particles (score ≥ threshold) per micrograph in the history, oldest first."""
        return np.array([r.n_picks for r in self.history], dtype=np.int64)

    def carbon_fractions(self) -> np.ndarray:
        """Carbon/contamination fraction per micrograph in the history that reported one, oldest first."""
        return np.array([r.carbon_fraction for r in self.history if r.carbon_fraction is not None])

    def all_scores(self) -> np.ndarray:
        """The candidate scores of the latest ``score_micrographs`` micrographs, in one array."""
        return np.concatenate(list(self.scores)) if self.scores else np.zeros(0, dtype=np.float32)


def _pick_record(message: dict[str, Any], now: float) -> PickRecord:
    stamps = message.get("timestamps") if isinstance(message.get("timestamps"), dict) else {}
    published = _number(stamps.get("published"))
    start = _number(stamps.get("complete"), _number(stamps.get("landed")))
    latency = published - start if published is not None and start is not None else None
    stats = message.get("stats") if isinstance(message.get("stats"), dict) else {}
    micrograph = message.get("micrograph") if isinstance(message.get("micrograph"), dict) else {}
    n_picks = _number(message.get("n_picks"), 0.0)
    return PickRecord(time=published if published is not None else now, name=str(micrograph.get("name", "")),
                      n_picks=int(n_picks), carbon_fraction=_number(stats.get("carbon_fraction")),
                      latency_s=latency)


def _number(value: Any, default: float | None = None) -> float | None:
    """``value`` as a finite float, else ``default`` (bools are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return default
    return float(value)


def _float_list(value: Any) -> list[float]:
    if not isinstance(value, list):
        return []
    return [float(v) for v in value if isinstance(v, (int, float)) and not isinstance(v, bool)]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _dict_or_none(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) and value else None


# ================================================================================================ render


def render(state: MonitorState, now: float, *, width: int, max_errors: int = 3,
           ascii_only: bool = False) -> RenderableType:
    """Draw the monitor for a terminal ``width`` columns wide.

    Args:
        state: What the monitor knows.
        now: The current time on the clock ``state`` was fed with.
        width: Terminal width in columns (the layout is made for 80 and wider; narrower still renders).
        max_errors: Recent errors to list.
        ascii_only: Draw bars with ASCII characters (terminals without UTF-8).

    Returns:
        A rich renderable (a ``Group`` of a header line and panels).
    """
    width = max(40, int(width))
    blocks = ASCII_BLOCKS if ascii_only else BLOCKS
    hist_width = max(24, width * 11 // 20)
    middle = Table.grid(expand=True)
    middle.add_column(width=hist_width, no_wrap=True)
    middle.add_column(ratio=1)
    middle.add_row(_scores_panel(state, hist_width - 4, blocks), _session_panel(state, now))
    parts = [_header(state, now), _summary_row(state), _particles_panel(state, width - 4, blocks), middle]
    training = _training_panel(state, width - 4, blocks)
    if training is not None:
        parts.append(training)
    workers = _workers_panel(state)
    if workers is not None:
        parts.append(workers)
    return Group(*parts, _errors_panel(state, max_errors))


def _header(state: MonitorState, now: float) -> Table:
    grid = Table.grid(expand=True, padding=(0, 1))
    grid.add_column(no_wrap=True, overflow="ellipsis")
    grid.add_column(justify="right", no_wrap=True, overflow="ellipsis")
    left = Text.assemble(("streampick monitor", "bold"), "  ", (state.endpoint or "(no endpoint)", "cyan"))
    grid.add_row(left, _connection_text(state, now))
    return grid


def _connection_text(state: MonitorState, now: float) -> Text:
    connection = state.connection(now)
    if connection == "waiting":
        return Text("… waiting for the daemon", style="yellow")
    if connection == "silent":
        return Text(f"✖ daemon silent for {_duration(state.silent_for(now))}", style="bold red")
    age = state.heartbeat_age(now)
    beat = "no heartbeat yet" if age is None else f"heartbeat {_duration(age)} ago"
    daemon = state.daemon_state or "?"
    return Text.assemble(("● live", "bold green"), f" · {beat} · ",
                         (daemon, "green" if daemon == "running" else "bold yellow"))


def _summary_row(state: MonitorState) -> Table:
    counts = state.counts()
    latency = state.latest("latency_s") or {}
    latency = latency if isinstance(latency, dict) else {}
    rate = _number(state.latest("throughput_per_min"))
    uptime = _number(state.latest("uptime_s"), _number((state.heartbeat or {}).get("uptime_s")))
    panels = [
        _small_panel("Throughput", [("per min", "–" if rate is None else f"{rate:.1f}"),
                                    ("published", _count(counts.get("published"))),
                                    ("uptime", "–" if uptime is None else _duration(uptime, short=True))]),
        _small_panel("Latency", [("median", _seconds(latency.get("median"))),
                                 ("p95", _seconds(latency.get("p95"))), ("n", _count(latency.get("n")))]),
        _small_panel("Queue", [("depth", _count(state.latest("queue_depth"))),
                               ("waiting", _count(counts.get("waiting"))),
                               ("queued", _count(counts.get("queued")))]),
        _small_panel("Counts", [("done", _count(counts.get("done"))),
                                ("failed", _count(counts.get("failed")),
                                 "red" if counts.get("failed") else ""),
                                ("duplicate", _count(counts.get("duplicate")))]),
    ]
    row = Table.grid(expand=True)
    for _ in panels:
        row.add_column(ratio=1)
    row.add_row(*panels)
    return row


def _small_panel(title: str, rows: list[tuple[str, ...]]) -> Panel:
    grid = Table.grid(expand=True, padding=(0, 1))
    grid.add_column(style="dim", no_wrap=True, min_width=max(len(row[0]) for row in rows))
    grid.add_column(justify="right", no_wrap=True, overflow="ellipsis")
    for label, value, *style in rows:
        grid.add_row(label, Text(value, style=(style[0] if style and style[0] else "bold")))
    return Panel(grid, title=title, title_align="left", box=box.ROUNDED, padding=(0, 1))


def _particles_panel(state: MonitorState, inner: int, blocks: str) -> Panel:
    counts = state.particle_counts()
    title = "Particles per micrograph"
    if len(counts) == 0:
        return Panel(Text("waiting for picks…\n", style="dim"), title=title, title_align="left",
                     box=box.ROUNDED, padding=(0, 1))
    shown = counts[-inner:]
    records = list(state.history)[-len(shown):]
    span = records[-1].time - records[0].time
    subtitle = (f"latest {counts[-1]} · mean {counts.mean():.0f} · max {counts.max()} · "
                f"last {len(shown)} in {_duration(span)}")
    return Panel(Group(*_sparkline(shown, rows=2, blocks=blocks)), title=title, title_align="left",
                 subtitle=subtitle, subtitle_align="right", box=box.ROUNDED, padding=(0, 1))


def _sparkline(values: np.ndarray, *, rows: int, blocks: str) -> list[Text]:
    """Bars of ``rows`` text lines, one column per value, scaled to the largest value (zeros in red)."""
    steps = len(blocks) - 1
    top = max(float(values.max()), 1.0)
    levels = np.ceil(values / top * rows * steps).astype(int)
    lines = []
    for row in range(rows - 1, -1, -1):
        text = Text(no_wrap=True, overflow="crop")
        for value, level in zip(values, levels):
            if value <= 0:
                text.append(blocks[1] if row == 0 else " ", style="red")
            else:
                text.append(blocks[int(np.clip(level - row * steps, 0, steps))], style="cyan")
        lines.append(text)
    return lines


def _scores_panel(state: MonitorState, inner: int, blocks: str) -> Panel:
    scores = state.all_scores()
    title = f"Scores · last {len(state.scores)} micrographs" if state.scores else "Scores"
    if len(scores) == 0:  # as tall as a histogram, so the layout does not jump when scores arrive
        return Panel(Text("no candidate scores yet" + "\n" * (_HIST_ROWS + 1), style="dim"), title=title,
                     title_align="left", box=box.ROUNDED, padding=(0, 1))
    threshold = state.threshold
    lo, hi = _score_range(scores, state.floor, threshold)
    counts, _ = np.histogram(scores, bins=inner, range=(lo, hi))
    mark = None if threshold is None else int(np.clip((threshold - lo) / (hi - lo) * inner, 0, inner - 1))
    lines = _histogram_lines(counts, mark, rows=_HIST_ROWS, blocks=blocks)
    lines.append(_marker_line(inner, mark, threshold))
    lines.append(_axis_line(inner, lo, hi))
    subtitle = "log counts"
    if threshold is not None:
        above = int((scores >= threshold).sum())
        subtitle = f"{above} of {len(scores)} ≥ threshold · log counts"
    return Panel(Group(*lines), title=title, title_align="left", subtitle=subtitle, subtitle_align="right",
                 box=box.ROUNDED, padding=(0, 1))


def _score_range(scores: np.ndarray, floor: float | None, threshold: float | None) -> tuple[float, float]:
    lo = float(scores.min()) if floor is None else min(floor, float(scores.min()))
    hi = float(scores.max())
    if threshold is not None:
        lo, hi = min(lo, threshold), max(hi, threshold)
    return (lo, hi) if hi > lo else (lo - 0.5, lo + 0.5)


def _histogram_lines(counts: np.ndarray, mark: int | None, *, rows: int, blocks: str) -> list[Text]:
    """Vertical bars on a log scale; bins at or above the threshold's bin in green, the rest grey."""
    steps = len(blocks) - 1
    heights = np.log1p(counts) / max(np.log1p(counts.max()), 1e-12)
    levels = np.where(counts > 0, np.maximum(1, np.ceil(heights * rows * steps)), 0).astype(int)
    lines = []
    for row in range(rows - 1, -1, -1):
        text = Text(no_wrap=True, overflow="crop")
        for i, level in enumerate(levels):
            style = "green" if mark is not None and i >= mark else "grey50"
            text.append(blocks[int(np.clip(level - row * steps, 0, steps))], style=style)
        lines.append(text)
    return lines


def _marker_line(inner: int, mark: int | None, threshold: float | None) -> Text:
    if mark is None or threshold is None:
        return Text("threshold unknown", style="dim", no_wrap=True, overflow="crop")
    label = f"threshold {threshold:.2f}"
    if mark + 2 + len(label) <= inner:
        line = Text(" " * mark) + Text("▲ ", style="bold yellow") + Text(label, style="yellow")
    else:
        start = max(0, mark - len(label) - 1)
        line = Text(" " * start) + Text(label + " ", style="yellow") + Text("▲", style="bold yellow")
    line.no_wrap, line.overflow = True, "crop"
    return line


def _axis_line(inner: int, lo: float, hi: float) -> Text:
    left, right = f"{lo:.1f}", f"{hi:.1f}"
    gap = max(1, inner - len(left) - len(right))
    return Text(left + " " * gap + right, style="dim", no_wrap=True, overflow="crop")


def _session_panel(state: MonitorState, now: float) -> Panel:
    model = state.model or {}
    carbon = state.carbon_fractions()
    grid = Table.grid(expand=True, padding=(0, 1))
    grid.add_column(style="dim", no_wrap=True, min_width=9)
    grid.add_column(no_wrap=True, overflow="ellipsis")
    grid.add_row("model", Text(_model_label(model), style="bold"))
    floor = "" if state.floor is None else f" (floor {state.floor:.1f})"
    grid.add_row("threshold", "–" if state.threshold is None else f"{state.threshold:.2f}{floor}")
    grid.add_row("carbon", "–" if len(carbon) == 0 else f"{carbon[-1]:.0%} now · {carbon.mean():.0%} mean")
    seq = "–" if state.last_seq is None else str(state.last_seq)
    gaps = Text(f"gaps {state.seq_gaps}", style="bold red" if state.seq_gaps else "")
    if state.seq_missed:
        gaps.append(f" ({state.seq_missed} missed)")
    grid.add_row("seq", Text.assemble(seq, " · ", gaps))
    grid.add_row("re-sent", f"{state.duplicates} ignored · {state.replays} replayed")
    age = state.heartbeat_age(now)
    grid.add_row("heartbeat", "–" if age is None else f"{_duration(age)} ago")
    return Panel(grid, title="Session", title_align="left", box=box.ROUNDED, padding=(0, 1))


def _model_label(model: dict[str, Any]) -> str:
    """``topaz:resnet16_u64 v3``; the version alone when it already names the model (``mine:2``)."""
    name, version = str(model.get("name", "–")), str(model.get("version", ""))
    if not version or version == name:
        return name
    if version.startswith(f"{name}:"):
        return version
    return f"{name} v{version}" if version.isdigit() else f"{name} {version}"


def _training_panel(state: MonitorState, inner: int, blocks: str, max_versions: int = 3) -> Panel | None:
    """Live fine-tuning: the state and progress of the current round, then the latest model versions with
    their held-out AP (the current model's AP on the same micrographs → the candidate's).  None until the
    daemon reports labels or a round."""
    training = state.training or {}
    versions = [v for v in training.get("versions") or [] if isinstance(v, dict)]
    labels = training.get("labels") if isinstance(training.get("labels"), dict) else {}
    if not versions and not _number(labels.get("particles")) and training.get("state") != "training":
        return None
    grid = Table.grid(expand=True, padding=(0, 1))
    grid.add_column(style="dim", no_wrap=True, min_width=9)
    grid.add_column(no_wrap=True, overflow="ellipsis")
    label_text = (f"{_count(labels.get('particles'))} particles · {_count(labels.get('negatives'))} junk on "
                  f"{_count(labels.get('micrographs'))} micrographs")
    grid.add_row("labels", label_text)
    progress = training.get("progress") if isinstance(training.get("progress"), dict) else None
    if training.get("state") == "training" and progress:
        done, total = _number(progress.get("done"), 0.0), _number(progress.get("total"), 0.0)
        fraction = done / total if total else 0.0
        bar_width = max(10, min(30, inner // 4))
        filled = int(round(fraction * bar_width))
        epochs = [e for e in progress.get("epochs") or [] if isinstance(e, dict)]
        last_ap = _number(epochs[-1].get("ap")) if epochs else None
        loss = _number(progress.get("loss"))
        grid.add_row(f"round {_count(progress.get('round'))}", Text.assemble(
            (blocks[-1] * filled, "green"), (blocks[1] * (bar_width - filled), "dim"),
            f" {done:.0f}/{total:.0f}", "" if loss is None else f" · loss {loss:.3f}",
            "" if last_ap is None else f" · held-out AP {last_ap:.3f}"))
    else:
        grid.add_row("state", Text(f"{training.get('state', '–')}  {training.get('message') or ''}".strip(),
                                   no_wrap=True, overflow="ellipsis"))
    for version in versions[-max_versions:][::-1]:
        start_ap, ap = _number(version.get("start_ap")), _number(version.get("ap"))
        aps = "–" if ap is None else (f"AP {ap:.3f}" if start_ap is None else f"AP {start_ap:.3f} → {ap:.3f}")
        kind = str(version.get("state", ""))
        style = {"active": "bold green", "rejected": "yellow", "failed": "red"}.get(kind, "dim")
        name = str(version.get("version") or version.get("model") or "").rsplit("/", 1)[-1]
        grid.add_row(f"round {_count(version.get('round'))}", Text.assemble((f"{kind:<8}", style), " ", aps,
                                                                          "  ", (name, "cyan")))
    title = "Training" + (f" · {state.repicks} re-picked" if state.repicks else "")
    return Panel(grid, title=title, title_align="left", box=box.ROUNDED, padding=(0, 1))


def _workers_panel(state: MonitorState, max_rows: int = 6) -> Panel | None:
    """The Dask cluster the daemon picks on (``executor: dask``): workers, busy, failures, and per worker its
    picks, rate and model versions.  None with the in-process executor."""
    executor = state.executor or {}
    if executor.get("kind") != "dask":
        return None
    grid = Table.grid(expand=True, padding=(0, 1))
    grid.add_column(style="dim", no_wrap=True, min_width=9)
    grid.add_column(no_wrap=True, overflow="ellipsis")
    if not executor.get("connected", True):
        grid.add_row("scheduler", Text(f"{executor.get('scheduler') or '–'}: connection lost", style="bold red"))
    rows = [w for w in executor.get("per_worker") or [] if isinstance(w, dict)]
    for worker in rows[:max_rows]:
        models = ", ".join(str(m) for m in worker.get("models") or []) or "–"
        busy = _number(worker.get("busy"), 0.0)
        grid.add_row(str(worker.get("address", "?")).replace("tcp://", ""), Text.assemble(
            ("busy" if busy else "idle", "green" if busy else "dim"), f" · {_count(worker.get('picked'))} picked · ",
            f"{_number(worker.get('per_min'), 0.0):.0f}/min · ", (models, "cyan")))
    if len(rows) > max_rows:
        grid.add_row("", f"… {len(rows) - max_rows} more")
    title = (f"Workers · {_count(executor.get('workers'))} · {_count(executor.get('busy'))} busy · "
             f"{_count(executor.get('failures'))} failed")
    style = "red" if not executor.get("connected", True) else ""
    return Panel(grid, title=title, title_align="left", box=box.ROUNDED, padding=(0, 1), border_style=style)


def _errors_panel(state: MonitorState, max_errors: int) -> Panel:
    daemon_errors = _number(state.latest("errors"))
    title = f"Errors · {state.n_errors} seen"
    if daemon_errors is not None:
        title += f" · {daemon_errors:.0f} in the daemon"
    if state.malformed:
        title += f" · {state.malformed} unreadable messages"
    recent = list(state.errors)[-max_errors:] if max_errors > 0 else []
    if not recent:
        body: RenderableType = Text("none", style="green")
    else:
        lines = []
        for err in reversed(recent):  # newest first
            name = err.path.rsplit("/", 1)[-1] or "–"
            lines.append(Text.assemble((time.strftime("%H:%M:%S", time.localtime(err.time)), "dim"), " ",
                                       (err.stage or "?", "bold red"), " ", (name, "cyan"), " ", err.message,
                                       no_wrap=True, overflow="ellipsis"))
        body = Group(*lines)
    style = "red" if recent else ""
    return Panel(body, title=title, title_align="left", box=box.ROUNDED, padding=(0, 1), border_style=style)


def _duration(seconds: float | None, *, short: bool = False) -> str:
    """``0.4 s``, ``12 s``, ``3 min 05 s``, ``2 h 07 min``; short: ``40 ms``, ``3m05s``, ``2h07m``."""
    if seconds is None:
        return "–"
    if short and seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s" if short else f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if short else f"{hours} h {minutes:02d} min"


def _seconds(value: Any) -> str:
    number = _number(value)
    return "–" if number is None else _duration(number, short=True)


def _count(value: Any) -> str:
    number = _number(value)
    return "–" if number is None else f"{number:.0f}"
