"""Generate CurveZMQ certificates: streampick keys DIR [--client NAME]

The daemon's publish and control sockets stay on 127.0.0.1 unless CurveZMQ is configured.  This writes a
server certificate pair (once; kept if DIR already has one) and one client pair per call:

  DIR/server.key_secret              daemon only: security.server_secret_key
  DIR/authorized_clients/NAME.key    daemon: security.authorized_clients is this folder
  DIR/server.key                     copy to every client (the server's public key)
  DIR/NAME.key_secret                copy to that client only (its secret key)

Run it again with another --client name for each further client machine; remove a client's .key from
authorized_clients (and restart the daemon) to shut it out.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", type=Path, help="where to write the certificates (created if absent)")
    parser.add_argument("--client", default="client", metavar="NAME",
                        help="name of the client certificate (default: client)")


def main(args: argparse.Namespace) -> int:
    from ..daemon.security import generate_keys

    server_public, server_secret, client_public, client_secret = generate_keys(args.folder,
                                                                               client_name=args.client)
    rows = [
        (server_secret, "daemon only; config security.server_secret_key"),
        (client_public.parent, "daemon; config security.authorized_clients (client public keys)"),
        (server_public, "copy to each client: the server's public key"),
        (client_secret, f"copy to client '{args.client}' only: its secret key"),
    ]
    width = max(len(str(path)) for path, _ in rows)
    print(f"CurveZMQ certificates in {args.folder}:")
    for path, role in rows:
        print(f"  {path!s:<{width}}  {role}")
    print("Then bind publish.endpoint / control.endpoint to a network address (e.g. tcp://*:5555).")
    return 0
