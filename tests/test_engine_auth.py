"""The guard against false positives, end to end: authenticated brand mail is lowered.

The engine verifies DKIM itself through an injected resolver (keys the test makes), and
believes Authentication-Results only from trusted authserv-ids.
"""

from __future__ import annotations

from dataclasses import replace

from config.loader import load_config, with_trusted_authserv
from filters.engine import Engine
from tests.test_dkim import BRAND_KEY, BRAND_RECORD, dict_dns, sign

# Amazon's real mail may link to partners; without authentication that looks like diversion.
BODY = (
    b"From: Amazon.com <store-news@amazon.com>\r\n"
    b"To: someone@example.org\r\n"
    b"Subject: Your Amazon order: save on partner offers\r\n"
    b"Date: Thu, 01 Aug 2024 10:00:00 +0000\r\n"
    b"Message-ID: <abc@amazon.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"\r\n"
    b'<p>Your gift card reward is waiting: <a href="https://partner-offers-hub.net/x">claim now'
    b"</a></p>\r\n"
)
DNS = dict_dns({"s1._domainkey.amazon.com": BRAND_RECORD})


def engine(**engine_overrides: object) -> Engine:
    cfg = load_config()
    cfg = replace(cfg, engine=replace(cfg.engine, **engine_overrides))  # type: ignore[arg-type]
    return Engine(cfg, dns=DNS)


def test_unauthenticated_brand_domain_with_diversion_is_flagged() -> None:
    v = engine(verify_dkim=True).scan(BODY)
    assert v.verdict != "pass"
    assert "BRAND_AUTHENTICATED" not in v.rules


def test_verified_brand_dkim_lowers_the_score_to_pass() -> None:
    signed = sign(BODY, b"s1", b"amazon.com", BRAND_KEY)
    plain = engine(verify_dkim=True).scan(BODY)
    v = engine(verify_dkim=True).scan(signed)
    assert "BRAND_AUTHENTICATED" in v.rules
    assert v.score < plain.score
    assert v.verdict == "pass"
    assert "authenticated as Amazon" in v.summary


def test_tampered_signed_message_gets_no_credit() -> None:
    signed = sign(BODY, b"s1", b"amazon.com", BRAND_KEY).replace(b"claim now", b"claim NOW")
    v = engine(verify_dkim=True).scan(signed)
    assert "BRAND_AUTHENTICATED" not in v.rules
    assert v.verdict != "pass"


def test_unverified_signature_is_no_credit_when_verification_is_off() -> None:
    # `scan` without DNS: a DKIM-Signature header proves nothing on its own.
    signed = sign(BODY, b"s1", b"amazon.com", BRAND_KEY)
    assert "BRAND_AUTHENTICATED" not in engine(verify_dkim=False).scan(signed).rules


def test_trusted_authentication_results_count_untrusted_do_not() -> None:
    header = b"Authentication-Results: mx.corp.test; dkim=pass header.d=amazon.com; dmarc=pass header.from=amazon.com\r\n"  # noqa: E501
    msg = header + BODY
    trusting = Engine(with_trusted_authserv(load_config(), ["mx.corp.test"]))
    assert "BRAND_AUTHENTICATED" in trusting.scan(msg).rules
    assert "BRAND_AUTHENTICATED" not in Engine(load_config()).scan(msg).rules
