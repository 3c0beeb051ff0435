"""The ``streampick`` command: one subcommand per module under ``streampick.commands``.

Each command module has a docstring (its help text), ``add_args(parser)`` and ``main(args) -> int``; heavy
imports (torch) happen inside ``main`` so that light commands start fast.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .errors import StreampickError

COMMANDS = ["run", "monitor", "demo", "pick", "evaluate", "simulate", "microscope", "keys", "bench", "train"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streampick", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"streampick.commands.{name}")
        doc = (module.__doc__ or name).strip()
        cmd = sub.add_parser(name, help=doc.splitlines()[0], description=doc,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_args(cmd)
        cmd.set_defaults(_module=module)
    return parser


def configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    try:
        return int(args._module.main(args) or 0)
    except StreampickError as err:
        logging.getLogger("streampick").error("%s", err)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
