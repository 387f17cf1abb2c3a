"""The MTA side of the milter protocol, for tests: a client that talks to brandgate's milter as
Postfix does (written from Postfix's milter8.c, independently of gateway/milter/protocol.py),
and the header/body edits applied the way Postfix's cleanup applies them.
"""

from __future__ import annotations

import re
import socket
import struct
from dataclasses import dataclass, field

ALL_ACTIONS = 0x1FF  # what Postfix 3.x offers
ALL_PROTOCOL = 0x1FFFFF  # every step and no-reply flag of protocol 6
FINAL = set(b"acdrty")  # replies that end an event
LEADSPC = 1 << 20


def pkt(cmd: str, data: bytes = b"") -> bytes:
    return struct.pack("!I", len(data) + 1) + cmd.encode() + data


@dataclass
class Reply:
    cmd: str
    data: bytes

    @property
    def text(self) -> str:
        return self.data.rstrip(b"\0").decode("ascii", "replace")


@dataclass
class Negotiated:
    version: int
    actions: int
    protocol: int
    macros: dict[int, str] = field(default_factory=dict)


class MtaClient:
    """One connection to a milter; every method mirrors one milter8 event."""

    def __init__(self, port: int | None = None, path: str | None = None, timeout: float = 20):
        if path is not None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(path)
        else:
            assert port is not None
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.neg: Negotiated | None = None

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> MtaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --------------------------------------------------------------------- wire

    def send(self, cmd: str, data: bytes = b"") -> None:
        self.sock.sendall(pkt(cmd, data))

    def read(self) -> Reply:
        while len(self.buf) < 5 or len(self.buf) < 4 + struct.unpack("!I", self.buf[:4])[0]:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("milter closed the connection")
            self.buf += chunk
        size = struct.unpack("!I", self.buf[:4])[0]
        cmd, data = chr(self.buf[4]), self.buf[5 : 4 + size]
        self.buf = self.buf[4 + size :]
        return Reply(cmd, data)

    def closed(self, timeout: float = 5.0) -> bool:
        """Does the milter close the connection (without sending anything)?"""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    # --------------------------------------------------------------------- events

    def negotiate(
        self, version: int = 6, actions: int = ALL_ACTIONS, protocol: int = ALL_PROTOCOL
    ) -> Negotiated:
        self.send("O", struct.pack("!III", version, actions, protocol))
        reply = self.read()
        assert reply.cmd == "O", reply
        v, a, p = struct.unpack("!III", reply.data[:12])
        macros, rest = {}, reply.data[12:]
        while rest:
            stage = struct.unpack("!I", rest[:4])[0]
            names, _, rest = rest[4:].partition(b"\0")
            macros[stage] = names.decode()
        self.neg = Negotiated(v, a, p, macros)
        return self.neg

    def _negotiated(self, bit: int) -> bool:
        return self.neg is not None and bool(self.neg.protocol & bit)

    def event(self, cmd: str, data: bytes, nr_bit: int) -> Reply | None:
        self.send(cmd, data)
        return None if self._negotiated(nr_bit) else self.read()

    def macro(self, stage: str, **values: str) -> None:
        data = stage.encode()
        for k, v in values.items():
            name = k if len(k) == 1 else "{" + k + "}"
            data += name.encode() + b"\0" + v.encode() + b"\0"
        self.send("D", data)

    def connect(self, host: str = "client.example", addr: str = "192.0.2.7") -> Reply | None:
        family = b"6" if ":" in addr else b"4"
        data = host.encode() + b"\0" + family + struct.pack("!H", 4242) + addr.encode() + b"\0"
        return self.event("C", data, 1 << 12)

    def helo(self, name: str = "client.example") -> Reply | None:
        return self.event("H", name.encode() + b"\0", 1 << 13)

    def mail(self, sender: str, *args: str) -> Reply | None:
        data = b"".join(a.encode() + b"\0" for a in (f"<{sender}>", *args))
        return self.event("M", data, 1 << 14)

    def rcpt(self, rcpt: str) -> Reply | None:
        return self.event("R", f"<{rcpt}>".encode() + b"\0", 1 << 15)

    def header(self, name: bytes, value: bytes) -> Reply | None:
        return self.event("L", name + b"\0" + value + b"\0", 1 << 7)

    def eoh(self) -> Reply | None:
        return self.event("N", b"", 1 << 18)

    def body(self, chunk: bytes) -> Reply:
        self.send("B", chunk)
        return self.read()

    def eom(self) -> tuple[Reply, list[Reply]]:
        """(the final reply, the edit requests before it)."""
        self.send("E")
        edits = []
        while True:
            reply = self.read()
            if ord(reply.cmd) in FINAL:
                return reply, edits
            edits.append(reply)

    def abort(self) -> None:
        self.send("A")

    def quit(self) -> None:
        self.send("Q")

    # --------------------------------------------------------------------- a whole message

    def message(
        self,
        raw: bytes,
        sender: str = "alice@sender.example",
        rcpts: tuple[str, ...] = ("bob@rcpt.example",),
        queue_id: str = "4ABC123",
        auth: str | None = None,
    ) -> tuple[Reply, list[Reply]]:
        """MAIL, RCPT, the header fields and body of raw as Postfix sends them, EOM."""
        mail_macros = {"i": queue_id, "mail_addr": sender}
        if auth is not None:
            mail_macros["auth_authen"] = auth
        self.macro("M", **mail_macros)
        self.mail(sender)
        for r in rcpts:
            self.macro("R", i=queue_id, rcpt_addr=r)
            self.rcpt(r)
        fields, body = split_message(raw, self._negotiated(LEADSPC))
        for name, value in fields:
            self.header(name, value)
        self.eoh()
        for at in range(0, len(body), 65535):
            reply = self.body(body[at : at + 65535])
            if reply.cmd != "c":
                return reply, []
        self.macro("E", i=queue_id)
        return self.eom()


def split_message(raw: bytes, leadspc: bool) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Header fields (values with LF-separated folds) and body, as milter8 sends them."""
    raw = re.sub(rb"\r?\n", b"\r\n", raw)
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        head, body = raw.removesuffix(b"\r\n"), b""
    fields: list[tuple[bytes, bytes]] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] = (fields[-1][0], fields[-1][1] + b"\n" + line)
        else:
            name, _, value = line.partition(b":")
            if not leadspc and value.startswith(b" "):
                value = value[1:]
            fields.append((name.rstrip(b" \t"), value))
    return fields, body


def apply_edits(
    fields: list[tuple[bytes, bytes]], body: bytes, edits: list[Reply], leadspc: bool
) -> bytes:
    """The message after the edit requests, as Postfix's cleanup makes it (without its own
    Received: header, which milters never see and which insert index 0 would go above)."""
    fields = list(fields)
    new_body: bytes | None = None
    space = b"" if leadspc else b" "
    for e in edits:
        if e.cmd in "mi":
            index = struct.unpack("!I", e.data[:4])[0]
            name, value, _ = e.data[4:].split(b"\0")
        if e.cmd == "m":
            hits = [k for k, (n, _) in enumerate(fields) if n.lower() == name.lower()]
            at = hits[max(index, 1) - 1]
            if value:
                fields[at] = (fields[at][0], value)
            else:
                fields[at] = (b"", b"")  # deleted (brandgate deletes from the last one up)
        elif e.cmd == "i":
            assert index == 0, "brandgate inserts only at the top"
            fields.insert(0, (name, value))
        elif e.cmd == "h":
            name, value, _ = e.data.split(b"\0")
            fields.append((name, value))
        elif e.cmd == "b":
            new_body = (new_body or b"") + e.data
        elif e.cmd == "q":
            pass
        else:
            raise AssertionError(f"unexpected edit {e}")
    head = b"".join(n + b":" + space + v.replace(b"\n", b"\r\n") + b"\r\n" for n, v in fields if n)
    return head + b"\r\n" + (body if new_body is None else new_body)
