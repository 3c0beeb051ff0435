"""Watch a running daemon live in the terminal: streampick monitor [--endpoint E] [--control C] [--once]

Subscribes to the daemon's publish endpoint (picks, stats, error and heartbeat messages) and redraws a
dashboard a few times per second: throughput, latency, queue depth, counts, particles per micrograph over
time, the score histogram with the threshold marked, the carbon fraction, the model, the recent errors and
how long ago the daemon last spoke.  At start it asks the control endpoint for the daemon's status (if
it answers within 1 s), so the counts show before the first stats message.  Ctrl-C quits (exit 130, as
every streampick command).  Plain terminal output: works over SSH, no mouse, no alternate screen.

The daemon may run on another host: give its endpoints (tcp://em-gpu-01:5555).  With CurveZMQ, give
--client-key (this client's certificate, with its secret key) and --server-public-key (the daemon's
public certificate), both as written by zmq.auth.create_certificates.

--once waits up to --timeout seconds for a stats message, prints one frame and exits: 0 when a stats
message came, 1 when none did (for scripts).

Example:
    streampick monitor --endpoint tcp://em-gpu-01:5555 --control tcp://em-gpu-01:5556
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import StreampickError

if TYPE_CHECKING:
    import zmq
    from rich.console import Console

    from ..daemon.security import CurveClient
    from ..monitor import MonitorState

INTERRUPTED = 130  # exit status on Ctrl-C, as streampick.cli returns
STATUS_TIMEOUT_S = 1.0
_DRAIN_LIMIT = 10_000  # messages taken between two redraws at most


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint", default="tcp://127.0.0.1:5555",
                        help="the daemon's publish endpoint (default tcp://127.0.0.1:5555)")
    parser.add_argument("--control", default="tcp://127.0.0.1:5556",
                        help="the daemon's control endpoint, asked for status at start; '' to skip "
                             "(default tcp://127.0.0.1:5556)")
    parser.add_argument("--once", action="store_true", help="print one frame after the first stats message")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="with --once: seconds to wait for a stats message (default 10)")
    parser.add_argument("--refresh", type=float, default=4.0, help="redraws per second (default 4)")
    parser.add_argument("--client-key", type=Path, metavar="FILE",
                        help="CurveZMQ: this client's secret certificate")
    parser.add_argument("--server-public-key", type=Path, metavar="FILE",
                        help="CurveZMQ: the daemon's public certificate")


def main(args: argparse.Namespace) -> int:
    if not args.refresh > 0 or not args.timeout >= 0:
        raise StreampickError("monitor: --refresh must be > 0 and --timeout >= 0")
    curve = _curve_client(args.client_key, args.server_public_key)
    return run_monitor(args.endpoint, args.control, curve=curve, once=args.once, timeout=args.timeout,
                       refresh=args.refresh)


def run_monitor(endpoint: str, control: str | None, *, curve: CurveClient | None = None, once: bool = False,
                timeout: float = 10.0, refresh: float = 4.0, stop: threading.Event | None = None) -> int:
    """Show the live monitor for the daemon publishing on ``endpoint`` until Ctrl-C or ``stop`` is set.

    Returns:
        0, or 130 after Ctrl-C; with ``once``, 1 when no stats message came within ``timeout`` s.
    """
    import zmq
    from rich.console import Console

    from ..daemon.control import ControlError, request
    from ..monitor import MonitorState

    console = Console()
    context = zmq.Context()
    try:
        subscriber = _subscriber(context, endpoint, curve)
        state = MonitorState(endpoint=endpoint)
        if control:
            try:
                state.apply_status(request(control, "status", timeout=STATUS_TIMEOUT_S, curve=curve,
                                           context=context))
            except ControlError:
                pass  # no answer within 1 s: the counts come with the first stats message
        if once:
            return _run_once(subscriber, state, console, timeout)
        return _run_live(subscriber, state, console, 1.0 / refresh, stop or threading.Event())
    except KeyboardInterrupt:
        return INTERRUPTED
    finally:
        context.destroy(linger=0)


def _curve_client(client_key: Path | None, server_key: Path | None) -> CurveClient | None:
    """CurveZMQ client settings from the two options (both or neither), or None without CurveZMQ."""
    from ..daemon.security import CurveClient

    if client_key is None and server_key is None:
        return None
    if client_key is None or server_key is None:
        raise StreampickError("monitor: CurveZMQ needs both --client-key and --server-public-key")
    return CurveClient(secret_key_file=client_key, server_public_key_file=server_key)


def _subscriber(context: zmq.Context, endpoint: str, curve: CurveClient | None) -> zmq.Socket:
    """A SUB socket connected to ``endpoint``, subscribed to every topic."""
    import zmq

    from ..daemon.security import apply_curve_client

    socket = context.socket(zmq.SUB)
    socket.linger = 0
    if curve is not None:
        apply_curve_client(socket, curve)  # ConfigError for an unusable key file
    socket.setsockopt(zmq.SUBSCRIBE, b"")
    try:
        socket.connect(endpoint)
    except zmq.ZMQError as err:
        raise StreampickError(f"monitor: cannot connect to {endpoint!r}: {err}") from None
    return socket


def _drain(socket: zmq.Socket, state: MonitorState) -> set[str]:
    """Take every message waiting on ``socket`` into ``state``; return the topics seen."""
    import zmq

    from ..daemon.protocol import ProtocolError, decode

    topics: set[str] = set()
    for _ in range(_DRAIN_LIMIT):
        try:
            frames = socket.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            break
        try:
            topic, payload = decode(frames)
        except ProtocolError:
            state.note_malformed()
            continue
        state.update(topic, payload, time.time())
        topics.add(topic)
    return topics


def _run_once(socket: zmq.Socket, state: MonitorState, console: Console, timeout: float) -> int:
    from ..monitor import render

    deadline = time.monotonic() + timeout
    got_stats = False
    while not got_stats:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        if socket.poll(max(1, int(min(remaining, 0.25) * 1000))):
            got_stats = "stats" in _drain(socket, state)
    console.print(render(state, time.time(), width=console.width, ascii_only=_ascii_only(console)))
    if not got_stats:
        print(f"monitor: no stats message from {state.endpoint} within {timeout:g} s", file=sys.stderr)
        return 1
    return 0


def _run_live(socket: zmq.Socket, state: MonitorState, console: Console, period: float,
              stop: threading.Event) -> int:
    from rich.live import Live

    from ..monitor import render

    def frame() -> Any:
        errors = max(1, min(state.error_size, console.size.height - 21))
        return render(state, time.time(), width=console.width, max_errors=errors,
                      ascii_only=_ascii_only(console))

    with Live(frame(), console=console, auto_refresh=False, transient=False) as live:
        next_draw = time.monotonic() + period
        while not stop.is_set():
            wait = next_draw - time.monotonic()
            if wait > 0 and socket.poll(max(1, int(wait * 1000))):
                _drain(socket, state)
            if time.monotonic() >= next_draw:
                live.update(frame(), refresh=True)
                next_draw = time.monotonic() + period
        live.update(frame(), refresh=True)
    return 0


def _ascii_only(console: Console) -> bool:
    return not console.encoding.lower().startswith("utf")
