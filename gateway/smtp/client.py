"""A small SMTP client that sends what it is given, byte for byte: the relay's side of the wire.

Why not aiosmtplib or smtplib: both rewrite a message's line endings (a bare CR becomes CRLF,
which turns a header hidden behind a bare CR into a real one downstream), and aiosmtplib
refuses envelope bytes that Postfix accepted in front of us. A gateway that promises "relayed
byte for byte" cannot use either. This client does only what the relay needs (EHLO/HELO, one
command at a time, DATA, QUIT), with a timeout on every step and bounded replies.

On the wire: an envelope address goes out as the bytes the client sent (8-bit included);
CR, LF and NUL never go out inside a command. DATA is dot-stuffed after every line break,
bare CR is kept, a bare LF goes out as CRLF (as Postfix itself stores it), and the message
always ends with CRLF . CRLF: no input can end it early at the next hop.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

MAX_REPLY_LINE = 8192
MAX_REPLY_LINES = 200
_FORBIDDEN = re.compile(rb"[\r\n\x00]")


class ClientError(Exception):
    """The exchange with the next hop failed; nothing of it can be trusted."""


class ClientTimeout(ClientError):
    pass


class ClientLost(ClientError):
    """Could not connect, or the connection was closed or reset."""


class BadReply(ClientError):
    """The next hop answered something that is not an SMTP reply."""


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    text: str  # the lines' texts (without codes), joined with "\n"


STUFF_CHUNK = 1 << 20  # bytes of message stuffed between two yields to the event loop


def stuffed_chunks(message: bytes, chunk: int = STUFF_CHUNK) -> Iterator[bytes]:
    """The DATA payload for a message, terminator included (see the module docstring), in
    pieces of about `chunk` bytes of input, each cut right after a line feed, so that every
    piece starts a line and a CR LF is never split. bytes.replace, not a regex: one regex
    match object per line made a message of short lines cost ~50 bytes of memory per byte."""
    start, size, last = 0, len(message), b""
    while start < size:
        end = message.find(b"\n", min(start + chunk, size) - 1)
        end = size if end < 0 else end + 1
        piece = message[start:end].replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        if piece.startswith(b"."):
            piece = b"." + piece
        piece = piece.replace(b"\r\n.", b"\r\n..")
        last = piece[-2:]
        start = end
        yield piece
    yield b".\r\n" if last == b"\r\n" or size == 0 else b"\r\n.\r\n"


def dot_stuff(message: bytes) -> bytes:
    """The whole DATA payload at once (stuffed_chunks joined)."""
    return b"".join(stuffed_chunks(message))


class SmtpClient:
    def __init__(self, host: str, port: int, *, timeout: float, local_hostname: str) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.local_hostname = local_hostname
        self.exts: dict[str, str] = {}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @property
    def is_connected(self) -> bool:
        return (
            self._writer is not None
            and self._reader is not None
            and not self._writer.is_closing()
            and not self._reader.at_eof()
        )

    async def _timed(self, step: Awaitable[T], timeout: float | None = None) -> T:
        try:
            return await asyncio.wait_for(step, self.timeout if timeout is None else timeout)
        except TimeoutError as exc:
            self.close()
            raise ClientTimeout("next hop timed out") from exc
        except (ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
            self.close()
            raise ClientLost(f"{type(exc).__name__}") from exc

    async def connect(self) -> Reply:
        """Connect and read the greeting (which the caller judges: 220, or an refusal)."""
        self._reader, self._writer = await self._timed(
            asyncio.open_connection(self.host, self.port, limit=MAX_REPLY_LINE)
        )
        return await self.reply()

    async def reply(self, timeout: float | None = None) -> Reply:
        lines: list[str] = []
        code = 0
        while True:
            if self._reader is None:
                raise ClientLost("not connected")
            try:
                line = await self._timed(self._reader.readline(), timeout)
            except ValueError as exc:  # a line over the reader's limit
                self.close()
                raise BadReply("reply line too long") from exc
            if not line.endswith(b"\n"):
                self.close()
                raise ClientLost("connection closed")
            if len(line) < 4 or not line[:3].isdigit() or line[3:4] not in (b" ", b"-", b"\r"):
                self.close()
                raise BadReply("malformed reply line")
            code = int(line[:3])
            lines.append(line[4:].strip().decode("utf-8", "replace"))
            if line[3:4] != b"-":
                return Reply(code, "\n".join(lines))
            if len(lines) >= MAX_REPLY_LINES:
                self.close()
                raise BadReply("reply too long")

    async def send(self, data: bytes, timeout: float | None = None) -> None:
        if self._writer is None or self._writer.is_closing():
            raise ClientLost("not connected")
        self._writer.write(data)
        await self._timed(self._writer.drain(), timeout)

    async def command(self, *words: bytes, timeout: float | None = None) -> Reply:
        line = b" ".join(words)
        if _FORBIDDEN.search(line):
            # Never sent: it would end the command early (or smuggle another one).
            raise ValueError("CR, LF or NUL in an SMTP command")
        await self.send(line + b"\r\n", timeout)
        return await self.reply(timeout)

    async def ehlo(self) -> Reply:
        """EHLO (HELO when refused); remembers the extensions announced."""
        name = self.local_hostname.encode("ascii", "replace")
        reply = await self.command(b"EHLO", name)
        if reply.code == 250:
            self.exts = {}
            for line in reply.text.split("\n")[1:]:
                keyword, _, params = line.partition(" ")
                self.exts[keyword.lower()] = params
            return reply
        self.exts = {}
        return await self.command(b"HELO", name)

    async def data(self, message: bytes) -> Reply:
        reply = await self.command(b"DATA")
        if reply.code != 354:
            return reply
        for piece in stuffed_chunks(message):
            await self.send(piece)  # drains: other sessions run between the pieces
        return await self.reply()

    async def quit(self, timeout: float = 5.0) -> None:
        """QUIT politely when possible; closed afterwards in any case."""
        try:
            if self.is_connected:
                await self.command(b"QUIT", timeout=timeout)
        except (ClientError, ValueError):
            pass
        finally:
            self.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._writer = None
        self._reader = None
