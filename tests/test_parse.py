"""filters.parse on the pitfalls real mail contains (small hand-written messages)."""

from __future__ import annotations

import base64

import pytest

from filters.parse import decode_bytes, decode_header, decode_rfc2047, parse
from filters.types import Limits


def msg(headers: str, body: bytes | str, sep: bytes = b"\n") -> bytes:
    raw_body = body.encode() if isinstance(body, str) else body
    return headers.strip("\n").replace("\n", "\r\n" if sep == b"\r\n" else "\n").encode() + (
        sep + sep + raw_body
    )


# --- charsets ------------------------------------------------------------------------------


@pytest.mark.parametrize("label", ["DEFAULT_CHARSET", "X-UNKNOWN", "%CHARSET", "unknown-8bit"])
def test_unknown_charset_utf8_body_decodes_as_utf8(label: str) -> None:
    raw = msg(f"Subject: x\nContent-Type: text/plain; charset={label}", "Grüße €".encode())
    assert parse(raw).texts == ("Grüße €",)


@pytest.mark.parametrize("label", ["DEFAULT_CHARSET", "X-UNKNOWN", "unknown-8bit"])
def test_unknown_charset_latin1_body_falls_back_to_cp1252(label: str) -> None:
    raw = msg(f"Content-Type: text/html; charset={label}", b"<p>caf\xe9 \x80</p>")
    assert parse(raw).htmls == ("<p>café €</p>",)


def test_declared_charset_wrong_still_decodes() -> None:
    # declared utf-8, written in latin-1: replacement, never an error
    raw = msg("Content-Type: text/plain; charset=utf-8", b"caf\xe9")
    (text,) = parse(raw).texts
    assert text.startswith("caf") and len(text) == 4


def test_bytes_to_bytes_codec_names_are_not_applied() -> None:
    assert decode_bytes(b"aGVsbG8=", "base64") == "aGVsbG8="
    assert decode_bytes(b"x\x9c", "zlib") == "xœ"


def test_quoted_and_garbage_charset_labels() -> None:
    raw = msg('Content-Type: text/plain; charset="\\"iso-8859-2"', b"\xb1")
    assert parse(raw).texts == ("ą",)


def test_gb2312_label_read_as_gb18030() -> None:
    # "镕" is outside GB2312 but common in mail labelled gb2312
    raw = msg("Content-Type: text/plain; charset=gb2312", "朱镕基".encode("gb18030"))
    assert parse(raw).texts == ("朱镕基",)


# --- headers -------------------------------------------------------------------------------


def test_headers_unfolded_in_order_without_crlf() -> None:
    raw = msg(
        "Received: from a\n\tby b\nSubject: one\n two\nReceived: second",
        "body",
        sep=b"\r\n",
    )
    parsed = parse(raw)
    assert parsed.headers[0] == ("Received", "from a\tby b")
    assert parsed.header("subject") == "one two"
    assert all("\r" not in v and "\n" not in v for _, v in parsed.headers)
    assert parsed.header_all("received") == ("from a\tby b", "second")


def test_rfc2047_words_decoded_and_joined() -> None:
    value = "=?utf-8?B?UGF5UGFs?= =?utf-8?Q?_Kundenservice?= <a@b.example>"
    assert decode_header(value) == "PayPal Kundenservice <a@b.example>"


def test_rfc2047_multibyte_split_across_words() -> None:
    encoded = "€uro".encode()
    first = base64.b64encode(encoded[:2]).decode()
    second = base64.b64encode(encoded[2:]).decode()
    assert decode_rfc2047(f"=?UTF-8?B?{first}?= =?UTF-8?B?{second}?=") == "€uro"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("=?utf-8?B?UGF5UGFs?=", "PayPal"),
        ("=?utf-8?B?UGF5UGF?=", "PayPa"),  # padding missing
        ("=?utf-8?B?UGF5UGFsX?=", "PayPal"),  # a dangling sixth-of-a-byte is dropped
        ("=?utf-8?Q?Pay Pal?=", "Pay Pal"),  # space inside a Q word (invalid, common)
        ("=?X-UNKNOWN?Q?caf=E9?=", "café"),  # unknown charset: cp1252 fallback
        ("=?utf-8*en?Q?Amazon?=", "Amazon"),  # RFC 2231 language tag
        ("=?utf-16?B?RABlAHMAaQBnAG4A?=", "Design"),
        ("Hello =?iso-8859-1?q?J=F6rg?= !", "Hello Jörg !"),
        ("=?broken", "=?broken"),
    ],
)
def test_rfc2047_malformed_words(value: str, expected: str) -> None:
    assert decode_rfc2047(value) == expected


def test_8bit_headers_utf8_and_latin1() -> None:
    raw = b"Subject: Gr\xc3\xbc\xc3\x9fe\nFrom: J\xf6rg <j@example.org>\n\nbody"
    parsed = parse(raw)
    assert parsed.header("Subject") == "Grüße"
    assert parsed.header("From") == "Jörg <j@example.org>"


def test_encoded_word_in_display_name() -> None:
    raw = msg('From: "=?utf-8?B?c3VwcG9ydEBhcHBsZS5jb20=?=" <x@evil.example>', "hi")
    assert parse(raw).header("From") == '"support@apple.com" <x@evil.example>'


def test_mbox_from_line_dropped() -> None:
    raw = b"From MAILER-DAEMON Fri Jul  8 12:08:34 2011\nFrom: a@b.example\nSubject: s\n\nbody\n"
    parsed = parse(raw)
    assert parsed.header("From") == "a@b.example"
    assert parsed.texts == ("body\n",)


def test_obsolete_space_before_colon_is_not_an_mbox_line() -> None:
    parsed = parse(b"From  : John <j@example.org>\nSubject\t: Hello\n\nbody")
    assert parsed.header("From") == "John <j@example.org>"
    assert parsed.header("Subject") == "Hello"


def test_junk_line_inside_header_block_dropped() -> None:
    raw = b"Received: x\nquite Delivered-To: y\nFrom: a@b.example\nSubject: s\n\nbody"
    parsed = parse(raw)
    assert parsed.header("From") == "a@b.example" and parsed.header("Subject") == "s"
    assert "JunkHeaderLineDropped" in parsed.defects


def test_boundary_line_right_after_headers_is_not_junk() -> None:
    raw = (
        b"Subject: s\nContent-Type: multipart/alternative; boundary=zz\n--zz\n"
        b"Content-Type: text/plain\n\nplain\n--zz--\n"
    )
    parsed = parse(raw)
    assert parsed.header("Content-Type") == "multipart/alternative; boundary=zz"
    assert "JunkHeaderLineDropped" not in parsed.defects


def test_leading_blank_line_before_headers() -> None:
    raw = b"   \r\nFrom: a@b.example\r\nSubject: s\r\n\r\nbody"
    assert parse(raw).header("Subject") == "s"


def test_header_block_without_blank_line() -> None:
    raw = b"From: a@b.example\nSubject: s\nThis line is body text\nmore\n"
    parsed = parse(raw)
    assert parsed.header("Subject") == "s"
    assert "This line is body text" in parsed.texts[0]
    assert "MissingHeaderBodySeparatorDefect" in parsed.defects


def test_bare_lf_and_crlf_parse_alike() -> None:
    headers = "From: a@b.example\nSubject: s\nContent-Type: text/plain"
    lf = parse(msg(headers, b"line one\nline two\n"))
    crlf = parse(msg(headers, b"line one\r\nline two\r\n", sep=b"\r\n"))
    assert lf.headers == crlf.headers
    assert lf.texts[0].split() == crlf.texts[0].split()


# --- bodies --------------------------------------------------------------------------------


def test_base64_with_broken_padding_and_noise() -> None:
    body = base64.b64encode(b"Ihr Paket wartet").decode().rstrip("=")
    raw = msg(
        "Content-Type: text/plain\nContent-Transfer-Encoding: base64",
        body[:10] + "\n" + body[10:] + "!!",
    )
    assert parse(raw).texts == ("Ihr Paket wartet",)


def test_quoted_printable_body_and_odd_cte_spelling() -> None:
    raw = msg(
        "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: Quoted-Printable;",
        "Gr=C3=BC=C3=9Fe=\n aus Bonn =3D",
    )
    assert parse(raw).texts == ("Grüße aus Bonn =",)


def test_html_only_message() -> None:
    raw = msg("Content-Type: text/html; charset=utf-8", "<p>Hello</p>")
    parsed = parse(raw)
    assert parsed.texts == ()
    assert parsed.htmls == ("<p>Hello</p>",)
    assert parsed.parts[0].content_type == "text/html" and parsed.parts[0].depth == 0


def test_utf16_bodies_with_charset_bom_or_neither() -> None:
    declared = msg("Content-Type: text/plain; charset=utf-16", "Konto".encode("utf-16"))
    bom = msg("Content-Type: text/plain", "Konto".encode("utf-16"))
    bare = msg("Content-Type: text/plain; charset=us-ascii", "Konto gesperrt".encode("utf-16-le"))
    assert parse(declared).texts == ("Konto",)
    assert parse(bom).texts == ("Konto",)
    assert parse(bare).texts == ("Konto gesperrt",)


MULTI = """From: a@b.example
Subject: s
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="XX"

--XX
Content-Type: text/plain

plain part
--XX
Content-Type: text/html; charset=utf-8
Content-Disposition: attachment; filename="invoice.html"

<form action="http://evil.example/">
--XX
Content-Type: application/octet-stream; name="=?utf-8?Q?Rechnung.htm?="
Content-Transfer-Encoding: base64

PGEgaHJlZj0iaHR0cDovL3guZXhhbXBsZS8iPng8L2E+
--XX
Content-Type: image/png; name=logo.png
Content-Disposition: inline

iVBOR
--XX
Content-Type: message/rfc822

From: inner@c.example
Subject: inner
Content-Type: text/plain

nested text
--XX--
"""


def test_multipart_tree_attachments_and_nested_message() -> None:
    parsed = parse(MULTI.encode())
    assert [t.strip() for t in parsed.texts] == ["plain part", "nested text"]
    assert parsed.htmls == (
        '<form action="http://evil.example/">',
        '<a href="http://x.example/">x</a>',
    )
    types = [p.content_type for p in parsed.parts]
    assert types == [
        "text/plain",
        "text/html",
        "application/octet-stream",
        "image/png",
        "text/plain",
    ]
    html_part = parsed.parts[1]
    assert (html_part.filename, html_part.disposition) == ("invoice.html", "attachment")
    assert parsed.parts[2].filename == "Rechnung.htm"
    assert parsed.parts[3].disposition == "inline"
    assert parsed.parts[0].depth == 1 and parsed.parts[4].depth == 2
    assert parsed.header("Subject") == "s"  # the nested message's headers stay inside


def test_broken_boundary_recovered() -> None:
    raw = b"""Content-Type: multipart/alternative; boundary="declared"

--actual
Content-Type: text/plain

plain
--actual
Content-Type: text/html

<b>html</b>
--actual--
"""
    parsed = parse(raw)
    assert parsed.texts == ("plain",)
    assert parsed.htmls == ("<b>html</b>",)
    assert "BoundaryRecovered" in parsed.defects
    assert "StartBoundaryNotFoundDefect" in parsed.defects


def test_unrecoverable_multipart_kept_as_text() -> None:
    raw = b"Content-Type: multipart/mixed; boundary=zz\n\nno parts at all, just words\n"
    parsed = parse(raw)
    assert parsed.texts == ("no parts at all, just words\n",)


def test_missing_close_boundary() -> None:
    raw = b"Content-Type: multipart/mixed; boundary=zz\n\n--zz\nContent-Type: text/plain\n\nhi\n"
    parsed = parse(raw)
    assert [t.strip() for t in parsed.texts] == ["hi"]
    assert "CloseBoundaryNotFoundDefect" in parsed.defects


# --- limits and robustness ----------------------------------------------------------------


def test_max_message_bytes_truncates_and_is_recorded() -> None:
    raw = msg("Subject: s", "x" * 5000)
    parsed = parse(raw, Limits(max_message_bytes=100))
    assert parsed.limit_hits == ("max_message_bytes",)
    assert parsed.size == len(raw)
    assert sum(len(t) for t in parsed.texts) < 100


def test_max_part_bytes_truncates_decoded_part_keeps_size() -> None:
    raw = msg("Content-Type: text/plain", "y" * 1000)
    parsed = parse(raw, Limits(max_part_bytes=10))
    assert parsed.texts == ("y" * 10,)
    assert parsed.parts[0].size == 1000
    assert parsed.limit_hits == ("max_part_bytes",)


def nested(depth: int) -> bytes:
    head = b""
    tail = b""
    for i in range(depth):
        head += f"Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n".encode()
        tail = f"\n--b{i}--\n".encode() + tail
    return head + b"Content-Type: text/plain\n\ndeep" + tail


def test_max_mime_depth_recorded_once() -> None:
    parsed = parse(nested(30), Limits(max_mime_depth=5))
    assert parsed.limit_hits == ("max_mime_depth",)
    assert parsed.texts == ()
    shallow = parse(nested(3), Limits(max_mime_depth=5))
    assert shallow.texts == ("deep",) and shallow.limit_hits == ()


def test_max_parts_stops_walk_and_recorded_once() -> None:
    parts = "".join(f"--q\nContent-Type: text/plain\n\npart {i}\n" for i in range(20))
    raw = f"Content-Type: multipart/mixed; boundary=q\n\n{parts}--q--\n".encode()
    parsed = parse(raw, Limits(max_parts=5))
    assert len(parsed.parts) == 5
    assert parsed.limit_hits == ("max_parts",)


def test_defects_deduplicated_and_capped() -> None:
    parts = "".join("--q\nContent-Type: multipart/mixed; boundary=n\n\nx\n" for _ in range(5))
    raw = f"Content-Type: multipart/mixed; boundary=q\n\n{parts}--q--\n".encode()
    defects = parse(raw).defects
    assert len(defects) == len(set(defects)) <= 50


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x00" * 64, b"\xff\xfe\xfd", b":\n:\n\n", b"From \n", b"\n\n\n", b"Subject: =?" * 100],
)
def test_garbage_never_raises(raw: bytes) -> None:
    parsed = parse(raw)
    assert parsed.size == len(raw)
    assert isinstance(parsed.headers, tuple)


def test_bytearray_accepted() -> None:
    assert parse(bytearray(b"Subject: s\n\nb")).header("subject") == "s"  # type: ignore[arg-type]


def test_nesting_beyond_the_parser_keeps_headers() -> None:
    # deeper than the stdlib parser's recursion allows: headers survive
    raw = b"Subject: deep\n" + nested(3000)
    parsed = parse(raw)
    assert parsed.header("Subject") == "deep"
    assert "max_mime_depth" in parsed.limit_hits
    # what lies deeper than max_mime_depth is cut before the stdlib parser (whose cost is
    # lines x depth) as the walk would not enter it: the same limit, the same finding
    assert parsed.texts == ()


def test_delimiter_flood_is_cut_before_parsing() -> None:
    raw = b"Content-Type: multipart/mixed; boundary=b\n\n" + b"--b\n\nx\n" * 50_000
    parsed = parse(raw, Limits(max_parts=10))
    assert parsed.limit_hits == ("max_parts",)
    assert len(parsed.parts) == 10


def test_unterminated_encoded_words_decode_as_text() -> None:
    value = "=?a?q?x " * 5000
    assert decode_rfc2047(value) == value
