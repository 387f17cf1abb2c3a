"""`brandgate filter [FILE]`: read one message, print it as the gateway would pass it on.

The pipe-friendly front door, like `spamc` or `rspamc --mime`: for procmail, maildrop, a
Sieve `execute`, or a quick look at what the gateway's headers and banner would be. Incoming
brandgate headers are removed, the message is scanned, and it is written to stdout with
X-Brandgate-* headers (and X-Spam-*, Authentication-Results, banner, Subject prefix as the
[gateway] settings and the recipient's policy say). Nothing is quarantined or rejected here:
a flagged message is printed tagged, and `--exit-code` says what the verdict was.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from config.loader import load_config, with_trusted_authserv
from filters.engine import Engine
from filters.types import Envelope
from gateway import actions
from gateway.cli.options import add_config, add_trusted_authserv, error
from gateway.settings import check_gateway, from_config
from gateway.version import version

EXIT_FLAGGED = 1  # --exit-code: the verdict was tag, quarantine or reject


def register(sub: Any) -> None:
    p = sub.add_parser(
        "filter",
        help="read one message, write it tagged to stdout (like spamc)",
        description="Scan one message (a file, or stdin) and print it with brandgate's headers "
        "(and banner, when configured), as the gateway would relay it.",
    )
    p.add_argument("file", nargs="?", default="-", metavar="FILE", help="message file, or -")
    add_config(p)
    add_trusted_authserv(p)
    p.add_argument(
        "--recipient",
        metavar="ADDRESS",
        default="",
        help="apply this recipient's policy ([gateway.recipients])",
    )
    p.add_argument(
        "-e",
        "--exit-code",
        action="store_true",
        help=f"exit {EXIT_FLAGGED} when the verdict is tag or worse (like spamassassin -e)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, extra=[check_gateway])
    settings = from_config(config)
    try:
        raw = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        error(f"{args.file}: {exc.strerror or exc}")
        return 2
    engine = Engine(with_trusted_authserv(config, args.trusted_authserv))
    clean = actions.strip_our_headers(
        raw, spam=settings.spam_headers, authserv_id=settings.our_authserv_id
    )
    envelope = Envelope(rcpt_tos=(args.recipient,) if args.recipient else ())
    decision = actions.decision_for(
        settings, engine.scan(clean, envelope), envelope.rcpt_tos, config.thresholds, version()
    )
    verdict = decision.verdict
    # Nothing is held or refused here: what the gateway would not pass on is printed tagged.
    action = "pass" if decision.action == "pass" else "tag"
    marked = actions.mark(clean, verdict, decision.marking, action)
    sys.stdout.buffer.write(marked.data)
    sys.stdout.buffer.flush()
    if args.exit_code and verdict.verdict != "pass":
        return EXIT_FLAGGED
    return 0
