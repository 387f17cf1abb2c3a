"""Command-line options that several sub-commands share, declared once so they read alike."""

from __future__ import annotations

import argparse
import sys

from config.loader import ConfigError


def add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        metavar="FILE|DIR",
        help="admin config file or directory, merged over the shipped one",
    )


def add_trusted_authserv(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trusted-authserv",
        action="append",
        default=[],
        metavar="ID",
        help="trust Authentication-Results from this authserv-id (repeatable; replaces the "
        "configured list, e.g. for archives received by a known MTA)",
    )


# --------------------------------------------------------------------------- errors
#
# One style for every command, the one argparse itself uses for usage errors:
#   brandgate scan: error: cannot write out.jsonl: Permission denied
#   brandgate rules: error: /etc/brandgate/brandgate.toml: thresholds.tag: expected a number

_prog = ["brandgate"]


def set_prog(command: str | None) -> None:
    _prog[0] = f"brandgate {command}" if command else "brandgate"


def error(message: str) -> None:
    for line in message.splitlines() or [""]:
        print(f"{_prog[0]}: error: {line}", file=sys.stderr)


def config_error(exc: ConfigError) -> int:
    """Every configuration error, one per line; exit status 2."""
    errors = exc.errors
    for err in errors:
        error(str(err))
    if len(errors) > 1:
        print(f"{_prog[0]}: {len(errors)} configuration errors", file=sys.stderr)
    return 2


def add_service_options(p: argparse.ArgumentParser) -> None:
    """What `serve` and `milter` (the long-running front doors) both take."""
    p.add_argument("--quarantine-dir", metavar="DIR", help="quarantine store directory")
    add_trusted_authserv(p)
    p.add_argument("--metrics", metavar="HOST:PORT", help="Prometheus endpoint ('' to disable)")
    p.add_argument("--workers", type=int, metavar="N", help="scan processes (0 = one per CPU)")
