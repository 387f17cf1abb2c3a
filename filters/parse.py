"""Defensive parsing: any bytes in, a `Parsed` out, never an exception.

Real mail breaks every rule: unknown charsets, 8-bit headers, missing blank lines, broken MIME
boundaries, malformed encoded words, bad base64 padding. The stdlib parser with the compat32
policy is the most forgiving (and the fastest); everything it leaves undecoded is decoded here,
with fallbacks instead of errors. What was wrong is kept as `defects`, what was too big as
`limit_hits`, so checks can score broken structure without the parser ever refusing a message.
"""

from __future__ import annotations

import binascii
import codecs
import itertools
import re
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from functools import lru_cache

from filters.types import Limits, Parsed, Part, Payload, QrSettings

MAX_DEFECTS = 50
# A bound on what the stdlib parser is given, so that its cost stays linear and small: more
# MIME delimiter lines than `max_parts` could use. (The header block has Limits of its own.)
DELIMITERS_PER_PART = 8
# Of a header block cut to the limits, the fields a verdict rests on are read wherever they
# stand: up to this many of each name, each up to 1/16 of max_header_bytes, together up to half.
VITAL_PER_NAME = 4

_PARSER = BytesParser(policy=compat32)

# Charset labels that mail gets wrong, mapped to the codec a reader's client would use.
_CHARSET_ALIASES = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "euc-kr": "cp949",
    "iso-8859-8-i": "iso-8859-8",
    "windows-874": "cp874",
    "tis-620": "cp874",
    "x-sjis": "shift_jis",
    "shift-jis": "shift_jis",
    "iso-8859-1": "cp1252",  # what every client actually renders for latin-1 labels
    "latin1": "cp1252",
    "latin-1": "cp1252",
    # An ASCII label on 8-bit text says nothing about the text: guess (utf-8, then cp1252).
    "us-ascii": "",
    "ascii": "",
    "ansi_x3.4-1968": "",
    "utf8": "utf-8",
    "unicode-1-1-utf-7": "utf-7",
}
_CHARSET_TOKEN = re.compile(r"[a-z0-9_.:+-]+")

# The text of a word may hold spaces (invalid, but common) and never a "?": that keeps every
# match attempt short, where ".*?" made long headers of unterminated words quadratic.
_ENCODED_WORD = re.compile(r"=\?([^?\s]{1,80})\?([bBqQ])\?([^?]*)\?=")
_HEADER_LINE = re.compile(rb"[!-9;-~]+[ \t]*:")
_OBS_FROM = re.compile(rb"From[ \t]+:")
_OBS_NAME = re.compile(rb"^([!-9;-~]+)[ \t]+:", re.MULTILINE)
_MIME_HEADER = re.compile(rb"(?i)content-|mime-version")
_BOUNDARY_LINE = re.compile(r"^--([^\s]{1,200}?)(?:--)?[ \t]*\r?$", re.MULTILINE)
# Nesting, as the stdlib parser will see it: multipart declarations (folded lines included)
# and delimiter lines, in order. Its cost is lines x depth (each line is tried against every
# open boundary), so depth past max_mime_depth, which the walk would not enter anyway, is cut.
_MULTIPART = re.compile(rb"multipart/", re.IGNORECASE)
_NEST_TOKEN = re.compile(
    rb"^content-type:[ \t]*multipart/[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*"
    rb"|^--([^\s]{1,200}?)(--)?[ \t]*\r?$",
    re.IGNORECASE | re.MULTILINE,
)
_BOUNDARY_PARAM = re.compile(rb'boundary[ \t]*=[ \t]*(?:"([^"\r\n]{1,200})"|([^;\s]{1,200}))', re.I)
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_DELETE = bytes(b for b in range(256) if b not in _B64_ALPHABET)
_HTML_FILENAME = re.compile(r"\.(?:s?html?|xhtml|svg)\s*$", re.IGNORECASE)
# Where the stdlib parser's header block ends: the first line that is neither a continuation
# nor "Name:" (nor an mbox "From "), which includes the blank line (its headerRE, mirrored).
_HEADER_START = re.compile(rb"[ \t]|From |[!-9;-~]*:")
_NOT_HEADER = re.compile(rb"\n(?![ \t]|From |[!-9;-~]*:)")
_FIELD_START = re.compile(rb"\n(?![ \t])")
_VITAL_NAMES = (
    "from",
    "sender",
    "reply-to",
    "subject",
    "authentication-results",
    "dkim-signature",
    "return-path",
    "content-type",
    "content-transfer-encoding",
    "content-disposition",
    "mime-version",
)
# One pattern per name, run over a lower-cased copy of the block: each starts with a literal,
# which the regex engine finds at memchr speed, and each stops after VITAL_PER_NAME matches
# (one pattern for all names would hand every line of a "Subject:" padding to Python).
_VITAL = tuple(re.compile(rb"\n" + re.escape(n.encode()) + rb"[ \t]*:") for n in _VITAL_NAMES)


# --- bytes to text -----------------------------------------------------------------------


@lru_cache(maxsize=512)
def _codec(charset: str | None) -> str | None:
    """The Python text codec for a declared charset, or None when unknown or not a text codec
    (bytes-to-bytes codecs such as "base64" or "zlib" must never be applied to mail)."""
    if not charset:
        return None
    match = _CHARSET_TOKEN.search(charset.strip().strip("\"'").lower())
    if match is None:
        return None
    name = match.group(0).split("*", 1)[0]
    name = _CHARSET_ALIASES.get(name, name)
    if not name:
        return None
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return None
    if not getattr(info, "_is_text_encoding", True):
        return None
    return info.name


def _bom_codec(data: bytes) -> str | None:
    if data.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    return None


def decode_bytes(data: bytes, charset: str | None = None) -> str:
    """Decode with the declared charset; when that is unknown or wrong, utf-8, then the declared
    charset with replacement, then cp1252, then latin-1 (which cannot fail)."""
    codec = _bom_codec(data) or _codec(charset)
    if codec is not None:
        try:
            return data.decode(codec)
        except (UnicodeError, LookupError, ValueError):
            pass
    try:
        return data.decode("utf-8")
    except UnicodeError:
        pass
    if codec is not None and codec != "cp1252":
        try:
            return data.decode(codec, errors="replace")
        except (UnicodeError, LookupError, ValueError):
            pass
    try:
        return data.decode("cp1252")
    except UnicodeError:
        return data.decode("latin-1")


def _b64decode(data: bytes) -> bytes:
    """Base64 with missing padding, line noise and stray characters tolerated."""
    clean = data.translate(None, _B64_DELETE)
    if len(clean) % 4 == 1:  # one dangling character carries no full byte
        clean = clean[:-1]
    clean += b"=" * (-len(clean) % 4)
    try:
        return binascii.a2b_base64(clean)
    except (binascii.Error, ValueError):
        return b""


# --- headers -------------------------------------------------------------------------------


def _header_text(value: str) -> str:
    """compat32 keeps 8-bit header bytes as surrogate escapes: read them as utf-8, else cp1252."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        raw = value.encode("utf-8", "surrogateescape")
    return decode_bytes(raw, None)


def _decode_word(encoding: str, text: str) -> bytes:
    data = text.encode("latin-1", "replace")
    if encoding in "bB":
        return _b64decode(data)
    try:
        return binascii.a2b_qp(data, header=True)
    except (binascii.Error, ValueError):
        return data


class WordBudget:
    """Encoded words this message may still have decoded (Limits.max_encoded_words): past it
    the rest of a value is read as it stands, and `hit` says so."""

    __slots__ = ("hit", "left")

    def __init__(self, words: int) -> None:
        self.left = words
        self.hit = False


def decode_rfc2047(value: str, budget: WordBudget | None = None) -> str:
    """Decode RFC 2047 encoded words, also malformed ones (spaces inside, bad padding, unknown
    charsets). Adjacent words of one charset are joined as bytes before decoding, since senders
    split multi-byte characters across words."""
    if "=?" not in value:
        return value
    out: list[str] = []
    pending: list[bytes] = []
    pending_charset = ""
    pos = 0

    def flush() -> None:
        if pending:
            out.append(decode_bytes(b"".join(pending), pending_charset))
            pending.clear()

    for match in _ENCODED_WORD.finditer(value):
        if budget is not None:
            if budget.left <= 0:
                budget.hit = True
                break
            budget.left -= 1
        between = value[pos : match.start()]
        charset = match.group(1).split("*", 1)[0].lower()
        if between and not (pending and between.isspace()):
            flush()
            out.append(between)
        elif pending and charset != pending_charset:
            flush()
        pending_charset = charset
        pending.append(_decode_word(match.group(2), match.group(3)))
        pos = match.end()
    flush()
    out.append(value[pos:])
    return "".join(out)


def decode_header(value: object, budget: WordBudget | None = None) -> str:
    """A raw header value as one line of text: unfolded, 8-bit and RFC 2047 decoded, no CR/LF."""
    try:
        text = value if isinstance(value, str) else str(value)
        if "\n" in text or "\r" in text:
            # Unfolding removes the CRLF before continuation whitespace; stray CR/LF go too.
            text = text.replace("\r", "").replace("\n", "")
        if not text.isascii():
            text = _header_text(text)
        if "=?" in text:
            text = decode_rfc2047(text, budget).replace("\r", "").replace("\n", "")
        return text.strip()
    except Exception:  # a header must never stop the scan
        return ""


# --- message structure ---------------------------------------------------------------------


def _prepare(raw: bytes) -> bytes:
    """Drop an mbox "From " line and blank lines in front of the header block, and read the
    obsolete "Name :" header syntax (space before the colon) as "Name:"."""
    if raw.startswith(b"From ") and not _OBS_FROM.match(raw):
        end = raw.find(b"\n")
        raw = raw[end + 1 :] if end >= 0 else b""
    if raw[:1] in (b"\r", b"\n", b" ", b"\t"):
        stripped = raw.lstrip(b" \t\r\n")
        if _HEADER_LINE.match(stripped):
            raw = stripped
    end = _header_end(raw)
    head = raw[:end]
    if b" :" in head or b"\t:" in head:
        raw = _OBS_NAME.sub(rb"\1:", head) + raw[end:]
    return raw


def _header_end(data: bytes) -> int:
    """Offset of the blank line that ends the header block (LF or CRLF), or len(data)."""
    lf = data.find(b"\n\n")
    crlf = data.find(b"\n\r\n", 0, lf if lf >= 0 else len(data))
    if crlf >= 0:
        return crlf
    return lf if lf >= 0 else len(data)


def _without_junk_line(data: bytes) -> bytes | None:
    """A stray non-header line inside the header block ("quite Delivered-To: ...") ends the
    headers for the stdlib parser, hiding From and Subject below it. When real headers (not
    a MIME part's Content-* lines) follow it, drop that one line instead."""
    lines = data[: _header_end(data)].split(b"\n")
    for i, line in enumerate(lines):
        if _HEADER_LINE.match(line) or line[:1] in (b" ", b"\t"):
            continue
        if line.startswith(b"--") or i + 2 >= len(lines):
            return None
        following = lines[i + 1 : i + 4]
        if not all(_HEADER_LINE.match(x) or x[:1] in (b" ", b"\t") for x in following[:2]):
            return None
        if not any(_HEADER_LINE.match(x) and not _MIME_HEADER.match(x) for x in following):
            return None
        start = sum(len(x) + 1 for x in lines[:i])
        return data[:start] + data[start + len(line) + 1 :]
    return None


def _raw_payload(node: Message) -> object:
    """The payload as parsed. get_payload() would decode 8-bit text with the declared charset
    and "replace" (losing the bytes the fallbacks here need), and costs a full copy."""
    return getattr(node, "_payload", None)


def _payload_bytes(node: Message) -> bytes:
    payload = _raw_payload(node)
    if isinstance(payload, bytes):
        return payload
    if not isinstance(payload, str):
        return b""
    try:
        return payload.encode("ascii", "surrogateescape")
    except UnicodeError:
        return payload.encode("utf-8", "surrogateescape")


def _decoded_payload(node: Message) -> bytes:
    cte = str(node.get("content-transfer-encoding", "")).strip().lower()
    data = _payload_bytes(node)
    if "base64" in cte:
        return _b64decode(data)
    if "quoted" in cte:
        try:
            return binascii.a2b_qp(data)
        except (binascii.Error, ValueError):
            return data
    if "uu" in cte:
        decoded = node.get_payload(decode=True)
        return decoded if isinstance(decoded, bytes) else data
    return data


def _guess_utf16(data: bytes) -> str | None:
    """utf-16 without a BOM or charset: mostly NUL bytes on one side."""
    head = data[:400]
    if len(head) < 8 or head.count(0) < len(head) // 3:
        return None
    return "utf-16-le" if head[1::2].count(0) > head[0::2].count(0) else "utf-16-be"


def _charset(node: Message) -> str | None:
    try:
        charset = node.get_content_charset()
    except Exception:
        return None
    if not charset:
        return None
    match = _CHARSET_TOKEN.search(str(charset).lower())
    return match.group(0) if match else None


def _content_type(node: Message) -> str:
    try:
        return node.get_content_type().lower()
    except Exception:
        return "application/octet-stream"


def _disposition(node: Message) -> str | None:
    try:
        value = node.get_content_disposition()
    except Exception:
        return None
    if value is None:
        return None
    return "inline" if value.strip().lower() == "inline" else "attachment"


def _filename(node: Message, budget: WordBudget) -> str | None:
    try:
        name = node.get_filename()
    except Exception:
        name = None
    if name is None:
        return None
    text = decode_header(name, budget)
    return text or None


def _recover_multipart(node: Message) -> Message | None:
    """A multipart whose declared boundary never occurs: guess the boundary from the first
    delimiter-looking line that is followed by a MIME header, and parse again."""
    payload = _raw_payload(node)
    if not isinstance(payload, str):
        return None
    for match in _BOUNDARY_LINE.finditer(payload):
        follow = payload[match.end() : match.end() + 200].lstrip("\r\n")
        if follow[:8].lower() != "content-":
            continue
        boundary = match.group(1)
        head = f'Content-Type: multipart/mixed; boundary="{boundary}"\n\n'
        try:
            data = head.encode("ascii", "surrogateescape") + _payload_bytes(node)
            recovered = _PARSER.parsebytes(data)
        except Exception:
            return None
        return recovered if isinstance(_raw_payload(recovered), list) else None
    return None


class _Walker:
    """One pass over the MIME tree, depth-first in tree order, within the limits."""

    def __init__(self, limits: Limits, qr: QrSettings | None = None) -> None:
        self.limits = limits
        self.qr = qr if qr is not None and qr.enabled else None
        self.payloads: list[Payload] = []
        self.payload_bytes = 0
        self.texts: list[str] = []
        self.htmls: list[str] = []
        self.parts: list[Part] = []
        self.defects: dict[str, None] = {}
        self.limit_hits: dict[str, None] = {}
        self.words = WordBudget(limits.max_encoded_words)

    def hit(self, name: str) -> None:
        self.limit_hits.setdefault(name, None)

    def defect(self, name: str) -> None:
        if len(self.defects) < MAX_DEFECTS:
            self.defects.setdefault(name, None)

    def walk(self, root: Message) -> None:
        stack: list[tuple[Message, int, bool]] = [(root, 0, False)]
        while stack:
            node, depth, recovered = stack.pop()
            for found in getattr(node, "defects", ()):
                self.defect(type(found).__name__)
            payload = _raw_payload(node)
            ctype = _content_type(node)
            if isinstance(payload, list) and ctype != "message/delivery-status":
                if depth >= self.limits.max_mime_depth:
                    self.hit("max_mime_depth")
                    continue
                children = [c for c in payload if isinstance(c, Message)]
                stack.extend((child, depth + 1, recovered) for child in reversed(children))
                continue
            if ctype.startswith("multipart/") and not recovered:
                fixed = _recover_multipart(node)
                if fixed is not None:
                    self.defect("BoundaryRecovered")
                    stack.append((fixed, depth, True))
                    continue
            if len(self.parts) >= self.limits.max_parts:
                self.hit("max_parts")
                return
            self.leaf(node, ctype, depth)

    def leaf(self, node: Message, ctype: str, depth: int) -> None:
        data = _decoded_payload(node)
        size = len(data)
        if size > self.limits.max_part_bytes:
            self.hit("max_part_bytes")
            data = data[: self.limits.max_part_bytes]
        charset = _charset(node)
        filename = _filename(node, self.words)
        disposition = _disposition(node)
        self.parts.append(Part(ctype, charset, filename, disposition, size, depth))
        if self.qr is not None:
            self.keep_payload(node, ctype, filename, data)
        is_html = ctype == "text/html" or (
            filename is not None and _HTML_FILENAME.search(filename) is not None
        )
        if is_html:
            self.htmls.append(self.text_of(data, charset))
        elif (
            (ctype == "text/plain" or ctype.startswith("multipart/"))
            and disposition != "attachment"
            and data.strip()
        ):
            # A multipart left as text (boundary lost, not recoverable) is shown as text.
            self.texts.append(self.text_of(data, charset))

    def keep_payload(self, node: Message, ctype: str, filename: str | None, data: bytes) -> None:
        """Keep an image or PDF part (known by its bytes, whatever its label) for code
        decoding, within the per-message count and byte caps."""
        assert self.qr is not None
        kind = payload_kind(ctype, data)
        if kind is None:
            return
        count_cap = self.qr.max_images * 4 if kind == "image" else self.qr.max_pdf_pages
        if sum(1 for p in self.payloads if p.kind == kind) >= count_cap:
            self.hit("qr.max_images" if kind == "image" else "qr.max_pdf_pages")
            return
        if self.payload_bytes + len(data) > self.qr.max_bytes:
            self.hit("qr.max_bytes")
            return
        self.payload_bytes += len(data)
        self.payloads.append(Payload(kind, ctype, _payload_name(node, filename, ctype), data))

    @staticmethod
    def text_of(data: bytes, charset: str | None) -> str:
        if charset is None or not charset.startswith("utf-16"):
            guess = _guess_utf16(data) if b"\x00" in data[:400] else None
            if guess is not None and _bom_codec(data) is None:
                charset = guess
        return decode_bytes(data, charset)


# --- payloads for code decoding ----------------------------------------------------------

_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM")
_NOT_PAYLOAD = ("text/", "multipart/", "message/")


def payload_kind(ctype: str, data: bytes) -> str | None:
    """ "image" or "pdf" when the bytes are a PNG, JPEG, GIF, WebP, BMP or PDF (whatever the
    part's label says: senders mislabel, attackers on purpose), else None."""
    if ctype.startswith(_NOT_PAYLOAD) or len(data) < 16:
        return None
    if data.startswith(_IMAGE_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
        return "image"
    # PDF readers accept the header anywhere in the first kilobyte.
    return "pdf" if b"%PDF-" in data[:1024] else None


def _payload_name(node: Message, filename: str | None, ctype: str) -> str:
    if filename:
        return filename[:120]
    cid = decode_header(node.get("content-id", "")).strip().strip("<>")
    return f"cid:{cid[:100]}" if cid else ctype


def _headers(msg: Message, budget: WordBudget) -> tuple[tuple[str, str], ...]:
    out = []
    for name, value in msg.raw_items():
        name = name.strip() if name.isascii() else decode_header(name, budget)
        out.append((name, decode_header(value, budget)))
    return tuple(out)


def _header_block_end(data: bytes) -> int:
    """Offset of the line break that ends the header block as the stdlib parser reads it."""
    if not _HEADER_START.match(data):
        return 0
    end = _header_end(data)
    junk = _NOT_HEADER.search(data, 0, end + 1)
    return junk.start() if junk is not None else end


def bound_header_block(data: bytes, limits: Limits) -> tuple[bytes, tuple[str, ...]]:
    """(data, Limits fields crossed): a header block of more than max_header_bytes or
    max_headers fields is cut to its first fields within both, and every vital field
    (From, Sender, Reply-To, Subject, Authentication-Results, DKIM-Signature, Return-Path and
    the MIME headers) is kept wherever it stood, so that padding can hide nothing. The body
    is left alone. Linear: every search runs in C, and the Python loops stop at the limits."""
    end = _header_end(data)
    if end <= limits.max_header_bytes and data.count(b"\n", 0, end) < limits.max_headers:
        return data, ()  # the usual message: fewer lines than the limit allows fields
    end = _header_block_end(data)
    head = data[:end]
    fields = head.count(b"\n") + 1 - head.count(b"\n ") - head.count(b"\n\t")
    hits = tuple(
        name
        for name, over in (
            ("max_header_bytes", len(head) > limits.max_header_bytes),
            ("max_headers", fields > limits.max_headers),
        )
        if over
    )
    if not hits:
        return data, ()
    kept = _kept_fields(head, limits)
    block = b"".join(_field_piece(head, start, stop) for start, stop in sorted(kept.items()))
    if block.endswith(b"\n"):
        block = block[:-1]  # data[end:] starts with the last line's own line break
    return block + data[end:], hits


def _field_piece(head: bytes, start: int, stop: int) -> bytes:
    """The field, or what is kept of it: a field cut short still ends with its line break."""
    piece = head[start:stop]
    if stop < len(head) and not piece.endswith(b"\n"):
        piece = piece.rstrip(b"\r") + b"\r\n"
    return piece


def _field_end(head: bytes, start: int) -> int:
    nxt = _FIELD_START.search(head, start)
    return nxt.end() if nxt is not None else len(head)


def _kept_fields(head: bytes, limits: Limits) -> dict[int, int]:
    """start -> stop of the fields kept: the vital ones first, then the first fields."""
    field_cap = max(1024, limits.max_header_bytes // 16)
    kept: dict[int, int] = {}
    used = 0
    low = b"\n" + head.lower()  # offsets in `low` are one past those in `head`
    for pattern in _VITAL:
        for match in itertools.islice(pattern.finditer(low), VITAL_PER_NAME):
            start, colon = match.start(), match.end() - 1  # `low` is one byte ahead of `head`
            stop = min(_field_end(head, colon), start + field_cap)
            if used + stop - start > limits.max_header_bytes // 2:
                break
            kept[start] = stop
            used += stop - start
    count = len(kept)
    start = 0
    while start < len(head) and count < limits.max_headers:
        full = _field_end(head, start)
        if start not in kept:
            stop = min(full, start + field_cap)
            if used + stop - start > limits.max_header_bytes:
                break
            kept[start] = stop
            used += stop - start
            count += 1
        start = full
    return kept


def _bound(data: bytes, limits: Limits, walker: _Walker) -> bytes:
    """Cut what would only cost time: a header block past its limits (keeping what matters),
    and everything after more delimiter-looking lines than max_parts parts could ever need."""
    data, hits = bound_header_block(data, limits)
    for name in hits:
        walker.hit(name)
    budget = limits.max_parts * DELIMITERS_PER_PART
    if data.count(b"\n--") > budget:
        pos = 0
        for _ in range(budget):
            pos = data.find(b"\n--", pos) + 3
        walker.hit("max_parts")
        data = data[:pos]
    data, deep = _bound_nesting(data, limits)
    if deep:
        walker.hit("max_mime_depth")
    return data


def _bound_nesting(data: bytes, limits: Limits) -> tuple[bytes, bool]:
    """(data, whether anything was cut): the bodies of multiparts nested max_mime_depth deep or more
    taken out, up to their parent's next delimiter. The walk would not descend into them;
    the stdlib parser would pay for every line of them once per enclosing boundary."""
    depth = limits.max_mime_depth
    # Every level opens with a delimiter line: fewer of those than levels, no deep nesting
    # (a C count, where the case-blind search below is slower; most messages stop here).
    if data.count(b"\n--") <= depth:
        return data, False
    if sum(1 for _ in itertools.islice(_MULTIPART.finditer(data), depth + 1)) <= depth:
        return data, False  # not that many multiparts at all: the usual message
    stack: list[bytes] = []
    cuts: list[tuple[int, int]] = []
    skip_from = -1
    tokens = limits.max_parts * DELIMITERS_PER_PART * 4
    for match in itertools.islice(_NEST_TOKEN.finditer(data), tokens):
        boundary = match.group(1)
        if boundary is None:  # a declaration
            if skip_from >= 0:
                continue
            param = _BOUNDARY_PARAM.search(match.group(0))
            if param is None:
                continue
            if len(stack) >= depth:
                blank = _BLANK_LINE.search(data, match.end())
                skip_from = blank.end() if blank else len(data)
                continue
            stack.append(param.group(1) or param.group(2))
        elif boundary in stack:
            # A parent's delimiter closes whatever is open inside it (as the parser does).
            del stack[stack.index(boundary) + 1 :]
            if match.group(2):
                stack.pop()  # and a closing delimiter, the multipart itself
            if skip_from >= 0:
                cuts.append((skip_from, match.start()))
                skip_from = -1
    if skip_from >= 0:
        cuts.append((skip_from, len(data)))
    if not cuts:
        return data, False
    kept, pos = [], 0
    for start, end in cuts:
        if start >= pos:
            kept.append(data[pos:start])
            pos = end
    kept.append(data[pos:])
    return b"".join(kept), True


def _parse_message(data: bytes) -> Message:
    """The stdlib parse of `data`, as `_PARSER.parsebytes` gives it. For a message that is not
    multipart or message/*, the feedparser only joins the body's lines back into one string,
    at one Python step per line: parse the header block alone and attach the body as it is."""
    end = _header_end(data)
    cut = end + (2 if data[end + 1 : end + 2] == b"\n" else 3)
    if cut >= len(data):
        return _PARSER.parsebytes(data)
    # The cut falls just after a blank line, so the feedparser's header block ends at or
    # before it; whatever it read as body inside the head stays in front of the rest.
    head = data[:cut]
    lowered = head.lower()
    if b"multipart" in lowered or b"message/" in lowered:
        return _PARSER.parsebytes(data)  # most likely a tree: parse once, the usual way
    msg = _PARSER.parsebytes(head, headersonly=True)
    if msg.get_content_maintype() in ("multipart", "message"):
        return _PARSER.parsebytes(data)
    head_body = _raw_payload(msg)
    body = data[cut:].decode("ascii", "surrogateescape")
    msg.set_payload(head_body + body if isinstance(head_body, str) and head_body else body)
    return msg


def _headers_only(data: bytes, walker: _Walker) -> tuple[tuple[str, str], ...]:
    """The parser gave up on the structure (nesting deeper than its recursion allows): keep
    the top-level headers and read the body as plain text."""
    msg = _PARSER.parsebytes(data, headersonly=True)
    body = _payload_bytes(msg)
    if body.strip():
        walker.texts.append(decode_bytes(body[: walker.limits.max_part_bytes], None))
    return _headers(msg, walker.words)


def parse(
    raw: bytes,
    limits: Limits = Limits(),  # noqa: B008 (frozen, shared)
    qr: QrSettings | None = None,
) -> Parsed:
    """Parse any bytes into a `Parsed`. Never raises. With `qr` (enabled), image and PDF
    parts are kept as payloads for code decoding."""
    size = len(raw) if isinstance(raw, bytes | bytearray | memoryview) else 0
    walker = _Walker(limits, qr)
    headers: tuple[tuple[str, str], ...] = ()
    try:
        data = bytes(raw)
        if len(data) > limits.max_message_bytes:
            data = data[: limits.max_message_bytes]
            walker.hit("max_message_bytes")
        data = _bound(_prepare(data), limits, walker)
        try:
            msg = _parse_message(data)
            if any(type(d).__name__ == "MissingHeaderBodySeparatorDefect" for d in msg.defects):
                repaired = _without_junk_line(data)
                if repaired is not None:
                    walker.defect("JunkHeaderLineDropped")
                    repaired, hits = bound_header_block(repaired, limits)
                    for name in hits:
                        walker.hit(name)
                    msg = _parse_message(repaired)
        except RecursionError:
            walker.hit("max_mime_depth")
            walker.defect("ParseError: RecursionError")
            headers = _headers_only(data, walker)
        else:
            headers = _headers(msg, walker.words)
            walker.walk(msg)
    except Exception as exc:  # keep what was read so far; the defect says it stopped early
        walker.defect(f"ParseError: {type(exc).__name__}")
    if walker.words.hit:
        walker.hit("max_encoded_words")
    return Parsed(
        headers=headers,
        texts=tuple(walker.texts),
        htmls=tuple(walker.htmls),
        parts=tuple(walker.parts),
        defects=tuple(walker.defects),
        limit_hits=tuple(walker.limit_hits),
        size=size,
        payloads=tuple(walker.payloads),
    )
