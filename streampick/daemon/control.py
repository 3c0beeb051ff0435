"""The daemon's control edge: JSON requests in, JSON replies out, over a REP socket in its own thread.

A request is a JSON object ``{"command": "...", ...}``; the daemon's handler turns it into a reply dict.
Whatever arrives, the thread answers and carries on: a handler that raises (a StreampickError, or a
ValueError/KeyError/TypeError from bad arguments) or a request that is not a JSON object becomes
``{"ok": false, "error": "<one line>"}``.

REP rather than ROUTER: the daemon's commands are short and answering them one at a time in one thread is
what the handler expects (no locking of daemon state against itself), REP's strict receive/send alternation
is exactly this loop, and a client that gives up (the client side uses a fresh REQ with LINGER 0 per request)
costs nothing: the reply to a vanished peer is dropped.  ROUTER would only pay off for concurrent or
long-running requests, which the control commands are not (``replay`` is paged by ``limit``).

:func:`request` is the client side, used by the CLI, the monitor and the subscriber example.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import zmq

from ..errors import StreampickError
from .protocol import ProtocolError, json_bytes, one_line, parse_json_object
from .publisher import SocketThread
from .security import CurveClient, CurveServer, apply_curve_client

log = logging.getLogger(__name__)

POLL_MS = 100
HANDLER_ERRORS = (StreampickError, ValueError, KeyError, TypeError)

Handler = Callable[[dict], dict]


class ControlError(StreampickError):
    """A control request got no reply, or a reply that is not a JSON object; ``str(err)`` is one line."""


class ControlServer(SocketThread):
    """Answers control requests with ``handler`` on a REP socket served by its own thread.

    Example::

        with ControlServer("tcp://127.0.0.1:5556", daemon.handle_command) as server:
            ...

    Args:
        endpoint: where to bind; ``tcp://127.0.0.1:0`` picks a free port (see :attr:`bound_endpoint`).
        handler: called in the server thread with the request dict (which has a str ``"command"``);
            returns the reply dict (``"ok": true`` is added when absent).
        context: the zmq context to use; None creates one that :meth:`close` terminates.
        curve: CurveZMQ server settings, or None (keep the endpoint loopback then).
    """

    socket_type = zmq.REP
    thread_name = "streampick-control"

    def __init__(self, endpoint: str, handler: Handler, *, context: zmq.Context | None = None,
                 curve: CurveServer | None = None) -> None:
        super().__init__(endpoint, context=context, curve=curve, linger_s=0.5)
        self.handler = handler

    def _serve(self, socket: zmq.Socket) -> None:
        poller = zmq.Poller()
        poller.register(socket, zmq.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(POLL_MS):
                continue
            frames = socket.recv_multipart(zmq.NOBLOCK)
            reply = answer(frames, self.handler)
            try:
                socket.send(reply, zmq.NOBLOCK)
            except zmq.ZMQError as err:  # the client vanished; REP is ready for the next request anyway
                log.warning("control reply on %s not sent: %s", self.endpoint, err)


def answer(frames: list[bytes], handler: Handler) -> bytes:
    """The reply bytes for one request; never raises.

    Args:
        frames: the request as received (one frame of JSON).
        handler: the daemon's command handler.

    Returns:
        A UTF-8 JSON object: the handler's reply with ``"ok": true`` added when absent, or
        ``{"ok": false, "error": "<one line>"}``.
    """
    try:
        reply = _handle(frames, handler)
        return json_bytes(reply)
    except Exception as err:  # a reply JSON cannot carry, or a handler bug: report it, keep serving
        log.exception("control request failed")
        return json_bytes({"ok": False, "error": f"internal error: {one_line(err) or type(err).__name__}"})


def _handle(frames: list[bytes], handler: Handler) -> dict[str, Any]:
    """Parse, validate and dispatch one request; turns expected faults into ``ok: false`` replies."""
    if len(frames) != 1:
        return _failure(f"expected a request of 1 frame (JSON), got {len(frames)}")
    try:
        request = parse_json_object(bytes(frames[0]), what="request")
    except ProtocolError as err:
        return _failure(str(err))
    command = request.get("command")
    if not isinstance(command, str) or not command:
        return _failure('request has no "command" (expected {"command": "status", ...})')
    try:
        reply = handler(request)
    except HANDLER_ERRORS as err:
        return _failure(_describe(err))
    if not isinstance(reply, dict):
        raise TypeError(f"handler returned a {type(reply).__name__} for {command!r}, not a dict")
    return {"ok": True, **reply}


def _describe(err: Exception) -> str:
    """One line for a handler error: KeyError's repr-quoted text is made readable."""
    if isinstance(err, KeyError) and err.args:
        return f"missing or unknown key: {one_line(err.args[0])}"
    return one_line(err) or type(err).__name__


def _failure(message: str) -> dict[str, Any]:
    return {"ok": False, "error": one_line(message)}


def request(endpoint: str, command: str, *, timeout: float = 5.0, curve: CurveClient | None = None,
            context: zmq.Context | None = None, **args: Any) -> dict:
    """Send one control request and wait for its reply.

    A fresh REQ socket (LINGER 0) is used and closed, so a timed-out request leaves nothing behind.

    Args:
        endpoint: the daemon's control endpoint, e.g. ``tcp://127.0.0.1:5556``.
        command: ``status``, ``pause``, ``resume``, ``set-threshold``, ``replay``, ``reprocess`` or
            ``shutdown``.
        timeout: seconds to wait for the reply.
        curve: CurveZMQ client settings when the daemon requires them.
        context: the zmq context to use; None uses a private one, terminated before returning.
        **args: the command's arguments (``threshold=0.5``, ``since=12``, ...).

    Returns:
        The reply dict: ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}`` (a refused command is a
        reply, not an exception).

    Raises:
        ControlError: no reply within ``timeout``, a reply that is not a JSON object, or a bad endpoint.
        ConfigError: CurveZMQ key files are unusable.
    """
    own_context = context is None
    ctx: zmq.Context = zmq.Context() if context is None else context
    socket = ctx.socket(zmq.REQ)
    socket.linger = 0
    try:
        if curve is not None:
            apply_curve_client(socket, curve)
        raw = _exchange(socket, endpoint, json_bytes({"command": command, **args}), timeout)
    finally:
        socket.close()
        if own_context:
            ctx.term()
    try:
        return parse_json_object(raw, what=f"reply from {endpoint}")
    except ProtocolError as err:
        raise ControlError(str(err)) from None


def _exchange(socket: zmq.Socket, endpoint: str, data: bytes, timeout: float) -> bytes:
    """Connect, send ``data``, and return the one-frame reply; ControlError on timeout."""
    try:
        socket.connect(endpoint)
        socket.send(data, zmq.NOBLOCK)
    except zmq.ZMQError as err:
        raise ControlError(f"cannot send to {endpoint}: {err}") from None
    if not socket.poll(int(timeout * 1000), zmq.POLLIN):
        raise ControlError(f"no reply from {endpoint} within {timeout:g} s: is the daemon running?")
    frames = socket.recv_multipart()
    if len(frames) != 1:
        raise ControlError(f"reply from {endpoint} has {len(frames)} frames, expected 1")
    return frames[0]
