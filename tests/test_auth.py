"""Authentication-Results parsing (RFC 8601, as real MTAs write it) and the alignment helpers."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from filters.auth import (
    NO_AUTHSERV_ID,
    aligned,
    authenticated_domains,
    dkim_pass_domains,
    dmarc_fail_domain,
    dmarc_pass_domain,
    from_authenticated,
    parse_authentication_results,
    results_for,
    spf_pass_domain,
    verify_dkim,
)
from filters.types import AuthResult, Limits

GOOGLE = ("mx.google.com",)

GMAIL = (
    "mx.google.com;\r\n"
    "       dkim=pass header.i=@email.informeddelivery.usps.com header.s=krs header.b=VpMFDPjZ;\r\n"
    "       dkim=pass header.i=@mailgun.org header.s=mg header.b=IzzvhGDb;\r\n"
    "       spf=pass (google.com: domain of bounce+1097e0.f7c326-usps.emailuser=gmail.com@email"
    ".informeddelivery.usps.com designates 159.112.244.229 as permitted sender) "
    'smtp.mailfrom="bounce+1097e0.f7c326-usps.emailuser=gmail.com@email.informeddelivery.usps.com";'
    "\r\n       dmarc=pass (p=REJECT sp=REJECT dis=NONE) header.from=usps.com"
)

MICROSOFT = (
    "spf=pass (sender IP is 40.107.1.2) smtp.mailfrom=news.contoso.com; dkim=none (message not "
    "signed) header.d=none;dmarc=none action=none header.from=contoso.com;compauth=fail reason=001"
)

# Exchange Online as found in the corpus: a stray receiving domain after header.d.
MICROSOFT_STRAY = (
    "spf=softfail (sender IP is 199.230.200.198)\n smtp.mailfrom=google.com; "
    "cardinalhealth.mail.onmicrosoft.com; dkim=fail\n (signature did not verify)\n "
    "header.d=google.com;cardinalhealth.mail.onmicrosoft.com; dmarc=fail\n "
    "action=oreject header.from=google.com;"
)


def ar(method: str, result: str, domain: str, sid: str = "mx.google.com") -> AuthResult:
    return AuthResult(sid, method, result, domain)


def test_gmail_header() -> None:
    assert parse_authentication_results((GMAIL,), GOOGLE) == (
        ar("dkim", "pass", "email.informeddelivery.usps.com"),
        ar("dkim", "pass", "mailgun.org"),
        ar("spf", "pass", "email.informeddelivery.usps.com"),
        ar("dmarc", "pass", "usps.com"),
    )


def test_microsoft_header_without_authserv_id() -> None:
    got = parse_authentication_results((MICROSOFT,), (NO_AUTHSERV_ID,))
    assert got == (
        ar("spf", "pass", "news.contoso.com", NO_AUTHSERV_ID),
        ar("dkim", "none", "", NO_AUTHSERV_ID),  # header.d=none is no domain
        ar("dmarc", "none", "contoso.com", NO_AUTHSERV_ID),
    )  # compauth is not a method we use


def test_microsoft_header_is_not_trusted_by_default() -> None:
    # Nobody vouches for a header without an authserv-id unless the admin says so.
    assert parse_authentication_results((MICROSOFT,), GOOGLE) == ()


def test_microsoft_stray_domain_is_skipped() -> None:
    got = parse_authentication_results((MICROSOFT_STRAY,), (NO_AUTHSERV_ID,))
    assert [(r.method, r.result, r.domain) for r in got] == [
        ("spf", "softfail", "google.com"),
        ("dkim", "fail", "google.com"),
        ("dmarc", "fail", "google.com"),
    ]


def test_missing_semicolon_is_not_mistaken_for_a_missing_authserv_id() -> None:
    # "mx.evil" is an authserv-id followed by junk, not an Exchange-style header.
    forged = "mx.evil dkim=pass header.d=paypal.com; dmarc=pass header.from=paypal.com"
    assert parse_authentication_results((forged,), (NO_AUTHSERV_ID,)) == ()


def test_untrusted_authserv_id_is_ignored() -> None:
    forged = "evil.example; dkim=pass header.d=paypal.com; dmarc=pass header.from=paypal.com"
    assert parse_authentication_results((forged,), GOOGLE) == ()
    # Not a prefix or suffix match either.
    assert (
        parse_authentication_results(
            (GMAIL.replace("mx.google.com", "mx.google.com.evil"),), GOOGLE
        )
        == ()
    )


def test_no_trusted_ids_means_nothing() -> None:
    assert parse_authentication_results((GMAIL,), ()) == ()


def test_authserv_id_is_case_insensitive_with_version() -> None:
    value = "MX.Google.COM 1; DKIM=PASS header.d=Example.COM"
    assert parse_authentication_results((value,), GOOGLE) == (ar("dkim", "pass", "example.com"),)


def test_none_alone() -> None:
    assert parse_authentication_results(("mx.google.com; none",), GOOGLE) == ()
    assert parse_authentication_results(("mx.google.com 1; none (no checks)",), GOOGLE) == ()


def test_comments_are_ignored_even_nested_and_with_semicolons() -> None:
    value = (
        "mx.google.com (the (inner; comment) one); spf=fail (domain of x; say \\) no) "
        "smtp.mailfrom=bad@phish.example; dmarc=fail (p=REJECT) header.from=paypal.com"
    )
    assert parse_authentication_results((value,), GOOGLE) == (
        ar("spf", "fail", "phish.example"),
        ar("dmarc", "fail", "paypal.com"),
    )


def test_comment_that_looks_like_a_result_is_not_one() -> None:
    value = "mx.google.com; dkim=fail (dkim=pass header.d=paypal.com) header.d=phish.example"
    assert parse_authentication_results((value,), GOOGLE) == (ar("dkim", "fail", "phish.example"),)


def test_folded_header_and_spaces_around_equals() -> None:
    value = "mx.google.com;\r\n\tdkim = pass\r\n header.d = shop.example.com ;\n spf=neutral"
    assert parse_authentication_results((value,), GOOGLE) == (
        ar("dkim", "pass", "shop.example.com"),
        ar("spf", "neutral", ""),
    )


def test_quoted_value_with_semicolon() -> None:
    value = (
        'mx.google.com; spf=pass smtp.mailfrom="odd;local@bounce.example.com"; '
        "dmarc=pass header.from=example.com"
    )
    assert parse_authentication_results((value,), GOOGLE) == (
        ar("spf", "pass", "bounce.example.com"),
        ar("dmarc", "pass", "example.com"),
    )


def test_multiple_headers_keep_only_trusted_ones() -> None:
    values = (
        "forger.example; dmarc=pass header.from=paypal.com",
        "mx.google.com; dmarc=fail header.from=paypal.com",
        "relay.corp.example; dkim=pass header.d=paypal.com",
    )
    got = parse_authentication_results(values, ("mx.google.com", "relay.corp.example"))
    assert got == (
        ar("dmarc", "fail", "paypal.com"),
        ar("dkim", "pass", "paypal.com", "relay.corp.example"),
    )


def test_dkim_domain_falls_back_to_identity() -> None:
    value = (
        "mx.google.com; dkim=pass header.i=news@mail.shop.example.com; "
        "dkim=pass header.i=@x.example"
    )
    assert [r.domain for r in parse_authentication_results((value,), GOOGLE)] == [
        "mail.shop.example.com",
        "x.example",
    ]


def test_spf_domain_fallbacks() -> None:
    value = (
        "mx.google.com; spf=pass smtp.mailfrom=<>; "
        "spf=pass smtp.mailfrom=<> smtp.helo=mta1.example.net;"
        " spf=neutral smtp.mail=anonymous@i.tp.host"
    )
    assert [r.domain for r in parse_authentication_results((value,), GOOGLE)] == [
        "",
        "mta1.example.net",
        "i.tp.host",
    ]


def test_dmarc_with_bare_d_and_arc() -> None:
    value = "esa.example.com; dmarc=pass (p=reject dis=none) d=google.com; arc=pass (i=1)"
    got = parse_authentication_results((value,), ("esa.example.com",))
    assert got == (
        ar("dmarc", "pass", "google.com", "esa.example.com"),
        ar("arc", "pass", "", "esa.example.com"),
    )


def test_unknown_methods_are_dropped() -> None:
    value = "mx.google.com; iprev=pass policy.iprev=1.2.3.4; auth=pass smtp.auth=x; x-foo=bar"
    assert parse_authentication_results((value,), GOOGLE) == ()


def test_idn_domain_is_punycoded() -> None:
    value = "mx.google.com; dmarc=pass header.from=bücher.example"
    assert parse_authentication_results((value,), GOOGLE) == (
        ar("dmarc", "pass", "xn--bcher-kva.example"),
    )


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=2000))
def test_verify_dkim_on_random_bytes_never_raises(raw: bytes) -> None:
    # A DKIM-Signature header on top so dkimpy gets as far as the tag parser.
    message = b"DKIM-Signature: v=1; d=x.example; s=s; " + raw
    assert isinstance(verify_dkim(message, lambda name, timeout=5: b"", Limits()), tuple)


@given(st.text())
def test_any_text_never_raises(text: str) -> None:
    got = parse_authentication_results((text, "mx.google.com;" + text), (*GOOGLE, NO_AUTHSERV_ID))
    assert all(r.method in ("dkim", "spf", "dmarc", "arc") for r in got)


@given(
    st.lists(
        st.sampled_from(
            ["mx.google.com", ";", "(", ")", '"', "\\", "=", " ", "dkim", "pass", "\r\n "]
        ),
        max_size=40,
    )
)
def test_structural_noise_never_raises(tokens: list[str]) -> None:
    assert isinstance(parse_authentication_results(("".join(tokens),), GOOGLE), tuple)


# --------------------------------------------------------------------------- helpers


def test_aligned_is_relaxed() -> None:
    assert aligned("email.informeddelivery.usps.com", "usps.com")
    assert aligned("USPS.com.", "usps.com")
    assert aligned("a.example.co.uk", "b.example.co.uk")
    assert not aligned("example.co.uk", "other.co.uk")  # a public suffix is no organisation
    assert not aligned("usps.com.phish.example", "usps.com")
    assert not aligned("", "")
    assert not aligned("mailgun.org", "usps.com")


AUTH = (
    ar("dkim", "pass", "email.informeddelivery.usps.com"),
    ar("dkim", "pass", "mailgun.org"),
    ar("dkim", "fail", "paypal.com"),
    ar("spf", "pass", "bounce.example.net"),
    ar("dmarc", "pass", "usps.com"),
)


def test_pass_domain_helpers() -> None:
    assert dkim_pass_domains(AUTH) == ("email.informeddelivery.usps.com", "mailgun.org")
    assert spf_pass_domain(AUTH) == "bounce.example.net"
    assert dmarc_pass_domain(AUTH) == "usps.com"
    assert dmarc_fail_domain(AUTH) is None
    assert dmarc_fail_domain((ar("dmarc", "fail", "paypal.com"),)) == "paypal.com"
    assert authenticated_domains(AUTH) == (
        "email.informeddelivery.usps.com",
        "mailgun.org",
        "usps.com",
        "bounce.example.net",
    )
    assert len(results_for(AUTH, "dkim")) == 3
    assert spf_pass_domain(()) is None and dmarc_pass_domain(()) is None


def test_from_authenticated() -> None:
    assert from_authenticated(AUTH, "usps.com")
    # An aligned DKIM pass is enough without a DMARC result (our own verification).
    assert from_authenticated(
        (ar("dkim", "pass", "mail.shop.example.com", "brandgate"),), "shop.example.com"
    )
    # An ESP's signature speaks for the ESP, not for the brand in From.
    assert not from_authenticated((ar("dkim", "pass", "mailgun.org"),), "usps.com")
    # SPF alone speaks for the envelope only.
    assert not from_authenticated((ar("spf", "pass", "usps.com"),), "usps.com")
    assert not from_authenticated((ar("dkim", "fail", "paypal.com"),), "paypal.com")
    assert not from_authenticated(AUTH, "")
