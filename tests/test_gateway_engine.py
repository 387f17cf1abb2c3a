"""The gateway with the real engine in its worker processes (not the fake one)."""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest

from gateway.scanpool import default_engine_factory
from tests.test_gateway_support import message, running_gateway, sink

pytestmark = pytest.mark.timeout(60)

PHISH = (
    b'From: "Amazon Rewards" <rewards@amaz0n-gifts.example>\r\n'
    b"To: bob@rcpt.example\r\nSubject: Your Amazon gift card is waiting\r\n"
    b"Message-ID: <p1@amaz0n-gifts.example>\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n\r\n"
    b"<html><body><p>Dear Amazon customer, claim your $500 Amazon gift card now.\r\n"
    b"This offer expires in 24 hours.</p>"
    b'<a href="http://amaz0n-gifts.example/claim">www.amazon.com/gift</a></body></html>\r\n'
)
# Low thresholds so that the test does not depend on the current weights: any finding tags.
THRESHOLDS = "[thresholds]\ntag = 0.5\nquarantine = 1000.0\nreject = 2000.0\n"


def _send(port: int, data: bytes, mail_from: str) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        c.ehlo("c.test.invalid")
        c.mail(mail_from)
        c.rcpt("bob@rcpt.example")
        return c.data(data)


def test_real_engine_tags_a_brand_impersonation_and_passes_plain_mail(tmp_path: Path) -> None:
    with (
        sink() as (hop, hop_port),
        running_gateway(
            tmp_path,
            hop_port,
            factory=default_engine_factory,
            extra=THRESHOLDS,
            gateway="banner = true",
        ) as gw,
    ):
        assert _send(gw.port, PHISH, "bounce@amaz0n-gifts.example")[0] == 250
        assert _send(gw.port, message(), "alice@sender.example")[0] == 250
    tagged, plain = hop.messages[0].data, hop.messages[1].data
    head = tagged.partition(b"\r\n\r\n")[0]
    assert b"X-Brandgate-Verdict: tag" in head
    assert b"X-Brandgate-Brand: Amazon" in head
    assert tagged.count(b"data-brandgate-banner") == 1
    assert plain.endswith(message())
