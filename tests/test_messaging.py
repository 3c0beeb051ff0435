"""The daemon's messaging edge over real sockets on 127.0.0.1: protocol, publisher, control, CurveZMQ, keys.

Every socket binds ``tcp://127.0.0.1:0`` (a free port, read back with ``bound_endpoint``).  PUB/SUB has a
slow-joiner window (messages published before the subscription reaches the publisher are lost), so tests
first publish probes until the subscriber sees one, with a deadline; every other wait polls with a timeout.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
import zmq.auth

from streampick.commands import keys as keys_command
from streampick.daemon.control import ControlError, ControlServer, answer, request
from streampick.daemon.protocol import (
    ERROR,
    HEARTBEAT,
    PICKS,
    STATS,
    ProtocolError,
    decode,
    encode,
    error_message,
    heartbeat_message,
)
from streampick.daemon.publisher import Publisher
from streampick.daemon.security import (
    CurveClient,
    CurveServer,
    apply_curve_client,
    authenticator_running,
    check_endpoint,
    free_loopback_port,
    generate_keys,
    is_loopback,
)
from streampick.errors import ConfigError, StreampickError

LOCAL = "tcp://127.0.0.1:0"
EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "subscriber.py"


# ---------------------------------------------------------------------------------------------- helpers

class _TestContext(zmq.Context):
    test_sockets: list[zmq.Socket]


@pytest.fixture
def context():
    """A zmq context whose test-side sockets (made with :func:`open_socket`) are closed at teardown."""
    ctx = _TestContext()
    ctx.test_sockets = []
    yield ctx
    for sock in ctx.test_sockets:
        sock.close(linger=0)
    ctx.term()


def open_socket(context: zmq.Context, kind: int) -> zmq.Socket:
    sock = context.socket(kind)
    sock.linger = 0
    context.test_sockets.append(sock)  # closed by the fixture, even when the test fails
    return sock


def subscribe(context: zmq.Context, endpoint: str, curve: CurveClient | None = None) -> zmq.Socket:
    sock = open_socket(context, zmq.SUB)
    if curve is not None:
        apply_curve_client(sock, curve)
    sock.subscribe(b"")
    sock.connect(endpoint)
    return sock


def wait_subscribed(publisher: Publisher, sub: zmq.Socket, timeout: float = 5.0) -> None:
    """Publish probes until ``sub`` receives one (the PUB/SUB slow-joiner handshake)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        publisher.publish(HEARTBEAT, {"probe": True})
        if sub.poll(20):
            decode(sub.recv_multipart())
            return
    pytest.fail(f"subscriber to {publisher.bound_endpoint} got nothing within {timeout} s")


def receive(sub: zmq.Socket, count: int, timeout: float = 5.0) -> list[tuple[str, dict]]:
    """The next ``count`` messages that are not probes."""
    messages: list[tuple[str, dict]] = []
    deadline = time.monotonic() + timeout
    while len(messages) < count:
        remaining_ms = int((deadline - time.monotonic()) * 1000)
        if remaining_ms <= 0 or not sub.poll(remaining_ms):
            pytest.fail(f"received {len(messages)} of {count} messages within {timeout} s")
        topic, payload = decode(sub.recv_multipart())
        if not payload.get("probe"):
            messages.append((topic, payload))
    return messages


def picks_message(seq: int, *, replay: bool = False) -> dict:
    """A picks payload as the daemon builds it (docs/protocol.md)."""
    identity = f"sha256:{seq:064x}"
    return {
        "seq": seq, "key": f"{identity}/v1/0", "replay": replay,
        "micrograph": {"path": f"/data/mic_{seq}.mrc", "name": f"mic_{seq}", "identity": identity,
                       "size_bytes": 1024, "shape": [64, 64], "pixel_size": 1.0, "working_pixel_size": 8.0},
        "model": {"name": "resnet16_u64", "version": "v1"}, "generation": 0,
        "timestamps": {"landed": 1.0, "complete": 2.0, "started": 3.0, "committed": 4.0, "published": 5.0},
        "threshold": 0.0, "floor": -6.0,
        "picks": {"x": [10.0, 20.0], "y": [30.0, 40.0], "score": [1.5, -1.0]}, "n_picks": 1,
        "stats": {"normalization": {"mean": 0.0, "std": 1.0, "minor_mean": 0.0, "minor_weight": 0.0,
                                    "log_posterior": float("nan"), "iterations": 3, "method": "gmm"},
                  "carbon_fraction": 0.0,
                  "timings": {"read": 0.1, "downsample": 0.1, "normalize": 0.1, "score": 0.1, "extract": 0.1,
                              "write": 0.1}},
        "outputs": {"star": f"/out/mic_{seq}.star", "candidates": f"/out/mic_{seq}.txt"},
    }


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ---------------------------------------------------------------------------------------------- protocol

def test_encode_decode_round_trip():
    payload = {"seq": 7, "name": "mic_é", "values": np.array([1.5, np.nan], dtype=np.float32),
               "count": np.int64(3), "path": Path("/data/a.mrc"), "nested": {"inf": math.inf, "t": (1, 2)}}
    frames = encode(PICKS, payload)
    assert frames[0] == b"picks" and len(frames) == 2
    assert b": " not in frames[1] and b", " not in frames[1]  # compact
    assert b"NaN" not in frames[1] and b"Infinity" not in frames[1]
    topic, decoded = decode(frames)
    assert topic == PICKS
    assert decoded == {"schema": 1, "topic": "picks", "seq": 7, "name": "mic_é", "values": [1.5, None],
                       "count": 3, "path": "/data/a.mrc", "nested": {"inf": None, "t": [1, 2]}}
    assert "schema" not in payload  # the caller's dict is left alone


def test_encode_keeps_schema_and_topic_given():
    _, decoded = decode(encode(STATS, {"schema": 1, "topic": "stats", "time": 1.0}))
    assert decoded == {"schema": 1, "topic": "stats", "time": 1.0}


@pytest.mark.parametrize("topic, payload", [("pics", {}), (PICKS, [1, 2]), (PICKS, {"s": {1, 2}}),
                                            (PICKS, {"o": object()})])
def test_encode_rejects(topic, payload):
    with pytest.raises(ProtocolError):
        encode(topic, payload)


@pytest.mark.parametrize("frames", [
    [b"picks"],
    [b"picks", b"{}", b"{}"],
    [b"\xffpicks", b"{}"],
    [b"", b"{}"],
    [b"picks", b"{not json"],
    [b"picks", b"\xff\xfe"],
    [b"picks", b"[1, 2]"],
    [b"picks", b'"text"'],
    [b"picks", b'{"topic": "stats"}'],
])
def test_decode_rejects_malformed_frames(frames):
    with pytest.raises(ProtocolError) as caught:
        decode(frames)
    assert "\n" not in str(caught.value) and str(caught.value)


def test_decode_accepts_zmq_frames_and_unknown_topics():
    assert decode([zmq.Frame(b"future"), zmq.Frame(b'{"a": NaN}')]) == ("future", {"a": None})


def test_message_builders():
    error = error_message(Path("/data/a.mrc"), "read", "bad header\n  mode 9", time=12.5)
    assert error == {"schema": 1, "topic": "error", "time": 12.5, "path": "/data/a.mrc", "stage": "read",
                     "message": "bad header mode 9"}
    assert error_message(None, "journal", "disk full", time=1.0)["path"] is None
    heartbeat = heartbeat_message(time=3.0, state="paused", last_seq=41, uptime_s=2.5)
    assert decode(encode(HEARTBEAT, heartbeat)) == ("heartbeat", heartbeat)


# ---------------------------------------------------------------------------------------------- publisher

def test_publisher_delivers_every_topic(context):
    sent = [(PICKS, picks_message(1)), (STATS, {"time": 1.0, "state": "running"}),
            (ERROR, error_message("/a.mrc", "read", "corrupt", time=2.0)),
            (HEARTBEAT, heartbeat_message(time=3.0, state="running", last_seq=1, uptime_s=3.0))]
    with Publisher(LOCAL, context=context) as publisher:
        assert publisher.bound_endpoint.startswith("tcp://127.0.0.1:")
        assert not publisher.bound_endpoint.endswith(":0")
        sub = subscribe(context, publisher.bound_endpoint)
        wait_subscribed(publisher, sub)
        for topic, payload in sent:
            assert publisher.publish(topic, payload)
        got = receive(sub, len(sent))
    assert [topic for topic, _ in got] == [PICKS, STATS, ERROR, HEARTBEAT]
    assert got[0][1]["seq"] == 1 and got[0][1]["stats"]["normalization"]["log_posterior"] is None
    assert got[3][1] == {"schema": 1, **sent[3][1]}


def test_publisher_close_flushes_what_is_queued(context):
    with Publisher(LOCAL, context=context) as publisher:
        sub = subscribe(context, publisher.bound_endpoint)
        wait_subscribed(publisher, sub)
        for seq in range(1, 201):
            publisher.publish(PICKS, {"seq": seq})
    assert [payload["seq"] for _, payload in receive(sub, 200)] == list(range(1, 201))


def test_publish_drops_and_counts_when_queue_is_full():
    publisher = Publisher(LOCAL, queue_size=3)  # not started: messages wait in the queue
    assert [publisher.publish(STATS, {"i": i}) for i in range(5)] == [True, True, True, False, False]
    assert publisher.dropped == 2 and publisher.backlog == 3
    publisher.close()
    assert publisher.publish(STATS, {"i": 5}) is False and publisher.dropped == 3


def test_publish_never_blocks_and_memory_stays_bounded_with_a_stalled_subscriber(context):
    """A subscriber that never reads costs at most SNDHWM messages: 200 MB through the socket, < 100 MB kept.

    The test paces itself on the publisher's queue so that every message really goes through the PUB socket
    (without the high-water mark, this traffic grows the process by ~200 MB).
    """
    count, blob = 20_000, "x" * 10_000
    with Publisher(LOCAL, high_water_mark=1000) as publisher:
        sub = subscribe(context, publisher.bound_endpoint)
        wait_subscribed(publisher, sub)  # subscribed; from now on it never reads
        before = rss_bytes()
        slowest = total = 0.0
        for i in range(count):
            start = time.perf_counter()
            assert publisher.publish(STATS, {"i": i, "blob": blob})
            elapsed = time.perf_counter() - start
            slowest, total = max(slowest, elapsed), total + elapsed
            if publisher.backlog > 500:
                wait_for(lambda: publisher.backlog < 100, timeout=10.0, what="publisher thread to drain")
        wait_for(lambda: publisher.backlog == 0, timeout=10.0, what="publisher thread to drain")
        growth = rss_bytes() - before
        assert publisher.dropped == 0
    assert slowest < 0.5 and total < 10.0, (slowest, total)
    assert growth < 100e6, f"RSS grew by {growth / 1e6:.0f} MB"


def wait_for(condition, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.001)


def test_publisher_bind_errors_are_one_line_streampick_errors(context):
    with Publisher(LOCAL, context=context) as first, pytest.raises(StreampickError, match="cannot bind"):
        Publisher(first.bound_endpoint, context=context).start()
    with pytest.raises(StreampickError, match="cannot bind"):
        Publisher("tcp://no-such-interface-xyz:5555").start()


# ---------------------------------------------------------------------------------------------- control

def daemon_handler(req: dict) -> dict:
    """A stand-in for the daemon's command handler."""
    command = req["command"]
    if command == "status":
        return {"state": "running", "last_seq": 3}
    if command == "set-threshold":
        return {"threshold": float(req["threshold"])}
    if command == "refuse":
        return {"ok": False, "error": "not now"}
    if command == "config":
        raise ConfigError("picking.threshold: must be a number")
    if command == "bug":
        raise RuntimeError("a bug\nwith two lines")
    raise ValueError(f"unknown command {command!r}")


def test_control_request_reply_and_handler_errors():
    with ControlServer(LOCAL, daemon_handler) as server:
        endpoint = server.bound_endpoint
        assert request(endpoint, "status") == {"ok": True, "state": "running", "last_seq": 3}
        assert request(endpoint, "set-threshold", threshold=0.5) == {"ok": True, "threshold": 0.5}
        assert request(endpoint, "refuse") == {"ok": False, "error": "not now"}
        cases = {"set-threshold": "missing or unknown key: threshold", "config": "picking.threshold: must be",
                 "nope": "unknown command 'nope'", "bug": "internal error: a bug with two lines"}
        for command, error in cases.items():
            reply = request(endpoint, command)
            assert reply["ok"] is False and reply["error"].startswith(error), reply
        assert request(endpoint, "set-threshold", threshold="high")["ok"] is False  # ValueError
        assert request(endpoint, "status")["ok"] is True  # still serving


def test_control_answers_malformed_requests(context):
    with ControlServer(LOCAL, daemon_handler, context=context) as server:
        req = open_socket(context, zmq.REQ)
        req.connect(server.bound_endpoint)
        for raw in ([b"{not json"], [b"[1, 2]"], [b'{"cmd": "status"}'], [b'{"command": 3}'], [b"\xff"],
                    [b"{}", b"{}"]):
            req.send_multipart(raw)
            assert req.poll(5000), f"no reply to {raw}"
            reply = json.loads(req.recv())
            assert reply["ok"] is False and reply["error"] and "\n" not in reply["error"], (raw, reply)
        req.send(b'{"command": "status"}')
        assert req.poll(5000) and json.loads(req.recv())["ok"] is True


def test_answer_never_raises_on_unencodable_reply():
    reply = json.loads(answer([b'{"command": "x"}'], lambda req: {"value": {1, 2}}))
    assert reply["ok"] is False and reply["error"].startswith("internal error")


def test_request_times_out_without_a_server():
    endpoint = f"tcp://127.0.0.1:{free_loopback_port()}"
    start = time.monotonic()
    with pytest.raises(ControlError) as caught:
        request(endpoint, "status", timeout=0.3)
    assert str(caught.value) == f"no reply from {endpoint} within 0.3 s: is the daemon running?"
    assert time.monotonic() - start < 3.0


def test_request_rejects_a_reply_that_is_not_a_json_object(context):
    rep = open_socket(context, zmq.REP)
    port = rep.bind_to_random_port("tcp://127.0.0.1")

    def serve_garbage() -> None:
        if rep.poll(5000):
            rep.recv()
            rep.send(b"<html>")

    thread = threading.Thread(target=serve_garbage)
    thread.start()
    try:
        with pytest.raises(ControlError, match="not valid JSON"):
            request(f"tcp://127.0.0.1:{port}", "status", timeout=5.0)
    finally:
        thread.join()


# ---------------------------------------------------------------------------------------------- security

@pytest.mark.parametrize("endpoint, local", [
    ("tcp://127.0.0.1:5555", True), ("tcp://127.0.0.1:0", True), ("tcp://127.4.5.6:1", True),
    ("tcp://localhost:5555", True), ("tcp://[::1]:5555", True), ("ipc:///tmp/streampick.sock", True),
    ("inproc://control", True),
    ("tcp://*:5555", False), ("tcp://0.0.0.0:5555", False), ("tcp://[::]:5555", False),
    ("tcp://192.168.1.20:5555", False), ("tcp://eth0:5555", False), ("tcp://lo:5555", False),
    ("tcp://scope-pc.lab.org:5555", False), ("tcp://10.0.0.1:1;127.0.0.1:5555", False),
    ("epgm://eth0;239.192.1.1:5555", False), ("udp://127.0.0.1:5555", False), ("", False),
])
def test_is_loopback(endpoint, local):
    assert is_loopback(endpoint) is local


def test_check_endpoint(tmp_path):
    with pytest.raises(ConfigError) as caught:
        check_endpoint("publish.endpoint", "tcp://0.0.0.0:5555", None)
    assert str(caught.value) == (
        "publish.endpoint: tcp://0.0.0.0:5555 is reachable beyond this machine; "
        "set security.server_secret_key and security.authorized_clients (CurveZMQ) or bind to 127.0.0.1")
    check_endpoint("publish.endpoint", "tcp://0.0.0.0:5555", CurveServer(tmp_path / "s", tmp_path / "c"))
    check_endpoint("control.endpoint", "tcp://127.0.0.1:5556", None)


def test_generate_keys_layout(tmp_path):
    server_public, server_secret, client_public, client_secret = generate_keys(tmp_path / "keys")
    assert client_public.parent == tmp_path / "keys" / "authorized_clients"
    assert [p.name for p in (server_public, server_secret, client_public, client_secret)] == \
        ["server.key", "server.key_secret", "client.key", "client.key_secret"]
    assert sorted(p.name for p in client_public.parent.iterdir()) == ["client.key"]
    for secret in (server_secret, client_secret):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        assert zmq.auth.load_certificate(secret)[1] is not None
    assert zmq.auth.load_certificate(client_public)[1] is None
    with pytest.raises(StreampickError, match="already exists"):
        generate_keys(tmp_path / "keys")
    again = generate_keys(tmp_path / "keys", client_name="monitor")
    assert again[:2] == (server_public, server_secret)  # the server pair is kept
    assert zmq.auth.load_certificate(again[0]) == zmq.auth.load_certificate(server_public)


def test_keys_command(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    keys_command.add_args(parser)
    assert keys_command.main(parser.parse_args([str(tmp_path / "k"), "--client", "laptop"])) == 0
    out = capsys.readouterr().out
    assert "security.server_secret_key" in out and "security.authorized_clients" in out
    assert str(tmp_path / "k" / "laptop.key_secret") in out
    assert (tmp_path / "k" / "authorized_clients" / "laptop.key").is_file()


def test_keys_command_imports_no_zmq():
    code = "import sys, streampick.commands.keys; print('zmq' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.stdout.strip() == "False", result.stderr


def test_curve_server_refuses_unusable_keys(tmp_path, context):
    server_public, server_secret, client_public, _ = generate_keys(tmp_path / "keys")
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = [(CurveServer(server_secret, empty), "holds no client public keys"),
           (CurveServer(server_secret, tmp_path / "absent"), "is not a folder"),
           (CurveServer(server_public, client_public.parent), "holds no secret key"),
           (CurveServer(tmp_path / "nope.key_secret", client_public.parent), "not a readable")]
    for curve, message in bad:
        with pytest.raises(ConfigError, match=message):
            Publisher(LOCAL, context=context, curve=curve).start()
        assert not authenticator_running(context)


def test_curve_round_trip_admits_only_authorized_clients(tmp_path, context):
    server_public, server_secret, _, client_secret = generate_keys(tmp_path / "keys")
    intruder_dir = tmp_path / "intruder"
    intruder_dir.mkdir()
    _, intruder_secret = zmq.auth.create_certificates(intruder_dir, "intruder")
    server = CurveServer(server_secret, tmp_path / "keys" / "authorized_clients")
    client = CurveClient(client_secret, server_public)
    intruder = CurveClient(Path(intruder_secret), server_public)

    with Publisher("tcp://127.0.0.1:0", context=context, curve=server) as publisher, \
            ControlServer(LOCAL, daemon_handler, context=context, curve=server) as control:
        assert authenticator_running(context)  # one, shared by both sockets
        assert request(control.bound_endpoint, "status", curve=client, timeout=5.0)["ok"] is True
        for curve in (intruder, None):
            with pytest.raises(ControlError, match="no reply"):
                request(control.bound_endpoint, "status", curve=curve, timeout=0.5)

        friend = subscribe(context, publisher.bound_endpoint, client)
        stranger = subscribe(context, publisher.bound_endpoint, intruder)
        plain = subscribe(context, publisher.bound_endpoint)
        wait_subscribed(publisher, friend)
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            publisher.publish(PICKS, picks_message(1))
            assert not stranger.poll(10) and not plain.poll(10), "an unauthorized subscriber got a message"
        assert receive(friend, 1)[0][1]["key"] == picks_message(1)["key"]
    assert not authenticator_running(context)


# ---------------------------------------------------------------------------------------------- docs example

def test_subscriber_example_drops_seen_keys_and_replays_gaps(tmp_path):
    journal = {seq: picks_message(seq) for seq in (3, 4, 5)}

    def handler(req: dict) -> dict:  # replay pages of one message, as a daemon with limit=1 would
        if req["command"] != "replay":
            raise ValueError("unknown command")
        later = [dict(journal[seq], replay=True) for seq in sorted(journal) if seq > req["since"]]
        return {"messages": later[:1], "last_seq": max(journal), "more": len(later) > 1}

    out = tmp_path / "out.txt"
    with Publisher(LOCAL) as publisher, ControlServer(LOCAL, handler) as control, open(out, "w") as sink:
        command = [sys.executable, str(EXAMPLE), publisher.bound_endpoint,
                   "--control", control.bound_endpoint, "--count", "3"]
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 20.0
            while not out.read_text().strip():  # slow joiner: resend seq 3 until the example prints it
                assert time.monotonic() < deadline and proc.poll() is None, out.read_text()
                publisher.publish(PICKS, journal[3])
                wait_exit(proc, 0.05)
            publisher.publish(PICKS, journal[5])  # 4 is missing: the example replays it
            publisher.publish(PICKS, dict(journal[3], replay=True))  # a re-send: dropped
            assert proc.wait(timeout=20.0) == 0, out.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    lines = out.read_text().splitlines()
    assert [line.split()[1] for line in lines] == ["3", "4", "5"], lines


def wait_exit(proc: subprocess.Popen, timeout: float) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)
