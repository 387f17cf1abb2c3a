"""The whole engine (claim, checks, scoring, explanation) never raises on hostile input.

Engine.scan swallows exceptions by design (a bug must not lose mail), so these properties call
Engine.analyse, which lets any exception through: a failure here is a real bug.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from filters.engine import Engine
from filters.types import VERDICTS
from tests.test_parse_properties import PROPS, SAMPLE, mime_noise, mutated, needs_corpus

ENGINE = Engine.from_path(None)

# Header lines that steer into the claim and check code paths.
CLAIMY = st.sampled_from(
    [
        b'From: "PayPal Service" <x@paypa1-secure.com>\n',
        b"From: =?utf-8?b?0JDQvNCw0LfQvtC9?= <a@b.c>\n",
        b"From: Amazon <ship@amazon.com>\n",
        b"From: support@\xd0\xb0pple.com\n",
        b"Reply-To: desk@gmail.com\n",
        b"Subject: Your Amazon gift card \xe4\xba\x9a\xe9\xa9\xac\xe9\x80\x8a\n",
        b"Authentication-Results: mx; dmarc=pass header.from=amazon.com\n",
        b"DKIM-Signature: v=1; d=amazon.com; s=x; b=abc\n",
        b"List-Id: <x.lists.example.org>\n",
    ]
)


def check(raw: bytes) -> None:
    analysis = ENGINE.analyse(raw)
    v = analysis.verdict
    assert v.verdict in VERDICTS
    assert v.summary
    assert all(f.rule for f in v.findings)


@PROPS
@given(st.lists(CLAIMY, max_size=6).map(b"".join), mime_noise)
def test_claimy_headers_and_mime_noise_never_raise(headers: bytes, body: bytes) -> None:
    check(headers + b"\n" + body)


@PROPS
@given(st.binary(max_size=3000))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    check(raw)


@needs_corpus
@pytest.mark.corpus
@PROPS
@given(mutated())
def test_mutated_corpus_messages_never_raise(raw: bytes) -> None:
    check(raw)


def test_sample_is_scanned_without_error_status() -> None:
    for raw in SAMPLE:
        assert ENGINE.scan(raw).status == "ok"
