"""`brandgate quarantine list|show|release|delete|purge`: look after the quarantine store.

release re-scans the message under the current config (and prints the new verdict), re-injects
it to the next hop with its original envelope, and records who released it and why.
"""

from __future__ import annotations

import argparse
import asyncio
import email.policy
import getpass
import json
import logging
import os
import re
import sys
import time
from collections.abc import Sequence
from email.parser import BytesHeaderParser
from typing import Any

from config.loader import Config, ConfigError, load_config
from filters.types import Envelope, Verdict
from gateway import actions
from gateway.archives.output import plural
from gateway.archives.parallel import Budget, map_ordered
from gateway.cli.options import add_config, config_error, error
from gateway.quarantine import Entry, QuarantineStore, ReleaseRefused
from gateway.scanpool import Scanner, default_engine_factory, engine_config_for_serve
from gateway.service import dkim_set_by_admin
from gateway.settings import GatewaySettings, from_config, parse_hostport, with_overrides
from gateway.smtp.relay import XFORWARD_ATTRS, RelayRequest, RelayResult, relay

log = logging.getLogger("brandgate.quarantine")
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "": 86400}


def parse_age(text: str) -> float:
    m = _AGE.match(text)
    if m is None:
        raise argparse.ArgumentTypeError(f"expected an age like 30d, 12h, 90m: {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def invoking_user() -> str:
    """Who runs the command, for the audit log: the user behind sudo, else the login name."""
    who = os.environ.get("SUDO_USER")
    if who:
        return who
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def register(sub: Any) -> None:
    p = sub.add_parser("quarantine", help="list, show, release, delete or purge quarantined mail")
    common = argparse.ArgumentParser(add_help=False)
    add_config(common)
    common.add_argument("--quarantine-dir", metavar="DIR", help="quarantine store directory")
    acts = p.add_subparsers(dest="qaction", required=True, metavar="ACTION")
    a = acts.add_parser("list", parents=[common], help="messages held now")
    a.add_argument("--all", action="store_true", help="include released and deleted ones")
    a.add_argument("--json", action="store_true", help="one JSON object per line")
    a = acts.add_parser("show", parents=[common], help="one message: envelope, verdict, audit")
    a.add_argument("id")
    a.add_argument("--raw", action="store_true", help="print the stored message itself")
    a = acts.add_parser("release", parents=[common], help="re-scan and deliver to the next hop")
    a.add_argument("id")
    a.add_argument(
        "--by", default=invoking_user(), metavar="WHO", help="who releases it (default: you)"
    )
    a.add_argument("--reason", required=True, metavar="WHY", help="why (audit log)")
    a.add_argument("--next-hop", metavar="HOST:PORT", help="override the configured next hop")
    a.add_argument("--force", action="store_true", help="release again after an earlier release")
    a = acts.add_parser("delete", parents=[common], help="delete one message")
    a.add_argument("id")
    a.add_argument("--by", default=invoking_user(), metavar="WHO")
    a.add_argument("--reason", default="", metavar="WHY")
    a = acts.add_parser("purge", parents=[common], help="delete old messages")
    a.add_argument("--older-than", required=True, type=parse_age, metavar="AGE")
    a.add_argument("--by", default=invoking_user(), metavar="WHO")
    p.set_defaults(func=handler)


def _load(args: argparse.Namespace, need_config: bool) -> tuple[Config | None, GatewaySettings]:
    try:
        config: Config | None = load_config(args.config)
    except ConfigError:
        if need_config or not args.quarantine_dir:
            raise
        config = None  # the store alone is enough to list/show/delete
    settings = from_config(config) if config is not None else GatewaySettings()
    return config, with_overrides(settings, quarantine_dir=args.quarantine_dir)


def handler(args: argparse.Namespace) -> int:
    try:
        config, settings = _load(args, need_config=args.qaction == "release")
        qdir = settings.quarantine_dir
        # A typo in --quarantine-dir must not look like an empty quarantine: only the
        # gateway creates a store; these commands open an existing one.
        if not (qdir / "index.sqlite").is_file():
            where = "--quarantine-dir" if args.quarantine_dir else "gateway.quarantine_dir"
            error(f"no quarantine at {qdir} (no index.sqlite there); check {where}")
            return 1
        store = QuarantineStore(qdir).open()
        if args.qaction == "list":
            return _list(store, args)
        if args.qaction == "show":
            return _show(store, args)
        if args.qaction == "release":
            assert config is not None
            return _release(store, config, settings, args)
        if args.qaction == "delete":
            store.delete(args.id, args.by, args.reason)
            log.info("quarantine delete id=%s by=%s", args.id, args.by)
            print(f"deleted {args.id}")
            return 0
        ids = store.purge(args.older_than, args.by)
        print(f"purged {len(ids)} {plural(len(ids), 'message')}")
        return 0
    except ConfigError as exc:
        return config_error(exc)
    except KeyError as exc:
        error(f"no such message: {safe(exc.args[0])}")
        return 1
    except ReleaseRefused as exc:
        error(safe(str(exc)))
        return 1
    except FileNotFoundError as exc:
        error(f"message file missing: {safe(str(exc.filename))}")
        return 1


def safe(text: str) -> str:
    """Text for a terminal: control characters (C0, DEL, C1: terminal escape sequences),
    format characters (bidi overrides), unassigned ones and 8-bit bytes that were not UTF-8
    (surrogate escapes) are shown as \\x.. / \\u.... escapes, never sent as they are."""
    out = []
    for ch in text:
        if ch.isprintable() or ch == " ":
            out.append(ch)
        elif 0xDC80 <= ord(ch) <= 0xDCFF:  # a byte aiosmtpd could not decode
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}")
    return "".join(out)


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _list(store: QuarantineStore, args: argparse.Namespace) -> int:
    entries = store.entries(include_gone=args.all)
    if args.json:
        for e in entries:
            # ASCII escapes: C1 controls and bidi overrides do not reach the terminal, and
            # non-UTF-8 envelope bytes stay exact (as \\udcXX).
            print(json.dumps({**_as_dict(e), "subject": _subject(store, e)}))
        return 0
    if not entries:
        print("no messages" if args.all else "no messages held")
        return 0
    head = ("id", "time", "state", "verdict", "score", "brand", "from", "to", "subject")
    rows = [
        (
            e.id,
            _when(e.time),
            "released" if e.released else "deleted" if e.deleted else "held",
            e.verdict,
            f"{e.score:.2f}",
            e.brand or "-",
            e.mail_from or "<>",
            ",".join(e.rcpts),
            _subject(store, e),
        )
        for e in entries
    ]
    print(_columns(head, rows, numeric={4}, clip={5: 20, 6: 36, 7: 36, 8: 60}))
    held = sum(1 for e in entries if not e.released and not e.deleted)
    print(f"{len(entries)} {plural(len(entries), 'message')} ({held} held)")
    return 0


def _columns(
    head: tuple[str, ...],
    rows: Sequence[tuple[str, ...]],
    numeric: set[int],
    clip: dict[int, int],
) -> str:
    """Aligned columns under a header row; long cells cut with an ellipsis."""

    def cut(i: int, text: str) -> str:
        text = safe(text)  # escaped: one line, and no control or bidi character reaches a tty
        limit = clip.get(i)
        return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"

    cells = [tuple(cut(i, c) for i, c in enumerate(r)) for r in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(head)]

    def line(r: tuple[str, ...]) -> str:
        parts = [
            c.rjust(widths[i]) if i in numeric else c.ljust(widths[i]) for i, c in enumerate(r)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(head), *(line(r) for r in cells)])


def _subject(store: QuarantineStore, e: Entry) -> str:
    """The Subject of the stored message (decoded), "" when it is gone or has none."""
    try:
        with store.path_of(e.id).open("rb") as fh:
            head = fh.read(65536)
    except (OSError, KeyError):
        return ""
    block = re.split(rb"\r?\n\r?\n", head, maxsplit=1)[0]
    msg = BytesHeaderParser(policy=email.policy.default).parsebytes(block + b"\r\n\r\n")
    try:
        return str(msg.get("Subject", "") or "")
    except Exception:  # a hostile encoded word must not break the listing
        return ""


def _as_dict(e: Entry) -> dict[str, Any]:
    return {
        "id": e.id,
        "time": e.time,
        "mail_from": e.mail_from,
        "rcpts": list(e.rcpts),
        "mail_options": list(e.mail_options),
        "client": e.client,
        "verdict": e.verdict,
        "score": e.score,
        "brand": e.brand,
        "rules": e.rules,
        "summary": e.summary,
        "size": e.size,
        "released": e.released,
        "deleted": e.deleted,
        "findings": e.findings.get("findings", []),
    }


def _show(store: QuarantineStore, args: argparse.Namespace) -> int:
    e = store.get(args.id)
    if args.raw:
        sys.stdout.buffer.write(store.raw(e.id))
        return 0
    out = _as_dict(e)
    out["subject"] = _subject(store, e)
    out["audit"] = [
        {"time": t, "action": a, "by": b, "reason": r, "detail": _json_or_text(d)}
        for t, _qid, a, b, r, d in store.audit(e.id)
    ]
    print(json.dumps(out, indent=2))
    return 0


def _json_or_text(detail: str) -> Any:
    """An audit detail as the JSON it holds (not a JSON string inside JSON), else the text."""
    try:
        return json.loads(detail) if detail else ""
    except ValueError:
        return detail


# The re-scan runs in a scan worker, with the budget of every other scan: a hostile message
# being released cannot hang or exhaust the admin's command either.
_RESCAN: dict[str, Scanner] = {}


def _init_rescan(config_path: str | None, trusted: tuple[str, ...] | None) -> None:
    config = load_config(config_path)
    engine_cfg = engine_config_for_serve(config, trusted, dkim_set_by_admin(config))
    _RESCAN["engine"] = default_engine_factory(engine_cfg)


def _rescan_one(task: tuple[bytes, Envelope]) -> Verdict:
    raw, envelope = task
    return _RESCAN["engine"].scan(raw, envelope)


def _rescan(
    config: Config, settings: GatewaySettings, raw: bytes, e: Entry, config_path: str | None
) -> Verdict | None:
    budget = Budget.of(config)
    env = Envelope(e.mail_from, e.rcpts, e.client.get("addr"), e.client.get("helo"))
    try:
        results = map_ordered(
            _rescan_one,
            [(raw, env)],
            jobs=1,
            initializer=_init_rescan,
            initargs=(config_path, settings.trusted_authserv_ids),
            budget=budget,
            overrun=lambda _task, reason: Verdict.for_overrun(reason, budget.on_overrun),
        )
        return next(iter(results))
    except Exception as exc:  # the admin's decision stands even if the engine is broken
        print(f"re-scan failed: {type(exc).__name__}", file=sys.stderr)
        return None


def reinject(
    data: bytes, e: Entry, host: str, port: int, local_hostname: str, timeout: float
) -> RelayResult:
    """Deliver with the original envelope, byte for byte (the relay's own client): MAIL FROM
    as it came, every RCPT TO, BODY=8BITMIME/SMTPUTF8 as the client asked, XFORWARD."""
    options = set(e.mail_options)
    req = RelayRequest(
        mail_from=e.mail_from,
        rcpts=e.rcpts,
        data=data,
        smtputf8="SMTPUTF8" in options,
        eight_bit="BODY=8BITMIME" in options,
        xforward={k: v for k, v in (e.client.get("xforward") or {}).items() if k in XFORWARD_ATTRS},
    )
    return asyncio.run(relay(req, host, port, timeout=timeout, local_hostname=local_hostname))


def _release(
    store: QuarantineStore, config: Config, settings: GatewaySettings, args: argparse.Namespace
) -> int:
    token = store.claim_release(args.id, force=args.force)
    try:
        return _release_claimed(store, config, settings, args, token)
    except BaseException:
        store.abandon_release(args.id, token)
        raise


def _release_claimed(
    store: QuarantineStore,
    config: Config,
    settings: GatewaySettings,
    args: argparse.Namespace,
    token: str,
) -> int:
    e = store.get(args.id)
    raw = actions.strip_our_headers(store.raw(e.id))
    verdict = _rescan(config, settings, raw, e, args.config)
    if verdict is not None:
        print(f"re-scan: {verdict.verdict} score={verdict.score:.2f} ({safe(verdict.summary)})")
        if (verdict.verdict == "reject" or verdict.status == "overrun") and not args.force:
            store.abandon_release(e.id, token)
            error(
                f"{e.id} not released: the re-scan says {verdict.verdict}"
                f"{' (overrun)' if verdict.status == 'overrun' else ''}; use --force"
            )
            return 1
    fields = actions.tag_fields(verdict) if verdict is not None else []
    fields.append(("X-Brandgate-Released", f"{e.id} by {args.by}"))
    data = actions.prepend(raw, fields)
    host, port = (
        parse_hostport(args.next_hop, "command line", "--next-hop")
        if args.next_hop
        else settings.next_hop
    )
    result = reinject(data, e, host, port, settings.greeting_name, settings.relay_timeout)
    if not result.ok:
        store.abandon_release(e.id, token)
        error(f"release failed, message kept: {safe(result.reply)}")
        return 1
    new = verdict.to_dict() if verdict is not None else None
    store.finish_release(
        e.id,
        token,
        args.by,
        args.reason,
        json.dumps({"rescan": new, "next_hop": f"{host}:{port}", "reply": result.reply}),
    )
    log.info(
        "quarantine release id=%s by=%r reason=%r rescan=%s next_hop=%s:%d",
        e.id,
        args.by,
        args.reason,
        verdict.verdict if verdict else "failed",
        host,
        port,
    )
    n = len(e.rcpts)
    print(f"released {e.id}: accepted by {host}:{port} for {n} {plural(n, 'recipient')}")
    return 0
