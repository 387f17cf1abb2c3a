"""The milter codec packet by packet, against the protocol as Postfix's milter8.c and
libmilter's documentation describe it: byte strings written out here by hand, not by the codec.
"""

from __future__ import annotations

import contextlib
import itertools
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.milter import protocol as mp


def test_packet_framing_counts_the_command_byte() -> None:
    assert mp.packet(mp.SMFIR_CONTINUE) == b"\x00\x00\x00\x01c"
    assert mp.CONTINUE == b"\x00\x00\x00\x01c"
    assert mp.ACCEPT == b"\x00\x00\x00\x01a"
    assert mp.DISCARD == b"\x00\x00\x00\x01d"
    assert mp.SKIP == b"\x00\x00\x00\x01s"
    assert mp.packet(mp.SMFIR_REPLBODY, b"xy") == b"\x00\x00\x00\x03bxy"


def test_packet_length_is_bounded() -> None:
    assert mp.packet_length(b"\x00\x00\x00\x01", 10) == 0
    assert mp.packet_length(b"\x00\x00\x00\x0b", 10) == 10
    with pytest.raises(mp.ProtocolError, match="bad packet length 0"):
        mp.packet_length(b"\x00\x00\x00\x00", 10)
    with pytest.raises(mp.ProtocolError, match="over the limit"):
        mp.packet_length(b"\x00\x00\x00\x0c", 10)
    with pytest.raises(mp.ProtocolError):
        mp.packet_length(b"\xff\xff\xff\xff", 1 << 20)


# A header packet, a macro packet and an empty one, as Postfix writes them.
_STREAM = (
    b"\x00\x00\x00\x0dLSubject\x00Hi!\x00" + b"\x00\x00\x00\x07DLi\x00Q1\x00" + b"\x00\x00\x00\x01N"
)
_PACKETS = [(ord("L"), b"Subject\x00Hi!\x00"), (ord("D"), b"Li\x00Q1\x00"), (ord("N"), b"")]


@given(st.lists(st.integers(min_value=0, max_value=len(_STREAM)), max_size=8))
def test_packets_cut_anywhere_come_out_whole_and_in_order(cuts: list[int]) -> None:
    packets = mp.Packets(1 << 10)
    got = []
    edges = [0, *sorted(cuts), len(_STREAM)]
    for a, b in itertools.pairwise(edges):
        packets.feed(_STREAM[a:b])
        while (packet := packets.next()) is not None:
            got.append(packet)
    assert got == _PACKETS and packets.pending == 0


def test_packets_refuse_a_giant_announcement_before_reading_it() -> None:
    packets = mp.Packets(10)
    packets.feed(b"\x00\x10\x00")
    assert packets.next() is None  # three bytes: no length yet
    packets.feed(b"\x00")
    with pytest.raises(mp.ProtocolError, match="over the limit"):
        packets.next()


def test_option_negotiation_as_postfix_sends_it() -> None:
    # Postfix 3.x: version 6, actions 0x1ff, every protocol 6 step
    neg = mp.parse_optneg(b"\x00\x00\x00\x06\x00\x00\x01\xff\x00\x1f\xff\xff")
    assert (neg.version, neg.actions, neg.protocol) == (6, 0x1FF, 0x1FFFFF)
    with pytest.raises(mp.ProtocolError):
        mp.parse_optneg(b"\x00\x00\x00\x06\x00")
    with pytest.raises(mp.ProtocolError, match="version 1"):
        mp.parse_optneg(b"\x00\x00\x00\x01" + b"\x00" * 8)


def test_option_negotiation_reply_with_macro_lists() -> None:
    got = mp.optneg(6, 0x131, 0x1C0300, {mp.SMFIM_ENVFROM: "i {auth_authen}", 0: "j"})
    data = (
        struct.pack("!III", 6, 0x131, 0x1C0300)
        + b"\x00\x00\x00\x00j\x00"  # stage 0 first
        + b"\x00\x00\x00\x02i {auth_authen}\x00"
    )
    assert got == struct.pack("!I", len(data) + 1) + b"O" + data
    assert mp.optneg(2, 1, 0) == b"\x00\x00\x00\x0dO" + struct.pack("!III", 2, 1, 0)


def test_macros_keep_names_and_replace_by_stage() -> None:
    stage, values = mp.parse_macros(
        b"Cj\x00mx.example\x00{daemon_name}\x00smtpd\x00_\x00c [1.2.3.4]\x00"
    )
    assert stage == mp.SMFIC_CONNECT
    assert values == {"j": "mx.example", "{daemon_name}": "smtpd", "_": "c [1.2.3.4]"}
    macros = mp.Macros()
    macros.set(stage, values)
    macros.set(mp.SMFIC_MAIL, {"i": "4ABC", "{auth_authen}": "j\u00f6rg"})
    assert macros.get("daemon_name") == macros.get("{daemon_name}") == "smtpd"
    assert macros.get("i") == "4ABC"
    assert macros.get("auth_authen") == "j\u00f6rg"
    macros.set(mp.SMFIC_CONNECT, {"i": "older"})  # the newest packet wins a name
    assert macros.get("i") == "older"
    macros.drop([mp.SMFIC_CONNECT, mp.SMFIC_MAIL])
    assert macros.get("i") is None
    # 8-bit and unterminated values are taken, never an error
    assert mp.parse_macros(b"M{mail_addr}\x00j\xf6rg@x\x00{x}") == (
        mp.SMFIC_MAIL,
        {"{mail_addr}": "j\ufffdrg@x"},
    )
    with pytest.raises(mp.ProtocolError):
        mp.parse_macros(b"")


@pytest.mark.parametrize(
    ("data", "family", "port", "address", "ip"),
    [
        (b"mx.example\x004\x10\x92192.0.2.7\x00", mp.FAMILY_INET, 4242, "192.0.2.7", "192.0.2.7"),
        (b"h\x006\x00\x19IPv6:2001:db8::1\x00", mp.FAMILY_INET6, 25, "2001:db8::1", "2001:db8::1"),
        (b"h\x006\x00\x192001:DB8::1\x00", mp.FAMILY_INET6, 25, "2001:DB8::1", "2001:db8::1"),
        (b"localhost\x00L\x00\x00/var/run/x.sock\x00", mp.FAMILY_UNIX, 0, "/var/run/x.sock", None),
        (b"localhost\x00U", mp.FAMILY_UNKNOWN, 0, "", None),
        (b"h\x004\x00\x19not-an-ip\x00", mp.FAMILY_INET, 25, "not-an-ip", None),
    ],
)  # fmt: skip
def test_connect_families(
    data: bytes, family: int, port: int, address: str, ip: str | None
) -> None:
    conn = mp.parse_connect(data)
    assert (conn.family, conn.port, conn.address, conn.ip) == (family, port, address, ip)


def test_connect_without_family_is_a_protocol_error() -> None:
    with pytest.raises(mp.ProtocolError):
        mp.parse_connect(b"host-only")
    with pytest.raises(mp.ProtocolError):
        mp.parse_connect(b"host\x004\x00")


def test_client_controlled_strings_never_fail_to_decode() -> None:
    # A HELO is whatever the client typed: 8-bit, UTF-8, labels of any length.
    assert mp.parse_helo(b"\xfcn\xef.example\x00") == "\ufffdn\ufffd.example"
    assert mp.parse_helo("ünï.example".encode() + b"\x00") == "ünï.example"
    assert mp.parse_helo(b"a" * 300 + b"\x00") == "a" * 300
    assert mp.parse_connect(b"\xff\x004\x00\x19192.0.2.1\x00").hostname == "\ufffd"


def test_mail_and_rcpt_arguments() -> None:
    args = mp.parse_args(b"<alice@sender.example>\x00SIZE=1234\x00BODY=8BITMIME\x00")
    assert args == [b"<alice@sender.example>", b"SIZE=1234", b"BODY=8BITMIME"]
    assert mp.address(args[0]) == "alice@sender.example"
    assert mp.address(b"<>") == ""
    assert mp.address("<jörg@exämple.de>".encode()) == "jörg@exämple.de"
    assert mp.address(b"bare@example") == "bare@example"
    with pytest.raises(mp.ProtocolError):
        mp.parse_args(b"")


def test_envelope_bytes_that_are_not_utf8_are_kept_exactly() -> None:
    # The store and a release need the very bytes (the SMTP modes keep them so too);
    # a near miss: a HELO is only logged and scanned, so it may be replaced.
    raw = b"caf\xe9\xff-x@sender.example"
    assert mp.address(b"<" + raw + b">").encode("utf-8", "surrogateescape") == raw
    assert mp.envelope_text(b"ORCPT=rfc822;\xe9").encode("utf-8", "surrogateescape") == (
        b"ORCPT=rfc822;\xe9"
    )
    assert "\ufffd" in mp.parse_helo(b"caf\xe9\x00")


def test_header_fields_keep_their_bytes() -> None:
    # with SMFIP_HDR_LEADSPC the value keeps its leading space; folds are LF + white space
    assert mp.parse_header(b"Subject\x00 Hello\n\tthere\x00") == (b"Subject", b" Hello\n\tthere")
    assert mp.parse_header(b"X-\xff\x00caf\xe9\x00") == (b"X-\xff", b"caf\xe9")
    assert mp.parse_header(b"Empty\x00\x00") == (b"Empty", b"")
    with pytest.raises(mp.ProtocolError):
        mp.parse_header(b"no-value")


def test_reply_code_is_one_checked_line() -> None:
    assert mp.reply_code("550 5.7.1 Message refused") == (
        b"\x00\x00\x00\x1by550 5.7.1 Message refused\x00"
    )
    got = mp.reply_code("451 4.3.0 100% sure\r\nX-Evil: 1")
    assert got[5:] == b"451 4.3.0 100%% sure  X-Evil: 1\x00"
    for bad in ("250 2.0.0 Ok", "550 Message refused", "55 5.7.1 x", "550 4.7.1 mixed"):
        with pytest.raises(ValueError):
            mp.reply_code(bad)


def test_header_edit_requests() -> None:
    # SMFIR_INSHEADER: index, name, value; CRLF folds go out as LF folds
    assert mp.insert_header(0, b"X-Brandgate-Verdict", b" tag") == (
        b"\x00\x00\x00\x1ei\x00\x00\x00\x00X-Brandgate-Verdict\x00 tag\x00"
    )
    assert mp.change_header(2, b"X-Old", b"")[4:] == b"m\x00\x00\x00\x02X-Old\x00\x00"
    folded = mp.add_header(b"X-Rules", b" A=1,\r\n B=2")
    assert folded[4:] == b"hX-Rules\x00 A=1,\n B=2\x00"
    assert b"\0" not in mp.add_header(b"X\0Y", b"v\0w")[5:-1].replace(b"X Y\0", b"")


def test_body_replacement_comes_in_libmilter_sized_chunks() -> None:
    body = bytes(range(256)) * 600  # 153,600 bytes
    chunks = list(mp.replace_body(body))
    assert [len(c) - 5 for c in chunks] == [65535, 65535, 153600 - 2 * 65535]
    assert all(c[4:5] == b"b" for c in chunks)
    assert b"".join(c[5:] for c in chunks) == body
    assert list(mp.replace_body(b"")) == [b"\x00\x00\x00\x01b"]


def test_quarantine_reason_is_one_line() -> None:
    assert mp.quarantine("held:\r\nby brandgate") == b"\x00\x00\x00\x15qheld:  by brandgate\x00"


_PARSERS = [
    mp.parse_optneg,
    mp.parse_macros,
    mp.parse_connect,
    mp.parse_helo,
    mp.parse_args,
    mp.parse_header,
]


@given(st.sampled_from(_PARSERS), st.binary(max_size=300))
def test_parsers_raise_nothing_but_protocol_errors(parse: object, data: bytes) -> None:
    assert callable(parse)
    with contextlib.suppress(mp.ProtocolError):
        parse(data)
