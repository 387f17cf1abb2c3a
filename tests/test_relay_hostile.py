"""The relay and the session against hostile clients and failing next hops (issue 11).

Envelope bytes are relayed as they came (8-bit without SMTPUTF8 included) or refused with a
4xx, never a 5xx of ours; a bare CR stays a bare CR; any unexpected error is 451 4.3.0 with
no exception text; no failure leaves a connection to the next hop open; a client cannot buffer
more than a command line's limit or keep a session alive with junk.
"""

from __future__ import annotations

import logging
import re
import socket
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.smtp import relay
from gateway.smtp.server import COMMAND_LINE_LIMIT, JUNK_COMMAND_LIMIT
from tests.rawsink import raw_sink
from tests.test_gateway_support import message, running_gateway

pytestmark = pytest.mark.timeout(120)
# Passed mail as it came, without our header fields: what reaches the next hop is then
# exactly what the client sent, and any change the relay made would show.
BYTE_FOR_BYTE = "pass_headers = false"


class Client:
    """A raw SMTP client: sends exactly the bytes given, returns each reply as bytes."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buf = b""
        self.greeting = self.reply()

    def reply(self) -> bytes:
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return b"".join(lines) or b"(closed)"
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line + b"\r\n")
            if line[3:4] != b"-":
                return b"".join(lines)

    def cmd(self, line: bytes) -> bytes:
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def transaction(
        self, mail: bytes, rcpts: list[bytes], data: bytes, params: bytes = b""
    ) -> bytes:
        got = self.cmd(b"MAIL FROM:<" + mail + b">" + params)
        if not got.startswith(b"250"):
            return got
        for rcpt in rcpts:
            got = self.cmd(b"RCPT TO:<" + rcpt + b">")
            if not got.startswith(b"250"):
                self.cmd(b"RSET")
                return got
        assert self.cmd(b"DATA").startswith(b"354")
        stuffed = data.replace(b"\r\n.", b"\r\n..")
        return self.cmd(stuffed + (b"" if stuffed.endswith(b"\r\n") else b"\r\n") + b".")

    def close(self) -> None:
        self.sock.close()


def session(port: int) -> Client:
    c = Client(port)
    assert c.cmd(b"EHLO client.test.invalid").startswith(b"250")
    return c


ENVELOPES = [
    pytest.param(b"j\xc3\xb6rg@sender.example", b"", id="utf-8 without SMTPUTF8"),
    pytest.param(b"a\xff\xfe@sender.example", b"", id="invalid utf-8"),
    pytest.param(b"a\x01b@sender.example", b"", id="control character"),
    pytest.param(b"a\x1b[31m@sender.example", b"", id="terminal escape"),
    pytest.param(b'"a b>c"@sender.example', b"", id="quoted local part"),
    pytest.param("jörg@bücher.example".encode(), b" SMTPUTF8", id="SMTPUTF8"),
]


@pytest.mark.parametrize(("sender", "params"), ENVELOPES)
def test_envelope_bytes_are_relayed_as_they_came(
    tmp_path: Path, sender: bytes, params: bytes
) -> None:
    rcpt = b"r\xc3\xa9cipient@rcpt.example"
    with raw_sink() as hop, running_gateway(tmp_path, hop.port, gateway=BYTE_FOR_BYTE) as gw:
        c = session(gw.port)
        reply = c.transaction(sender, [rcpt, b"bob@rcpt.example"], message(), params)
        c.close()
    assert reply.startswith(b"250 2.0.0 Ok: queued as RAW1"), reply
    wire = hop.messages[0]
    assert wire.mail.startswith(b"MAIL FROM:<" + sender + b">")
    assert (b" SMTPUTF8" in wire.mail) == bool(params)
    assert wire.rcpts == [b"RCPT TO:<" + rcpt + b">", b"RCPT TO:<bob@rcpt.example>"]
    assert wire.data == message()


@pytest.mark.parametrize("bad", [b"a\rb@sender.example", b"a\x00b@sender.example"])
def test_cr_or_nul_in_an_address_is_a_4xx_never_relayed(tmp_path: Path, bad: bytes) -> None:
    with raw_sink() as hop, running_gateway(tmp_path, hop.port, gateway=BYTE_FOR_BYTE) as gw:
        c = session(gw.port)
        assert c.cmd(b"MAIL FROM:<" + bad + b">").startswith(b"451 4.1.7")
        assert c.cmd(b"MAIL FROM:<a@sender.example>").startswith(b"250")
        assert c.cmd(b"RCPT TO:<" + bad + b">").startswith(b"451 4.1.3")
        c.close()
    assert hop.messages == [] and not any(bad in line for line in hop.lines)


def test_bare_cr_is_kept_and_nothing_is_smuggled(tmp_path: Path) -> None:
    data = (
        b"From: a@sender.example\r\nSubject: hi\rX-Hidden: behind a bare CR\r\n\r\n"
        b"line\rwith bare CRs\r\n.leading dot\r\n..two dots\r\nend\r"
    )
    with raw_sink() as hop, running_gateway(tmp_path, hop.port, gateway=BYTE_FOR_BYTE) as gw:
        c = session(gw.port)
        assert c.transaction(b"a@sender.example", [b"b@rcpt.example"], data).startswith(b"250")
        c.close()
    got = hop.messages[0].data
    assert got == data + b"\r\n"  # the only change: the message ends with a line break
    assert b"\r\nX-Hidden:" not in got


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=200).map(lambda b: bytes(b"\r\n.a"[x % 4] for x in b)), st.integers(1, 64)
)
def test_dot_stuffing_in_pieces_equals_the_whole_message_stuffed_at_once(
    message: bytes, chunk: int
) -> None:
    """The relay stuffs a message piece by piece (the event loop runs between pieces); the
    pieces, cut anywhere, join into exactly what the one-pass definition gives."""
    from gateway.smtp.client import stuffed_chunks

    data = re.sub(rb"\r?\n", b"\r\n", message)
    data = (b"." + data if data.startswith(b".") else data).replace(b"\r\n.", b"\r\n..")
    want = (data if not data or data.endswith(b"\r\n") else data + b"\r\n") + b".\r\n"
    assert b"".join(stuffed_chunks(message, chunk)) == want


def test_dot_stuffing_keeps_bare_cr_and_ends_every_message_once() -> None:
    from gateway.smtp.client import dot_stuff

    assert dot_stuff(b".a\r\n.b\nc\r.d") == b"..a\r\n..b\r\nc\r.d\r\n.\r\n"
    assert dot_stuff(b"x\r\n.\r\ny") == b"x\r\n..\r\ny\r\n.\r\n"
    assert dot_stuff(b"\n.\n") == b"\r\n..\r\n.\r\n"


FAILURES = [
    (b"mail-451@sender.example", b"451 "),
    (b"rcpt-550@sender.example", b"550 5.1.1"),
    (b"data-554@sender.example", b"554 5.7.1"),
    (b"drop@sender.example", b"451 4.4.2"),
    (b"bug@sender.example", b"451 4.3.0 Temporary failure"),
]


def test_hundred_relay_failures_leave_no_connection_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = relay._transaction

    async def buggy(client: relay.SmtpClient, req: relay.RelayRequest, state: object) -> object:
        if req.mail_from.startswith("bug@"):
            raise ValueError("secret internal detail")
        return await real(client, req, state)  # type: ignore[arg-type]

    monkeypatch.setattr(relay, "_transaction", buggy)
    replies = []
    with raw_sink() as hop, running_gateway(tmp_path, hop.port, gateway=BYTE_FOR_BYTE) as gw:
        c = session(gw.port)
        for i in range(100):
            sender, _want = FAILURES[i % len(FAILURES)]
            replies.append(c.transaction(sender, [b"b@rcpt.example"], message()))
        ok = c.transaction(b"a@sender.example", [b"b@rcpt.example"], message())
        c.close()
        open_after = hop.open
        opened = hop.opened
    for i, reply in enumerate(replies):
        assert reply.startswith(FAILURES[i % len(FAILURES)][1]), (i, reply)
        assert b"secret" not in reply and b"Error" not in reply
    assert ok.startswith(b"250")
    # At most the one connection the pool keeps for the next message: nothing leaked.
    assert open_after <= 1, (open_after, opened)


def test_unexpected_error_anywhere_is_451_without_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.smtp.server import Gateway

    async def broken(*args: object, **kwargs: object) -> str:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(Gateway, "_relay", broken)
    with raw_sink() as hop, running_gateway(tmp_path, hop.port, gateway=BYTE_FOR_BYTE) as gw:
        c = session(gw.port)
        reply = c.transaction(b"a@sender.example", [b"b@rcpt.example"], message())
        # the session is still usable: the transaction was reset
        again = c.cmd(b"MAIL FROM:<a@sender.example>")
        c.close()
    assert reply == b"451 4.3.0 Temporary failure, try again later\r\n"
    assert again.startswith(b"250") and hop.messages == []


def test_command_line_cannot_buffer_past_its_limit(tmp_path: Path) -> None:
    with raw_sink() as hop, running_gateway(tmp_path, hop.port, gateway=BYTE_FOR_BYTE) as gw:
        c = session(gw.port)
        huge = b"NOOP " + b"x" * (4 * 1024 * 1024)
        assert c.cmd(huge).startswith(b"500 Command line too long")
        assert c.cmd(b"MAIL FROM:<a@sender.example> " + b"X" * COMMAND_LINE_LIMIT).startswith(
            b"500"
        )
        # DATA lines are not command lines: a long one still goes through
        long_line = message(body="y" * 200_000 + "\r\n")
        assert c.transaction(b"a@sender.example", [b"b@rcpt.example"], long_line).startswith(b"250")
        c.close()
    assert hop.messages[0].data == long_line


def test_junk_commands_end_the_session_like_postfix(tmp_path: Path) -> None:
    with raw_sink() as hop, running_gateway(tmp_path, hop.port, gateway=BYTE_FOR_BYTE) as gw:
        c = session(gw.port)
        for _ in range(JUNK_COMMAND_LIMIT - 1):  # EHLO counted one
            assert c.cmd(b"NOOP").startswith(b"250")
        assert c.cmd(b"NOOP").startswith(b"421 4.7.0")
        assert c.reply() == b"(closed)"
        c.close()
        # a session that carries mail is not junk: its count starts again after each message
        c = session(gw.port)
        for i in range(3):
            for _ in range(60):
                c.cmd(b"RSET")
            assert c.transaction(b"a@sender.example", [b"b@rcpt.example"], message()).startswith(
                b"250"
            ), i
        c.close()
    assert len(hop.messages) == 3


def test_errors_and_recipients_are_bounded(tmp_path: Path) -> None:
    with raw_sink() as hop, running_gateway(tmp_path, hop.port, gateway=BYTE_FOR_BYTE) as gw:
        c = session(gw.port)
        replies = [c.cmd(b"RCPT TO:<a@b.example>") for _ in range(21)]
        assert all(r.startswith(b"503") for r in replies)
        assert c.reply().startswith(b"421 4.7.0")  # after the 21st error, and closed
        assert c.reply() == b"(closed)"
        c.close()
        c = session(gw.port)
        assert c.cmd(b"MAIL FROM:<a@sender.example>").startswith(b"250")
        codes = [c.cmd(b"RCPT TO:<r%d@rcpt.example>" % i)[:3] for i in range(1001)]
        assert codes[:1000] == [b"250"] * 1000 and codes[1000] == b"452"
        c.close()
    assert hop.messages == []


def test_log_line_of_an_8bit_envelope_is_text(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="brandgate.message")
    with raw_sink() as hop, running_gateway(tmp_path, hop.port, gateway=BYTE_FOR_BYTE) as gw:
        c = session(gw.port)
        reply = c.transaction(b"caf\xe9@sender.example", [b"b@rcpt.example"], message())
        c.close()
    assert reply.startswith(b"250")
    line = next(r.getMessage() for r in caplog.records if r.name == "brandgate.message")
    assert 'from="caf\\\\xe9@sender.example"' in line  # JSON-quoted: it holds a backslash
    line.encode("utf-8")  # no lone surrogate left to break a log handler
