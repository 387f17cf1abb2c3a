"""What the gateway does to a message for a verdict: headers, subject prefix, one banner.

Everything works on the raw bytes. By default only header fields are prepended and the rest
of the message is left as it came, so DKIM signatures over the original headers and body
still verify. The banner and the Subject prefix (both off by default) change signed content;
when an ARC key is configured, such a changed message is ARC-sealed with the authentication
results from before the change. The banner rewrites only the first text/plain and text/html
bodies and leaves every other byte of the MIME tree alone. Nothing taken from the message
reaches a header unsanitised.
"""

from __future__ import annotations

import base64
import binascii
import html
import itertools
import quopri
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, replace
from email.header import Header
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32

from filters.scoring import decide
from filters.types import Verdict
from gateway.settings import FALLBACK_BANNER, ArcSettings, BannerText, GatewaySettings, Policy

PREFIX = b"x-brandgate-"
SPAM_PREFIX = b"x-spam-"
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


_AR_ID = re.compile(rb"^authentication-results[ \t]*:[ \t\r\n]*([^;\s]+)", re.IGNORECASE)


def _ours(fld: bytes, spam: bool, authserv_id: bytes | None) -> bool:
    low = fld[:64].lower()
    if low.startswith(PREFIX):
        return True
    if spam and low.startswith(SPAM_PREFIX):
        return True
    if authserv_id and low.startswith(b"authentication-results"):
        m = _AR_ID.match(fld)
        # RFC 8601 section 5: results claiming our own authserv-id come from a forger.
        return m is not None and m.group(1).lower() == authserv_id
    return False


def strip_our_headers(raw: bytes, *, spam: bool = False, authserv_id: str | None = None) -> bytes:
    """Drop every incoming field that brandgate writes, so that a sender cannot pre-seed a
    verdict: X-Brandgate-*, X-Spam-* when we write those, Authentication-Results under our
    own authserv-id."""
    block, rest = split_headers(raw)
    low = block.lower()
    ar_id = authserv_id.lower().encode("ascii", "replace") if authserv_id else None
    if (
        PREFIX not in low
        and not (spam and SPAM_PREFIX in low)
        and not (ar_id and b"authentication-results" in low)
    ):
        return raw
    kept = [f for f in _fields(block) if not _ours(f, spam, ar_id)]
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


def _rules_list(verdict: Verdict, sep: str = ",") -> str:
    return sep.join(f"{f.rule}={f.score:.2f}" for f in verdict.findings) or "none"


def status_fields(verdict: Verdict, required: float) -> list[tuple[str, str]]:
    """The headers on every scanned message: X-Brandgate-Status (one line a filter can read),
    then the verdict, score, rules and brand each in its own field."""
    brand = f" brand={verdict.brand.name}" if verdict.brand is not None else ""
    status = (
        f"{verdict.verdict} score={verdict.score:.2f} required={required:.2f}{brand}"
        f" rules={_rules_list(verdict)}"
    )
    return [("X-Brandgate-Status", status), *tag_fields(verdict)]


def spam_fields(verdict: Verdict, required: float, version: str) -> list[tuple[str, str]]:
    """X-Spam-Flag / X-Spam-Status as SpamAssassin writes them (Thunderbird, Sieve, procmail
    and many webmail rules test exactly these)."""
    flagged = verdict.verdict != "pass"
    tests = ",".join(f.rule for f in verdict.findings) or "none"
    status = (
        f"{'Yes' if flagged else 'No'}, score={verdict.score:.1f} required={required:.1f} "
        f"tests={tests} autolearn=disabled version=brandgate-{version}"
    )
    out = [("X-Spam-Status", status)]
    if flagged:
        out.insert(0, ("X-Spam-Flag", "YES"))
    return out


def auth_results_field(verdict: Verdict, authserv_id: str) -> tuple[str, str] | None:
    """Authentication-Results for brandgate's own DKIM verification (authres writes it);
    None when it did not run, since claiming "dkim=none" then would be false."""
    if verdict.dkim is None:
        return None
    import authres

    results = [
        authres.DKIMAuthenticationResult(result=r.result, header_d=r.domain or None)
        for r in verdict.dkim
    ] or [authres.DKIMAuthenticationResult(result="none")]
    header = authres.AuthenticationResultsHeader(authserv_id=authserv_id, results=results)
    return ("Authentication-Results", header.header_value())


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


def banner_text(verdict: Verdict, text: BannerText | None = None, report: str = "") -> str:
    """The banner sentence(s): a suspicion in the configured language, never a verdict stated
    as fact, with where to report the message when the admin gave an address."""
    t = text or FALLBACK_BANNER
    safe_report = " ".join(_CTRL.sub(" ", report).split())[:200]
    # The engine's one sentence (what it saw, in English), for texts that ask for {summary}.
    summary = " ".join(_CTRL.sub(" ", verdict.summary).split())[:400]
    try:
        if verdict.brand is not None:
            brand = " ".join(_CTRL.sub(" ", verdict.brand.name).split())[:80]
            body = t.brand.format(brand=brand, report=safe_report, summary=summary)
        else:
            body = t.generic.format(report=safe_report, summary=summary)
        if safe_report and t.report:
            body += " " + t.report.format(report=safe_report)
    except (KeyError, IndexError, ValueError):  # validated at load; belt and braces
        body = FALLBACK_BANNER.generic
    return "[brandgate] " + " ".join(_CTRL.sub(" ", body).split())


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


# The message's own CSS must not hide the banner: a style sheet rule, even !important, loses
# to an !important declaration in the element's style attribute, so every property that can
# hide, shrink, move, clip or blank out the box or its text is set there. The text sits in an
# inner span with the same treatment, so that rules for the block's ::first-line or for
# `div div` / `span` reach nothing that shows.
_BOX_STYLE = (
    "display:block;visibility:visible;opacity:1;position:relative;z-index:2147483647;"
    "top:auto;left:auto;right:auto;bottom:auto;float:none;clear:both;transform:none;"
    "clip:auto;clip-path:none;filter:none;mask:none;width:auto;height:auto;min-height:0;"
    "max-height:none;max-width:none;overflow:visible;box-sizing:border-box;"
    "border:2px solid #c00;background:#fee;color:#000;padding:8px;margin:0 0 12px 0;"
    "text-indent:0;font:14px/1.4 sans-serif;text-align:left;direction:ltr;"
    "pointer-events:auto;content-visibility:visible"
)
_TEXT_STYLE = (
    "display:inline;visibility:visible;opacity:1;position:static;transform:none;"
    "font:14px/1.4 sans-serif;color:#000;background:transparent;text-indent:0;"
    "letter-spacing:normal;word-spacing:normal;text-transform:none;text-shadow:none;"
    "filter:none;clip-path:none;-webkit-text-fill-color:#000;white-space:normal"
)


def _important(style: str) -> str:
    # One declaration per line: SMTP lines stay far below 998 characters.
    return ";\r\n".join(f"{d}!important" for d in style.split(";") if d)


def _encode_banner(leaf: _Leaf, text: str, charset: str) -> bytes:
    lines = textwrap.wrap(text, 76, break_long_words=False, break_on_hyphens=False)
    if leaf.ctype == "text/html":
        block = (
            f'<div data-brandgate-banner="1" role="alert" style="{_important(_BOX_STYLE)}">'
            f'<span style="{_important(_TEXT_STYLE)}">'
            + "\r\n".join(html.escape(ln) for ln in lines)
            + "</span></div>"
        )
        return block.encode(charset, "xmlcharrefreplace")
    # The rule under the text must not start with "--": it could be a multipart delimiter
    # (a boundary of 56 dashes is closed by a line of 60) and hide the rest of the message.
    return ("\r\n".join(lines) + "\r\n" + "_" * 60 + "\r\n\r\n").encode(charset)


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


def add_banner(raw: bytes, verdict: Verdict, text: str | None = None) -> bytes | None:
    """raw with one banner atop the first text and HTML bodies, or None if none was placed."""
    leaves: list[_Leaf] = []
    _walk(raw, 0, 0, leaves)
    chosen: dict[str, _Leaf] = {}
    for leaf in leaves:
        chosen.setdefault(leaf.ctype, leaf)
    text = text if text is not None else banner_text(verdict)
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


def _rewrite(
    raw: bytes, verdict: Verdict, banner: bool, text: str | None, subject_prefix: str
) -> tuple[bytes, bool]:
    """raw with the banner (when asked and placeable) and the Subject prefix."""
    body, banner_done = raw, False
    if banner:
        try:
            with_banner = add_banner(raw, verdict, text)
        except Exception:  # a malformed MIME tree must not cost us the message
            with_banner = None
        if with_banner is not None:
            body, banner_done = with_banner, True
    return prefix_subject(body, subject_prefix), banner_done


@dataclass(frozen=True, slots=True)
class Marking:
    """How to mark one message: what the gateway settings and the recipient's policy say."""

    required: float  # the score that tags, for X-Brandgate-Status / X-Spam-Status
    authserv_id: str  # ours, in Authentication-Results
    version: str = "0"
    pass_headers: bool = True  # passed mail gets the header fields too
    spam_headers: bool = False
    authentication_results: bool = True
    banner: bool = False
    banner_text: BannerText | None = None
    banner_report: str = ""
    subject_prefix: str = ""
    arc: ArcSettings | None = None


def marking_for(
    s: GatewaySettings, policy: Policy, thresholds: dict[str, float], version: str
) -> Marking:
    """The Marking that the gateway settings and one recipient's policy give."""
    return Marking(
        required=thresholds["tag"],
        authserv_id=s.our_authserv_id,
        version=version,
        pass_headers=s.pass_headers,
        spam_headers=s.spam_headers,
        authentication_results=s.authentication_results,
        banner=policy.banner,
        banner_text=s.banner_text(policy.banner_language),
        banner_report=s.banner_report,
        subject_prefix=s.subject_prefix,
        arc=s.arc,
    )


@dataclass(frozen=True, slots=True)
class Marked:
    data: bytes
    banner: bool  # a banner went in
    changed: bool  # signed content changed (banner or Subject prefix)
    arc: str  # "sealed", "off", "not needed", or why it was not sealed


def mark(raw: bytes, verdict: Verdict, m: Marking, action: str) -> Marked:
    """The message as it leaves: header fields on every message (on passed mail only with
    pass_headers; without, passed mail leaves as it came); for `tag` also the Subject prefix
    and the banner when configured, ARC-sealed when that changed signed content."""
    if action == "pass" and not m.pass_headers:
        return Marked(raw, False, False, "not needed")
    body, banner_done = raw, False
    if action == "tag":
        text = banner_text(verdict, m.banner_text, m.banner_report) if m.banner else None
        body, banner_done = _rewrite(raw, verdict, m.banner, text, m.subject_prefix)
        if m.banner and not banner_done and text is not None and not text.isascii():
            # A 7-bit ASCII part cannot take this language's letters without re-encoding
            # it: the English (ASCII) text then, rather than no banner at all.
            text = banner_text(verdict, FALLBACK_BANNER, m.banner_report)
            body, banner_done = _rewrite(raw, verdict, True, text, m.subject_prefix)
    changed = body != raw
    fields = status_fields(verdict, m.required)
    if m.spam_headers:
        fields += spam_fields(verdict, m.required, m.version)
    ar = auth_results_field(verdict, m.authserv_id)
    if ar is None and changed and m.arc is not None:
        # ARC carries what we saw before the change; without our own check, say so.
        ar = ("Authentication-Results", f"{m.authserv_id}; dkim=none (not verified)")
    if ar is not None and (m.authentication_results or (changed and m.arc is not None)):
        fields.insert(0, ar)
    data = prepend(body, fields)
    arc_state = "not needed" if not changed else "off"
    if changed and m.arc is not None:
        data, arc_state = arc_seal(data, m.arc, m.authserv_id)
    return Marked(data, banner_done, changed, arc_state)


# --------------------------------------------------------------------------- which policy

SEVERITY = ("pass", "tag", "quarantine", "reject")  # each protects more than the one before


@dataclass(frozen=True, slots=True)
class Decision:
    """What becomes of one scanned message, and under whose policy."""

    verdict: Verdict  # as the deciding policy's thresholds read the score
    action: str  # pass, tag, quarantine or reject
    policy: Policy
    marking: Marking


def decision_for(
    s: GatewaySettings,
    verdict: Verdict,
    rcpts: Sequence[str],
    thresholds: dict[str, float],
    version: str,
    *,
    in_session: bool | None = None,
) -> Decision:
    """The action and marking for a message to these recipients (`thresholds`: the engine's).

    Each recipient's policy reads the score with its own thresholds and maps the verdict with
    its own actions. One message gets one answer and one body, so the strictest action wins
    (reject > quarantine > tag > pass), under the policy that asked for it; on a tie a policy
    with the banner on, then the earliest recipient. The SMTP modes keep one policy to a
    transaction (452 4.5.3 at RCPT), so there this is the first recipient's policy; a milter
    cannot split a transaction, and no recipient then gets less than its policy asks for."""
    best: tuple[tuple[int, bool], Decision] | None = None
    seen: set[str] = set()
    for rcpt in rcpts or ("",):
        policy = s.policy_for(rcpt)
        if policy.key in seen:
            continue
        seen.add(policy.key)
        own = policy.thresholds or thresholds
        read = verdict
        if policy.thresholds is not None:
            read = replace(verdict, verdict=decide(verdict.score, own))
        action = s.action_for(read.verdict, policy, in_session=in_session)
        rank = (SEVERITY.index(action), policy.banner)
        if best is None or rank > best[0]:
            marking = marking_for(s, policy, own, version)
            best = (rank, Decision(read, action, policy, marking))
    assert best is not None
    return best[1]


# --------------------------------------------------------------------------- after the scan


@dataclass(frozen=True, slots=True)
class Handling:
    """What it takes to finish a message after its scan: the settings and recipients that
    decide it, and what the front door can do to it. The scan worker finishes the message
    with it (gateway/scanpool.py), so that stripping, the banner and the ARC seal, which walk
    or sign the whole message, run within the message's budget and never on the event loop."""

    settings: GatewaySettings
    rcpts: tuple[str, ...]
    thresholds: dict[str, float]
    version: str
    in_session: bool | None = None
    can_replace_body: bool = True  # else no banner (a milter without SMFIF_CHGBODY)
    can_change_fields: bool = True  # else no Subject prefix
    can_add_fields: bool = True  # else no ARC seal
    mark_held: bool = False  # quarantined mail is marked as tagged mail (a hold queue)


def strip_for(s: GatewaySettings, raw: bytes) -> bytes:
    """raw without the incoming fields that these settings make brandgate write."""
    return strip_our_headers(raw, spam=s.spam_headers, authserv_id=s.our_authserv_id)


def finish(clean: bytes, verdict: Verdict, h: Handling) -> tuple[Decision | None, Marked | None]:
    """The decision for a scanned message and, where it leaves marked (pass, tag, a held
    quarantine), the message as it leaves; (None, None) when the scan gave no verdict."""
    if verdict.status != "ok":
        return None, None
    decision = decision_for(
        h.settings, verdict, h.rcpts, h.thresholds, h.version, in_session=h.in_session
    )
    action = decision.action
    if action == "quarantine" and h.mark_held:
        action = "tag"
    if action not in ("pass", "tag"):
        return decision, None
    marking = decision.marking
    if not h.can_replace_body:
        marking = replace(marking, banner=False)
    if not h.can_change_fields:
        marking = replace(marking, subject_prefix="")
    if not h.can_add_fields:
        marking = replace(marking, arc=None)  # a seal we cannot add is none
    return decision, mark(clean, decision.verdict, marking, action)


def arc_seal(data: bytes, arc: ArcSettings, authserv_id: str) -> tuple[bytes, str]:
    """data with an ARC set (ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results) of
    our Authentication-Results prepended; unchanged, with the reason, when it cannot be."""
    import dkim

    try:
        key = arc.key_file.read_bytes()
        lines = dkim.arc_sign(
            data,
            arc.selector.encode("ascii"),
            arc.domain.encode("ascii"),
            key,
            authserv_id.encode("ascii"),
            include_headers=_ARC_HEADERS,
        )
    except Exception as exc:  # a bad key or message must not cost us the message
        return data, f"failed: {type(exc).__name__}: {exc}"[:200]
    if not lines:
        # dkimpy ends the chain for a message that already carries ARC sets we have not
        # verified (no cv to give): better no seal than a wrong one.
        return data, "not sealed: earlier ARC sets not verified"
    head = b"".join(
        line if line.endswith(b"\r\n") else line.rstrip(b"\n") + b"\r\n" for line in lines
    )
    return head + data, "sealed"


# The fields an ARC-Message-Signature covers (those a reader sees and a changer would touch).
_ARC_HEADERS = [
    b"from",
    b"to",
    b"cc",
    b"subject",
    b"date",
    b"message-id",
    b"reply-to",
    b"mime-version",
    b"content-type",
    b"content-transfer-encoding",
]


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
