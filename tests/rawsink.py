"""A next hop that records the wire exactly: command lines as bytes, DATA as bytes (unstuffed),
open connections counted; and that fails on demand, by the envelope sender's local part:

    mail-451@  -> 451 to MAIL          rcpt-550@ -> 550 to every RCPT
    data-554@  -> 554 after the data   drop@     -> closes the connection at MAIL
    slow@      -> waits `slow` seconds before the DATA reply

Unlike aiosmtpd (which unquotes and re-quotes addresses), nothing here reinterprets a byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass
class Wire:
    mail: bytes  # the MAIL command line as received, without CRLF
    rcpts: list[bytes]
    data: bytes


@dataclass
class RawSink:
    slow: float = 0.0
    xforward: bool = True
    messages: list[Wire] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)
    open: int = 0
    opened: int = 0
    port: int = 0

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        self.opened += 1
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def say(line: str) -> None:
            writer.write(line.encode() + b"\r\n")

        say("220 rawsink.test.invalid ESMTP")
        mail = b""
        rcpts: list[bytes] = []
        while line := await reader.readuntil(b"\n"):
            line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
            self.lines.append(line)
            verb = line[:4].upper()
            if verb == b"EHLO":
                xf = "250-XFORWARD NAME ADDR PROTO HELO IDENT SOURCE\r\n" if self.xforward else ""
                writer.write(
                    f"250-rawsink\r\n250-SIZE 100000000\r\n250-8BITMIME\r\n{xf}"
                    "250 SMTPUTF8\r\n".encode()
                )
            elif verb == b"MAIL":
                if b"drop@" in line:
                    return
                if b"mail-451@" in line:
                    say("451 4.3.0 try later")
                    continue
                mail, rcpts = line, []
                say("250 2.1.0 Ok")
            elif verb == b"RCPT":
                if b"rcpt-550@" in mail:
                    say("550 5.1.1 no such user")
                    continue
                rcpts.append(line)
                say("250 2.1.5 Ok")
            elif verb == b"DATA":
                say("354 go ahead")
                data = await self._data(reader)
                if self.slow and b"slow@" in mail:
                    await asyncio.sleep(self.slow)
                if b"data-554@" in mail:
                    say("554 5.7.1 refused")
                else:
                    self.messages.append(Wire(mail, rcpts, data))
                    say(f"250 2.0.0 Ok: queued as RAW{len(self.messages)}")
                mail, rcpts = b"", []
            elif verb == b"QUIT":
                say("221 2.0.0 Bye")
                await writer.drain()
                return
            else:  # RSET, XFORWARD, NOOP
                mail, rcpts = (b"", []) if verb == b"RSET" else (mail, rcpts)
                say("250 2.0.0 Ok")
            await writer.drain()

    @staticmethod
    async def _data(reader: asyncio.StreamReader) -> bytes:
        """Until CRLF . CRLF, with one leading dot of each line removed."""
        out = bytearray()
        at_line_start = True
        while True:
            line = await reader.readuntil(b"\r\n")
            if line == b".\r\n" and at_line_start:
                return bytes(out)
            if at_line_start and line.startswith(b"."):
                line = line[1:]
            out += line
            at_line_start = True


@contextlib.contextmanager
def raw_sink(**kwargs: object) -> Iterator[RawSink]:
    sink = RawSink(**kwargs)  # type: ignore[arg-type]
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, asyncio.base_events.Server] = {}

    async def start() -> None:
        server = await asyncio.start_server(sink.session, "127.0.0.1", 0, limit=1 << 26)
        box["server"] = server
        sink.port = server.sockets[0].getsockname()[1]
        ready.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    ready.wait(10)
    try:
        yield sink
    finally:

        async def stop() -> None:
            box["server"].close()
            await box["server"].wait_closed()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
