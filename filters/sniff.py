"""Is this a mail message at all? A README, a PNG or an empty file found in an archive folder
is not, and scanning it as mail gives a verdict about nothing (a README "says cash back").

Deliberately lenient: malformed mail is still mail. A message needs a header block that names
at least one field every mail carries; binary data (a NUL byte in the header block, or a known
file signature at the start) is not mail.
"""

from __future__ import annotations

import re
from typing import Protocol

from filters.types import Verdict

_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF-", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "gzip data"),
    (b"\x7fELF", "an executable"),
    (b"BZh", "bzip2 data"),
    (b"\xfd7zXZ", "xz data"),
    (b"7z\xbc\xaf", "a 7-Zip archive"),
    (b"SQLite format 3", "an SQLite database"),
)
# Fields that nearly every message carries; one of them makes a header block a mail header.
_MAIL_FIELDS = re.compile(
    rb"^(from|to|cc|subject|date|received|message-id|return-path|mime-version|content-type|"
    rb"delivered-to|reply-to|sender|x-mailer|dkim-signature|authentication-results)[ \t]*:",
    re.IGNORECASE | re.MULTILINE,
)
SNIFF_BYTES = 64 * 1024
# Header fields and their continuation lines, then what the window cut of the next line.
_FIELD_LINES = re.compile(rb"(?:(?:[!-9;-~]+[ \t]*:|[ \t])[^\r\n]*\r?\n)+[^\r\n]*")


def not_mail(raw: bytes) -> str | None:
    """Why `raw` is not a mail message ("an empty file", "a PNG image", "text without a mail
    header"), or None when it is (or may be) one."""
    head = raw[:SNIFF_BYTES]
    if not head.strip():
        return "an empty file" if not head else "only white space"
    for magic, what in _SIGNATURES:
        if head.startswith(magic):
            return what
    # Malformed mail often starts with a line of spaces, an SMTP transcript or an mbox From_
    # line: what counts is a field every mail carries, at a line start, before the first
    # blank line.
    body = re.sub(rb"\A(?:[ \t]*\r?\n)+", b"", head)
    block = re.split(rb"\r?\n\r?\n", body, maxsplit=1)[0]
    if b"\x00" in block:
        return "binary data"
    if not _MAIL_FIELDS.search(block) and not _padded_header(raw, body, block):
        return "text without a mail header"
    return None


def _padded_header(raw: bytes, body: bytes, block: bytes) -> bool:
    """A header block that runs past the window with nothing but fields: mail padded with
    thousands of fields to push From and Subject out of sight. It is scanned (the engine
    still reads the vital fields, and says what it cut), or padding would hide any phish."""
    return len(raw) > SNIFF_BYTES and block == body and _FIELD_LINES.fullmatch(block) is not None


NOT_MAIL = "not-mail"  # Verdict.status of a file that was not scanned because it is no mail


class _Scanner(Protocol):
    def scan(self, raw: bytes) -> Verdict: ...


def scan_file(scanner: _Scanner, raw: bytes) -> Verdict:
    """For the archive front doors (scan, replay, explain): a verdict with status "not-mail"
    for what is no mail, else the scanner's. (The SMTP gateway scans whatever DATA brought.)"""
    why = not_mail(raw)
    if why is None:
        return scanner.scan(raw)
    return Verdict(
        verdict="pass",
        score=0.0,
        brand=None,
        findings=(),
        summary=f"Not scanned: {why}, not a mail message.",
        status=NOT_MAIL,
    )
