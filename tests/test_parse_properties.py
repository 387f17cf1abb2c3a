"""Property tests: parse() and extract() never raise, respect the limits, and are deterministic,
on arbitrary bytes, on MIME-shaped noise, and on mutated real messages from the corpus."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from filters.features import extract
from filters.parse import parse
from filters.registry import Lists
from filters.types import Features, Limits, Parsed, QrSettings
from tests import corpus

TIGHT = Limits(
    max_message_bytes=20_000,
    max_part_bytes=2_000,
    max_mime_depth=3,
    max_parts=4,
    max_links=5,
    max_text_chars=500,
)
LISTS = Lists(redirect_params=frozenset({"url", "q", "u"}))
PROPS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run(raw: bytes, limits: Limits) -> tuple[Parsed, Features]:
    parsed = parse(raw, limits)
    feats = extract(
        parsed,
        envelope=None,
        trusted_authserv_ids=("mx.example",),
        lists=LISTS,
        limits=limits,
    )
    return parsed, feats


def check_limits(parsed: Parsed, feats: Features, limits: Limits) -> None:
    assert len(parsed.parts) <= limits.max_parts
    assert len(feats.links) <= limits.max_links
    assert len(feats.body) <= limits.max_text_chars
    assert all(p.depth <= limits.max_mime_depth + 1 for p in parsed.parts)
    assert all(
        len(t.encode("utf-8", "surrogatepass")) <= 4 * limits.max_part_bytes for t in parsed.texts
    )
    assert len(parsed.defects) <= 50
    assert len(set(parsed.limit_hits)) == len(parsed.limit_hits)
    for _name, value in parsed.headers:
        assert "\r" not in value and "\n" not in value


# Pieces of MIME that hypothesis strings together: more structure than random bytes reach.
FRAGMENTS = [
    b"From: ",
    b"Subject: ",
    b"Reply-To: ",
    b"Content-Type: multipart/mixed; boundary=b\n",
    b'Content-Type: multipart/alternative; boundary="a"\n',
    b"Content-Type: text/html; charset=X-UNKNOWN\n",
    b"Content-Type: text/plain; charset=utf-16\n",
    b"Content-Type: message/rfc822\n",
    b"Content-Transfer-Encoding: base64\n",
    b"Content-Transfer-Encoding: quoted-printable\n",
    b"Content-Disposition: attachment; filename*=utf-8''a%E9.html\n",
    b"\n--b\n",
    b"\n--a\n",
    b"\n--b--\n",
    b"\n\n",
    b"=?utf-8?B?UGF5UGFs?=",
    b"=?x?q?=E9_?=",
    b"=?utf-8?",
    b'<a href="http://3232235777/?url=https%3A%2F%2Fx.example">',
    b"<img alt='PayPal' src=//x.example/a.png>",
    b"<form action=javascript:alert(1)>",
    b"http://user@host.example/ ",
    b"www.",
    b"<",
    b">",
    b'"',
    b"\xff\xfe",
    b"\xc3",
    b"\r",
    b"=\n",
    b"PGEgaHJlZj0",
    b"Content-Type: image/png\n",
    b"Content-Type: application/pdf\n",
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
    b"%PDF-1.7\n",
    b"iVBORw0KGgoAAAANSUhEUg",  # a PNG's first bytes in base64
]
mime_noise = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=12)), max_size=60
).map(b"".join)


@PROPS
@given(st.binary(max_size=4000))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    parsed, feats = run(raw, TIGHT)
    check_limits(parsed, feats, TIGHT)


@PROPS
@given(mime_noise)
def test_mime_noise_never_raises_and_respects_limits(raw: bytes) -> None:
    parsed, feats = run(raw, TIGHT)
    check_limits(parsed, feats, TIGHT)


@settings(max_examples=100, deadline=None)
@given(mime_noise)
def test_parse_and_extract_are_deterministic(raw: bytes) -> None:
    assert run(raw, TIGHT) == run(raw, TIGHT)


# --- mutated real mail ---------------------------------------------------------------------


def corpus_sample(count: int = 30) -> list[bytes]:
    if not corpus.available():
        return []
    paths = sorted((corpus.CORPUS / "dev").glob("*/*.eml"))
    step = max(1, len(paths) // count)
    return [p.read_bytes() for p in paths[::step][:count]]


SAMPLE = corpus_sample()
needs_corpus = pytest.mark.skipif(not SAMPLE, reason=corpus.SKIP_REASON)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SAMPLE or [b""])))
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=16)))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 64))]
    return bytes(data)


@needs_corpus
@pytest.mark.corpus
@PROPS
@given(mutated())
def test_mutated_corpus_messages_never_raise(raw: bytes) -> None:
    parsed, feats = run(raw, TIGHT)
    check_limits(parsed, feats, TIGHT)
    default = Limits()
    parsed, feats = run(raw, default)
    check_limits(parsed, feats, default)


@needs_corpus
@pytest.mark.corpus
def test_every_corpus_message_parses_and_extracts() -> None:
    limits = Limits()
    paths: list[Path] = sorted((corpus.CORPUS / "dev").glob("*/*.eml"))
    assert paths
    with_text = 0
    for path in paths:
        parsed, feats = run(path.read_bytes(), limits)
        check_limits(parsed, feats, limits)
        with_text += bool(feats.body)
    # nearly every real message has some readable text (a few are attachment-only)
    assert with_text >= 0.95 * len(paths)


def test_pathological_nesting_is_bounded() -> None:
    depth = 400
    head = b"".join(
        f"Content-Type: multipart/mixed; boundary=n{i}\n\n--n{i}\n".encode() for i in range(depth)
    )
    parsed, feats = run(head + b"Content-Type: text/plain\n\nbottom", Limits())
    assert "max_mime_depth" in parsed.limit_hits
    assert feats.body == ""


def test_many_links_capped() -> None:
    html = "".join(f'<a href="http://h{i}.example/">x</a>' for i in range(3000))
    raw = f"Content-Type: text/html\n\n{html}".encode()
    _parsed, feats = run(raw, Limits())
    assert len(feats.links) == Limits().max_links
    assert "max_links" in feats.limit_hits


QR_TIGHT = QrSettings(max_images=1, max_pdf_pages=1, max_bytes=3_000)


@PROPS
@given(mime_noise)
def test_payloads_for_code_decoding_respect_their_caps(raw: bytes) -> None:
    parsed = parse(raw, TIGHT, QR_TIGHT)
    images = [p for p in parsed.payloads if p.kind == "image"]
    pdfs = [p for p in parsed.payloads if p.kind == "pdf"]
    assert len(images) <= 4 * QR_TIGHT.max_images and len(pdfs) <= QR_TIGHT.max_pdf_pages
    assert sum(len(p.data) for p in parsed.payloads) <= QR_TIGHT.max_bytes
    assert parse(raw, TIGHT).payloads == ()  # decoding off: nothing kept


@given(st.text(alphabet=st.characters(max_codepoint=0x7F)) | st.text())
def test_words_of_ascii_text_by_byte_table_are_the_regex_words(text: str) -> None:
    from filters import text as textmod

    assert textmod._words(text) == textmod._NOT_WORD.sub(" ", text).split()
