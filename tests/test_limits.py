"""The cost model's caps (issue 11): what crosses one is cut, read where it matters, and said.

Hosts past RFC 1035 (253 characters, 127 labels), header blocks past max_header_bytes or
max_headers, more RFC 2047 words than max_encoded_words, display-name words longer than
max_word_chars: each is a LIMIT_EXCEEDED finding, never a blind spot. Costs are measured by
`scripts/fuzz --growth`, not here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from config.loader import ConfigError, load_config
from filters import domains
from filters.engine import Engine
from filters.features import extract, make_address
from filters.parse import bound_header_block, parse
from filters.registry import Lists
from filters.types import Features, Limits
from filters.urls import make_link
from tests.hostile import padded_phish, padding_fields, phish

ENGINE = Engine.from_path(None)
LISTS = Lists(redirect_params=frozenset({"url"}))


def features(raw: bytes, limits: Limits = Limits()) -> Features:  # noqa: B008 (frozen)
    return extract(
        parse(raw, limits), envelope=None, trusted_authserv_ids=(), lists=LISTS, limits=limits
    )


# --------------------------------------------------------------------------- hosts


def test_bound_host_keeps_first_and_last_labels_within_rfc1035() -> None:
    host = "paypal.com.secure." + "a." * 20_000 + "evil.example"
    cut, hit = domains.bound_host(host)
    assert hit == "max_host_labels"
    assert len(cut) <= 253 and cut.count(".") < 127
    assert cut.startswith("paypal.com.secure.") and cut.endswith(".evil.example")
    assert domains.registrable(cut) == "evil.example"


def test_bound_host_cuts_long_labels_and_leaves_real_hosts_alone() -> None:
    cut, hit = domains.bound_host("x" * 300 + ".evil.example")
    assert hit == "max_host_chars" and cut == "x" * 63 + ".evil.example"
    assert domains.bound_host("mail.paypal.co.uk") == ("mail.paypal.co.uk", None)
    longest = ".".join(["a"] * 126 + ["com"])[:253]
    assert domains.bound_host(longest[:253])[1] is None or len(longest) > 253


def test_tighter_configured_caps_apply() -> None:
    cut, hit = domains.bound_host("a.b.c.d.e.evil.example", 253, 4)
    assert hit == "max_host_labels" and cut == "a.b.evil.example"


def test_every_domain_function_is_bounded_whoever_calls_it() -> None:
    huge = "z." * 200_000 + "evil.example"
    assert domains.registrable(huge) == "evil.example"
    assert len(domains.to_ascii(huge)) <= 253
    assert len(domains.to_unicode(huge)) <= 253
    assert domains.split(huge)[2] == "example"
    assert domains.is_ip(huge) is False


def test_link_host_over_the_cap_is_cut_and_reported() -> None:
    link = make_link("https://paypal.com.x." + "a." * 5000 + "evil.example/login", "html-a")
    assert link is not None
    assert link.limit_hit == "max_host_labels"
    assert link.registrable == "evil.example" and len(link.host) <= 253
    ok = make_link("https://www.paypal.com/", "html-a")
    assert ok is not None and ok.limit_hit is None


def test_redirect_target_host_is_bounded_too() -> None:
    target = "https://" + "b." * 5000 + "evil.example/x"
    link = make_link(
        f"https://t.example/r?url={target}", "html-a", redirect_params=frozenset({"url"})
    )
    assert link is not None and link.redirect_to is not None
    assert link.limit_hit == "max_host_labels"
    assert link.redirect_to.startswith("https://b.b.") and len(link.redirect_to) < 400
    assert "evil.example/x" in link.redirect_to


def test_address_domain_over_the_cap_is_cut_and_reported() -> None:
    address = make_address("PayPal", "service@" + "a." * 3000 + "evil.example")
    assert address.limit_hit == "max_host_labels"
    assert address.registrable == "evil.example"


def test_long_hosts_in_a_message_give_a_limit_finding() -> None:
    host = "paypal.com.secure." + "a." * 10_000 + "evil.example"
    raw = (
        f"From: PayPal <service@{host}>\r\nSubject: Your account\r\n"
        f"Content-Type: text/html\r\n\r\n<a href='https://{host}/'>log in</a>\r\n"
    ).encode()
    f = features(raw)
    assert "max_host_labels" in f.limit_hits
    assert f.from_addr is not None and f.from_addr.registrable == "evil.example"
    assert [lk.registrable for lk in f.links] == ["evil.example"]
    verdict = ENGINE.scan(raw)
    assert verdict.status == "ok" and "LIMIT_EXCEEDED" in verdict.rules


# --------------------------------------------------------------------------- header block


def test_padded_phish_scores_like_the_bare_one_plus_a_limit_finding() -> None:
    bare = ENGINE.scan(phish("p1"))
    for fields in (1_500, 11_000, 60_000):
        padded = ENGINE.scan(padded_phish("p1", fields))
        assert padded.verdict == bare.verdict != "pass", (fields, padded.summary)
        assert set(padded.rules) == {*bare.rules, "LIMIT_EXCEEDED"}
        limit = next(f for f in padded.findings if f.rule == "LIMIT_EXCEEDED")
        assert "max_headers" in limit.evidence[0]
        assert padded.score == pytest.approx(bare.score + limit.score)


def test_vital_headers_are_read_wherever_padding_puts_them() -> None:
    pad = padding_fields(3_000)
    raw = (
        b"Received: from a\r\n" + pad + b"From: PayPal <a@evil.example>\r\n" + pad
        + b"Subject: account\r\nAuthentication-Results: mx.example; dkim=pass header.d=x\r\n"
        + pad + b"DKIM-Signature: v=1; d=evil.example; s=s; b=x\r\nReply-To: r@gmail.com\r\n"
        + b"Sender: s@evil.example\r\nContent-Type: text/html\r\n\r\n<a href='https://x.example/'>y</a>"
    )  # fmt: skip
    parsed = parse(raw)
    assert set(parsed.limit_hits) == {"max_headers"}
    assert len(parsed.headers) <= Limits().max_headers
    assert parsed.header("received") == "from a"  # the first fields are read as well
    for name, value in [
        ("from", "PayPal <a@evil.example>"),
        ("subject", "account"),
        ("reply-to", "r@gmail.com"),
        ("sender", "s@evil.example"),
        ("content-type", "text/html"),
    ]:
        assert parsed.header(name) == value, name
    assert parsed.header("dkim-signature") and parsed.header("authentication-results")
    assert parsed.htmls  # the body is still read as HTML: Content-Type was kept
    f = features(raw)
    assert f.dkim_domains == ("evil.example",)


def test_header_bytes_limit_keeps_vital_fields_and_the_body() -> None:
    raw = padding_fields(10) + b"X-Big: " + b"v" * 3_000_000 + b"\r\n" + phish("big")
    parsed = parse(raw)
    assert "max_header_bytes" in parsed.limit_hits
    assert parsed.header("from") == '"Amazon" <rewards@gmail.com>'
    assert any("gift card" in t for t in parsed.texts)


def test_a_huge_vital_field_is_cut_not_dropped() -> None:
    raw = b"Subject: Amazon " + b"x" * 2_000_000 + b"\r\nFrom: a@b.example\r\n\r\nbody"
    parsed = parse(raw)
    subject = parsed.header("subject") or ""
    assert subject.startswith("Amazon xxx") and len(subject) <= Limits().max_header_bytes
    assert parsed.header("from") == "a@b.example" and parsed.texts == ("body",)


def test_header_block_under_the_limits_is_untouched() -> None:
    raw = padding_fields(900) + phish("ok")
    assert bound_header_block(raw, Limits()) == (raw, ())
    assert parse(raw).limit_hits == ()


def test_broken_message_without_blank_line_keeps_its_body_lines() -> None:
    # The stdlib parser ends the header block at the first non-header line: the many body
    # lines after it are not header fields, however many there are.
    raw = b"From: a@b.example\r\nSubject: s\r\n" + b"body line\r\n" * 5_000
    parsed = parse(raw)
    assert parsed.limit_hits == ()
    assert parsed.texts and parsed.texts[0].count("body line") == 5_000


def test_configured_header_limits() -> None:
    limits = Limits(max_headers=50, max_header_bytes=4096)
    parsed = parse(padding_fields(60) + phish("cfg"), limits)
    assert set(parsed.limit_hits) == {"max_headers"}
    assert parsed.header("subject") == "Your Amazon gift card reward is waiting"
    parsed = parse(b"X-A: " + b"a" * 8000 + b"\r\n" + phish("cfg"), limits)
    assert "max_header_bytes" in parsed.limit_hits and parsed.header("from")


# --------------------------------------------------------------------------- encoded words


def test_encoded_words_past_the_limit_stay_as_they_are() -> None:
    word = "=?utf-8?q?Amazon?="
    raw = ("Subject: " + " ".join([word] * 50) + "\r\nFrom: a@b.example\r\n\r\nx").encode()
    parsed = parse(raw, Limits(max_encoded_words=10))
    assert parsed.limit_hits == ("max_encoded_words",)
    subject = parsed.header("subject") or ""
    assert subject.startswith("Amazon" * 10) and subject.count(word) == 40
    assert parse(raw).limit_hits == ()


# --------------------------------------------------------------------------- display words


def test_long_display_name_word_is_cut_for_matching() -> None:
    raw = ('From: "Amazon ' + "q" * 30_000 + '" <a@gmail.com>\r\nSubject: s\r\n\r\nx').encode()
    f = features(raw)
    assert "max_word_chars" in f.limit_hits
    assert f.from_addr is not None
    assert max(len(w) for w in f.from_addr.display.split()) == Limits().max_word_chars
    assert f.display_norm.startswith("amazon ")
    assert ENGINE.scan(raw).brand is not None


# --------------------------------------------------------------------------- configuration


def test_limits_are_validated_with_file_and_key(tmp_path: Path) -> None:
    conf = tmp_path / "brandgate.toml"
    for text, key, problem in [
        ("max_host_chars = 300", "limits.max_host_chars", "at most 253"),
        ("max_host_labels = 0", "limits.max_host_labels", "at least 1"),
        ("max_headers = 'many'", "limits.max_headers", "whole number"),
        ("on_overrun = 'pass'", "limits.on_overrun", "tag, quarantine, tempfail"),
        ("max_fields = 3", "limits.max_fields", "unknown key"),
    ]:
        conf.write_text(f"[limits]\n{text}\n")
        with pytest.raises(ConfigError) as err:
            load_config(tmp_path)
        assert err.value.key == key and problem in err.value.problem, err.value
    conf.write_text("[limits]\nmax_headers = 200\non_overrun = 'quarantine'\n")
    limits = load_config(tmp_path).limits
    assert limits.max_headers == 200 and limits.on_overrun == "quarantine"
    assert limits.max_host_chars == 253  # the rest keep the shipped values


def test_subject_and_display_name_are_read_up_to_their_limit() -> None:
    subject = "Amazon gift card " * 2_000
    raw = (
        f'From: "{"PayPal service " * 400}" <a@gmail.com>\r\nSubject: {subject}\r\n\r\nx'
    ).encode()
    f = features(raw)
    assert "max_subject_chars" in f.limit_hits
    assert len(f.subject) == Limits().max_subject_chars and f.subject.startswith("Amazon gift")
    assert f.from_addr is not None and len(f.from_addr.display) <= Limits().max_subject_chars
    assert ENGINE.scan(raw).brand is not None


def _nest(levels: int, first: int = 0) -> bytes:
    return b"".join(
        b"Content-Type: multipart/mixed; boundary=n%d\r\n\r\n--n%d\r\n" % (i, i)
        for i in range(first, first + levels)
    )


def test_nesting_past_the_depth_limit_is_cut_and_siblings_are_still_read() -> None:
    raw = (
        b"From: a@b.example\r\nContent-Type: multipart/mixed; boundary=top\r\n\r\n--top\r\n"
        + _nest(60, 1)
        + b"Content-Type: text/plain\r\n\r\n"
        + b"deep line\r\n" * 50_000
        + b"--top\r\nContent-Type: text/plain\r\n\r\nClaim your gift: http://evil.example/\r\n"
        b"--top--\r\n"
    )
    parsed = parse(raw)
    assert "max_mime_depth" in parsed.limit_hits
    assert parsed.texts == ("Claim your gift: http://evil.example/",)
    assert bound_header_block(raw, Limits())[1] == ()


def test_nesting_within_the_limit_is_untouched() -> None:
    raw = b"From: a@b.example\r\n" + _nest(15) + b"Content-Type: text/plain\r\n\r\nbottom\r\n"
    parsed = parse(raw)
    assert parsed.limit_hits == () and parsed.texts == ("bottom",)
