"""Command-line options that several sub-commands share, declared once so they read alike."""

from __future__ import annotations

import argparse


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


def add_service_options(p: argparse.ArgumentParser) -> None:
    """What `serve` and `milter` (the long-running front doors) both take."""
    p.add_argument("--quarantine-dir", metavar="DIR", help="quarantine store directory")
    add_trusted_authserv(p)
    p.add_argument("--metrics", metavar="HOST:PORT", help="Prometheus endpoint ('' to disable)")
    p.add_argument("--workers", type=int, metavar="N", help="scan processes (0 = one per CPU)")
