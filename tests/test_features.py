"""filters.features.extract: addresses, body text, links, auth and limits from parsed mail."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from filters import text as text_mod
from filters.features import extract, parse_addresses
from filters.parse import parse
from filters.registry import Lists
from filters.text import normalise
from filters.types import Address, AuthResult, Envelope, Features, Limits

LISTS = Lists(redirect_params=frozenset({"url", "q"}))


def features(
    raw: bytes,
    envelope: Envelope | None = None,
    limits: Limits = Limits(),  # noqa: B008 (frozen)
    trusted: tuple[str, ...] = (),
    dkim: tuple[AuthResult, ...] = (),
) -> Features:
    return extract(
        parse(raw, limits),
        envelope=envelope,
        trusted_authserv_ids=trusted,
        lists=LISTS,
        limits=limits,
        dkim_results=dkim,
    )


# --- addresses -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "display", "address"),
    [
        ("PayPal <service@PayPal.COM>", "PayPal", "service@paypal.com"),
        ('"support@apple.com" <x@evil.example>', "support@apple.com", "x@evil.example"),
        ("paypal.support.team@hotmail.com", "", "paypal.support.team@hotmail.com"),
        ("Amazon Prime x@evil.example", "Amazon Prime", "x@evil.example"),
        ("x@evil.example (DHL Express)", "DHL Express", "x@evil.example"),
        ("DHL <x@evil.example", "DHL", "x@evil.example"),  # missing ">"
        ("DHL x@evil.example>", "DHL", "x@evil.example"),
        ('"Doe, John" <j@example.org>', "Doe, John", "j@example.org"),
        ("Doe, John <j@example.org>", "Doe, John", "j@example.org"),  # decoded comma
        ("<mailto:j@example.org>", "", "j@example.org"),
        ("Bücher <info@bücher.de>", "Bücher", "info@xn--bcher-kva.de"),
        ('"Ama\\"zon" <a@b.example>', 'Ama"zon', "a@b.example"),
        ("John <jdoe@machine(comment).  example>", "John", "jdoe@machine.example"),
    ],
)
def test_address_forms(value: str, display: str, address: str) -> None:
    (found,) = parse_addresses(value)
    assert (found.display, found.address) == (display, address)


def test_address_parts_and_registrable() -> None:
    (found,) = parse_addresses("Bank <alerts@mail.bank.co.uk>")
    assert found == Address(
        "Bank", "alerts@mail.bank.co.uk", "alerts", "mail.bank.co.uk", "bank.co.uk"
    )


def test_several_addresses_and_garbage() -> None:
    found = parse_addresses("a@x.example, B <b@y.example>,, garbage,")
    assert [a.address for a in found] == ["a@x.example", "b@y.example", ""]
    assert parse_addresses("") == ()
    assert parse_addresses("no address here")[0].address == ""


def test_from_encoded_display_name_with_address_inside() -> None:
    raw = b'From: "=?utf-8?B?c3VwcG9ydEBhcHBsZS5jb20=?=" <x@evil.example>\nSubject: s\n\nb'
    f = features(raw)
    assert f.from_addr is not None
    assert f.from_addr.display == "support@apple.com"
    assert f.from_addr.domain == "evil.example" and f.from_addr.registrable == "evil.example"
    assert f.display_norm == "support@apple.com"


def test_from_encoded_angle_address_in_display_name() -> None:
    # "PayPal <service@paypal.com>" encoded as the display name; the real address follows
    raw = b"From: =?utf-8?B?UGF5UGFsIDxzZXJ2aWNlQHBheXBhbC5jb20+?= <x@evil.example>\n\nb"
    f = features(raw)
    assert f.from_addr is not None
    assert f.from_addr.address == "x@evil.example"
    assert f.from_addr.display == "PayPal <service@paypal.com>"


def test_from_garbage_keeps_display() -> None:
    f = features(b"From: Fedex Pakket <UQDRGR@U(<9Tl\n\nb")
    assert f.from_addr is not None and f.from_addr.address == ""
    assert "Fedex" in f.from_addr.display


def test_multiple_from_headers_first_wins() -> None:
    f = features(b"From: A <a@one.example>\nFrom: B <b@two.example>\n\nb")
    assert f.from_addr is not None and f.from_addr.address == "a@one.example"


def test_missing_headers() -> None:
    f = features(b"\n\nbody only")
    assert (f.from_addr, f.sender, f.return_path, f.reply_to) == (None, None, None, ())
    assert f.subject == "" and f.subject_norm == ""


def test_sender_reply_to_and_return_path_header() -> None:
    raw = (
        b"From: a@one.example\nSender: s@two.example\n"
        b"Reply-To: r1@three.example, R2 <r2@gmail.com>\n"
        b"Reply-To: r3@four.example\nReturn-Path: <bounce@esp.example>\n\nb"
    )
    f = features(raw)
    assert f.sender is not None and f.sender.address == "s@two.example"
    assert [a.address for a in f.reply_to] == [
        "r1@three.example",
        "r2@gmail.com",
        "r3@four.example",
    ]
    assert f.return_path is not None and f.return_path.address == "bounce@esp.example"


def test_envelope_sender_beats_return_path_header() -> None:
    raw = b"Return-Path: <forged@header.example>\n\nb"
    f = features(raw, Envelope(mail_from="real@env.example", rcpt_tos=("u@x.example",)))
    assert f.return_path is not None and f.return_path.address == "real@env.example"
    assert f.envelope.rcpt_tos == ("u@x.example",)
    bounce = features(raw, Envelope(mail_from=""))
    assert bounce.return_path is None  # null sender
    assert features(raw).envelope == Envelope()


# --- text ----------------------------------------------------------------------------------

ALT = b"""From: x@y.example
Subject: =?utf-8?Q?Ihr_=C3=84mazon_Konto?=
Content-Type: multipart/mixed; boundary=b

--b
Content-Type: multipart/alternative; boundary=a

--a
Content-Type: text/plain

PLAIN part visit www.shop.example.
--a
Content-Type: text/html

<p>HTML <b>Pay</b>Pal</p><a href="https://www.google.com/url?q=https://evil.example/">https://paypal.com</a>
<img src="cid:logo" alt="  Amazon   Logo "><img src="http://t.example/p.gif" alt="amazon logo">
--a--
--b
Content-Type: message/rfc822

Subject: inner

NESTED words http://inner.example/
--b
Content-Type: application/pdf
Content-Disposition: attachment; filename="x.pdf"

JVBERi0=
--b--
"""


def test_body_subject_links_alts_attachments() -> None:
    f = features(ALT)
    assert f.subject == "Ihr Ämazon Konto"
    assert f.subject_norm == "ihr ämazon konto"
    assert "plain part" in f.body and "html paypal" in f.body and "nested words" in f.body
    assert f.has_html
    assert [(lk.where, lk.host) for lk in f.links] == [
        ("text", "www.shop.example"),
        ("text", "inner.example"),
        ("html-a", "www.google.com"),
        ("html-img", "t.example"),
    ]
    assert f.links[2].redirect_to == "https://evil.example/"
    assert f.links[2].shown == "https://paypal.com"
    assert f.image_alts == ("amazon logo",)
    assert [p.filename for p in f.attachments] == ["x.pdf"]


def test_html_attachment_links_are_collected() -> None:
    raw = (
        b"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nsee file\n"
        b'--b\nContent-Type: text/html; name="a.html"\n'
        b'Content-Disposition: attachment; filename="a.html"\n\n'
        b'<form action="https://kit.example/post.php"></form>\n--b--\n'
    )
    f = features(raw)
    assert [(lk.where, lk.host) for lk in f.links] == [("html-form", "kit.example")]
    assert f.attachments[0].filename == "a.html"


def test_limits_on_links_and_text() -> None:
    body = " ".join(f"http://h{i}.example/" for i in range(30))
    raw = f"Subject: s\n\n{body} {'word ' * 200}".encode()
    f = features(raw, limits=Limits(max_links=5, max_text_chars=100))
    assert len(f.links) == 5
    assert len(f.body) == 100
    assert set(f.limit_hits) == {"max_links", "max_text_chars"}


def test_parser_limit_hits_and_defects_carried() -> None:
    raw = b"From: a@b.example\nSubject: s\nno separator\n" + b"x" * 500
    f = features(raw, limits=Limits(max_message_bytes=200))
    assert "max_message_bytes" in f.limit_hits
    assert "MissingHeaderBodySeparatorDefect" in f.defects


# --- headers that carry claims -------------------------------------------------------------


def test_dkim_domains_and_list_headers() -> None:
    raw = (
        b"DKIM-Signature: v=1; a=rsa-sha256; d=Mail.ESP.example; s=s1;\n b=abc\n"
        b"DKIM-Signature: v=1; s=x; d=brand.example; bh=x\n"
        b"DKIM-Signature: v=1; d=mail.esp.example\n"
        b"DKIM-Signature: garbage\n"
        b"List-Unsubscribe: <mailto:u@x.example>\n\nb"
    )
    f = features(raw)
    assert f.dkim_domains == ("mail.esp.example", "brand.example")
    assert f.list_headers
    assert not features(b"Subject: s\n\nb").list_headers


def test_auth_combines_own_dkim_and_trusted_headers() -> None:
    ours = AuthResult("brandgate", "dkim", "pass", "brand.example")
    raw = (
        b"Authentication-Results: mx.trusted.example; dmarc=pass header.from=brand.example\n"
        b"Authentication-Results: forged.example; dmarc=pass header.from=paypal.com\n\nb"
    )
    f = features(raw, trusted=("mx.trusted.example",), dkim=(ours,))
    assert f.auth[0] == ours
    assert {(a.authserv_id, a.method, a.result) for a in f.auth[1:]} == {
        ("mx.trusted.example", "dmarc", "pass")
    }
    assert features(raw, dkim=(ours,)).auth == (ours,)  # nothing trusted: headers ignored


# --- normalisation: the fast paths give the plain definition's result -------------------------


def _normalise_reference(text: str) -> str:
    """normalise as the docstring defines it, step by step, without shortcuts."""
    text = text_mod._INVISIBLE_RE.sub("", unicodedata.normalize("NFKC", text)).lower()
    return re.sub(r"\s+", " ", text.translate(text_mod._CONFUSABLE_TABLE)).strip()


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127)))
def test_ascii_shortcut_equals_definition(text: str) -> None:
    assert normalise(text) == _normalise_reference(text)


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(
            " \t\n\u00a0\u2003\u200bAaIl0\u0430\u043e\u0435\uff21\u00e9\u3000x"
        )
    )
)
def test_normalise_equals_definition_on_tricky_text(text: str) -> None:
    assert normalise(text) == _normalise_reference(text)


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_normalise_equals_definition_on_any_text(text: str) -> None:
    assert normalise(text) == _normalise_reference(text)
