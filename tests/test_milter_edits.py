"""From the MTA's copy to the message actions.py makes: exact, and nothing for passed mail."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from filters.types import BrandClaim, ScoredFinding, Verdict
from gateway import actions
from gateway.milter.edits import edits, reconstruct
from tests.milter_mta import Reply, apply_edits, split_message

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "dev"

VERDICT = Verdict(
    verdict="tag",
    score=9.5,
    brand=BrandClaim("amazon", "Amazon", ("display-name",), ("amazon",), 1.0),
    findings=(ScoredFinding("BRAND_SENDER_UNVERIFIED", "claim", 6.0, ("x",), "d"),),
    summary="Claims to be Amazon; sent from gmail.com.",
)

MESSAGE = (
    b"Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    b'From: "Amazon" <rewards@gmail.com>\r\n'
    b"X-Brandgate-Verdict: pass\r\n"
    b"Subject:  two spaces and a\r\n\tfold\r\n"
    b"To:bob@example.test\r\n"
    b"x-brandgate-score: -5\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Hello\r\n.dot line\r\n\r\nend\r\n"
)


def marking(subject_prefix: str = "") -> actions.Marking:
    return actions.Marking(
        required=4.0, authserv_id="gw.example", banner=True, subject_prefix=subject_prefix
    )


def as_replies(packets: list[bytes]) -> list[Reply]:
    return [Reply(chr(p[4]), p[5:]) for p in packets]


def roundtrip(raw: bytes, target: bytes, leadspc: bool) -> bytes:
    fields, body = split_message(raw, leadspc)
    return apply_edits(
        fields, body, as_replies(edits(fields, body, target, leadspc=leadspc)), leadspc
    )


@pytest.mark.parametrize("leadspc", [True, False])
def test_reconstruction_gives_back_the_bytes(leadspc: bool) -> None:
    fields, body = split_message(MESSAGE, leadspc=True)
    assert reconstruct(fields, body, leadspc=True) == MESSAGE
    fields, body = split_message(MESSAGE, leadspc=False)
    # without HDR_LEADSPC the MTA ate one space per field: "To:bob" comes back as "To: bob"
    assert reconstruct(fields, body, leadspc=False) == MESSAGE.replace(b"To:bob", b"To: bob")


@pytest.mark.parametrize("leadspc", [True, False])
def test_unchanged_message_needs_no_edits(leadspc: bool) -> None:
    fields, body = split_message(MESSAGE, leadspc)
    target = reconstruct(fields, body, leadspc=leadspc)
    assert edits(fields, body, target, leadspc=leadspc) == []


def test_forged_verdict_fields_are_deleted_last_one_first() -> None:
    fields, body = split_message(MESSAGE, True)
    got = as_replies(edits(fields, body, actions.strip_our_headers(MESSAGE), leadspc=True))
    assert [(r.cmd, r.data) for r in got] == [
        ("m", b"\x00\x00\x00\x01x-brandgate-score\x00\x00"),
        ("m", b"\x00\x00\x00\x01X-Brandgate-Verdict\x00\x00"),
    ]


@pytest.mark.parametrize("leadspc", [True, False])
@pytest.mark.parametrize("prefix", ["", "[SUSPICIOUS]"])
def test_tagged_message_is_reproduced_exactly(leadspc: bool, prefix: str) -> None:
    clean = actions.strip_our_headers(MESSAGE)
    marked = actions.mark(clean, VERDICT, marking(subject_prefix=prefix), "tag")
    assert marked.banner
    target = marked.data
    fields, body = split_message(MESSAGE, leadspc)
    packets = edits(fields, body, target, leadspc=leadspc)
    kinds = [chr(p[4]) for p in packets]
    # deletions and a Subject change first, the status and tags on top, then the new body
    assert kinds == ["m"] * (2 + bool(prefix)) + ["i"] * 5 + ["b"]
    expect = target if leadspc else target.replace(b"To:bob", b"To: bob")
    assert roundtrip(MESSAGE, target, leadspc) == expect


def test_message_without_body_or_subject() -> None:
    raw = b"From: a@b.example\r\n\r\n"
    target = actions.mark(raw, VERDICT, marking(subject_prefix="[X]"), "tag").data
    assert roundtrip(raw, target, True) == target


_name = st.sampled_from([b"Subject", b"From", b"X-Brandgate-Verdict", b"Received", b"X-A"])
# values the protocol can carry: no NUL (C strings), line breaks only as folds
_value = st.binary(max_size=20).map(
    lambda b: b" " + b.replace(b"\r", b"").replace(b"\n", b" ").replace(b"\0", b"")
)
_fields = st.lists(st.tuples(_name, _value), max_size=12)


@given(_fields, _fields, st.binary(max_size=40), st.binary(max_size=40))
def test_any_target_header_section_is_reached(
    before: list[tuple[bytes, bytes]],
    after: list[tuple[bytes, bytes]],
    body: bytes,
    new_body: bytes,
) -> None:
    body, new_body = (b.replace(b"\r", b"").replace(b"\n", b"\r\n") for b in (body, new_body))
    target = reconstruct(after, new_body, leadspc=True)
    packets = edits(before, body, target, leadspc=True)
    assert apply_edits(before, body, as_replies(packets), True) == target
    changes = [p for p in packets if p[4:5] == b"m"]
    assert len(changes) <= len(before)


@pytest.mark.corpus
def test_corpus_messages_come_back_byte_for_byte() -> None:
    files = sorted(CORPUS.glob("*/*.eml"))[:300]
    if not files:
        pytest.skip("the dev corpus (../shared/corpus/dev) is not here")
    for path in files:
        raw = path.read_bytes()
        fields, body = split_message(raw, True)
        sent = b"".join(n + b":" + v.replace(b"\n", b"\r\n") + b"\r\n" for n, v in fields)
        assert reconstruct(fields, body, leadspc=True) == sent + b"\r\n" + body, path
