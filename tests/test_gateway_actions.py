"""Tagging on raw bytes: our headers, the subject prefix, one banner, nothing else touched."""

from __future__ import annotations

import base64
import email
import email.policy
import quopri
from dataclasses import replace

import pytest

from filters.types import BrandClaim, ScoredFinding, Verdict
from gateway import actions
from gateway.settings import GatewaySettings, from_table

VERDICT = Verdict(
    verdict="tag",
    score=5.25,
    brand=BrandClaim("amazon", "Amazon", ("display-name",), ("amazon",), 1.0),
    findings=(ScoredFinding("BRAND_SENDER_UNVERIFIED", "claim", 5.25, ("gmail.com",), "d"),),
    summary="Claims to be Amazon in the display name; links go to deals.example.",
)
BANNER = b"presents itself as Amazon, but brandgate could not confirm"


def _multipart(text_cte: str, html_cte: str) -> bytes:
    def enc(body: str, cte: str) -> bytes:
        raw = body.encode("utf-8")
        if cte == "base64":
            return base64.encodebytes(raw).replace(b"\n", b"\r\n")
        if cte == "quoted-printable":
            return quopri.encodestring(raw).replace(b"\n", b"\r\n")
        return raw

    attachment = base64.encodebytes(b"\x00\x01binary" * 20).replace(b"\n", b"\r\n")
    return (
        b"From: Amazon <x@deals.example>\r\nSubject: Gift\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\npreamble\r\n'
        b'--outer\r\nContent-Type: multipart/alternative; boundary="inner"\r\n\r\n'
        b"--inner\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: "
        + text_cte.encode()
        + b"\r\n\r\n"
        + enc("Grüße, claim your gift card.\r\n", text_cte)
        + b"\r\n--inner\r\nContent-Type: text/html; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: "
        + html_cte.encode()
        + b"\r\n\r\n"
        + enc(
            '<html><body class="x"><p>Claim <a href="http://deals.example">now</a></p>'
            "</body></html>\r\n",
            html_cte,
        )
        + b"\r\n--inner--\r\n"
        b"\r\n--outer\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="a.bin"\r\n\r\n'
        + attachment
        + b"\r\n--outer--\r\nepilogue\r\n"
    )


@pytest.mark.parametrize(
    ("text_cte", "html_cte"),
    [("8bit", "8bit"), ("base64", "quoted-printable"), ("quoted-printable", "base64")],
)
def test_banner_goes_atop_text_and_html_once_and_the_rest_is_untouched(
    text_cte: str, html_cte: str
) -> None:
    raw = _multipart(text_cte, html_cte)
    out = actions.add_banner(raw, VERDICT)
    assert out is not None
    msg = email.message_from_bytes(out, policy=email.policy.default)
    plain = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert plain is not None and html is not None
    text, markup = plain.get_content(), html.get_content()
    assert text.startswith("[brandgate] Caution: this message presents itself as Amazon")
    assert text.count("presents itself as Amazon") == 1 and "Grüße, claim your gift card." in text
    assert markup.startswith('<html><body class="x"><div data-brandgate-banner="1"')
    assert markup.count("data-brandgate-banner") == 1
    # headers, preamble, the attachment and the epilogue are byte-identical
    head = raw.partition(b"\r\n\r\n")[0]
    assert out.startswith(head + b"\r\n\r\npreamble\r\n--outer\r\n")
    tail = raw[raw.index(b"\r\n--outer\r\nContent-Type: application/octet-stream") :]
    assert out.endswith(tail)


def test_banner_in_single_part_plain_message() -> None:
    raw = b"From: a@b.example\r\nSubject: s\r\n\r\nhello\r\n"
    out = actions.add_banner(raw, VERDICT)
    assert out is not None
    assert out.startswith(b"From: a@b.example\r\nSubject: s\r\n\r\n[brandgate] Caution: ")
    assert out.endswith(b"\r\n\r\nhello\r\n")


def _tag(raw: bytes, banner: bool = True, prefix: str = "") -> actions.Marked:
    marking = actions.Marking(
        required=4.0, authserv_id="gw.example", banner=banner, subject_prefix=prefix
    )
    return actions.mark(raw, VERDICT, marking, "tag")


def test_no_text_body_means_headers_only() -> None:
    raw = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
        b"Content-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAA\r\n--b--\r\n"
    )
    assert actions.add_banner(raw, VERDICT) is None
    marked = _tag(raw)
    assert (marked.banner, marked.changed) == (False, False)
    assert marked.data.endswith(raw) and marked.data.startswith(b"X-Brandgate-Status: tag ")


def test_broken_mime_falls_back_to_headers_only() -> None:
    raw = b'Content-Type: text/plain; charset="x-no-such-charset"\r\n\r\nhi\r\n'
    marked = _tag(raw)
    assert marked.banner is False and marked.data.endswith(raw)


def test_tag_headers_are_prepended_and_the_original_bytes_follow() -> None:
    raw = b"DKIM-Signature: v=1; d=x.example;\r\n b=abc\r\nSubject: s\r\n\r\nbody\r\n"
    out = _tag(raw, banner=False).data
    assert out.endswith(raw)
    assert out[: -len(raw)] == (
        b"X-Brandgate-Status: tag score=5.25 required=4.00 brand=Amazon\r\n"
        b" rules=BRAND_SENDER_UNVERIFIED=5.25\r\n"
        b"X-Brandgate-Verdict: tag\r\nX-Brandgate-Score: 5.25\r\n"
        b"X-Brandgate-Rules: BRAND_SENDER_UNVERIFIED=5.25\r\nX-Brandgate-Brand: Amazon\r\n"
    )


PASS = Verdict("pass", 0.5, None, (), "Nothing found.")


def test_passed_mail_gets_header_fields_only_or_with_pass_headers_off_nothing() -> None:
    raw = b"DKIM-Signature: v=1; d=x.example;\r\n b=abc\r\nSubject: s\r\n\r\nbody\r\n"
    on = actions.Marking(required=4.0, authserv_id="gw.example", banner=True, subject_prefix="[S]")
    marked = actions.mark(raw, PASS, on, "pass")
    # prepended fields only: the signed fields and the body follow byte for byte
    assert marked.data.endswith(raw) and not marked.changed and not marked.banner
    assert marked.data[: -len(raw)] == (
        b"X-Brandgate-Status: pass score=0.50 required=4.00 rules=none\r\n"
        b"X-Brandgate-Verdict: pass\r\nX-Brandgate-Score: 0.50\r\nX-Brandgate-Rules: none\r\n"
    )
    off = replace(on, pass_headers=False, spam_headers=True)
    assert actions.mark(raw, PASS, off, "pass") == actions.Marked(raw, False, False, "not needed")
    # it is about passed mail only: a tag is marked as ever
    assert actions.mark(raw, VERDICT, off, "tag").data.startswith(b"X-Brandgate-Status: tag ")


POLICIES = from_table(
    {
        "banner": False,
        "recipients": {
            "strict.example": {"actions": {"tag": "quarantine"}},
            "relaxed.example": {"thresholds": {"tag": 10.0, "quarantine": 20.0, "reject": 30.0}},
            "banner.example": {"banner": True, "banner_language": "de"},
            "refuse.example": {"actions": {"tag": "reject"}},
        },
        "banner_texts": {"en": {"brand": "E {brand}", "generic": "E"},
                         "de": {"brand": "D {brand}", "generic": "D"}},
    },
    "test",
)  # fmt: skip
TH = {"tag": 4.0, "quarantine": 8.0, "reject": 12.0}


@pytest.mark.parametrize(
    ("rcpts", "action", "key"),
    [
        ((), "tag", ""),
        (("a@plain.example",), "tag", ""),
        (("a@relaxed.example",), "pass", "relaxed.example"),
        # the strictest action among the recipients' policies, under the policy that asked
        (("a@relaxed.example", "b@plain.example"), "tag", ""),
        (("a@plain.example", "b@strict.example", "c@relaxed.example"), "quarantine",
         "strict.example"),
        # a tie: the policy with the banner wins, whatever the order
        (("a@plain.example", "b@banner.example"), "tag", "banner.example"),
        (("b@banner.example", "a@plain.example"), "tag", "banner.example"),
        # after the queue a reject is kept instead; in the session (the milter) it stays
        (("a@refuse.example", "b@strict.example"), "quarantine", "refuse.example"),
    ],
)  # fmt: skip
def test_decision_takes_the_strictest_policy_among_the_recipients(
    rcpts: tuple[str, ...], action: str, key: str
) -> None:
    d = actions.decision_for(POLICIES, VERDICT, rcpts, TH, "t")
    assert (d.action, d.policy.key) == (action, key)
    if key == "relaxed.example":
        assert d.verdict.verdict == "pass" and d.marking.required == 10.0
    if key == "banner.example":
        assert d.marking.banner and d.marking.banner_text is not None
        assert d.marking.banner_text.brand == "D {brand}"
    in_session = actions.decision_for(POLICIES, VERDICT, rcpts, TH, "t", in_session=True)
    assert in_session.action == ("reject" if key == "refuse.example" else action)


def test_header_values_are_folded_ascii_without_stray_breaks() -> None:
    value = "Amazon\r\nBcc: victim@example.com\x00 " + "Ünïcödé " * 20
    line = actions.header_value(value, "X-Brandgate-Brand")
    assert line.isascii()
    body = line[:-2]
    assert "\n" not in body.replace("\r\n ", "").replace("\r\n\t", "")
    assert "\x00" not in line
    assert all(len(part) <= 78 for part in body.split("\r\n"))
    decoded = str(email.header.make_header(email.header.decode_header(body.split(": ", 1)[1])))
    assert decoded.startswith("Amazon Bcc: victim@example.com")


def test_incoming_brandgate_headers_are_stripped_with_their_continuations() -> None:
    raw = (
        b"X-Brandgate-Verdict: pass\r\nFrom: a@b.example\r\nx-brandgate-score: 0\r\n"
        b" continued\r\nSubject: s\r\n\r\nX-Brandgate-Verdict: in the body stays\r\n"
    )
    assert actions.strip_our_headers(raw) == (
        b"From: a@b.example\r\nSubject: s\r\n\r\nX-Brandgate-Verdict: in the body stays\r\n"
    )


def test_subject_prefix_once() -> None:
    raw = b"From: a@b.example\r\nSubject: Your gift\r\n\r\nx\r\n"
    once = actions.prefix_subject(raw, "[SUSPICIOUS]")
    assert b"Subject: [SUSPICIOUS] Your gift\r\n" in once
    assert actions.prefix_subject(once, "[SUSPICIOUS]") == once
    assert actions.prefix_subject(b"From: a@b.example\r\n\r\nx", "[S]").startswith(b"Subject: [S]")


def test_reject_reply_is_one_safe_line() -> None:
    reply = actions.reject_reply(VERDICT)
    assert reply.startswith("550 5.7.1 ") and "Amazon" in reply and "\n" not in reply


def test_gateway_table_validation_names_file_and_key() -> None:
    from config.loader import ConfigError

    with pytest.raises(ConfigError, match=r"f\.toml: gateway\.actions\.tag: expected one of"):
        from_table({"actions": {"tag": "explode"}}, "f.toml")
    with pytest.raises(ConfigError, match=r"gateway\.allowed_networks"):
        from_table({"allowed_networks": ["not-a-net"]}, "f.toml")
    with pytest.raises(ConfigError, match=r"gateway\.bogus: unknown key"):
        from_table({"bogus": 1}, "f.toml")
    s = from_table({"listen": "[::1]:2525", "actions": {"reject": "reject"}}, "f.toml")
    assert s.listen == ("::1", 2525)
    # after the queue a reject would bounce to a forged sender: quarantine instead
    assert s.action_for("reject") == "quarantine"
    assert GatewaySettings(mode="before-queue").action_for("reject") == "reject"


def test_banner_in_a_7bit_ascii_part_falls_back_to_the_ascii_text() -> None:
    from gateway.settings import BannerText, from_table

    s = from_table({"banner": True}, "test")
    german = BannerText("Vorsicht: {brand}? Prüfen Sie das.", "Vorsicht: prüfen.")
    marking = replace(
        actions.marking_for(s, s.policy_for(""), {"tag": 4.0}, "t"), banner_text=german
    )
    raw = b"From: a@b.example\r\nSubject: s\r\n\r\nhello\r\n"
    marked = actions.mark(raw, VERDICT, marking, "tag")
    assert marked.banner and b"presents itself as Amazon" in marked.data.replace(b"\r\n", b" ")
    utf8 = raw.replace(b"\r\n\r\n", b"\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n", 1)
    marked = actions.mark(utf8.replace(b"Subject", b"MIME-Version: 1.0\r\nSubject"), VERDICT,
                          marking, "tag")  # fmt: skip
    assert marked.banner and "Prüfen".encode() not in marked.data  # 7bit (no CTE): ASCII only


def test_forged_verdict_headers_are_stripped_ours_and_spamassassins() -> None:
    raw = (
        b"X-Spam-Flag: YES\r\nX-Spam-Status: No, score=-99\r\n"
        b"Authentication-Results: gw.example; dkim=pass header.d=paypal.com\r\n"
        b"Authentication-Results: mx.upstream.example; spf=pass\r\n"
        b"x-brandgate-verdict: pass\r\nFrom: a@b.example\r\n\r\nbody\r\n"
    )
    out = actions.strip_our_headers(raw, spam=True, authserv_id="gw.example")
    assert out == (
        b"Authentication-Results: mx.upstream.example; spf=pass\r\n"
        b"From: a@b.example\r\n\r\nbody\r\n"
    )
    # without spam_headers, an upstream SpamAssassin's fields are kept for the user's filters
    assert b"X-Spam-Status" in actions.strip_our_headers(raw, authserv_id="gw.example")
