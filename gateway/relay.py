"""Hand a message to the next hop with its envelope, and say what the next hop said.

The reply is what the gateway answers to DATA, so it is never 250 unless the next hop's was:
a 4xx or 5xx from the next hop is passed back as it came, and a next hop that is down, slow
or gone mid-transfer gives 451 4.4.x so that the MTA in front keeps the message and retries.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import aiosmtplib

from gateway.actions import smtp_text

log = logging.getLogger("brandgate.relay")

# XFORWARD attributes Postfix knows; a line must stay under Postfix's 512 byte limit.
XFORWARD_ATTRS = ("NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE")
_XFORWARD_LINE = 400


@dataclass(frozen=True, slots=True)
class RelayRequest:
    mail_from: str  # "" for the null sender
    rcpts: tuple[str, ...]
    data: bytes
    smtputf8: bool = False
    eight_bit: bool = False  # client said BODY=8BITMIME
    xforward: Mapping[str, str] | None = None  # attribute -> xtext value as received


@dataclass(frozen=True, slots=True)
class RelayResult:
    code: int
    text: str  # enhanced status code and text, one line

    @property
    def ok(self) -> bool:
        return self.code == 250

    @property
    def reply(self) -> str:
        return f"{self.code} {self.text}"

    @property
    def kind(self) -> str:
        if self.ok:
            return "ok"
        return "temp" if 400 <= self.code < 500 else "perm"


def _reply(code: int, message: str, default_status: str) -> RelayResult:
    text = smtp_text(message.replace("\n", " "), 400)
    if not (text[:1].isdigit() and text[1:2] == "."):
        text = f"{default_status} {text}".strip()
    return RelayResult(code, text)


def _passed_back(resp: aiosmtplib.SMTPResponse) -> RelayResult:
    code = resp.code
    if not 200 <= code < 600:
        return RelayResult(451, f"4.4.0 Next hop gave an invalid reply ({code})")
    status = {2: "2.0.0", 4: "4.0.0", 5: "5.0.0"}.get(code // 100, "4.0.0")
    return _reply(code, resp.message, status)


def _xforward_commands(attrs: Mapping[str, str], announced: set[str]) -> list[bytes]:
    items = [
        f"{k}={v}".encode("ascii", "replace")
        for k, v in attrs.items()
        if k in announced and v and all(33 <= ord(c) < 127 and c != "=" for c in v)
    ]
    lines: list[bytes] = []
    current: list[bytes] = []
    for item in items:
        if current and sum(len(x) + 1 for x in current) + len(item) > _XFORWARD_LINE:
            lines.append(b" ".join(current))
            current = []
        current.append(item)
    if current:
        lines.append(b" ".join(current))
    return lines


async def relay(
    req: RelayRequest, host: str, port: int, *, timeout: float, local_hostname: str
) -> RelayResult:
    client = aiosmtplib.SMTP(
        hostname=host,
        port=port,
        timeout=timeout,
        local_hostname=local_hostname,
        start_tls=False,
        use_tls=False,
    )
    try:
        try:
            await client.connect()
        except (aiosmtplib.SMTPException, OSError) as exc:
            return RelayResult(
                451, f"4.4.1 Next hop {host}:{port} unavailable ({type(exc).__name__})"
            )
        try:
            return await _transaction(client, req)
        except aiosmtplib.SMTPTimeoutError:
            return RelayResult(451, "4.4.2 Next hop timed out")
        except (aiosmtplib.SMTPServerDisconnected, ConnectionError, OSError) as exc:
            return RelayResult(451, f"4.4.2 Next hop connection lost ({type(exc).__name__})")
        except aiosmtplib.SMTPResponseException as exc:
            return _passed_back(aiosmtplib.SMTPResponse(exc.code, exc.message))
        except aiosmtplib.SMTPException as exc:
            return RelayResult(451, f"4.4.0 Relay failed ({type(exc).__name__})")
    finally:
        if client.is_connected:
            try:
                await client.quit(timeout=5.0)
            except Exception:  # the message is already answered for; a rude hangup is fine
                client.close()


async def _transaction(client: aiosmtplib.SMTP, req: RelayRequest) -> RelayResult:
    try:
        await client.ehlo()
        exts = dict(client.esmtp_extensions)
    except aiosmtplib.SMTPHeloError:
        await client.helo()
        exts = {}
    if req.xforward and "xforward" in exts:
        announced = set(exts["xforward"].upper().split())
        for line in _xforward_commands(req.xforward, announced):
            resp = await client.execute_command(b"XFORWARD", line)
            if resp.code != 250:
                log.warning("next hop refused XFORWARD: %s %s", resp.code, resp.message)
                break
    options: list[bytes] = []
    if "size" in exts:
        options.append(f"SIZE={len(req.data)}".encode())
    if req.eight_bit and "8bitmime" in exts:
        options.append(b"BODY=8BITMIME")
    if req.smtputf8:
        if "smtputf8" not in exts:
            return RelayResult(554, "5.6.7 Next hop does not support SMTPUTF8")
        options.append(b"SMTPUTF8")
    encoding = "utf-8" if req.smtputf8 else "ascii"
    resp = await client.execute_command(
        b"MAIL", b"FROM:<" + req.mail_from.encode(encoding) + b">", *options
    )
    if resp.code != 250:
        return _passed_back(resp)
    accepted = 0
    refusals: list[aiosmtplib.SMTPResponse] = []
    for rcpt in req.rcpts:
        resp = await client.execute_command(b"RCPT", b"TO:<" + rcpt.encode(encoding) + b">")
        if resp.code in (250, 251):
            accepted += 1
        else:
            refusals.append(resp)
    if refusals:
        await client.execute_command(b"RSET")
        if accepted == 0 and all(r.code >= 500 for r in refusals):
            return _passed_back(refusals[0])
        # One DATA answer covers every recipient: refuse for all, let the MTA retry.
        first = refusals[0]
        return RelayResult(
            451, "4.4.3 " + smtp_text(f"Next hop refused a recipient: {first.code} {first.message}")
        )
    resp = await client.data(req.data)
    return _passed_back(resp)
