"""The SMTP front door: aiosmtpd sessions, the per-message flow, and the server's life cycle.

    connect: allowed network? session limit? -> 220 | 554 5.7.1 | 421 4.7.0
    EHLO (announces XFORWARD) · XFORWARD (from Postfix) · MAIL · RCPT... · DATA
    DATA: strip X-Brandgate-* -> scan in the process pool -> action ->
          relay and pass the next hop's answer back | quarantine durably, then 250 |
          550 5.7.1 (before-queue only) | 451 on scan failure unless fail-open

The DATA answer is never given before the message is with the next hop or in quarantine.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiosmtpd.smtp import SMTP, Session
from aiosmtpd.smtp import Envelope as SmtpEnvelope

from config.loader import Config, load_config
from filters.types import Envelope, Verdict
from gateway import actions
from gateway.scanpool import (
    QUEUE_WAIT_FACTOR,
    EngineFactory,
    ScanOverrun,
    default_engine_factory,
)
from gateway.service import OVERRUN_REPLY, TEMPFAIL_REPLY, Service, log_value
from gateway.settings import (
    GatewaySettings,
    check_gateway,
    from_config,
    tls_context,
    with_overrides,
)
from gateway.smtp.relay import XFORWARD_ATTRS, RelayPool, RelayRequest, RelayResult

log = logging.getLogger("brandgate.gateway")
msglog = logging.getLogger("brandgate.message")

XFORWARD_EHLO = "XFORWARD " + " ".join(XFORWARD_ATTRS)
# Session limits, Postfix's where it has one. A command line may buffer this much (RFC 5321
# says 512; DATA lines have their own, larger limit); junk commands (NOOP, RSET, VRFY, EXPN,
# HELP, HELO, EHLO) since the last message (smtpd_junk_command_limit); error replies
# (smtpd_hard_error_limit); recipients of one message (smtpd_recipient_limit).
COMMAND_LINE_LIMIT = 4096
DATA_CHUNK = 1 << 18
JUNK_COMMAND_LIMIT = 100
HARD_ERROR_LIMIT = 20
RECIPIENT_LIMIT = 1000
# Never in an envelope address we relay: each could end or split the command at the next hop.
_ENVELOPE_FORBIDDEN = re.compile(r"[\r\n\x00]")
_QUEUE_ID = re.compile(rb"\bwith\s+\w+\s+id\s+([A-Za-z0-9]{5,32})\b", re.IGNORECASE)


def xtext_decode(value: str) -> str:
    """RFC 3461 xtext: "+HH" stands for one byte."""
    return re.sub(r"\+([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), value)


# --------------------------------------------------------------------------- SMTP session


def _counted(command: str) -> Any:
    """aiosmtpd's handler of a junk command, run only while the session is under the limit."""
    inner = getattr(SMTP, f"smtp_{command}")

    @functools.wraps(inner)  # keeps the syntax aiosmtpd's HELP shows
    async def method(self: GatewaySMTP, arg: str) -> None:
        if self._junk():
            await inner(self, arg)

    return method


class GatewaySMTP(SMTP):
    """aiosmtpd's session plus: admission at connect, XFORWARD, separate DATA timeout."""

    def __init__(self, gateway: Gateway, **kwargs: Any) -> None:
        super().__init__(gateway.handler, **kwargs)
        self.gateway = gateway
        self.sid = secrets.token_hex(5)
        self.xforward: dict[str, str] = {}
        self.in_data = False
        self.junk = 0
        self.errors = 0

    @property
    def in_transaction(self) -> bool:
        return self.in_data or bool(self.envelope is not None and self.envelope.mail_from)

    async def _handle_client(self) -> None:
        refusal = self.gateway.admit(self)
        if refusal is not None:
            with contextlib.suppress(ConnectionError):
                await self.push(refusal)
            if self.transport is not None:
                self.transport.close()
            return
        # ... but only DATA lines: a command line may not buffer more than this.
        self._reader._limit = COMMAND_LINE_LIMIT  # type: ignore[attr-defined]
        try:
            await super()._handle_client()
        finally:
            self.gateway.release(self)

    async def push(self, status: Any) -> None:
        # aiosmtpd's size-limit replies carry no enhanced status code.
        if isinstance(status, str) and status.startswith("552 Error"):
            status = "552 5.3.4 Message too big for system"
        await super().push(status)
        if isinstance(status, str) and status[:3] in ("500", "501", "502", "503", "504", "553"):
            self.errors += 1
            if self.errors > HARD_ERROR_LIMIT:
                self._hang_up("421 4.7.0 Error: too many errors")

    def _hang_up(self, reply: str) -> None:
        log.warning("session %s: %s", self.sid, reply)
        self._writer.write(reply.encode("ascii") + b"\r\n")
        if self.transport is not None:
            self.transport.close()

    def _junk(self) -> bool:
        """Count a junk command; False (and the session closed) past the limit."""
        self.junk += 1
        if self.junk <= JUNK_COMMAND_LIMIT:
            return True
        self._hang_up("421 4.7.0 Error: too many junk commands")
        return False

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """The address exactly as the client sent it (aiosmtpd's own parser re-quotes or
        unquotes local parts and stops at control characters, so what we relayed would not
        be what the MTA in front accepted). None only when there is no address at all."""
        text = arg.lstrip()
        if not text.startswith("<"):
            address, _, rest = text.partition(" ")
            return (address, rest.strip()) if address else (None, None)
        close = _closing_angle(text)
        if close < 0:
            return None, None
        inner = text[1:close]
        return inner or "<>", text[close + 1 :].strip()

    async def smtp_HELO(self, hostname: str) -> None:
        if not self._junk():
            return
        self.xforward = {}
        await super().smtp_HELO(hostname)

    smtp_EHLO = _counted("EHLO")
    smtp_NOOP = _counted("NOOP")
    smtp_RSET = _counted("RSET")
    smtp_VRFY = _counted("VRFY")
    smtp_EXPN = _counted("EXPN")
    smtp_HELP = _counted("HELP")

    async def smtp_XFORWARD(self, arg: str | None) -> None:
        assert self.session is not None
        if not self.session.host_name:
            await self.push("503 5.5.1 Error: send HELO/EHLO first")
            return
        if self.in_transaction:
            await self.push("503 5.5.1 Error: MAIL transaction in progress")
            return
        if not arg:
            await self.push("501 5.5.4 Syntax: XFORWARD attribute=value...")
            return
        update: dict[str, str] = {}
        for item in arg.split():
            name, eq, value = item.partition("=")
            name = name.upper()
            if not eq or name not in XFORWARD_ATTRS:
                await self.push(f"501 5.5.4 Bad XFORWARD attribute name: {log_value(name)[:40]}")
                return
            update[name] = value
        self.xforward.update(update)
        await self.push("250 2.0.0 Ok")

    async def smtp_DATA(self, arg: str) -> None:
        """DATA read in chunks, not line by line as aiosmtpd does: a message of millions of
        short lines would otherwise hold the event loop (and every other session) until the
        whole of it has arrived. Lines of any length are accepted, as Postfix does (refusing
        one would bounce real mail); the size limit bounds memory. Only CRLF . CRLF ends it."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        self._reset_timeout(self.gateway.settings.data_timeout)
        self.in_data = True
        self._reader._limit = DATA_CHUNK  # type: ignore[attr-defined]
        try:
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            content = await self._read_data()
            if content is None:
                self._set_post_data_state()
                await self.push("552 5.3.4 Message too big for system")
                return
            self.envelope.original_content = self.envelope.content = content
            status = await self._call_handler_hook("DATA")
            self._set_post_data_state()
            await self.push(status)
        finally:
            self._reader._limit = COMMAND_LINE_LIMIT  # type: ignore[attr-defined]
            self.in_data = False
            self.xforward = {}
            self.junk = 0  # a session that carries mail is not junk
            if self.gateway.draining and self.transport is not None:
                self.transport.close()

    async def _read_data(self) -> bytes | None:
        """The message up to CRLF . CRLF, dot-unstuffed; None when it was over the size
        limit (read to its end all the same, and dropped). The terminator is searched in C,
        and the event loop gets a turn after every chunk."""
        limit = self.data_size_limit or 0
        buf = bytearray(b"\r\n")  # a virtual line break: "." as the first line ends it too
        searched = 0
        dropped = False
        while (end := buf.find(b"\r\n.\r\n", searched)) < 0:
            if limit and len(buf) > limit + 2:
                dropped = True
                del buf[:-4]  # keep what a terminator may start with
            searched = max(0, len(buf) - 4)
            chunk = await self._reader.read(DATA_CHUNK)
            if not chunk:
                raise ConnectionResetError("connection closed during DATA")
            buf += chunk
            await asyncio.sleep(0)
        rest = buf[end + 5 :]
        if rest:
            # A client that pipelines its next command (or QUIT) behind the message: give
            # those bytes back to the reader, ahead of anything that arrives later.
            self._reader._buffer[:0] = rest  # type: ignore[attr-defined]
        if dropped or (limit and end - 2 > limit):
            return None
        return bytes(buf[: end + 2]).replace(b"\r\n.", b"\r\n")[2:]

    def extend_deadline(self, seconds: float) -> None:
        """Scanning and relaying must not be cut short by the command timeout."""
        self._reset_timeout(seconds)


def _closing_angle(text: str) -> int:
    """Index of the ">" that closes the "<" at text[0] (quoted parts skipped), or -1."""
    quoted = escaped = False
    for i, ch in enumerate(text[1:], 1):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == ">" and not quoted:
            return i
    return -1


class Handler:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def handle_exception(self, error: Exception) -> str:
        """aiosmtpd's default is "500 Error: (Type) text": a permanent failure (Postfix
        bounces) that shows our exception to the client. A 4xx keeps the message."""
        log.error("session error: %s", error, exc_info=error)
        return TEMPFAIL_REPLY

    async def handle_MAIL(
        self,
        server: GatewaySMTP,
        session: Session,
        envelope: SmtpEnvelope,
        address: str,
        options: list[str],
    ) -> str:
        if _ENVELOPE_FORBIDDEN.search(address):
            return "451 4.1.7 Sender address with CR or NUL is not relayed"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Ok"

    async def handle_EHLO(
        self,
        server: GatewaySMTP,
        session: Session,
        envelope: SmtpEnvelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        server.xforward = {}
        return [*responses[:-1], "250-" + XFORWARD_EHLO, responses[-1]]

    async def handle_RCPT(
        self,
        server: GatewaySMTP,
        session: Session,
        envelope: SmtpEnvelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if _ENVELOPE_FORBIDDEN.search(address):
            return "451 4.1.3 Recipient address with CR or NUL is not relayed"
        if len(envelope.rcpt_tos) >= RECIPIENT_LIMIT:
            return "452 4.5.3 Error: too many recipients"
        # One DATA answer covers every recipient, so one transaction holds recipients of one
        # policy; the client sends the others in a transaction of their own (RFC 5321 4.5.3.1.10).
        settings = self.gateway.settings
        if envelope.rcpt_tos and settings.recipients:
            first = settings.policy_for(envelope.rcpt_tos[0]).key
            if settings.policy_for(address).key != first:
                return "452 4.5.3 Recipient of another policy: send it in a new transaction"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def handle_RSET(
        self, server: GatewaySMTP, session: Session, envelope: SmtpEnvelope
    ) -> str:
        server.xforward = {}
        return "250 2.0.0 Ok"

    async def handle_DATA(
        self, server: GatewaySMTP, session: Session, envelope: SmtpEnvelope
    ) -> str:
        return await self.gateway.process(server, session, envelope)


# --------------------------------------------------------------------------- the gateway


@dataclass(frozen=True, slots=True)
class _Transaction:
    """One DATA transaction as the relay and the quarantine need it, and its log line."""

    envelope: Envelope
    options: tuple[str, ...]  # MAIL FROM parameters
    xforward: dict[str, str]
    smtputf8: bool
    record: dict[str, Any]


class Gateway(Service):
    """The SMTP modes: the listener, sessions, STARTTLS and the relay to the next hop, on the
    shared Service (scan pool, quarantine, metrics, reload and drain)."""

    def __init__(
        self,
        config: Config,
        settings: GatewaySettings,
        *,
        config_path: str | None = None,
        overrides: dict[str, Any] | None = None,
        engine_factory: EngineFactory = default_engine_factory,
        config_loader: Callable[[str | None], Config] = load_config,
    ) -> None:
        super().__init__(
            config,
            settings,
            config_path=config_path,
            overrides=overrides,
            engine_factory=engine_factory,
            config_loader=config_loader,
        )
        self.handler = Handler(self)
        self.sessions: set[GatewaySMTP] = set()
        self.relays = RelayPool()
        # STARTTLS when a certificate is configured (loaded once; a restart picks up a new one)
        self.tls = (
            tls_context(settings.tls_cert, settings.tls_key)
            if settings.tls_cert is not None and settings.tls_key is not None
            else None
        )

    # ----------------------------------------------------------------------- life cycle

    async def start(self) -> None:
        s = self.settings
        await self._open()
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            self._protocol, host=s.listen[0], port=s.listen[1], reuse_address=True, backlog=256
        )
        if s.metrics is not None:
            await asyncio.to_thread(self.metrics.serve, *s.metrics)
        log.info(
            "serving on %s:%d (%s), next hop %s:%d, quarantine %s, %d scan workers",
            s.listen[0],
            self.port,
            s.mode,
            *s.next_hop,
            s.quarantine_dir,
            s.worker_count,
        )

    def _protocol(self) -> GatewaySMTP:
        s = self.settings
        return GatewaySMTP(
            self,
            hostname=s.greeting_name,
            ident="brandgate",
            data_size_limit=s.data_size_limit,
            enable_SMTPUTF8=True,
            timeout=s.command_timeout,
            loop=asyncio.get_running_loop(),
            tls_context=self.tls,
        )

    async def stop(self) -> None:
        """Stop accepting, let transactions in flight finish (bounded), then close."""
        self.draining = True
        if self.server is not None:
            self.server.close()
        for sess in list(self.sessions):
            if not sess.in_transaction and sess.transport is not None:
                sess._writer.write(b"421 4.3.2 Service shutting down\r\n")
                sess.transport.close()
        await self._drain(self.sessions, "sessions", _close_session)
        await self._close()
        log.info("stopped")

    async def _close(self) -> None:
        """After the last session: the shared parts, then the relay's connections."""
        await super()._close()
        await self.relays.close()

    # ----------------------------------------------------------------------- admission

    def admit(self, sess: GatewaySMTP) -> str | None:
        peer = sess.session.peer if sess.session is not None else None
        if self.draining:
            self.metrics.sessions_refused.labels("draining").inc()
            return "421 4.3.2 Service shutting down"
        if not self._allowed(peer):
            log.warning("refused %s: not in gateway.allowed_networks", peer)
            self.metrics.sessions_refused.labels("network").inc()
            return "554 5.7.1 Access denied"
        if len(self.sessions) >= self.settings.max_sessions:
            log.warning("refused %s: %d sessions open", peer, len(self.sessions))
            self.metrics.sessions_refused.labels("limit").inc()
            return "421 4.7.0 Too many connections, try again later"
        self.sessions.add(sess)
        self.metrics.sessions_active.set(len(self.sessions))
        return None

    def release(self, sess: GatewaySMTP) -> None:
        self.sessions.discard(sess)
        self.metrics.sessions_active.set(len(self.sessions))

    # ----------------------------------------------------------------------- one message

    async def process(self, smtp: GatewaySMTP, session: Session, env: SmtpEnvelope) -> str:
        t0 = time.monotonic()
        s = self.settings
        raw: bytes = env.original_content or b""
        xf = dict(smtp.xforward)
        # the scan may wait for a worker as well: ScanService bounds both together
        smtp.extend_deadline(QUEUE_WAIT_FACTOR * self.scans.timeout + 3 * s.relay_timeout + 30)
        client_ip = xtext_decode(xf.get("ADDR", "")) or None
        if client_ip is None or client_ip.startswith("["):
            client_ip = str(session.peer[0]) if isinstance(session.peer, tuple) else None
        elif client_ip.upper().startswith("IPV6:"):
            client_ip = client_ip[5:]
        helo = xtext_decode(xf.get("HELO", "")) or session.host_name
        if helo and helo.startswith("["):
            helo = session.host_name
        mail_from = "" if env.mail_from in ("<>", None) else str(env.mail_from)
        rcpts = tuple(env.rcpt_tos)
        options = tuple(env.mail_options)
        record: dict[str, Any] = {
            "session": smtp.sid,
            "queue_id": xtext_decode(xf.get("IDENT", "")) or self._queue_id(raw),
            "client": client_ip,
            "helo": helo,
            "from": mail_from,
            "rcpts": ",".join(rcpts),
            "size": len(raw),
        }
        envelope = Envelope(mail_from=mail_from, rcpt_tos=rcpts, client_ip=client_ip, helo=helo)
        try:
            tx = _Transaction(envelope, options, xf, env.smtp_utf8, record)
            reply = await self._decide_and_act(raw, tx)
        except Exception as exc:  # a bug here must cost a retry, never the message
            log.exception("processing failed")
            record.update(action="tempfail", error=f"internal: {type(exc).__name__}")
            reply = TEMPFAIL_REPLY
        record["ms"] = round((time.monotonic() - t0) * 1000)
        record["reply"] = reply
        fields = {k: v for k, v in record.items() if v is not None}
        line = " ".join(f"{k}={log_value(v)}" for k, v in fields.items())
        msglog.info(line, extra={"fields": fields})
        return reply

    @staticmethod
    def _queue_id(raw: bytes) -> str | None:
        block, _ = actions.split_headers(raw[:65536])
        for fld in actions._fields(block):
            if fld.lower().startswith(b"received:"):
                m = _QUEUE_ID.search(fld)
                return m.group(1).decode("ascii") if m else None
        return None

    async def _decide_and_act(self, raw: bytes, tx: _Transaction) -> str:
        s, envelope, record = self.settings, tx.envelope, tx.record
        try:
            done = await self.scan(raw, envelope, record, self.handling(envelope.rcpt_tos))
        except ScanOverrun as exc:
            return await self._overrun(raw, tx, exc.reason)
        if done is None or done.decision is None:
            if not s.fail_open:
                record["action"] = "tempfail"
                self.metrics.messages.labels("error", "tempfail").inc()
                return "451 4.3.0 Temporary scanning failure, try again later"
            record["action"] = "pass"
            self.metrics.messages.labels("error", "pass").inc()
            clean = await asyncio.to_thread(actions.strip_for, s, raw)
            data = actions.prepend(clean, actions.error_fields(str(record.get("error", ""))))
            return await self._relay(data, tx)
        decision = done.decision
        self.note_decision(decision, record)
        verdict, action = decision.verdict, decision.action
        if action == "reject":
            return actions.reject_reply(verdict)
        if action == "quarantine":
            return await self._quarantine(raw, tx, verdict)
        marked = done.marked
        assert marked is not None  # the worker marks what leaves: pass and tag
        if action == "tag":
            record["banner"] = "yes" if marked.banner else "no"
            if marked.changed:
                record["arc"] = marked.arc
        return await self._relay(marked.data, tx)

    async def _overrun(self, raw: bytes, tx: _Transaction, reason: str) -> str:
        """What `limits.on_overrun` says: tempfail (451), quarantine, or tag and relay.
        Crossing the budget is the message's doing: fail_open does not apply here, or a
        message could buy its way past the scan by being expensive."""
        on_overrun = self.note_overrun(reason, tx.record)
        if on_overrun == "tempfail":
            return OVERRUN_REPLY
        verdict = Verdict.for_overrun(reason, on_overrun)
        if on_overrun == "quarantine":
            return await self._quarantine(raw, tx, verdict)
        tx.record["banner"] = "no"
        data = await self.overrun_marked(raw, verdict)
        return await self._relay(data, tx)

    async def _relay(self, data: bytes, tx: _Transaction) -> str:
        s = self.settings
        req = RelayRequest(
            mail_from=tx.envelope.mail_from,
            rcpts=tx.envelope.rcpt_tos,
            data=data,
            smtputf8=tx.smtputf8,
            eight_bit="BODY=8BITMIME" in tx.options,
            xforward=tx.xforward,
        )
        result: RelayResult = await self.relays.relay(
            req, *s.next_hop, timeout=s.relay_timeout, local_hostname=s.greeting_name
        )
        if not result.ok:
            self.metrics.relay_errors.labels(result.kind).inc()
        return result.reply

    async def _quarantine(self, raw: bytes, tx: _Transaction, verdict: Verdict) -> str:
        client = {
            "addr": tx.envelope.client_ip,
            "helo": tx.envelope.helo,
            "xforward": tx.xforward,
            "session": tx.record["session"],
            "queue_id": tx.record.get("queue_id"),
        }
        qid = await self.quarantine(raw, tx.envelope, tx.options, client, verdict, tx.record)
        if qid is None:
            return "451 4.3.0 Quarantine unavailable, try again later"
        if self.settings.mode == "before-queue":
            return f"250 2.0.0 Ok: queued as {qid}"  # the sender need not learn where it went
        return f"250 2.0.0 Ok: held in quarantine as {qid}"


# --------------------------------------------------------------------------- running it


def _close_session(sess: GatewaySMTP) -> None:
    if sess.transport is not None:
        sess.transport.close()


def build_gateway(
    config_path: str | None,
    overrides: dict[str, Any],
    *,
    engine_factory: EngineFactory = default_engine_factory,
) -> Gateway:
    """Load config, validate [gateway], apply flags. Raises ConfigError."""
    config = load_config(config_path, extra=[check_gateway])
    settings = with_overrides(from_config(config), **overrides)
    return Gateway(
        config,
        settings,
        config_path=config_path,
        overrides=overrides,
        engine_factory=engine_factory,
    )


__all__ = ["Gateway", "GatewaySMTP", "build_gateway"]
