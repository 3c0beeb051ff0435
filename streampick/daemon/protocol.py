"""The daemon's wire format: what one published message looks like as ZeroMQ frames, and back.

Every message is two frames: the topic in ASCII (subscribers filter on it with a prefix match) and the payload
as compact UTF-8 JSON.  Every payload carries ``"schema"`` (:data:`SCHEMA_VERSION`) and ``"topic"``, so a
message stays self-describing once it has left the socket (logged, stored, replayed).  JSON has no NaN or
infinity, so non-finite floats become ``null``; numpy scalars and arrays become plain numbers and lists.

The picks and stats payloads are built by the daemon; the small ones (error, heartbeat, training) are built
here.
The subscriber-facing description is ``docs/protocol.md``.

Example::

    frames = encode(HEARTBEAT, heartbeat_message(time=t, state="running", last_seq=12, uptime_s=3.5))
    topic, payload = decode(frames)
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

from ..errors import StreampickError

SCHEMA_VERSION = 1

PICKS, STATS, ERROR, HEARTBEAT, TRAINING = "picks", "stats", "error", "heartbeat", "training"
TOPICS = (PICKS, STATS, ERROR, HEARTBEAT, TRAINING)


class ProtocolError(StreampickError):
    """A message cannot be encoded or decoded; ``str(err)`` is one line naming the fault."""


def one_line(text: object) -> str:
    """``text`` as one line: every run of whitespace (newlines included) becomes one space.

    Args:
        text: anything; it is converted with ``str``.

    Returns:
        The single-line, stripped text.
    """
    return " ".join(str(text).split())


def json_bytes(value: Any) -> bytes:
    """Compact UTF-8 JSON of ``value``, with NaN and infinities written as ``null``.

    Args:
        value: dicts, lists, tuples, str, int, float, bool, None, paths, numpy scalars and arrays.

    Returns:
        The JSON text, UTF-8 encoded.

    Raises:
        ProtocolError: ``value`` holds something JSON cannot represent (a set, an object, ...).
    """
    return json.dumps(_plain(value), separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _plain(value: Any) -> Any:
    """``value`` as plain JSON-able Python, non-finite floats replaced by None."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays
    if callable(tolist):
        return _plain(tolist())
    raise ProtocolError(f"cannot encode a {type(value).__name__} as JSON")


def encode(topic: str, payload: dict) -> list[bytes]:
    """The frames of one message: ``[topic, JSON]``.

    ``schema`` and ``topic`` are added to (a copy of) the payload when absent.

    Args:
        topic: one of :data:`TOPICS`.
        payload: the message body.

    Returns:
        Two frames: the ASCII topic and the compact UTF-8 JSON payload.

    Raises:
        ProtocolError: the topic is unknown, or the payload is not a dict or holds something JSON cannot
            represent.
    """
    if topic not in TOPICS:
        raise ProtocolError(f"unknown topic {topic!r} (expected one of {', '.join(TOPICS)})")
    if not isinstance(payload, dict):
        raise ProtocolError(f"{topic} payload must be a dict, not {type(payload).__name__}")
    body = {"schema": SCHEMA_VERSION, "topic": topic, **payload}
    return [topic.encode("ascii"), json_bytes(body)]


def decode(frames: Sequence[bytes]) -> tuple[str, dict]:
    """The topic and payload of one received message.

    Unknown topics are accepted (a newer daemon may add some); subscribers filter on the topic.

    Args:
        frames: the frames as received (``bytes``, ``zmq.Frame`` or other buffers).

    Returns:
        ``(topic, payload)``.

    Raises:
        ProtocolError: not two frames, a non-ASCII topic, a payload that is not a UTF-8 JSON object, or a
            payload whose ``topic`` differs from the topic frame.
    """
    if len(frames) != 2:
        raise ProtocolError(f"expected 2 frames (topic, JSON), got {len(frames)}")
    try:
        topic = bytes(frames[0]).decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError("topic frame is not ASCII") from None
    if not topic:
        raise ProtocolError("topic frame is empty")
    payload = parse_json_object(bytes(frames[1]), what=f"{topic} payload")
    if payload.get("topic", topic) != topic:
        raise ProtocolError(f"payload topic {payload['topic']!r} differs from frame topic {topic!r}")
    return topic, payload


def parse_json_object(data: bytes, *, what: str = "message") -> dict:
    """Parse UTF-8 JSON that must be an object (NaN/Infinity tokens, which some encoders write, become None).

    Args:
        data: the raw bytes.
        what: how to name the data in an error message.

    Returns:
        The parsed dict.

    Raises:
        ProtocolError: the bytes are not UTF-8, not JSON, or not a JSON object.
    """
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=lambda _: None)
    except UnicodeDecodeError:
        raise ProtocolError(f"{what} is not UTF-8") from None
    except json.JSONDecodeError as err:
        raise ProtocolError(f"{what} is not valid JSON ({err.msg} at position {err.pos})") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} is a JSON {type(value).__name__}, not an object")
    return value


def error_message(path: str | os.PathLike | None, stage: str, message: str, *, time: float) -> dict:
    """The payload of an ``error`` message.

    Args:
        path: the micrograph concerned, or None for a daemon-wide fault.
        stage: where it happened ("complete", "read", "write", "journal", "publish", "control", ...).
        message: what happened; folded onto one line.
        time: when, in Unix seconds.

    Returns:
        The payload dict, ready for :func:`encode`.
    """
    return {"schema": SCHEMA_VERSION, "topic": ERROR, "time": time,
            "path": None if path is None else os.fspath(path), "stage": stage, "message": one_line(message)}


def heartbeat_message(*, time: float, state: str, last_seq: int, uptime_s: float) -> dict:
    """The payload of a ``heartbeat`` message.

    Args:
        time: now, in Unix seconds.
        state: "running" or "paused".
        last_seq: the newest journal sequence number (0 before the first result).
        uptime_s: seconds since the daemon started.

    Returns:
        The payload dict, ready for :func:`encode`.
    """
    return {"schema": SCHEMA_VERSION, "topic": HEARTBEAT, "time": time, "state": state,
            "last_seq": last_seq, "uptime_s": uptime_s}


def training_message(summary: dict, time: float) -> dict:
    """The payload of a ``training`` message: live fine-tuning's state, progress and versions.

    Args:
        summary: ``FineTuner.summary()``: state, message, round, progress, labels, versions.
        time: now, in Unix seconds.

    Returns:
        The payload dict, ready for :func:`encode`.
    """
    return {"schema": SCHEMA_VERSION, "topic": TRAINING, "time": time, **summary}
