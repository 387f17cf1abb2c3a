"""`brandgate milter`: brandgate as a Postfix or Sendmail milter (protocol version 6).

Signals as for `serve`: SIGTERM / SIGINT drain and exit 0; SIGHUP reloads config and brand
registry (a bad config is refused and the running one stays).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from config.loader import ConfigError
from gateway.cli.options import add_config, add_service_options, config_error
from gateway.milter.server import build_milter
from gateway.milter.settings import parse_endpoint
from gateway.scanpool import EngineFactory, default_engine_factory
from gateway.service import run_until_signalled


def register(sub: Any) -> None:
    p = sub.add_parser(
        "milter",
        help="run as a Postfix/Sendmail milter",
        description="Run brandgate as a milter (protocol 6). Without a config it listens on "
        "inet:127.0.0.1:10030 with the shipped defaults; Postfix: "
        "smtpd_milters = inet:127.0.0.1:10030.",
    )
    add_config(p)
    p.add_argument(
        "--listen",
        metavar="SOCKET",
        help="inet:HOST:PORT or unix:/path (Postfix's spelling; Sendmail's PORT@HOST too)",
    )
    add_service_options(p)
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    return run(args)


def run(args: argparse.Namespace, engine_factory: EngineFactory = default_engine_factory) -> int:
    overrides = {
        "quarantine_dir": args.quarantine_dir,
        "trusted_authserv": args.trusted_authserv,
        "metrics": args.metrics,
        "workers": args.workers,
    }
    try:
        listen = (
            None if args.listen is None else parse_endpoint(args.listen, "command line", "--listen")
        )
        milter = build_milter(args.config, overrides, listen=listen, engine_factory=engine_factory)
    except ConfigError as exc:
        return config_error(exc)
    return asyncio.run(run_until_signalled(milter))
