"""A streampick subscriber: print one line per picked micrograph, exactly once, catching up after gaps.

    python subscriber.py tcp://127.0.0.1:5555 --control tcp://127.0.0.1:5556
    python subscriber.py tcp://scope-pc:5555 --control tcp://scope-pc:5556 \
        --server-key server.key --client-key client.key_secret      # a daemon with CurveZMQ

Needs only pyzmq.  What it shows (docs/protocol.md has the details):

- every message is two frames, [topic, JSON]; picks messages carry ``seq`` and ``key``;
- a key already seen is dropped: after a daemon crash, a message may be re-sent with the same key and seq;
- a jump in ``seq`` (or a heartbeat whose ``last_seq`` is ahead of us) means messages were missed (we joined
  late, or were too slow and hit the high-water mark): ask the control endpoint ``replay since=<last seq>``.
"""
from __future__ import annotations

import argparse
import json
import sys

import zmq
import zmq.auth


class Follower:
    """Keeps the exactly-once state: keys seen and the highest seq processed."""

    def __init__(self, control: str | None, curve: dict | None, since: int | None, count: int | None) -> None:
        self.control = control
        self.curve = curve
        self.last_seq = since  # None: start from whatever arrives first
        self.seen: set[str] = set()
        self.remaining = count

    def on_message(self, topic: str, payload: dict) -> None:
        if topic == "picks":
            self.catch_up(payload["seq"])
            self.process(payload)
        elif topic == "heartbeat":
            self.catch_up(payload["last_seq"] + 1)
        elif topic == "error":
            print(f"error [{payload['stage']}] {payload['path'] or '-'}: {payload['message']}", flush=True)

    def catch_up(self, next_seq: int) -> None:
        """Replay what lies between our last seq and ``next_seq`` (exclusive), if anything."""
        if self.control is None or self.last_seq is None or next_seq <= self.last_seq + 1:
            return
        more = True
        while more:
            reply = request(self.control, {"command": "replay", "since": self.last_seq}, self.curve)
            if not reply.get("ok"):
                print(f"replay refused: {reply.get('error')}", file=sys.stderr)
                return
            for message in reply["messages"]:
                self.process(message)
            more = reply["more"] and bool(reply["messages"])
            if not more:
                self.last_seq = max(self.last_seq, reply["last_seq"])

    def process(self, message: dict) -> None:
        """Handle one picks message once per key."""
        self.last_seq = max(self.last_seq or 0, message["seq"])
        if message["key"] in self.seen:
            return
        self.seen.add(message["key"])
        micrograph = message["micrograph"]
        print(f"seq {message['seq']:>6}  {micrograph['name']}: {message['n_picks']} picks "
              f"(threshold {message['threshold']}, model {message['model']['version']}, "
              f"generation {message['generation']}){'  [re-sent]' if message['replay'] else ''}", flush=True)
        if self.remaining is not None:
            self.remaining -= 1

    def done(self) -> bool:
        return self.remaining is not None and self.remaining <= 0


def request(endpoint: str, body: dict, curve: dict | None, timeout_s: float = 5.0) -> dict:
    """One control request on a fresh REQ socket (LINGER 0, so a timeout leaves nothing behind)."""
    socket: zmq.Socket = zmq.Context.instance().socket(zmq.REQ)
    socket.linger = 0
    try:
        apply_curve(socket, curve)
        socket.connect(endpoint)
        socket.send(json.dumps(body).encode())
        if not socket.poll(int(timeout_s * 1000)):
            raise SystemExit(f"no reply from {endpoint} within {timeout_s:g} s: is the daemon running?")
        return json.loads(socket.recv())
    finally:
        socket.close()


def apply_curve(socket: zmq.Socket, curve: dict | None) -> None:
    """Make ``socket`` a CurveZMQ client when keys were given."""
    if curve is None:
        return
    public, secret = zmq.auth.load_certificate(curve["client_key"])
    server_public, _ = zmq.auth.load_certificate(curve["server_key"])
    socket.curve_publickey, socket.curve_secretkey, socket.curve_serverkey = public, secret, server_public


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("endpoint", help="the daemon's publish endpoint, e.g. tcp://127.0.0.1:5555")
    parser.add_argument("--control", help="the daemon's control endpoint, for replay (tcp://127.0.0.1:5556)")
    parser.add_argument("--since", type=int, help="first replay all after this seq (0: from the start)")
    parser.add_argument("--server-key", help="the daemon's public certificate (server.key), for CurveZMQ")
    parser.add_argument("--client-key", help="this client's secret certificate (NAME.key_secret)")
    parser.add_argument("--count", type=int, help="exit after this many new picks messages")
    args = parser.parse_args(argv)
    curve = {"server_key": args.server_key, "client_key": args.client_key} if args.server_key else None

    follower = Follower(args.control, curve, args.since, args.count)
    socket: zmq.Socket = zmq.Context.instance().socket(zmq.SUB)
    try:
        apply_curve(socket, curve)
        socket.subscribe(b"")  # all topics; b"picks" would filter on the topic frame
        socket.connect(args.endpoint)
        if args.since is not None:
            follower.catch_up(sys.maxsize)
        while not follower.done():
            topic, data = socket.recv_multipart()
            follower.on_message(topic.decode("ascii"), json.loads(data))
    except KeyboardInterrupt:
        return 130
    finally:
        socket.close(linger=0)
        zmq.Context.instance().term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
