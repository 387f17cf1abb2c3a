"""Tagging keeps signatures verifiable (issue 10, defect 1).

A message signed with a test key goes through the real gateway with the real engine, which
verifies DKIM itself through an injected resolver (no network). In the default configuration
the tagged message that reaches the next hop still verifies; with the banner on, the body
changes and DKIM fails, so the change is ARC-sealed and the seal verifies, carrying the
dkim=pass brandgate saw before the change.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import dkim
import pytest

from config.loader import Config, load_config
from filters.engine import Engine
from filters.types import Verdict
from gateway import actions
from gateway.settings import ArcSettings, from_table
from tests.test_dkim import BRAND_KEY, KEYS, dict_dns, rsa_keypair, sign
from tests.test_gateway_smtp import send
from tests.test_gateway_support import running_gateway, sink

pytestmark = pytest.mark.timeout(120)

ARC_KEY, ARC_RECORD = rsa_keypair(7)
DNS_RECORDS = {**KEYS, "arc._domainkey.gw.example": ARC_RECORD}
LOW = "[thresholds]\ntag = 0.5\nquarantine = 900\nreject = 999\n"
PHISH = (
    b'From: "Amazon" <rewards@shop.example.com>\r\n'
    b"To: bob@rcpt.example\r\n"
    b"Subject: Your Amazon gift card is waiting\r\n"
    b"Date: Thu, 01 Aug 2024 10:00:00 +0000\r\n"
    b"Message-ID: <gift@shop.example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Claim your Amazon gift card now: http://amazon-gifts-claim.example/x\r\n"
)


def dns_engine_factory(config: Config) -> Engine:
    """The real engine verifying DKIM through the test keys (module level: workers fork)."""
    return Engine(
        replace(config, engine=replace(config.engine, verify_dkim=True)), dict_dns(DNS_RECORDS)
    )


def signed() -> bytes:
    return sign(PHISH, b"s1", b"shop.example.com", BRAND_KEY)


def verifies(data: bytes) -> bool:
    return bool(dkim.verify(data, dnsfunc=dict_dns(DNS_RECORDS)))


def test_signed_message_tagged_in_the_default_configuration_still_verifies(
    tmp_path: Path,
) -> None:
    data = signed()
    assert verifies(data)
    with (
        sink() as (hop, hop_port),
        running_gateway(
            tmp_path, hop_port, factory=dns_engine_factory, extra=LOW, engine="verify_dkim = true"
        ) as gw,
    ):
        assert send(gw.port, data)[0] == 250
    out = hop.messages[0].data
    head = out.partition(b"\r\n\r\n")[0].replace(b"\r\n ", b" ")
    assert b"X-Brandgate-Verdict: tag" in head  # it was tagged ...
    assert out.endswith(data)  # ... by prepending header fields only
    assert verifies(out)  # so the sender's signature still holds for every later hop
    # and our own check is recorded for the hops after us
    assert b"Authentication-Results: " in head and b"dkim=pass header.d=shop.example.com" in head


def _verdict(data: bytes) -> Verdict:
    return dns_engine_factory(load_config()).scan(data)


def test_banner_breaks_dkim_so_the_change_is_arc_sealed_with_the_earlier_results(
    tmp_path: Path,
) -> None:
    key_file = tmp_path / "arc.pem"
    key_file.write_bytes(ARC_KEY)
    settings = from_table({"banner": True, "authserv_id": "gw.example"}, "test")
    arc = ArcSettings("gw.example", "arc", key_file)
    verdict = _verdict(signed())
    policy = settings.policy_for("bob@rcpt.example")
    marking = replace(actions.marking_for(settings, policy, {"tag": 4.0}, "test"), arc=arc)
    marked = actions.mark(signed(), verdict, marking, "tag")
    assert marked.banner and marked.changed and marked.arc == "sealed"
    assert not verifies(marked.data)  # the body changed: DKIM cannot hold
    cv, results, reason = dkim.arc_verify(marked.data, dnsfunc=dict_dns(DNS_RECORDS))
    assert cv == dkim.CV_Pass, (reason, results)
    head = marked.data.partition(b"\r\n\r\n")[0].replace(b"\r\n ", b" ").replace(b"\r\n\t", b" ")
    aar = next(ln for ln in head.split(b"\r\n") if ln.startswith(b"ARC-Authentication-Results:"))
    assert b"i=1; gw.example" in aar and b"dkim=pass header.d=shop.example.com" in aar


def test_banner_without_arc_says_so_in_the_log_field() -> None:
    settings = from_table({"banner": True}, "test")
    verdict = _verdict(signed())
    marking = actions.marking_for(settings, settings.policy_for(""), {"tag": 4.0}, "test")
    marked = actions.mark(signed(), verdict, marking, "tag")
    assert marked.changed and marked.arc == "off"
    assert not verifies(marked.data)


def test_through_the_milter_dkim_holds_by_default_and_the_banner_is_arc_sealed(
    tmp_path: Path,
) -> None:
    """The milter marks as the SMTP modes do: header fields only by default (the signature
    still verifies, our dkim=pass recorded), and with the banner an ARC seal that verifies."""
    from tests.test_milter_server import result, running_milter, session

    data = signed()
    key_file = tmp_path / "arc.pem"
    key_file.write_bytes(ARC_KEY)
    outs = []
    for n, gateway in enumerate(
        [
            'banner = false\nauthserv_id = "gw.example"',
            'banner = true\nauthserv_id = "gw.example"\n'
            f'arc = {{ domain = "gw.example", selector = "arc", key_file = "{key_file}" }}',
        ]
    ):
        with (
            running_milter(
                tmp_path / str(n), gateway=gateway, factory=dns_engine_factory, extra=LOW
            ) as gw,
            session(gw.port) as mta,
        ):
            reply, edits = mta.message(data)
        assert reply.cmd == "c"
        outs.append(result(data, edits))
    plain, sealed = outs
    head = plain.partition(b"\r\n\r\n")[0].replace(b"\r\n ", b" ")
    assert plain.endswith(data) and verifies(plain)
    assert b"X-Brandgate-Verdict: tag" in head
    assert b"Authentication-Results: gw.example; dkim=pass header.d=shop.example.com" in head
    assert not verifies(sealed) and b"data-brandgate-banner" not in sealed  # plain text part
    assert b"[brandgate]" in sealed
    cv, results, reason = dkim.arc_verify(sealed, dnsfunc=dict_dns(DNS_RECORDS))
    assert cv == dkim.CV_Pass, (reason, results)
