"""From a parsed message to the `Features` every check looks at, built once per message.

Addresses are read from the decoded header text by hand rather than with
email.utils.getaddresses: once encoded words are decoded, a display name may hold commas,
"@" or a whole address ("support@apple.com" <x@evil.example>), and the stdlib splitter then
picks the wrong part. The rule here is the one mail clients follow: the address is what is
inside the last angle brackets; everything before them is the display name.
"""

from __future__ import annotations

import re
from dataclasses import replace

from filters import domains
from filters.auth import parse_authentication_results
from filters.html import HtmlDoc, analyse_html
from filters.qr import Decoded, code_urls
from filters.registry import Lists
from filters.text import normalise
from filters.types import Address, AuthResult, Envelope, Features, Limits, Parsed, Part
from filters.urls import RFC1035, HostCaps, LinkSet, text_urls

MAX_ADDRESSES = 50  # per header: a Reply-To with thousands of entries is noise, not signal
MAX_ADDRESS_CHARS = 32 * 1024  # of one address header read character by character

_COMMENT = re.compile(r"\(([^()]*)\)")
_QUOTED_ONLY = re.compile(r'\s*"[^"]*"\s*')
_DKIM_D = re.compile(r"(?:^|;)\s*d\s*=\s*([^;\s]+)", re.IGNORECASE)


# --- addresses -----------------------------------------------------------------------------


def _split_addresses(value: str) -> list[str]:
    """Split on commas outside quotes and angle brackets; a piece without "@" (the first half
    of an unquoted "Doe, John <j@x>") is glued to the next piece."""
    if "," not in value:  # one address (most headers): nothing to split or glue
        return [value] if value.strip() else []
    pieces: list[str] = []
    current: list[str] = []
    quoted = False
    angle = 0
    escaped = False
    for ch in value:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            angle += 1
        elif not quoted and ch == ">" and angle:
            angle -= 1
        elif ch == "," and not quoted and not angle:
            pieces.append("".join(current))
            current = []
            continue
        current.append(ch)
    pieces.append("".join(current))
    merged: list[str] = []
    carry = ""
    for piece in pieces:
        piece = carry + ("," if carry else "") + piece
        # A piece without an address, or only a quoted string ("Parkside@Lidl.de", <x@y>):
        # a display name that a stray comma cut from its address.
        if ("@" not in piece and "<" not in piece) or _QUOTED_ONLY.fullmatch(piece):
            carry = piece
            continue
        carry = ""
        merged.append(piece)
    if carry.strip():
        merged.append(carry)
    return [p for p in merged if p.strip()]


def _unquote(display: str) -> str:
    display = display.strip().strip(",;:")
    if len(display) >= 2 and display[0] == display[-1] == '"':
        display = display[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    elif len(display) >= 2 and display[0] == display[-1] == "'":
        display = display[1:-1]
    return " ".join(display.split())


def _one_address(piece: str, caps: HostCaps) -> Address:
    piece = piece.strip()
    lt = piece.rfind("<")
    if lt >= 0:
        gt = piece.find(">", lt)
        addr = piece[lt + 1 : gt if gt >= 0 else len(piece)]
        display = piece[:lt] + (piece[gt + 1 :] if gt >= 0 else "")
    else:
        comments = _COMMENT.findall(piece)
        bare = _COMMENT.sub(" ", piece)
        tokens = bare.split()
        at_tokens = [t for t in tokens if "@" in t]
        addr = at_tokens[-1] if at_tokens else ""
        rest = [t for t in tokens if t is not addr] if addr else tokens
        display = " ".join(rest) or " ".join(comments)
    return make_address(_unquote(display), addr, caps)


def make_address(display: str, addr: str, caps: HostCaps = RFC1035) -> Address:
    """An Address from a display name and an address string as found (tolerant). A domain
    longer than any DNS name is cut to fit `caps` (see domains.bound_host) and says so."""
    addr = _COMMENT.sub("", addr).strip().strip("\"'<>").strip()
    if addr.lower().startswith("mailto:"):
        addr = addr[7:]
    addr = "".join(addr.split())
    local, at, domain = addr.rpartition("@")
    if not at:
        return Address(display, "", "", "", "")
    local = local.strip('"')
    domain, hit = domains.bound_host(domain.strip("[]").rstrip("."), *caps)
    domain, ascii_hit = domains.bound_host(domains.to_ascii(domain), *caps)
    hit = hit or ascii_hit
    if not local or not domain:
        reg = domains.registrable(domain) if domain else ""
        return Address(display, "", local, domain, reg, hit)
    return Address(display, f"{local}@{domain}", local, domain, domains.registrable(domain), hit)


def parse_addresses(value: str, caps: HostCaps = RFC1035) -> tuple[Address, ...]:
    """Every address in a header value (decoded text), in order."""
    try:
        pieces = _split_addresses(value[:MAX_ADDRESS_CHARS])[:MAX_ADDRESSES]
        return tuple(_one_address(piece, caps) for piece in pieces)
    except Exception:  # garbage in a header is data for the checks, not a crash
        return ()


def _display_cut(address: Address | None, limits: Limits) -> tuple[Address | None, tuple[str, ...]]:
    """The address with its display name cut to max_subject_chars and each of its words to
    max_word_chars (fuzzy brand matching looks at each word, and no brand name is that long),
    and the limits crossed."""
    if address is None:
        return None, ()
    display, hits = address.display, []
    if len(display) > limits.max_subject_chars:
        display = display[: limits.max_subject_chars]
        hits.append("max_subject_chars")
    if any(len(w) > limits.max_word_chars for w in display.split()):
        display = " ".join(w[: limits.max_word_chars] for w in display.split())
        hits.append("max_word_chars")
    if not hits:
        return address, ()
    return replace(address, display=display), tuple(hits)


Headers = dict[str, list[str]]


def _index(parsed: Parsed) -> Headers:
    """Header values by lower-case name: one pass instead of one scan per lookup."""
    heads: Headers = {}
    for name, value in parsed.headers:
        heads.setdefault(name.lower(), []).append(value)
    return heads


def _first_address(heads: Headers, name: str, caps: HostCaps) -> Address | None:
    values = heads.get(name.lower())
    if not values:
        return None
    value = values[0]
    found = parse_addresses(value, caps)
    for address in found:
        if address.address:
            return address
    return found[0] if found else Address(_unquote(value), "", "", "", "")


def _return_path(heads: Headers, envelope: Envelope | None, caps: HostCaps) -> Address | None:
    if envelope is not None:
        # The envelope is the truth at the gateway; a null sender (bounce) has no address.
        if not envelope.mail_from.strip():
            return None
        return make_address("", envelope.mail_from, caps)
    return _first_address(heads, "Return-Path", caps)


# --- body, links, auth ---------------------------------------------------------------------


def _body(pieces: list[str], limit: int) -> tuple[str, bool]:
    """Normalised body text, capped; (text, whether anything was cut)."""
    raw_cap = limit * 2  # normalising collapses whitespace: cut the raw text generously first
    text = " ".join(filter(None, (normalise(piece) for piece in _cut(pieces, raw_cap))))
    if len(text) > limit:
        return text[:limit], True
    return text, sum(len(piece) + 1 for piece in pieces) > raw_cap


def _cut(pieces: list[str], budget: int) -> list[str]:
    kept = []
    for piece in pieces:
        if budget <= 0:
            break
        kept.append(piece[:budget])
        budget -= len(kept[-1]) + 1
    return kept


def _dkim_domains(heads: Headers) -> tuple[str, ...]:
    found: dict[str, None] = {}
    for value in heads.get("dkim-signature", ()):
        match = _DKIM_D.search(value)
        if match:
            domain = match.group(1).strip().strip("\"'").lower().rstrip(".")
            if domain:
                found.setdefault(domain, None)
    return tuple(found)


def _auth(
    heads: Headers, trusted: tuple[str, ...], dkim_results: tuple[AuthResult, ...]
) -> tuple[AuthResult, ...]:
    values = tuple(heads.get("authentication-results", ()))
    if not values or not trusted:
        return tuple(dkim_results)
    try:
        return (*dkim_results, *parse_authentication_results(values, trusted))
    except Exception:  # an unparseable header gives no trusted result, never a crash
        return tuple(dkim_results)


def _attachments(parts: tuple[Part, ...]) -> tuple[Part, ...]:
    return tuple(p for p in parts if p.filename or p.disposition == "attachment")


def _links_and_text(
    parsed: Parsed, lists: Lists, limits: Limits
) -> tuple[LinkSet, list[str], list[str]]:
    """Links of all bodies (text first, then HTML), body text pieces, image alts."""
    links = LinkSet(limits.max_links, lists.redirect_params, _caps(limits))
    pieces: list[str] = []
    alts: list[str] = []
    for text in parsed.texts:
        pieces.append(text)
        for url in text_urls(text[: limits.max_text_chars * 2]):
            links.add(url, "text")
    for markup in parsed.htmls:
        doc: HtmlDoc = analyse_html(markup, limits.max_links * 4)
        pieces.append(doc.text)
        alts.extend(doc.image_alts)
        for url, where, shown in doc.links:
            links.add(url, where, shown, base=doc.base)
        if doc.truncated:
            links.capped = True
    return links, pieces, alts


def _caps(limits: Limits) -> HostCaps:
    return (limits.max_host_chars, limits.max_host_labels)


def _uniq(items: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(item for item in items if item))


def extract(
    parsed: Parsed,
    *,
    envelope: Envelope | None,
    trusted_authserv_ids: tuple[str, ...],
    lists: Lists,
    limits: Limits,
    dkim_results: tuple[AuthResult, ...] = (),
) -> Features:
    """Everything the checks look at, from one parsed message."""
    heads = _index(parsed)
    caps = _caps(limits)
    from_addr = _first_address(heads, "From", caps)
    subject = heads.get("subject", [""])[0]
    subject_cut = len(subject) > limits.max_subject_chars
    subject = subject[: limits.max_subject_chars]
    links, pieces, alts = _links_and_text(parsed, lists, limits)
    body, body_capped = _body(pieces, limits.max_text_chars)
    hits = dict.fromkeys(parsed.limit_hits)
    if links.capped:
        hits.setdefault("max_links", None)
    if body_capped:
        hits.setdefault("max_text_chars", None)
    from_addr, display_hits = _display_cut(from_addr, limits)
    for hit in (*display_hits, *(("max_subject_chars",) if subject_cut else ())):
        hits.setdefault(hit, None)
    reply_to: list[Address] = []
    for value in heads.get("reply-to", ()):
        reply_to.extend(a for a in parse_addresses(value, caps) if a.address)
    sender = _first_address(heads, "Sender", caps)
    return_path = _return_path(heads, envelope, caps)
    for item in (from_addr, sender, return_path, *reply_to, *links.links):
        if item is not None and item.limit_hit is not None:
            hits.setdefault(item.limit_hit, None)
    return Features(
        from_addr=from_addr,
        sender=sender,
        reply_to=tuple(reply_to[:MAX_ADDRESSES]),
        return_path=return_path,
        subject=subject,
        subject_norm=normalise(subject),
        display_norm=normalise(from_addr.display) if from_addr else "",
        body=body,
        links=tuple(links.links),
        image_alts=_uniq([normalise(alt) for alt in alts]),
        dkim_domains=_dkim_domains(heads),
        auth=_auth(heads, trusted_authserv_ids, dkim_results),
        attachments=_attachments(parsed.parts),
        has_html=bool(parsed.htmls) or any(p.content_type == "text/html" for p in parsed.parts),
        defects=parsed.defects,
        limit_hits=tuple(hits),
        envelope=envelope if envelope is not None else Envelope(),
        list_headers="list-id" in heads or "list-unsubscribe" in heads,
        mailing_list=any(h in heads for h in _LIST_HEADERS),
        message_id_domain=_message_id_domain(heads),
        headers=parsed.headers,
    )


def with_qr(f: Features, qr: Decoded, lists: Lists, limits: Limits) -> Features:
    """The features with the decoded QR codes: each URL in a code is a link like any other
    (where = "qr", after the body's links, within max_links), and the limits decoding
    crossed are limit hits."""
    if not qr.codes and not qr.hits:
        return f
    links = LinkSet(limits.max_links, lists.redirect_params, _caps(limits), list(f.links))
    for code in qr.codes:
        for url in code_urls(code.text):
            links.add(url, "qr")
    hits = dict.fromkeys(f.limit_hits)
    hits.update(dict.fromkeys(qr.hits))
    if links.capped:
        hits.setdefault("max_links", None)
    return replace(f, links=tuple(links.links), qr_codes=tuple(qr.codes), limit_hits=tuple(hits))


_MESSAGE_ID = re.compile(r"<?[^<>@\s]{0,256}@([A-Za-z0-9.-]{1,253})>?")


def _message_id_domain(heads: Headers) -> str:
    values = heads.get("message-id")
    if not values:
        return ""
    m = _MESSAGE_ID.search(values[0][:600])
    return m.group(1).lower().strip(".") if m else ""


# A discussion list, where the From is a person posting: a list takes posts (List-Post) or says
# which list software relays. List-Id alone is what every bulk sender and ESP adds to its
# campaigns, and what a spoofer adds to pass for a list.
_LIST_HEADERS = ("list-post", "x-beenthere", "mailing-list", "x-mailman-version")
