"""`brandgate` command line: one sub-command per module, each with register(subparsers)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# Each module defines register(subparsers) which adds its parser and sets `func`.
COMMAND_MODULES = (
    "gateway.cmd_scan",  # scan PATH...
    "gateway.cmd_explain",  # explain FILE, check-config, rules
    "gateway.cmd_replay",  # replay PATH... --labels
    "gateway.cmd_serve",  # serve
    "gateway.cmd_milter",  # milter
    "gateway.cmd_quarantine",  # quarantine list|show|release|delete|purge
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brandgate",
        description="Catch brand-misuse (diversion) mail and explain every verdict.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
