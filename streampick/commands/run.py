"""Run the streaming daemon: streampick run --config config.yaml [--reprocess]

Watches the configured folder, picks every micrograph once as soon as it is whole, writes RELION STAR and
candidate tables per micrograph (and a combined STAR) into the output folder, journals everything in
SQLite so that a restart (even after kill -9) loses and repeats nothing, publishes picks, stats, errors
and heartbeats over ZeroMQ, and answers control requests (status, pause, resume, set-threshold, replay,
reprocess, shutdown).  See config.example.yaml and docs/protocol.md.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="YAML configuration")
    parser.add_argument("--reprocess", action="store_true",
                        help="re-pick every micrograph already picked (a new generation; old files are kept)")


def main(args: argparse.Namespace) -> int:
    import faulthandler
    import signal

    from ..config import load_config, require_daemon_keys
    from ..daemon.service import Daemon

    config = load_config(args.config)
    require_daemon_keys(config)
    log_file = config["daemon"]["log_file"]
    if log_file:
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
    faulthandler.register(signal.SIGUSR1)  # kill -USR1 <pid> prints every thread's stack to stderr
    code = Daemon(config, reprocess=args.reprocess).run()
    if config["executor"]["kind"] == "dask":
        # Everything is closed and on disk by now (journal, outputs, sockets).  After a scheduler loss, Dask's
        # client threads have been seen to hold up the interpreter's exit (rarely, not reproduced at will), so
        # the daemon leaves directly rather than risk hanging a service manager's stop.
        import os
        import sys

        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
