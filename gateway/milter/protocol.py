"""The milter wire protocol, version 6, from the filter's side: packets in, packets out, no I/O.

    packet := uint32 length (network order; counts the command byte) · command byte · data

As Sendmail's libmilter speaks it and Postfix's milter8 client implements it (Postfix's
src/milter/milter8.c, libmilter's mfdef.h and the smfi_* documentation). Every string from
the MTA is bytes from a client: nothing here decodes strictly or trusts a length, and a
packet that cannot be parsed is a ProtocolError (the connection ends; the MTA applies its
milter_default_action), never a crash of the server.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

VERSION = 6

# --------------------------------------------------------------------------- MTA -> filter

SMFIC_ABORT = ord("A")
SMFIC_BODY = ord("B")
SMFIC_CONNECT = ord("C")
SMFIC_MACRO = ord("D")
SMFIC_BODYEOB = ord("E")
SMFIC_HELO = ord("H")
SMFIC_QUIT_NC = ord("K")
SMFIC_HEADER = ord("L")
SMFIC_MAIL = ord("M")
SMFIC_EOH = ord("N")
SMFIC_OPTNEG = ord("O")
SMFIC_QUIT = ord("Q")
SMFIC_RCPT = ord("R")
SMFIC_DATA = ord("T")
SMFIC_UNKNOWN = ord("U")

# --------------------------------------------------------------------------- filter -> MTA

SMFIR_ADDRCPT = ord("+")
SMFIR_DELRCPT = ord("-")
SMFIR_ACCEPT = ord("a")
SMFIR_REPLBODY = ord("b")
SMFIR_CONTINUE = ord("c")
SMFIR_DISCARD = ord("d")
SMFIR_ADDHEADER = ord("h")
SMFIR_INSHEADER = ord("i")
SMFIR_CHGHEADER = ord("m")
SMFIR_PROGRESS = ord("p")
SMFIR_QUARANTINE = ord("q")
SMFIR_REJECT = ord("r")
SMFIR_SKIP = ord("s")
SMFIR_TEMPFAIL = ord("t")
SMFIR_REPLYCODE = ord("y")

# --------------------------------------------------------------------------- negotiation

# Actions the filter may take at end of message (SMFIF_*).
SMFIF_ADDHDRS = 0x001
SMFIF_CHGBODY = 0x002
SMFIF_ADDRCPT = 0x004
SMFIF_DELRCPT = 0x008
SMFIF_CHGHDRS = 0x010
SMFIF_QUARANTINE = 0x020
SMFIF_CHGFROM = 0x040
SMFIF_ADDRCPT_PAR = 0x080
SMFIF_SETSYMLIST = 0x100

# Protocol steps (SMFIP_*): NO* = do not send me this event, NR_* = I will not reply to it.
SMFIP_NOCONNECT = 1 << 0
SMFIP_NOHELO = 1 << 1
SMFIP_NOMAIL = 1 << 2
SMFIP_NORCPT = 1 << 3
SMFIP_NOBODY = 1 << 4
SMFIP_NOHDRS = 1 << 5
SMFIP_NOEOH = 1 << 6
SMFIP_NR_HDR = 1 << 7
SMFIP_NOUNKNOWN = 1 << 8
SMFIP_NODATA = 1 << 9
SMFIP_SKIP = 1 << 10
SMFIP_RCPT_REJ = 1 << 11
SMFIP_NR_CONN = 1 << 12
SMFIP_NR_HELO = 1 << 13
SMFIP_NR_MAIL = 1 << 14
SMFIP_NR_RCPT = 1 << 15
SMFIP_NR_DATA = 1 << 16
SMFIP_NR_UNKN = 1 << 17
SMFIP_NR_EOH = 1 << 18
SMFIP_NR_BODY = 1 << 19
SMFIP_HDR_LEADSPC = 1 << 20

# Which no-reply bit silences which event.
NO_REPLY_FLAG = {
    SMFIC_CONNECT: SMFIP_NR_CONN,
    SMFIC_HELO: SMFIP_NR_HELO,
    SMFIC_MAIL: SMFIP_NR_MAIL,
    SMFIC_RCPT: SMFIP_NR_RCPT,
    SMFIC_DATA: SMFIP_NR_DATA,
    SMFIC_UNKNOWN: SMFIP_NR_UNKN,
    SMFIC_HEADER: SMFIP_NR_HDR,
    SMFIC_EOH: SMFIP_NR_EOH,
    SMFIC_BODY: SMFIP_NR_BODY,
}
# Events that never get a reply, whatever was negotiated.
SILENT = frozenset({SMFIC_MACRO, SMFIC_ABORT, SMFIC_QUIT, SMFIC_QUIT_NC})

# Macro list stages for SMFIF_SETSYMLIST (SMFIM_*).
SMFIM_CONNECT = 0
SMFIM_HELO = 1
SMFIM_ENVFROM = 2
SMFIM_ENVRCPT = 3
SMFIM_DATA = 4
SMFIM_EOM = 5
SMFIM_EOH = 6

# Connect address families (SMFIA_*).
FAMILY_UNKNOWN = ord("U")
FAMILY_UNIX = ord("L")
FAMILY_INET = ord("4")
FAMILY_INET6 = ord("6")

# Body chunks (both ways) and reply lines are kept under libmilter's own sizes.
CHUNK = 65535
MAX_REPLY = 2048

_LEN = struct.Struct("!I")
_NEG = struct.Struct("!III")


class ProtocolError(Exception):
    """The peer sent something that is not the milter protocol."""


# --------------------------------------------------------------------------- framing


def packet(cmd: int, data: bytes = b"") -> bytes:
    """One packet on the wire."""
    return _LEN.pack(len(data) + 1) + bytes((cmd,)) + data


def packet_length(head: bytes, limit: int) -> int:
    """The data length announced by a 4-byte length field (the command byte excluded)."""
    (size,) = _LEN.unpack(head)
    if size < 1:
        raise ProtocolError(f"bad packet length {size}")
    if size > limit + 1:
        raise ProtocolError(f"packet of {size} bytes is over the limit of {limit + 1}")
    return size - 1


class Packets:
    """Whole packets out of a byte stream read in pieces of any size: one read of the socket
    yields every packet it holds, instead of three awaited reads per packet (a message is
    some forty packets: macros, one per header field, body chunks). At most `limit` bytes of
    data per packet are buffered: a longer announcement is refused before it is read."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        if self._pos:  # compact once per read, not once per packet
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next(self) -> tuple[int, bytes] | None:
        """The next whole packet (command, data), or None until more is fed."""
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 5:
            if len(buf) - pos == 4:
                packet_length(bytes(buf[pos:]), self.limit)  # refuse a giant at once
            return None
        size = packet_length(bytes(buf[pos : pos + 4]), self.limit)
        end = pos + 5 + size
        if len(buf) < end:
            return None
        self._pos = end
        return buf[pos + 4], bytes(buf[pos + 5 : end])

    @property
    def pending(self) -> int:
        """Bytes of a packet begun but not yet whole."""
        return len(self._buf) - self._pos


def _cstrings(data: bytes) -> list[bytes]:
    """NUL-terminated strings, one after the other (a missing last NUL is forgiven)."""
    if not data:
        return []
    items = data.split(b"\0")
    if items[-1] == b"":
        items.pop()
    return items


def text(raw: bytes) -> str:
    """Client-controlled bytes for logs and the engine: UTF-8 where it is, U+FFFD elsewhere."""
    return raw.decode("utf-8", "replace")


# --------------------------------------------------------------------------- MTA packets


@dataclass(frozen=True, slots=True)
class Negotiation:
    version: int
    actions: int
    protocol: int


def parse_optneg(data: bytes) -> Negotiation:
    if len(data) < _NEG.size:
        raise ProtocolError(f"option negotiation needs 12 bytes, got {len(data)}")
    version, actions, protocol = _NEG.unpack_from(data)
    if version < 2:
        raise ProtocolError(f"milter protocol version {version} is not supported")
    return Negotiation(version, actions, protocol)


def parse_macros(data: bytes) -> tuple[int, dict[str, str]]:
    """(the command the macros belong to, name -> value). Names keep their braces."""
    if not data:
        raise ProtocolError("empty macro packet")
    items = _cstrings(data[1:])
    macros = {text(items[i]): text(items[i + 1]) for i in range(0, len(items) - 1, 2)}
    return data[0], macros


@dataclass(frozen=True, slots=True)
class Connect:
    hostname: str  # the client's name, or "[address]" when it has none
    family: int  # FAMILY_*
    port: int
    address: str  # IP address (no "IPv6:" prefix), socket path, or "" when unknown

    @property
    def ip(self) -> str | None:
        if self.family not in (FAMILY_INET, FAMILY_INET6):
            return None
        try:
            return str(ipaddress.ip_address(self.address.split("%")[0]))
        except ValueError:
            return None


def parse_connect(data: bytes) -> Connect:
    host, nul, rest = data.partition(b"\0")
    if not nul or not rest:
        raise ProtocolError("connect packet without an address family")
    family = rest[0]
    if family == FAMILY_UNKNOWN:
        return Connect(text(host), family, 0, "")
    if len(rest) < 3:
        raise ProtocolError("connect packet without a port")
    port = int.from_bytes(rest[1:3], "big")
    address = text(rest[3:].split(b"\0", 1)[0])
    if address[:5].lower() == "ipv6:":  # Sendmail writes IPv6 addresses so; Postfix does not
        address = address[5:]
    return Connect(text(host), family, port, address)


def parse_helo(data: bytes) -> str:
    return text(data.split(b"\0", 1)[0])


def parse_args(data: bytes) -> list[bytes]:
    """MAIL and RCPT: the address (with its angle brackets), then ESMTP parameters."""
    args = _cstrings(data)
    if not args:
        raise ProtocolError("MAIL/RCPT packet without an address")
    return args


def parse_header(data: bytes) -> tuple[bytes, bytes]:
    """(name, value); folded values come as lines separated by LF alone."""
    name, nul, rest = data.partition(b"\0")
    if not nul:
        raise ProtocolError("header packet without a value")
    value = rest[:-1] if rest.endswith(b"\0") else rest
    return name, value


def envelope_text(raw: bytes) -> str:
    """Envelope bytes (addresses, ESMTP parameters) losslessly: bytes that are not UTF-8 as
    surrogate escapes, as the SMTP modes hold them, so that the quarantine stores and a
    release sends exactly the address the client gave."""
    return raw.decode("utf-8", "surrogateescape")


def address(arg: bytes) -> str:
    """The address inside MAIL/RCPT's angle brackets ("" for the null sender)."""
    value = envelope_text(arg).strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1]
    return value


# --------------------------------------------------------------------------- filter packets


def optneg(
    version: int, actions: int, protocol: int, macros: Mapping[int, str] | None = None
) -> bytes:
    """The filter's answer: what it will do and wants, and (SETSYMLIST) the macros per stage."""
    data = _NEG.pack(version, actions, protocol)
    for stage, names in sorted((macros or {}).items()):
        data += _LEN.pack(stage) + names.encode("ascii") + b"\0"
    return packet(SMFIC_OPTNEG, data)


CONTINUE = packet(SMFIR_CONTINUE)
ACCEPT = packet(SMFIR_ACCEPT)
DISCARD = packet(SMFIR_DISCARD)
REJECT = packet(SMFIR_REJECT)
TEMPFAIL = packet(SMFIR_TEMPFAIL)
SKIP = packet(SMFIR_SKIP)
PROGRESS = packet(SMFIR_PROGRESS)


def _clean_line(value: bytes) -> bytes:
    return value.replace(b"\0", b" ").replace(b"\r", b" ").replace(b"\n", b" ")


def reply_code(reply: str) -> bytes:
    """SMFIR_REPLYCODE: "4xx|5xx x.y.z text", one line. The MTA checks the form; Sendmail also
    reads it as a format string, so a lone "%" is doubled."""
    line = _clean_line(reply.encode("ascii", "replace")).replace(b"%", b"%%")[:MAX_REPLY]
    if not (
        len(line) >= 5
        and line[:1] in (b"4", b"5")
        and line[1:3].isdigit()
        and line[3:4] == b" "
        and line[4:5] == line[:1]
    ):
        raise ValueError(f"not a 4xx/5xx reply with an enhanced status code: {reply!r}")
    return packet(SMFIR_REPLYCODE, line + b"\0")


def quarantine(reason: str) -> bytes:
    return packet(SMFIR_QUARANTINE, _clean_line(reason.encode("utf-8"))[:MAX_REPLY] + b"\0")


def _header_data(name: bytes, value: bytes) -> bytes:
    # Folds are LF + white space on the wire: the MTA puts the CR back itself.
    return _clean_line(name) + b"\0" + value.replace(b"\r\n", b"\n").replace(b"\0", b" ") + b"\0"


def add_header(name: bytes, value: bytes) -> bytes:
    """Append a header field at the end of the header."""
    return packet(SMFIR_ADDHEADER, _header_data(name, value))


def insert_header(index: int, name: bytes, value: bytes) -> bytes:
    """Insert a header field; index 0 puts it above every other field."""
    return packet(SMFIR_INSHEADER, _LEN.pack(index) + _header_data(name, value))


def change_header(index: int, name: bytes, value: bytes) -> bytes:
    """Replace the index-th (1-based) field called name; an empty value deletes it."""
    return packet(SMFIR_CHGHEADER, _LEN.pack(index) + _header_data(name, value))


def replace_body(body: bytes) -> Iterable[bytes]:
    """SMFIR_REPLBODY packets carrying the whole new body, in libmilter-sized chunks."""
    if not body:
        yield packet(SMFIR_REPLBODY)
        return
    for at in range(0, len(body), CHUNK):
        yield packet(SMFIR_REPLBODY, body[at : at + CHUNK])


@dataclass
class Macros:
    """Macros by the event they came with; a lookup sees the latest value of a name."""

    by_stage: dict[int, dict[str, str]] = field(default_factory=dict)

    def set(self, stage: int, values: dict[str, str]) -> None:
        self.by_stage.pop(stage, None)  # the newest stage is looked at first
        self.by_stage[stage] = values

    def drop(self, stages: Iterable[int]) -> None:
        for stage in stages:
            self.by_stage.pop(stage, None)

    def get(self, name: str) -> str | None:
        """name with or without braces ("{auth_authen}" or "auth_authen"; "i")."""
        bare = name.strip("{}")
        keys = (f"{{{bare}}}", bare)
        for values in reversed(list(self.by_stage.values())):
            for key in keys:
                if key in values:
                    return values[key]
        return None
