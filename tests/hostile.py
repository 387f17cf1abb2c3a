"""Hostile messages, built to size: the repro cases of issue 11 and the generator classes of
`scripts/fuzz`. Every builder is deterministic for a given size (and random generator), so a
slow or failing case can be rebuilt from its name alone.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable
from dataclasses import dataclass

PHISH_TEXT = (
    "Dear customer,\r\nYou have been selected for a $500 Amazon gift card. Claim your reward "
    "now: http://amazon-rewards-claim.shop/claim?id=1\r\nVerify your account within 24 hours "
    "or the reward expires.\r\nAmazon Rewards Team\r\n"
)
PHISH_HTML = (
    "<p>You have been selected for a $500 <b>Amazon</b> gift card.</p>"
    '<p><a href="http://amazon-rewards-claim.shop/claim?id=1">Claim your reward</a></p>'
)


def phish(test_id: str = "bare", extra_headers: bytes = b"") -> bytes:
    """Display name Amazon from a freemail address, gift-card lure, a link elsewhere: a
    message every configuration flags, multipart so that the banner has two bodies."""
    boundary = "b1_" + test_id
    return (
        b'From: "Amazon" <rewards@gmail.com>\r\n'
        b"To: rcpt@example.test\r\n"
        b"Subject: Your Amazon gift card reward is waiting\r\n"
        b"Message-ID: <" + test_id.encode() + b"@gmail.com>\r\n"
        b"X-Test-Id: " + test_id.encode() + b"\r\n" + extra_headers + b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/alternative; boundary="' + boundary.encode() + b'"\r\n'
        b"\r\n--"
        + boundary.encode()
        + b"\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        + PHISH_TEXT.encode()
        + b"\r\n--"
        + boundary.encode()
        + b"\r\nContent-Type: text/html; charset=us-ascii\r\n\r\n"
        + PHISH_HTML.encode()
        + b"\r\n--"
        + boundary.encode()
        + b"--\r\n"
    )


def padding_fields(count: int) -> bytes:
    """`count` short header fields: each far below Postfix's per-header limit."""
    return b"".join(b"X-Pad-%d: v\r\n" % i for i in range(count))


def padded_phish(test_id: str = "padded", fields: int = 11_000) -> bytes:
    """The phish behind a header block of `fields` padding fields (issue 11, defect 2): over
    1 MiB with fields=70_000 (60,000 make 950 KB), and over the field limit from 1,000."""
    return padding_fields(fields) + phish(test_id)


def _head(subject: str = "hello", sender: str = "Shop <news@shop.example>") -> bytes:
    return f"From: {sender}\r\nTo: rcpt@example.test\r\nSubject: {subject}\r\n".encode()


# --------------------------------------------------------------------------- generator classes


@dataclass(frozen=True, slots=True)
class Generator:
    """One class of hostile input: `make(size, rng)` builds a case whose cost grows with size."""

    name: str
    what: str  # what `size` counts
    make: Callable[[int, random.Random], bytes]
    sizes: tuple[int, ...]  # the growth series (x2), from small to past the relevant cap


def long_host(n: int, rng: random.Random) -> bytes:
    host = "paypal.com.secure." + "a." * n + "evil.example"
    return (
        _head("Your account")
        + (
            f"Content-Type: text/html\r\n\r\n<a href='https://{host}/x'>https://www.paypal.com/</a>"
            f"\r\nhttps://{host}/ and mailto:x@{host}\r\n"
        ).encode()
    )


def long_word(n: int, rng: random.Random) -> bytes:
    word = "".join(rng.choice("amazonpaypl") for _ in range(n))
    return _head(f"A{word[:200]}", f'"{word} Amazon" <a@b.example>') + (f"\r\n{word}\r\n".encode())


def deep_nesting(n: int, rng: random.Random) -> bytes:
    head = b"".join(
        b"Content-Type: multipart/mixed; boundary=n%d\r\n\r\n--n%d\r\n" % (i, i) for i in range(n)
    )
    return _head() + head + b"Content-Type: text/plain\r\n\r\nbottom https://x.example/\r\n"


def many_parts(n: int, rng: random.Random) -> bytes:
    parts = b"".join(
        b"--p\r\nContent-Type: text/plain\r\n\r\npart %d https://h%d.example/\r\n" % (i, i)
        for i in range(n)
    )
    return _head() + b"Content-Type: multipart/mixed; boundary=p\r\n\r\n" + parts + b"--p--\r\n"


def many_headers(n: int, rng: random.Random) -> bytes:
    return padding_fields(n) + phish("many-headers")


def continuation_lines(n: int, rng: random.Random) -> bytes:
    """One header of n continuation lines (unfolding was quadratic), with an X-Brandgate
    header that the gateway strips and a Subject the prefix rewrites."""
    folded = b"X-Long: start\r\n" + b" more\r\n" * n
    return b"X-Brandgate-Verdict: pass\r\n" + folded + phish("continuations")


def encoded_words(n: int, rng: random.Random) -> bytes:
    word = "=?utf-8?b?" + base64.b64encode(b"Amazon ").decode() + "?="
    subject = " ".join([word] * n)
    return _head(subject, f'"{word}" <a@gmail.com>') + b"\r\nbody\r\n"


def huge_line(n: int, rng: random.Random) -> bytes:
    unit = "ab https://x.example/ amazon "
    line = (unit * (n // len(unit) + 1))[:n]
    return _head() + f"Content-Type: text/html\r\n\r\n<p>{line}</p>\r\n".encode()


def many_links(n: int, rng: random.Random) -> bytes:
    links = "".join(
        f'<a href="https://h{i}.example/?url=https://t{i}.example/">x</a>' for i in range(n)
    )
    return _head() + f"Content-Type: text/html\r\n\r\n{links}\r\n".encode()


def encoded_word_bomb(n: int, rng: random.Random) -> bytes:
    """One encoded word whose text is n bytes (decoding it is one step, not n)."""
    text = base64.b64encode(b"Amazon gift " * (n // 16 + 1)).decode()[: n - n % 4]
    return _head(f"=?utf-8?b?{text}?=", f'"=?utf-8?b?{text[:4000]}?=" <a@gmail.com>') + (
        b"\r\nbody\r\n"
    )


def banner_boundary(n: int, rng: random.Random) -> bytes:
    """Multipart whose boundary is n dashes: the banner's separator must never close it."""
    b = "-" * n
    return (
        _head("Amazon gift card", '"Amazon" <a@gmail.com>')
        + f'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="{b}"\r\n\r\n'
        f"--{b}\r\nContent-Type: text/plain\r\n\r\ntext\r\n"
        f"--{b}\r\nContent-Type: application/pdf; name=a.pdf\r\n\r\nPDF\r\n--{b}--\r\n".encode()
    )


def _doubling(first: int, count: int) -> tuple[int, ...]:
    return tuple(first << i for i in range(count))


# Each series doubles from a small size to well past the limit that bounds the class, so that
# `scripts/fuzz --growth` shows the cost below the limit and the cost of cutting above it.
GENERATORS: tuple[Generator, ...] = (
    Generator("long-host", "labels in a link host", long_host, _doubling(32, 10)),
    Generator("long-word", "chars in one word", long_word, _doubling(16, 12)),
    Generator("deep-nesting", "MIME levels", deep_nesting, _doubling(4, 8)),
    Generator("many-parts", "MIME parts", many_parts, _doubling(16, 8)),
    Generator("many-headers", "header fields", many_headers, _doubling(250, 9)),
    Generator("continuations", "continuation lines", continuation_lines, _doubling(2048, 9)),
    Generator("encoded-words", "RFC 2047 words", encoded_words, _doubling(500, 8)),
    Generator("encoded-word-bomb", "bytes in one word", encoded_word_bomb, _doubling(256, 13)),
    Generator("huge-line", "bytes in one line", huge_line, _doubling(65536, 8)),
    Generator("many-links", "links", many_links, _doubling(125, 7)),
)
BY_NAME = {g.name: g for g in GENERATORS}
EXTRA_CASES: dict[str, Callable[[int, random.Random], bytes]] = {
    "banner-boundary": banner_boundary,  # sizes 50..62: a correctness case, not a cost class
}
