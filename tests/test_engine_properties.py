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


# Hostile images and PDFs (tests/qrmail.py), cut and flipped at random: the decoder process
# may fail or be stopped, the scan never does.
def _hostile_payloads() -> list[bytes]:
    from tests import qrmail

    url = "https://x.example/q"
    return [
        qrmail.png(url),
        qrmail.pdf_pages([url]),
        qrmail.huge_png(5_000, 5_000, rows=50),
        qrmail.resized_jpeg(20_000, 20_000),
        qrmail.many_pages(300),
        qrmail.nested_forms(3),
    ]


_HOSTILE = _hostile_payloads()


@PROPS
@given(
    st.sampled_from(range(len(_HOSTILE))),
    st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=8),
    st.floats(0.1, 1.0),
)
def test_hostile_images_and_pdfs_never_raise(
    index: int, flips: list[tuple[int, int]], keep: float
) -> None:
    from tests import qrmail

    data = bytearray(_HOSTILE[index][: max(16, int(len(_HOSTILE[index]) * keep))])
    for pos, value in flips:
        data[pos % len(data)] = value
    check(qrmail.message(attachments=((bytes(data), "application", "octet-stream", "x.bin"),)))
