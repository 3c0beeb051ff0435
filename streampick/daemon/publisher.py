"""The daemon's outbound edge: one PUB socket, owned by one thread, fed by a bounded queue.

ZeroMQ sockets are not thread-safe, so every daemon stage hands its message to :meth:`Publisher.publish`,
which encodes it in the caller's thread, puts the frames on a bounded queue and returns at once; only the
publisher's thread touches the socket.  Nothing here can slow the daemon down:

- a full queue (the thread has fallen behind) drops the message, counts it in ``dropped`` and returns False;
- a PUB socket never blocks: once a subscriber's pipe holds ``high_water_mark`` messages, ZeroMQ drops
  further messages *for that subscriber*, so a subscriber that stops reading costs at most
  ``high_water_mark`` messages of memory.  Subscribers recover what they missed with the control
  ``replay`` command (``docs/protocol.md``).

:class:`SocketThread` is the shape shared with the control server: a socket created, bound and closed in its
own thread, a stop event, start-up errors raised by ``start()``, CurveZMQ on request, ``with`` support.
"""
from __future__ import annotations

import contextlib
import logging
import queue
import threading
from typing import TYPE_CHECKING

import zmq

from ..errors import StreampickError
from .protocol import encode
from .security import CurveServer, acquire_authenticator, apply_curve_server, release_authenticator

if TYPE_CHECKING:
    from typing_extensions import Self

log = logging.getLogger(__name__)

_STOP = object()  # queue sentinel: wakes the publisher thread for a clean stop
START_TIMEOUT_S = 10.0
JOIN_TIMEOUT_S = 10.0


class SocketThread:
    """One ZeroMQ socket bound to ``endpoint`` and used only by its own thread.

    Subclasses set ``socket_type``, may override :meth:`_configure` (socket options before bind), and
    implement :meth:`_serve` (the loop; it must return soon after ``self._stop`` is set or :meth:`_wake`).

    Args:
        endpoint: where to bind, e.g. ``tcp://127.0.0.1:5555`` (port 0 picks a free port).
        context: the zmq context to use; None creates one that :meth:`close` terminates.
        curve: CurveZMQ server settings, or None for no encryption (keep the endpoint loopback then).
        linger_s: how long closing the socket may wait to hand over messages still queued in ZeroMQ.
    """

    socket_type: int
    thread_name = "streampick-socket"

    def __init__(self, endpoint: str, *, context: zmq.Context | None = None,
                 curve: CurveServer | None = None, linger_s: float = 1.0) -> None:
        self.endpoint = endpoint
        self.curve = curve
        self.linger_s = linger_s
        self._given_context = context
        self._context: zmq.Context | None = None
        self._domain: str | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._startup_error: Exception | None = None
        self._bound: str | None = None
        self._started = False

    @property
    def bound_endpoint(self) -> str:
        """The endpoint actually bound (a wildcard port resolved), e.g. ``tcp://127.0.0.1:43121``.

        Raises:
            RuntimeError: not started.
        """
        if self._bound is None:
            raise RuntimeError(f"{type(self).__name__} on {self.endpoint} is not started")
        return self._bound

    def start(self) -> None:
        """Bind the socket in a new thread and start serving; returns once bound.

        Raises:
            ConfigError: CurveZMQ key files are unusable.
            StreampickError: the endpoint cannot be bound (malformed, address in use, ...).
            RuntimeError: already started.
        """
        if self._started:
            raise RuntimeError(f"{type(self).__name__} on {self.endpoint} was already started")
        self._started = True
        self._context = self._given_context if self._given_context is not None else zmq.Context()
        try:
            if self.curve is not None:
                self._domain = acquire_authenticator(self._context, self.curve)
            self._thread = threading.Thread(target=self._run, args=(self._context,),
                                            name=f"{self.thread_name} {self.endpoint}")
            self._thread.start()
            if not self._ready.wait(START_TIMEOUT_S):
                raise StreampickError(f"{self.endpoint}: no socket thread after {START_TIMEOUT_S:g} s")
            if self._startup_error is not None:
                raise self._startup_error
        except BaseException:
            self._stop.set()
            self._release()
            raise

    def close(self) -> None:
        """Stop the thread (subclasses flush first), close the socket, release the context; idempotent."""
        self._stop.set()
        self._wake()
        self._release()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _release(self) -> None:
        """Join the thread, then drop the authenticator and the context this object created."""
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(JOIN_TIMEOUT_S)
            if thread.is_alive():  # cannot happen unless _serve ignores the stop event
                log.error("%s did not stop within %g s", thread.name, JOIN_TIMEOUT_S)
                return
        context, self._context = self._context, None
        if context is None:
            return
        if self._domain is not None:
            self._domain = None
            release_authenticator(context)
        if self._given_context is None:
            context.term()

    def _run(self, context: zmq.Context) -> None:
        """Thread body: open the socket, report readiness, serve until stopped, close the socket."""
        try:
            socket = self._open(context)
        except zmq.ZMQError as err:  # raised again by start()
            self._fail_start(StreampickError(f"{self.endpoint}: cannot bind ({err})"))
            return
        except Exception as err:  # noqa: BLE001 -- ConfigError from key files (or a bug): start() raises it
            self._fail_start(err)
            return
        try:
            self._bound = socket.getsockopt_string(zmq.LAST_ENDPOINT)
            self._ready.set()
            self._serve(socket)
        except Exception:
            log.exception("%s stopped on an unexpected error", threading.current_thread().name)
        finally:
            socket.close(linger=int(self.linger_s * 1000))

    def _fail_start(self, err: Exception) -> None:
        self._startup_error = err
        self._ready.set()

    def _open(self, context: zmq.Context) -> zmq.Socket:
        """Create, configure and bind the socket (in the serving thread)."""
        socket = context.socket(self.socket_type)
        try:
            self._configure(socket)
            if self.curve is not None and self._domain is not None:
                apply_curve_server(socket, self.curve, domain=self._domain)
            socket.bind(self.endpoint)
        except BaseException:
            socket.close(linger=0)
            raise
        return socket

    def _configure(self, socket: zmq.Socket) -> None:
        """Set socket options before bind (subclass hook)."""

    def _wake(self) -> None:
        """Unblock :meth:`_serve` after ``_stop`` is set (subclass hook)."""

    def _serve(self, socket: zmq.Socket) -> None:
        raise NotImplementedError


class Publisher(SocketThread):
    """Publishes daemon messages on a PUB socket without ever blocking the caller.

    Example::

        with Publisher("tcp://127.0.0.1:5555") as publisher:
            publisher.publish(HEARTBEAT, heartbeat_message(time=time.time(), state="running",
                                                           last_seq=0, uptime_s=0.0))

    Args:
        endpoint: where to bind; ``tcp://127.0.0.1:0`` picks a free port (see :attr:`bound_endpoint`).
        context: the zmq context to use; None creates one that :meth:`close` terminates.
        high_water_mark: messages ZeroMQ keeps per subscriber before dropping for it (SNDHWM).
        queue_size: messages waiting for the publisher thread before :meth:`publish` drops.
        curve: CurveZMQ server settings, or None (keep the endpoint loopback then).
        linger_s: how long :meth:`close` may wait to hand queued messages to subscribers.

    Attributes:
        dropped: messages refused by :meth:`publish` (queue full or publisher closed).
        sent: messages handed to the PUB socket (ZeroMQ may still drop them for a slow subscriber).
    """

    socket_type = zmq.PUB
    thread_name = "streampick-publisher"

    def __init__(self, endpoint: str, *, context: zmq.Context | None = None, high_water_mark: int = 1000,
                 queue_size: int = 10000, curve: CurveServer | None = None, linger_s: float = 1.0) -> None:
        super().__init__(endpoint, context=context, curve=curve, linger_s=linger_s)
        self.high_water_mark = high_water_mark
        self.dropped = 0
        self.sent = 0
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._closed = False

    @property
    def backlog(self) -> int:
        """Messages waiting for the publisher thread (approximate)."""
        return self._queue.qsize()

    def publish(self, topic: str, payload: dict) -> bool:
        """Queue one message for publication; never blocks; safe from any thread.

        Messages published before :meth:`start` wait in the queue.

        Args:
            topic: one of ``protocol.TOPICS``.
            payload: the message body (see ``docs/protocol.md``).

        Returns:
            True if queued; False if dropped because the queue is full or the publisher is closed.

        Raises:
            ProtocolError: unknown topic or a payload JSON cannot represent (a caller bug, raised at once).
        """
        frames = encode(topic, payload)
        with self._lock:
            if not self._closed:
                try:
                    self._queue.put_nowait(frames)
                    return True
                except queue.Full:
                    pass
            self.dropped += 1
            return False

    def close(self) -> None:
        """Send what is already queued (ZeroMQ gets ``linger_s`` to deliver it), stop and join the thread."""
        with self._lock:
            self._closed = True  # from now on publish() refuses, so the sentinel is the last item
        super().close()

    def _wake(self) -> None:
        if self._thread is not None:
            # Goes after everything queued; if it cannot, the thread stops on the event once drained.
            with contextlib.suppress(queue.Full):
                self._queue.put(_STOP, timeout=1.0)

    def _configure(self, socket: zmq.Socket) -> None:
        socket.setsockopt(zmq.SNDHWM, self.high_water_mark)
        # ZMTP heartbeats: a subscriber that vanished without closing its TCP connection is noticed and its
        # pipe (up to high_water_mark messages) freed.
        socket.setsockopt(zmq.HEARTBEAT_IVL, 5000)
        socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, 15000)

    def _serve(self, socket: zmq.Socket) -> None:
        while True:
            try:
                frames = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            if frames is _STOP:
                return
            self._send(socket, frames)

    def _send(self, socket: zmq.Socket, frames: list[bytes]) -> None:
        try:
            socket.send_multipart(frames, flags=zmq.NOBLOCK)
            self.sent += 1
        except zmq.Again:  # PUB drops at the high-water mark instead, but never wait here
            with self._lock:
                self.dropped += 1
        except zmq.ZMQError as err:
            log.warning("publish on %s failed: %s", self.endpoint, err)
            with self._lock:
                self.dropped += 1
