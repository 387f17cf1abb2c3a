"""The milter front door: brandgate inside Postfix or Sendmail (milter protocol version 6).

    MTA connects: a TCP peer in gateway.allowed_networks, or anyone who may open the UNIX
    socket; beyond gateway.max_sessions the connection is closed (the MTA applies its
    milter_default_action) -> option negotiation -> per SMTP session: connect, HELO, macros;
    per message: MAIL, RCPT..., header fields, body chunks (bounded by data_size_limit),
    end of message -> scan in the process pool -> the verdict's action as milter replies:

      pass        header fields inserted on top, nothing else changed (with
                  gateway.pass_headers = false no edit at all)
      tag         the same fields, the Subject prefix and the banner when configured
                  (body replacement), ARC-sealed when that changed signed content
      quarantine  Postfix's hold queue (SMFIR_QUARANTINE) and/or brandgate's store
      reject      550 5.7.1 and the one-line reason, in the SMTP session
      failure     451 4.3.0 (or, fail-open, pass with X-Brandgate-Status: error)

What the message becomes is decided where the SMTP modes decide it: actions.decision_for
(the recipients' policies; one transaction here may hold several, and the strictest wins),
actions.mark (headers, banner, ARC), gateway/quarantine.py. gateway/milter/edits.py turns
the resulting bytes into edit requests, gateway/milter/protocol.py into packets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from config.loader import Config
from filters.types import Envelope, Verdict
from gateway import actions
from gateway.milter import edits as milter_edits
from gateway.milter import protocol as mp
from gateway.milter.settings import Endpoint
from gateway.scanpool import EngineFactory, ScanOverrun, default_engine_factory
from gateway.service import OVERRUN_REPLY, Service, log_value
from gateway.settings import GatewaySettings, check_gateway, from_config, with_overrides

log = logging.getLogger("brandgate.milter")
msglog = logging.getLogger("brandgate.message")

# What brandgate asks of the MTA, and which events it does without (each masked by what the
# MTA offers). No reply to anything before the body: those events only gather facts.
WANTED_ACTIONS = (
    mp.SMFIF_ADDHDRS | mp.SMFIF_CHGHDRS | mp.SMFIF_CHGBODY | mp.SMFIF_QUARANTINE
) | mp.SMFIF_SETSYMLIST
WANTED_PROTOCOL = (
    mp.SMFIP_NOUNKNOWN
    | mp.SMFIP_NODATA
    | mp.SMFIP_SKIP
    | mp.SMFIP_HDR_LEADSPC
    | mp.SMFIP_NR_CONN
    | mp.SMFIP_NR_HELO
    | mp.SMFIP_NR_MAIL
    | mp.SMFIP_NR_RCPT
    | mp.SMFIP_NR_DATA
    | mp.SMFIP_NR_UNKN
    | mp.SMFIP_NR_HDR
    | mp.SMFIP_NR_EOH
)
# Asked for with SETSYMLIST; Postfix's default lists lack the client's address and name.
MACROS = {
    mp.SMFIM_CONNECT: "j _ {daemon_name} {daemon_addr} {client_addr} {client_name} {client_port}",
    mp.SMFIM_HELO: "{tls_version} {cipher} {cert_subject}",
    mp.SMFIM_ENVFROM: "i {auth_type} {auth_authen} {mail_addr}",
    mp.SMFIM_ENVRCPT: "i {rcpt_addr}",
    mp.SMFIM_EOH: "i",
    mp.SMFIM_EOM: "i",
}
# A macro packet for one stage makes the macros of the stages after it stale.
_STAGES = [mp.SMFIC_CONNECT, mp.SMFIC_HELO, mp.SMFIC_MAIL, mp.SMFIC_RCPT, mp.SMFIC_DATA]
_STAGES += [mp.SMFIC_EOH, mp.SMFIC_BODYEOB]
# Edit requests and the action each needs.
_NEEDS = {
    mp.SMFIR_CHGHEADER: mp.SMFIF_CHGHDRS,
    mp.SMFIR_INSHEADER: mp.SMFIF_ADDHDRS,
    mp.SMFIR_ADDHEADER: mp.SMFIF_ADDHDRS,
    mp.SMFIR_REPLBODY: mp.SMFIF_CHGBODY,
}
# Larger packets than this are not the protocol (body chunks are at most 64 KiB).
MAX_PACKET = 4 * 1024 * 1024
READ_SIZE = 256 * 1024  # bytes asked of the socket at a time

TEMPFAIL_SCAN = "451 4.3.0 Temporary scanning failure, try again later"
TEMPFAIL_QUARANTINE = "451 4.3.0 Quarantine unavailable, try again later"
OVERSIZE_REPLY = {
    "reject": "552 5.3.4 Message size exceeds fixed limit",
    "tempfail": "452 4.3.4 Message too big for system, try again later",
}


class _Close(Exception):
    """End this connection (the MTA said QUIT, or it broke the protocol)."""


# --------------------------------------------------------------------------- one connection


class MilterConnection:
    """One MTA connection: negotiation, then SMTP sessions' events, one message at a time."""

    def __init__(
        self, gateway: MilterGateway, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.gateway = gateway
        self.reader = reader
        self.writer = writer
        self.sid = secrets.token_hex(5)
        self.actions = 0
        self.protocol = 0
        self.negotiated = False
        self.macros = mp.Macros()
        self.connect: mp.Connect | None = None
        self.helo: str | None = None
        self.busy = False  # at end of message: scanning and acting
        self._new_message()

    # ----------------------------------------------------------------------- state

    def _new_message(self) -> None:
        self.mail_from: str | None = None  # None: no transaction open
        self.mail_args: tuple[str, ...] = ()
        self.rcpts: list[str] = []
        self.fields: list[milter_edits.Field] = []
        self.body = bytearray()
        self.size = 0
        self.oversize = False
        self.refused = False  # answered already (oversize reject), ignore the rest

    @property
    def in_message(self) -> bool:
        return self.busy or self.mail_from is not None

    @property
    def leadspc(self) -> bool:
        return bool(self.protocol & mp.SMFIP_HDR_LEADSPC)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()

    # ----------------------------------------------------------------------- the loop

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        idle = self.gateway.settings.milter.idle_timeout
        packets = mp.Packets(MAX_PACKET)
        try:
            async with asyncio.timeout(idle) as deadline:
                while True:
                    if await self._answer(packets, deadline):
                        return
                    deadline.reschedule(loop.time() + idle)
                    chunk = await self.reader.read(READ_SIZE)
                    if not chunk:
                        return  # the MTA went away; it knows what it did not get an answer for
                    packets.feed(chunk)
        except TimeoutError:
            log.warning("milter %s: nothing from the MTA for %g s, closing", self.sid, idle)
        except ConnectionError:
            pass
        except (_Close, mp.ProtocolError) as exc:
            if str(exc):
                log.warning("milter %s: %s, closing", self.sid, exc)
        finally:
            self.close()

    async def _answer(self, packets: mp.Packets, deadline: asyncio.Timeout) -> bool:
        """Handle every whole packet read so far and send the replies, in order; True when
        the session should end (draining, between messages)."""
        replies: list[bytes] = []
        while (packet := packets.next()) is not None:
            cmd, data = packet
            if cmd == mp.SMFIC_BODYEOB:
                await self._send(replies)
                loop = asyncio.get_running_loop()
                deadline.reschedule(loop.time() + self.gateway.scans.timeout + 60)
                replies = await self._end_of_message_packet(data)
            else:
                replies.extend(self.dispatch(cmd, data))
            if self.gateway.draining and not self.in_message:
                await self._send(replies)
                return True
        await self._send(replies)
        return False

    async def _send(self, replies: list[bytes]) -> None:
        if replies:
            self.writer.write(b"".join(replies))
            replies.clear()
            await self.writer.drain()

    def dispatch(self, cmd: int, data: bytes) -> list[bytes]:
        """The replies to one packet other than end of message (none for events negotiated
        as no-reply)."""
        if cmd == mp.SMFIC_OPTNEG:
            return [self._negotiate(mp.parse_optneg(data))]
        if not self.negotiated:
            raise mp.ProtocolError(f"command {chr(cmd)!r} before option negotiation")
        handler = self._handlers.get(cmd)
        if handler is None:
            raise mp.ProtocolError(f"unknown command {cmd:#04x}")
        reply = handler(self, data)
        if reply is not None:
            return [reply]
        if cmd in mp.SILENT or self.protocol & mp.NO_REPLY_FLAG.get(cmd, 0):
            return []
        return [mp.CONTINUE]

    async def _end_of_message_packet(self, data: bytes) -> list[bytes]:
        if not self.negotiated:
            raise mp.ProtocolError("end of message before option negotiation")
        return await self._end_of_message(data)

    # ----------------------------------------------------------------------- events

    def _negotiate(self, offer: mp.Negotiation) -> bytes:
        self.actions = WANTED_ACTIONS & offer.actions
        self.protocol = WANTED_PROTOCOL & offer.protocol
        self.negotiated = True
        missing = (WANTED_ACTIONS & ~mp.SMFIF_SETSYMLIST) & ~self.actions
        if missing:
            log.warning(
                "milter %s: the MTA does not offer actions %#x: %s",
                self.sid,
                missing,
                "no banner, no hold queue or no header edits accordingly",
            )
        macros = MACROS if self.actions & mp.SMFIF_SETSYMLIST else None
        return mp.optneg(min(offer.version, mp.VERSION), self.actions, self.protocol, macros)

    def _on_macro(self, data: bytes) -> None:
        stage, values = mp.parse_macros(data)
        if stage in _STAGES:
            self.macros.drop(_STAGES[_STAGES.index(stage) + 1 :])
        self.macros.set(stage, values)

    def _on_connect(self, data: bytes) -> None:
        self.connect = mp.parse_connect(data)
        self.helo = None
        self._new_message()

    def _on_helo(self, data: bytes) -> None:
        self.helo = mp.parse_helo(data)

    def _on_mail(self, data: bytes) -> None:
        args = mp.parse_args(data)
        self._new_message()
        self.mail_from = mp.address(args[0])
        self.mail_args = tuple(mp.envelope_text(a) for a in args[1:])

    def _on_rcpt(self, data: bytes) -> None:
        self.rcpts.append(mp.address(mp.parse_args(data)[0]))

    def _grow(self, n: int) -> bool:
        """Count n more bytes; False once the message is over the limit."""
        self.size += n
        if self.size > self.gateway.settings.data_size_limit:
            if not self.oversize:
                self.oversize = True
                self.body = bytearray()  # not scanned: keep nothing more
            return False
        return True

    def _on_header(self, data: bytes) -> None:
        name, value = mp.parse_header(data)
        if self._grow(len(name) + len(value) + 4):
            self.fields.append((name, value))

    def _on_body(self, data: bytes) -> bytes | None:
        if self.refused:
            return mp.CONTINUE
        if self._grow(len(data)):
            self.body += data
            return mp.CONTINUE
        policy = self.gateway.settings.milter.oversize
        if policy in OVERSIZE_REPLY:
            self.refused = True
            return mp.reply_code(OVERSIZE_REPLY[policy])
        # accepted unscanned: the rest of the body is of no use to us
        return mp.SKIP if self.protocol & mp.SMFIP_SKIP else mp.CONTINUE

    def _on_abort(self, data: bytes) -> None:
        self._new_message()

    def _on_quit(self, data: bytes) -> None:
        raise _Close()

    def _on_quit_nc(self, data: bytes) -> None:
        # Quit, and a new SMTP session follows on this connection.
        self.macros = mp.Macros()
        self.connect = None
        self.helo = None
        self._new_message()

    def _ignore(self, data: bytes) -> None:
        return None

    _handlers: ClassVar[dict[int, Callable[[MilterConnection, bytes], bytes | None]]] = {
        mp.SMFIC_MACRO: _on_macro,
        mp.SMFIC_CONNECT: _on_connect,
        mp.SMFIC_HELO: _on_helo,
        mp.SMFIC_MAIL: _on_mail,
        mp.SMFIC_RCPT: _on_rcpt,
        mp.SMFIC_DATA: _ignore,
        mp.SMFIC_UNKNOWN: _ignore,
        mp.SMFIC_HEADER: _on_header,
        mp.SMFIC_EOH: _ignore,
        mp.SMFIC_BODY: _on_body,
        mp.SMFIC_ABORT: _on_abort,
        mp.SMFIC_QUIT: _on_quit,
        mp.SMFIC_QUIT_NC: _on_quit_nc,
    }

    # ----------------------------------------------------------------------- end of message

    async def _end_of_message(self, data: bytes) -> list[bytes]:
        if data and not self.refused and self._grow(len(data)):
            self.body += data  # Sendmail may send the last chunk with the EOM
        self.busy = True
        try:
            if self.refused:
                return [mp.CONTINUE]  # refused at a body chunk already
            return await self._act()
        except Exception:  # our bug must be a tempfail for this message, never a crash
            log.exception("milter %s: error at end of message", self.sid)
            return [mp.reply_code(TEMPFAIL_SCAN)]
        finally:
            self.busy = False
            self._new_message()

    def _envelope(self) -> Envelope:
        conn = self.connect
        ip = conn.ip if conn is not None else None
        return Envelope(
            mail_from=self.mail_from or "",
            rcpt_tos=tuple(self.rcpts),
            client_ip=ip or self.macros.get("client_addr"),
            helo=self.helo,
        )

    def _record(self, envelope: Envelope) -> dict[str, Any]:
        name = self.connect.hostname if self.connect is not None else None
        return {
            "session": self.sid,
            "queue_id": self.macros.get("i"),
            "client": envelope.client_ip,
            "client_name": name,
            "helo": envelope.helo,
            "auth": self.macros.get("auth_authen"),
            "daemon": self.macros.get("daemon_name"),
            "from": envelope.mail_from,
            "rcpts": ",".join(envelope.rcpt_tos),
            "size": self.size,
        }

    def _editable(self, packets: list[bytes]) -> list[bytes]:
        """The edit requests this MTA lets us make (it said so at negotiation)."""
        return [p for p in packets if self.actions & _NEEDS.get(p[4], 0) == _NEEDS.get(p[4], 0)]

    def _to(self, target: bytes) -> list[bytes]:
        edits = milter_edits.edits(self.fields, bytes(self.body), target, leadspc=self.leadspc)
        return self._editable(edits)

    async def _act(self) -> list[bytes]:
        """Scan, act, and log one line for the message, whatever happens."""
        t0 = time.monotonic()
        envelope = self._envelope()
        record = self._record(envelope)
        try:
            return await self._decide(envelope, record)
        finally:
            record["ms"] = round((time.monotonic() - t0) * 1000)
            fields = {k: v for k, v in record.items() if v is not None}
            # the SMTP modes' line, structured fields included (--log-format json)
            msglog.info(
                " ".join(f"{k}={log_value(v)}" for k, v in fields.items()), extra={"fields": fields}
            )

    async def _decide(self, envelope: Envelope, record: dict[str, Any]) -> list[bytes]:
        gw = self.gateway
        s = gw.settings
        if self.oversize:
            return self._oversize(record)
        raw = milter_edits.reconstruct(self.fields, bytes(self.body), leadspc=self.leadspc)
        try:
            done = await gw.scan(raw, envelope, record, self._handling(envelope))
        except ScanOverrun as exc:
            return await self._overrun(raw, envelope, exc.reason, record)
        if done is None or done.decision is None:
            if not s.fail_open:
                gw.metrics.messages.labels("error", "tempfail").inc()
                record.update(action="tempfail", reply=TEMPFAIL_SCAN)
                return [mp.reply_code(TEMPFAIL_SCAN)]
            gw.metrics.messages.labels("error", "pass").inc()
            record.update(action="pass", reply="continue")
            error = str(record.get("error", ""))
            clean = await asyncio.to_thread(actions.strip_for, s, raw)
            return [*self._to(actions.prepend(clean, actions.error_fields(error))), mp.CONTINUE]
        # Recipients of several policies share this one answer: the strictest one decides.
        decision = done.decision
        gw.note_decision(decision, record)
        verdict, action = decision.verdict, decision.action
        if action == "reject":
            reply = actions.reject_reply(verdict)
            record["reply"] = reply
            return [mp.reply_code(reply)]
        if action == "quarantine":
            return await self._quarantine(raw, done.marked, envelope, verdict, record)
        assert done.marked is not None  # the worker marks what leaves: pass and tag
        self._note_marked(done.marked, action, record)
        record["reply"] = "continue"
        return [*self._to(done.marked.data), mp.CONTINUE]

    def _handling(self, envelope: Envelope) -> actions.Handling:
        """How the worker finishes the message: as for every front door, without what this
        MTA cannot do (no body replacement: no banner; no header changes: no Subject prefix;
        no added fields: no ARC seal), and quarantined mail marked as tagged mail is where
        the MTA's hold queue delivers it later."""
        mode = self.gateway.settings.milter.quarantine
        return self.gateway.handling(
            envelope.rcpt_tos,
            in_session=True,
            can_replace_body=bool(self.actions & mp.SMFIF_CHGBODY),
            can_change_fields=bool(self.actions & mp.SMFIF_CHGHDRS),
            can_add_fields=bool(self.actions & mp.SMFIF_ADDHDRS),
            mark_held=mode != "store" and bool(self.actions & mp.SMFIF_QUARANTINE),
        )

    @staticmethod
    def _note_marked(marked: actions.Marked, action: str, record: dict[str, Any]) -> None:
        if action == "tag":
            record["banner"] = "yes" if marked.banner else "no"
            if marked.changed:
                record["arc"] = marked.arc

    async def _overrun(
        self, raw: bytes, envelope: Envelope, reason: str, record: dict[str, Any]
    ) -> list[bytes]:
        """`limits.on_overrun`, as the SMTP modes apply it; fail_open does not apply."""
        gw = self.gateway
        on_overrun = gw.note_overrun(reason, record)
        if on_overrun == "tempfail":
            record["reply"] = OVERRUN_REPLY
            return [mp.reply_code(OVERRUN_REPLY)]
        verdict = Verdict.for_overrun(reason, on_overrun)
        marked = await gw.overrun_marked(raw, verdict)
        if on_overrun == "quarantine":
            held = actions.Marked(marked, False, False, "not needed")
            return await self._quarantine(raw, held, envelope, verdict, record)
        record.update(banner="no", reply="continue")
        return [*self._to(marked), mp.CONTINUE]

    def _oversize(self, record: dict[str, Any]) -> list[bytes]:
        gw = self.gateway
        policy = gw.settings.milter.oversize
        gw.metrics.messages.labels("unscanned", policy).inc()
        record.update(verdict="unscanned", action=policy)
        if policy in OVERSIZE_REPLY:
            record["reply"] = OVERSIZE_REPLY[policy]
            return [mp.reply_code(OVERSIZE_REPLY[policy])]
        why = f"not scanned: larger than {gw.settings.data_size_limit} bytes"
        record["reply"] = "continue"
        fields = actions.render_headers(actions.error_fields(why))
        # Only the header section is known: edit it, leave the body alone.
        head = milter_edits.reconstruct(self.fields, b"", leadspc=self.leadspc)
        s = gw.settings
        target = fields + actions.strip_our_headers(
            head, spam=s.spam_headers, authserv_id=s.our_authserv_id
        )
        edits = milter_edits.edits(self.fields, b"", target, leadspc=self.leadspc)
        return [*self._editable(edits), mp.CONTINUE]

    async def _quarantine(
        self,
        raw: bytes,
        marked: actions.Marked | None,
        envelope: Envelope,
        verdict: Verdict,
        record: dict[str, Any],
    ) -> list[bytes]:
        gw = self.gateway
        mode = gw.settings.milter.quarantine
        if mode != "store" and not self.actions & mp.SMFIF_QUARANTINE:
            mode = "store"  # this MTA has no hold queue for us
        if mode in ("store", "both"):
            qid = await gw.store_message(raw, envelope, self.mail_args, verdict, record)
            if qid is None:
                record["reply"] = TEMPFAIL_QUARANTINE
                return [mp.reply_code(TEMPFAIL_QUARANTINE)]
        if mode == "store" or marked is None:
            record["reply"] = "discard"  # the client hears 250; the copy is ours
            return [mp.DISCARD]
        record["reply"] = "hold"
        reason = actions.smtp_text(f"brandgate: {verdict.summary}", 200)
        # Released from the hold queue, it goes to the mailboxes: marked as tagged mail is.
        self._note_marked(marked, "tag", record)
        return [*self._to(marked.data), mp.quarantine(reason), mp.CONTINUE]


# --------------------------------------------------------------------------- the server


class MilterGateway(Service):
    """The running milter: listener and connections, on the shared Service (scan pool,
    quarantine store, metrics, reload and drain)."""

    def __init__(
        self,
        config: Config,
        settings: GatewaySettings,
        *,
        listen: Endpoint | None = None,
        config_path: str | None = None,
        overrides: dict[str, Any] | None = None,
        engine_factory: EngineFactory = default_engine_factory,
    ) -> None:
        super().__init__(
            config,
            settings,
            config_path=config_path,
            overrides=overrides,
            engine_factory=engine_factory,
        )
        self.endpoint = listen or settings.milter.listen
        self.connections: set[MilterConnection] = set()

    async def start(self) -> None:
        s = self.settings
        ep = self.endpoint
        if ep.kind == "unix":  # before any worker is forked: a live socket is not ours
            assert ep.path is not None
            await asyncio.to_thread(_clear_stale_socket, ep.path)
        await self._open()
        if ep.kind == "unix":
            assert ep.path is not None
            self.server = await asyncio.start_unix_server(self._accept, path=str(ep.path))
            os.chmod(ep.path, s.milter.socket_mode)
        else:
            loop = asyncio.get_running_loop()

            def protocol() -> _QuickAck:
                return _QuickAck(asyncio.StreamReader(loop=loop), self._accept, loop=loop)

            self.server = await loop.create_server(
                protocol, host=ep.host, port=ep.port, reuse_address=True, backlog=256
            )
            ep = replace(ep, port=self.port)
        if s.metrics is not None:
            await asyncio.to_thread(self.metrics.serve, *s.metrics)
        log.info(
            "milter on %s, quarantine %s (%s), %d scan workers",
            ep,
            s.quarantine_dir,
            s.milter.quarantine,
            s.worker_count,
        )

    async def reload(self) -> bool:
        ok = await super().reload()
        if ok and self.settings.milter.listen != self.endpoint:
            if self.settings.milter.listen != self._file_listen:
                log.warning("reload: gateway.milter.listen changed; it takes effect on restart")
            milter = replace(self.settings.milter, listen=self.endpoint)
            self.settings = replace(self.settings, milter=milter)
        return ok

    @property
    def _file_listen(self) -> Endpoint:
        return from_config(self.config).milter.listen

    async def stop(self) -> None:
        """Stop listening, close the connections between messages now and the others after
        their message (bounded by drain_timeout), then stop the scan pool."""
        self.draining = True
        if self.server is not None:
            self.server.close()
        for conn in list(self.connections):
            if not conn.in_message:
                conn.close()
        await self._drain(self.connections, "milter connections", MilterConnection.close)
        await self._close()
        if self.server is not None and self.endpoint.path is not None:
            with contextlib.suppress(OSError):  # our socket (a live one is never taken over)
                self.endpoint.path.unlink()
        log.info("stopped")

    # ----------------------------------------------------------------------- connections

    def _refusal(self, writer: asyncio.StreamWriter) -> str | None:
        if self.draining:
            return "draining"
        if self.endpoint.kind == "inet" and not self._allowed(writer.get_extra_info("peername")):
            return "network"
        if len(self.connections) >= self.settings.max_sessions:
            return "limit"
        return None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        why = self._refusal(writer)
        if why is not None:
            log.warning("refused milter connection from %s: %s", _peer(writer), why)
            self.metrics.sessions_refused.labels(why).inc()
            writer.close()
            return
        conn = MilterConnection(self, reader, writer)
        self.connections.add(conn)
        self.metrics.sessions_active.set(len(self.connections))
        try:
            await conn.run()
        finally:
            self.connections.discard(conn)
            self.metrics.sessions_active.set(len(self.connections))

    async def store_message(
        self,
        raw: bytes,
        envelope: Envelope,
        mail_args: tuple[str, ...],
        verdict: Verdict,
        record: dict[str, Any],
    ) -> str | None:
        """Into brandgate's quarantine, durably, as the SMTP modes store it; None (logged)
        when the store failed. The client facts go in as the XFORWARD attributes that
        `brandgate quarantine release` hands on."""
        xforward = {
            "ADDR": envelope.client_ip or "",
            "NAME": record.get("client_name") or "",
            "HELO": envelope.helo or "",
            "IDENT": record.get("queue_id") or "",
        }
        client = {
            "addr": envelope.client_ip,
            "helo": envelope.helo,
            "xforward": {k: v for k, v in xforward.items() if v},
            "session": record["session"],
            "queue_id": record.get("queue_id"),
        }
        return await self.quarantine(raw, envelope, mail_args, client, verdict, record)


_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux


class _QuickAck(asyncio.StreamReaderProtocol):
    """Acknowledge every segment from the MTA at once.

    The MTA writes a packet larger than its buffer in two writes and, with Nagle's algorithm,
    sends the second only when the first is acknowledged; Linux delays that ACK by up to
    40 ms while it waits for more data that is not coming. Measured on Postfix: 50 ms added to
    every message, 4 of them ours. TCP_QUICKACK lasts until the next receive, so it is set
    again each time."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._sock = transport.get_extra_info("socket")
        if self._sock is not None:
            # our replies are small and each one ends a round trip: no Nagle on our side
            with contextlib.suppress(OSError):
                self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if _TCP_QUICKACK is not None and self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
        super().data_received(data)


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else "unix socket"


def _clear_stale_socket(path: Path) -> None:
    """Remove a socket left by a milter that died; refuse to take over a live one."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except OSError:
        path.unlink()  # nobody answers: stale
        return
    finally:
        probe.close()
    raise OSError(f"{path}: another milter is listening there")


def build_milter(
    config_path: str | None,
    overrides: dict[str, Any],
    *,
    listen: Endpoint | None = None,
    engine_factory: EngineFactory = default_engine_factory,
) -> MilterGateway:
    """Load config, validate [gateway] and [gateway.milter] with the loader's own checks (every
    error in one report), apply flags. Raises ConfigError."""
    from config.loader import load_config

    config = load_config(config_path, extra=[check_gateway])
    settings = with_overrides(from_config(config), **overrides)
    return MilterGateway(
        config,
        settings,
        listen=listen,
        config_path=config_path,
        overrides=overrides,
        engine_factory=engine_factory,
    )


__all__ = ["MilterConnection", "MilterGateway", "build_milter"]
