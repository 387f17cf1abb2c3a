"""What the gateway does to a message for a verdict: headers, subject prefix, one banner.

Everything works on the raw bytes. Headers are prepended and the rest of the message is left
as it came, so DKIM signatures over the original headers and body still verify; the banner
rewrites only the first text/plain and text/html bodies and leaves every other byte of the
MIME tree alone. Nothing taken from the message reaches a header unsanitised.
"""

from __future__ import annotations

import base64
import binascii
import html
import itertools
import quopri
import re
from dataclasses import dataclass
from email.header import Header
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32

from filters.types import Verdict

PREFIX = b"x-brandgate-"
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_CTRL = re.compile(r"[\x00-\x1f\x7f]+")
_STRAY_BREAK = re.compile(r"\r\n(?![ \t])|\r(?!\n)|(?<!\r)\n|\x00")


# --------------------------------------------------------------------------- header section


def split_headers(raw: bytes) -> tuple[bytes, bytes]:
    """(header block including its final line break, the rest starting at the blank line)."""
    if raw.startswith((b"\r\n", b"\n")):
        return b"", raw
    m = _HEADER_END.search(raw)
    if m is None:
        return raw, b""
    cut = m.start() + (2 if raw[m.start() : m.start() + 2] == b"\r\n" else 1)
    return raw[:cut], raw[cut:]


# A field starts after a line break (CRLF, LF or a bare CR, as bytes.splitlines reads them)
# that no folding whitespace follows: splitting there runs in C, one Python step per field.
_FIELD_BREAK = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?![ \t])")


def _fields(block: bytes) -> list[bytes]:
    """Header fields with their continuation lines, each with its own line ending."""
    fields, start = [], 0
    for brk in _FIELD_BREAK.finditer(block):
        fields.append(block[start : brk.end()])
        start = brk.end()
    if start < len(block):
        fields.append(block[start:])
    return fields


def strip_our_headers(raw: bytes) -> bytes:
    """Drop every incoming X-Brandgate-* field: a sender must not forge our verdict."""
    block, rest = split_headers(raw)
    if PREFIX not in block.lower():
        return raw
    kept = [f for f in _fields(block) if not f.lower().startswith(PREFIX)]
    return b"".join(kept) + rest


def header_value(text: str, name: str) -> str:
    """One header field, folded, ASCII only (RFC 2047 when needed), no CR/LF/NUL inside."""
    clean = " ".join(_CTRL.sub(" ", text).split())
    charset = "us-ascii" if clean.isascii() else "utf-8"
    encoded = Header(clean, charset, header_name=name).encode(linesep="\r\n", maxlinelen=78)
    # Folds are CRLF + whitespace; any other line break would start a new header field.
    encoded = _STRAY_BREAK.sub(" ", encoded)
    return f"{name}: {encoded}\r\n"


def render_headers(fields: list[tuple[str, str]]) -> bytes:
    return "".join(header_value(value, name) for name, value in fields).encode("ascii")


def tag_fields(verdict: Verdict) -> list[tuple[str, str]]:
    rules = ", ".join(f"{f.rule}={f.score:.2f}" for f in verdict.findings) or "none"
    fields = [
        ("X-Brandgate-Verdict", verdict.verdict),
        ("X-Brandgate-Score", f"{verdict.score:.2f}"),
        ("X-Brandgate-Rules", rules),
    ]
    if verdict.brand is not None:
        fields.append(("X-Brandgate-Brand", verdict.brand.name))
    return fields


def error_fields(reason: str) -> list[tuple[str, str]]:
    return [("X-Brandgate-Status", "error"), ("X-Brandgate-Error", reason[:200])]


def prepend(raw: bytes, fields: list[tuple[str, str]]) -> bytes:
    return render_headers(fields) + raw if fields else raw


def prefix_subject(raw: bytes, prefix: str) -> bytes:
    """Put prefix in front of the Subject (once); adds a Subject when there is none."""
    if not prefix:
        return raw
    block, rest = split_headers(raw)
    fields = _fields(block)
    safe = " ".join(_CTRL.sub(" ", prefix).split())
    if not safe.isascii():
        return raw  # the prefix is admin config; a non-ASCII one would need encoding rules
    for i, fld in enumerate(fields):
        if fld.lower().startswith(b"subject:"):
            value = fld[8:]
            if value.strip().startswith(safe.encode()):
                return raw
            fields[i] = b"Subject: " + safe.encode() + b" " + value.lstrip(b" \t")
            return b"".join(fields) + rest
    return render_headers([("Subject", safe)]) + raw


# --------------------------------------------------------------------------- banner


def banner_text(verdict: Verdict) -> str:
    summary = " ".join(_CTRL.sub(" ", verdict.summary).split())[:400]
    if verdict.brand is not None:
        name = verdict.brand.name
        head = f"This message claims to be {name} but was not sent by {name}."
    else:
        head = "This message looks suspicious."
    text = f"[brandgate] Warning: {head}"
    return f"{text} {summary}" if summary and summary not in head else text


@dataclass(frozen=True, slots=True)
class _Leaf:
    ctype: str  # "text/plain" or "text/html"
    headers: Message
    start: int  # body start in the raw message
    end: int  # body end (exclusive)


def _entity_split(data: bytes) -> tuple[Message, int]:
    block, _rest = split_headers(data)
    # Only Content-* fields are read here: parse just those (a block of a million folded
    # lines would otherwise go through the stdlib header parser, line by line).
    mime = b"".join(f for f in _fields(block) if f[:8].lower() == b"content-")
    head = BytesHeaderParser(policy=compat32).parsebytes(mime)
    body_at = len(block)
    # skip the blank line that separates headers from body
    if data[body_at : body_at + 2] == b"\r\n":
        body_at += 2
    elif data[body_at : body_at + 1] == b"\n":
        body_at += 1
    return head, body_at


def _walk(data: bytes, base: int, depth: int, out: list[_Leaf]) -> None:
    if depth > 20:
        return
    head, body_at = _entity_split(data)
    ctype = head.get_content_type()
    if ctype.startswith("multipart/"):
        boundary = head.get_boundary()
        if not boundary:
            return
        delim = re.compile(
            rb"(?m)^--" + re.escape(boundary.encode("ascii", "replace")) + rb"(--)?[ \t]*\r?$"
        )
        body = data[body_at:]
        marks = list(delim.finditer(body))
        for this, nxt in itertools.pairwise(marks):
            if this.group(1):
                break  # closing delimiter
            start = this.end() + (2 if body[this.end() : this.end() + 2] == b"\r\n" else 1)
            end = nxt.start()
            # the line break before a delimiter belongs to the delimiter
            if body[end - 2 : end] == b"\r\n":
                end -= 2
            elif body[end - 1 : end] == b"\n":
                end -= 1
            if start <= end:
                _walk(body[start:end], base + body_at + start, depth + 1, out)
        return
    if ctype in ("text/plain", "text/html") and head.get_content_disposition() != "attachment":
        out.append(_Leaf(ctype, head, base + body_at, base + len(data)))


def _encode_banner(leaf: _Leaf, text: str, charset: str) -> bytes:
    if leaf.ctype == "text/html":
        block = (
            '<div data-brandgate-banner="1" style="border:2px solid #c00;background:#fee;'
            'color:#000;padding:8px;margin:0 0 12px 0;font-family:sans-serif">'
            f"{html.escape(text)}</div>"
        )
        return block.encode(charset, "xmlcharrefreplace")
    # The rule under the text must not start with "--": it could be a multipart delimiter
    # (a boundary of 56 dashes is closed by a line of 60) and hide the rest of the message.
    return (text + "\r\n" + "_" * 60 + "\r\n\r\n").encode(charset)


_BODY_TAG = re.compile(rb"<body\b[^>]*>", re.IGNORECASE)


def _insert(leaf: _Leaf, body: bytes, banner: bytes) -> bytes:
    if leaf.ctype == "text/html":
        m = _BODY_TAG.search(body)
        if m is not None:
            return body[: m.end()] + banner + body[m.end() :]
    return banner + body


def _rewrite_leaf(leaf: _Leaf, body: bytes, text: str) -> bytes | None:
    charset = leaf.headers.get_content_charset() or "us-ascii"
    cte = (leaf.headers.get("Content-Transfer-Encoding") or "7bit").strip().lower()
    try:
        banner = _encode_banner(leaf, text, charset)
    except (LookupError, UnicodeError):
        return None
    if cte in ("7bit", "8bit", "binary"):
        if cte == "7bit" and not banner.isascii():
            return None
        return _insert(leaf, body, banner)
    try:
        if cte == "base64":
            decoded = base64.b64decode(re.sub(rb"[^A-Za-z0-9+/=]", b"", body))
            new = base64.encodebytes(_insert(leaf, decoded, banner))
            return new.replace(b"\n", b"\r\n")
        if cte == "quoted-printable":
            decoded = quopri.decodestring(body)
            new = quopri.encodestring(_insert(leaf, decoded, banner))
            return re.sub(rb"\r?\n", b"\r\n", new)
    except (binascii.Error, ValueError):
        return None
    return None


def add_banner(raw: bytes, verdict: Verdict) -> bytes | None:
    """raw with one banner atop the first text and HTML bodies, or None if none was placed."""
    leaves: list[_Leaf] = []
    _walk(raw, 0, 0, leaves)
    chosen: dict[str, _Leaf] = {}
    for leaf in leaves:
        chosen.setdefault(leaf.ctype, leaf)
    text = banner_text(verdict)
    out = raw
    placed = False
    # right to left, so earlier offsets stay valid
    for leaf in sorted(chosen.values(), key=lambda lf: lf.start, reverse=True):
        new = _rewrite_leaf(leaf, out[leaf.start : leaf.end], text)
        if new is not None:
            out = out[: leaf.start] + new + out[leaf.end :]
            placed = True
    return out if placed else None


# --------------------------------------------------------------------------- the action


def tagged(
    raw: bytes, verdict: Verdict, *, banner: bool, subject_prefix: str
) -> tuple[bytes, bool]:
    """The tagged message and whether a banner went in (on failure: headers only)."""
    body = raw
    banner_done = False
    if banner:
        try:
            with_banner = add_banner(raw, verdict)
        except Exception:  # a malformed MIME tree must not cost us the message
            with_banner = None
        if with_banner is not None:
            body, banner_done = with_banner, True
    body = prefix_subject(body, subject_prefix)
    return prepend(body, tag_fields(verdict)), banner_done


def smtp_text(text: str, limit: int = 300) -> str:
    """Text safe for one SMTP reply line: printable ASCII, bounded."""
    ascii_text = text.encode("ascii", "replace").decode("ascii")
    return " ".join(_CTRL.sub(" ", ascii_text).split())[:limit]


def reject_reply(verdict: Verdict) -> str:
    if verdict.brand is not None:
        reason = f"brand impersonation ({verdict.brand.name})"
    else:
        reason = "message looks like brand impersonation"
    return "550 5.7.1 " + smtp_text(f"Message refused: {reason}")
