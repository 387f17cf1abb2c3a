"""Hand a message to the next hop with its envelope, and say what the next hop said.

The reply is what the gateway answers to DATA, so it is never 250 unless the next hop's was:
a 4xx or 5xx from the next hop is passed back as it came, and a next hop that is down, slow
or gone mid-transfer gives 451 4.4.x so that the MTA in front keeps the message and retries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.actions import smtp_text
from gateway.smtp.client import BadReply, ClientError, ClientLost, ClientTimeout, Reply, SmtpClient

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


def _passed_back(resp: Reply) -> RelayResult:
    code = resp.code
    if not 200 <= code < 600:
        return RelayResult(451, f"4.4.0 Next hop gave an invalid reply ({code})")
    status = {2: "2.0.0", 4: "4.0.0", 5: "5.0.0"}.get(code // 100, "4.0.0")
    return _reply(code, resp.text, status)


# Unexpected errors (a bug, an odd byte) are never a 5xx, and their text never reaches the
# client: the MTA in front keeps the message and retries.
TEMPFAIL = RelayResult(451, "4.3.0 Temporary failure, try again later")


def envelope_bytes(address: str) -> bytes:
    """An envelope address as it came on the wire (aiosmtpd decodes it with utf-8 and
    surrogateescape, so this gives back the client's very bytes, 8-bit ones included)."""
    return address.encode("utf-8", "surrogateescape")


def _xforward_commands(attrs: Mapping[str, str], announced: set[str]) -> list[bytes]:
    items = [
        f"{k}={v}".encode("ascii", "replace")
        for k, v in attrs.items()
        if k in announced and _xforward_value_ok(v)
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
    """One message on a connection of its own, closed afterwards."""
    client = SmtpClient(host, port, timeout=timeout, local_hostname=local_hostname)
    try:
        opened = await _open(client)
        if isinstance(opened, RelayResult):
            return opened
        result, _clean = await _guarded(client, req, _State(None))
        return result
    finally:
        await client.quit()


async def _open(client: SmtpClient) -> RelayResult | None:
    """Connect and read the greeting: None when the next hop is ready (220), else the reply
    the message gets. The connection is closed whenever it is not ready."""
    try:
        greeting = await client.connect()
    except (ClientError, OSError, ValueError) as exc:
        client.close()
        return _unavailable(client.host, client.port, exc)
    if greeting.code == 220:
        return None
    client.close()
    if 400 <= greeting.code < 600:
        return _passed_back(greeting)
    return RelayResult(451, f"4.4.0 Next hop gave an invalid greeting ({greeting.code})")


def _unavailable(host: str, port: int, exc: BaseException) -> RelayResult:
    return RelayResult(451, f"4.4.1 Next hop {host}:{port} unavailable ({type(exc).__name__})")


class _Stale(Exception):
    """A kept connection that the next hop closed while it was idle: nothing was sent."""


async def _guarded(
    client: SmtpClient, req: RelayRequest, state: _State
) -> tuple[RelayResult, bool]:
    """(result, whether the connection is between transactions and may carry another).
    Raises _Stale when a kept connection turns out closed before the next hop answered.
    Whatever else goes wrong, the connection is closed here, never left open."""
    try:
        result = await _transaction(client, req, state)
    except _Stale:
        client.close()
        raise
    except ClientTimeout:
        client.close()
        return RelayResult(451, "4.4.2 Next hop timed out"), False
    except (ClientLost, BadReply) as exc:
        client.close()
        if state.kept is not None and not state.answered:
            raise _Stale from exc
        return RelayResult(451, f"4.4.2 Next hop connection lost ({exc})"), False
    except Exception:
        client.close()
        log.exception("relay failed")
        return TEMPFAIL, False
    except BaseException:  # cancelled: the session is gone, so is this transaction
        client.close()
        raise
    if result.code == 421:
        client.close()
    return result, client.is_connected


@dataclass(slots=True)
class _Kept:
    """An open connection between transactions, with what its EHLO and XFORWARD said."""

    client: SmtpClient
    exts: dict[str, str]
    xforward_names: frozenset[str]
    since: float


@dataclass(slots=True)
class _State:
    kept: _Kept | None
    exts: dict[str, str] | None = None
    xforward_names: frozenset[str] = frozenset()
    answered: bool = False  # the next hop has answered a command of this transaction

    def __post_init__(self) -> None:
        if self.kept is not None:
            self.xforward_names = self.kept.xforward_names


class RelayPool:
    """Next-hop connections kept open between messages, so that a message costs MAIL, RCPT
    and DATA instead of also a connect, EHLO and QUIT. A connection is reused only between
    complete transactions, by one message at a time; if the next hop closed it while it was
    idle (nothing of the new message was accepted yet), the message goes on a fresh one.
    XFORWARD attributes may outlive a transaction at the next hop, so a connection is reused
    only by a message that sends (and so overrides) every attribute the last one sent."""

    def __init__(self, max_idle: int = 8, idle_timeout: float = 20.0) -> None:
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self._idle: dict[tuple[str, int, str], list[_Kept]] = {}
        self._expiry: asyncio.TimerHandle | None = None
        self._closing: set[asyncio.Task[None]] = set()

    async def relay(
        self, req: RelayRequest, host: str, port: int, *, timeout: float, local_hostname: str
    ) -> RelayResult:
        key = (host, port, local_hostname)
        names = _xforward_names(req)
        kept = self._take(key, names)
        while kept is not None:
            kept.client.timeout = timeout
            state = _State(kept)
            try:
                result, clean = await _guarded(kept.client, req, state)
            except _Stale:
                self._close(kept.client)
                kept = self._take(key, names)
                continue
            self._give_back(key, kept.client, state, clean)
            return result
        client = SmtpClient(host, port, timeout=timeout, local_hostname=local_hostname)
        opened = await _open(client)
        if opened is not None:
            return opened
        state = _State(None)
        try:
            result, clean = await _guarded(client, req, state)
        except BaseException:
            client.close()
            raise
        self._give_back(key, client, state, clean)
        return result

    def _take(self, key: tuple[str, int, str], names: frozenset[str]) -> _Kept | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            kept = idle.pop()
            usable = kept.client.is_connected and now - kept.since < self.idle_timeout
            if usable and kept.xforward_names <= names:
                return kept
            self._close(kept.client)
        return None

    def _give_back(
        self, key: tuple[str, int, str], client: SmtpClient, state: _State, clean: bool
    ) -> None:
        idle = self._idle.setdefault(key, [])
        if not clean or state.exts is None or len(idle) >= self.max_idle:
            self._close(client)
            return
        idle.append(_Kept(client, state.exts, state.xforward_names, time.monotonic()))
        if self._expiry is None:
            loop = asyncio.get_running_loop()
            self._expiry = loop.call_later(self.idle_timeout, self._expire)

    def _expire(self) -> None:
        self._expiry = None
        now = time.monotonic()
        for idle in self._idle.values():
            for kept in [k for k in idle if now - k.since >= self.idle_timeout]:
                idle.remove(kept)
                self._close(kept.client)
        if any(self._idle.values()):
            loop = asyncio.get_running_loop()
            self._expiry = loop.call_later(self.idle_timeout / 2, self._expire)

    def _close(self, client: SmtpClient) -> None:
        """QUIT politely in the background (the next hop logs a clean disconnect)."""
        task = asyncio.get_running_loop().create_task(client.quit())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        for idle in self._idle.values():
            for kept in idle:
                self._close(kept.client)
        self._idle.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


def _xforward_names(req: RelayRequest) -> frozenset[str]:
    """The attributes _xforward_commands would send (when the next hop announces them)."""
    if not req.xforward:
        return frozenset()
    return frozenset(k for k, v in req.xforward.items() if _xforward_value_ok(v))


def _xforward_value_ok(value: str) -> bool:
    return bool(value) and all(33 <= ord(c) < 127 and c != "=" for c in value)


async def _transaction(client: SmtpClient, req: RelayRequest, state: _State) -> RelayResult:
    if state.kept is not None:
        exts = state.kept.exts
    else:
        hello = await client.ehlo()
        if hello.code != 250:
            return _passed_back(hello)
        exts = dict(client.exts)
    state.exts = exts
    if req.xforward and "xforward" in exts:
        announced = set(exts["xforward"].upper().split())
        # What the next hop may hold from now on: also what a refused command left unsaid.
        state.xforward_names |= _xforward_names(req) & announced
        for line in _xforward_commands(req.xforward, announced):
            resp = await client.command(b"XFORWARD", line)
            _answered(state, resp)
            if resp.code != 250:
                log.warning("next hop refused XFORWARD: %s %s", resp.code, resp.text)
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
    # The envelope goes out as it came: 8-bit bytes without SMTPUTF8 are the client's (and
    # the MTA in front accepted them); re-encoding them could only refuse or change them.
    resp = await client.command(b"MAIL", b"FROM:<" + envelope_bytes(req.mail_from) + b">", *options)
    _answered(state, resp)
    if resp.code != 250:
        return _passed_back(resp)
    accepted = 0
    refusals: list[Reply] = []
    for rcpt in req.rcpts:
        resp = await client.command(b"RCPT", b"TO:<" + envelope_bytes(rcpt) + b">")
        if resp.code in (250, 251):
            accepted += 1
        else:
            refusals.append(resp)
    if refusals:
        await client.command(b"RSET")
        if accepted == 0 and all(r.code >= 500 for r in refusals):
            return _passed_back(refusals[0])
        # One DATA answer covers every recipient: refuse for all, let the MTA retry.
        first = refusals[0]
        return RelayResult(
            451, "4.4.3 " + smtp_text(f"Next hop refused a recipient: {first.code} {first.text}")
        )
    resp = await client.data(req.data)
    if resp.code != 250:
        await client.command(b"RSET")  # between transactions again, whatever DATA left
    return _passed_back(resp)


def _answered(state: _State, resp: Reply) -> None:
    """Note the next hop's first answer in this transaction. A 421 as the first answer on a
    kept connection is what the next hop said when it closed it while idle: stale."""
    if resp.code == 421 and state.kept is not None and not state.answered:
        raise _Stale
    state.answered = True
