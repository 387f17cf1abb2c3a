"""Hostile input against the gateway's own byte handling (issue 11): tagging and unfolding."""

from __future__ import annotations

import email
import email.policy
import random

import pytest

from filters.types import BrandClaim, ScoredFinding, Verdict
from gateway import actions
from tests.hostile import banner_boundary, continuation_lines

VERDICT = Verdict(
    verdict="tag",
    score=5.25,
    brand=BrandClaim("amazon", "Amazon", ("display-name",), ("amazon",), 1.0),
    findings=(ScoredFinding("BRAND_SENDER_UNVERIFIED", "claim", 5.25, ("gmail.com",), "d"),),
    summary="Claims to be Amazon in the display name.",
)


@pytest.mark.parametrize("dashes", [54, 56, 58, 60])
def test_banner_never_closes_a_multipart_of_dashes(dashes: int) -> None:
    raw = banner_boundary(dashes, random.Random(0))
    marking = actions.Marking(required=4.0, authserv_id="brandgate.test", banner=True)
    marked = actions.mark(raw, VERDICT, marking, "tag")
    assert marked.banner
    out = marked.data
    msg = email.message_from_bytes(out, policy=email.policy.default)
    parts = [p.get_content_type() for p in msg.walk() if not p.is_multipart()]
    assert parts == ["text/plain", "application/pdf"]
    text = next(p for p in msg.walk() if p.get_content_type() == "text/plain").get_content()
    assert text.startswith("[brandgate] Caution:") and text.rstrip().endswith("text")


def test_unfolding_keeps_every_byte_of_long_continuations() -> None:
    raw = continuation_lines(50_000, random.Random(0))
    block, _rest = actions.split_headers(raw)
    fields = actions._fields(block)
    assert b"".join(fields) == block
    assert sum(f.startswith(b"X-Long:") for f in fields) == 1
    stripped = actions.strip_our_headers(raw)
    assert stripped == raw[len(b"X-Brandgate-Verdict: pass\r\n") :]
    prefixed = actions.prefix_subject(stripped, "[SUSPICIOUS]")
    assert b"\r\nSubject: [SUSPICIOUS] Your Amazon gift card" in prefixed
    assert len(prefixed) == len(stripped) + len(b"[SUSPICIOUS] ")
