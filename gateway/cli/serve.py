"""`brandgate serve`: the SMTP gateway beside Postfix (after-queue filter or before-queue proxy).

Signals: SIGTERM / SIGINT drain and exit 0; SIGHUP reloads config and brand registry (a bad
config is refused and the running one stays).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from config.loader import ConfigError
from gateway.cli.options import add_config, add_service_options, config_error
from gateway.scanpool import EngineFactory, default_engine_factory
from gateway.service import run_until_signalled
from gateway.smtp.server import build_gateway

log = logging.getLogger("brandgate.serve")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="run the SMTP gateway",
        description="Run the SMTP gateway. Without a config it listens on 127.0.0.1:10025 "
        "and relays to 127.0.0.1:10026 (after-queue) with the shipped defaults.",
    )
    add_config(p)
    p.add_argument("--listen", metavar="HOST:PORT", help="address to listen on")
    p.add_argument("--next-hop", metavar="HOST:PORT", help="where accepted mail goes")
    p.add_argument("--mode", choices=("after-queue", "before-queue"), help="how Postfix uses us")
    add_service_options(p)
    p.set_defaults(func=handler)


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "listen": args.listen,
        "next_hop": args.next_hop,
        "mode": args.mode,
        "quarantine_dir": args.quarantine_dir,
        "trusted_authserv": args.trusted_authserv,
        "metrics": args.metrics,
        "workers": args.workers,
    }


def handler(args: argparse.Namespace) -> int:
    return run(args)


def run(args: argparse.Namespace, engine_factory: EngineFactory = default_engine_factory) -> int:
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        # aiosmtpd logs every command at INFO; our one line per message says what matters.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
    try:
        gateway = build_gateway(args.config, overrides_from(args), engine_factory=engine_factory)
    except ConfigError as exc:
        return config_error(exc)
    return asyncio.run(run_until_signalled(gateway))
