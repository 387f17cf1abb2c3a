"""Message authentication: trusted Authentication-Results, our own DKIM verification, alignment.

Nothing here touches the network by itself: DKIM keys come from an injected `dns` callable
(gateway/dns.py in production, a dict in tests), which carries its own timeout.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable

import dkim

from filters.domains import registrable, to_ascii
from filters.types import AuthResult, Limits

log = logging.getLogger(__name__)

OUR_AUTHSERV_ID = "brandgate"
# Exchange Online writes Authentication-Results without an authserv-id. An admin who trusts
# those (because Exchange Online is the MTA in front of us) lists this pseudo-id, which no
# real header can carry: parentheses start a comment in the header grammar.
NO_AUTHSERV_ID = "(none)"
METHODS = ("dkim", "spf", "dmarc", "arc")
# Signatures beyond this many are not verified: each costs a DNS query and an RSA check,
# and a message that carries more than a handful is not made more trustworthy by them.
MAX_SIGNATURES = 5
# After this many DNS temp failures in one message the resolver is taken to be down: the
# remaining signatures are temperror at once instead of each waiting for its own timeout.
MAX_DNS_FAILURES = 2

DnsFunc = Callable[..., bytes]


class DnsTempError(Exception):
    """The DNS could not answer now (timeout, SERVFAIL, no nameserver): try again later."""


# --------------------------------------------------------------------------- domains


_DOMAIN_RE = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,62})(?:\.[a-z0-9_](?:[a-z0-9_-]{0,62}))*$")


def _domain_of(value: str) -> str:
    """The domain of an address, `@domain` identity or bare domain; "" when it is none."""
    value = value.strip().strip('"').strip().strip("<>").strip()
    if "@" in value:
        value = value.rsplit("@", 1)[1]
    value = value.strip().rstrip(".").lower()
    if not value.isascii():
        value = to_ascii(value)
    # Microsoft writes header.d=none for unsigned mail; a single label is never a sender.
    if "." not in value or len(value) > 253 or not _DOMAIN_RE.match(value):
        return ""
    return value


# --------------------------------------------------------------------------- A-R parsing


def _strip_comments(text: str) -> str:
    """Drop RFC 5322 comments (nested, with quoted-pairs), keeping quoted strings intact."""
    out: list[str] = []
    depth = 0
    in_quote = False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and (depth or in_quote):
            if not depth:
                out.append(text[i : i + 2])
            i += 2
            continue
        if in_quote:
            out.append(ch)
            in_quote = ch != '"'
        elif ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
            if not depth:
                out.append(" ")
        elif not depth:
            out.append(ch)
            in_quote = ch == '"'
        i += 1
    return "".join(out)


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    in_quote = False
    escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif ch == "\\" and in_quote:
            escaped = True
        elif ch == '"':
            in_quote = not in_quote
        elif ch == sep and not in_quote:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts


# `name = value` (spaces around "=" are legal CFWS), value a quoted string or a bare run.
_PAIR_RE = re.compile(r'([^\s=";]+)\s*=\s*("(?:[^"\\]|\\.)*"?|[^\s;]*)')


def _pairs(segment: str) -> list[tuple[str, str]]:
    return [(k.lower(), v.strip('"')) for k, v in _PAIR_RE.findall(segment)]


# The header opens with `method=result`: no authserv-id at all (Exchange Online).
_STARTS_WITH_RESULT = re.compile(r"[A-Za-z][A-Za-z0-9_-]*(?:/\d+)?\s*=")


def _resinfo_domain(method: str, props: dict[str, str]) -> str:
    if method == "dkim":
        keys: tuple[str, ...] = ("header.d", "header.i")
    elif method == "spf":
        # smtp.mail is the pre-RFC 7001 spelling still written by old Gmail headers.
        keys = ("smtp.mailfrom", "smtp.mail", "smtp.helo")
    elif method == "dmarc":
        # Some gateways (Cisco) write a bare d= instead of header.from.
        keys = ("header.from", "header.d", "d")
    else:
        return ""
    for key in keys:
        dom = _domain_of(props.get(key, ""))
        if dom:
            return dom
    return ""


def _parse_one(value: str, trusted: frozenset[str]) -> list[AuthResult]:
    text = _strip_comments(value.replace("\r", " ").replace("\n", " "))
    segments = _split_outside_quotes(text, ";")
    head = segments[0].strip()
    if _STARTS_WITH_RESULT.match(head):
        authserv_id = NO_AUTHSERV_ID
    else:
        # An optional version number may follow the authserv-id.
        words = head.split()
        authserv_id = words[0].lower().rstrip(".") if words else ""
        segments = segments[1:]
    if not authserv_id or authserv_id not in trusted:
        return []
    out: list[AuthResult] = []
    for segment in segments:
        pairs = _pairs(segment)
        if not pairs:
            continue  # "none", or Microsoft's stray receiving domain after header.d
        method, result = pairs[0]
        method = method.split("/", 1)[0]
        if method not in METHODS or not result:
            continue
        props: dict[str, str] = {}
        for key, val in pairs[1:]:
            props.setdefault(key, val)
        out.append(AuthResult(authserv_id, method, result.lower(), _resinfo_domain(method, props)))
    return out


def parse_authentication_results(
    values: Iterable[str], trusted_ids: Iterable[str]
) -> tuple[AuthResult, ...]:
    """Results of trusted authserv-ids only, in header order. Never raises: a header that
    cannot be read is skipped (anyone can write one, so a broken one tells us nothing)."""
    trusted = frozenset(t.strip().lower().rstrip(".") for t in trusted_ids if t.strip())
    if not trusted:
        return ()
    out: list[AuthResult] = []
    for value in values:
        try:
            out.extend(_parse_one(str(value), trusted))
        except Exception:  # a parser bug must not lose the message
            log.debug("unreadable Authentication-Results skipped", exc_info=True)
    return tuple(out)


# --------------------------------------------------------------------------- DKIM


_D_TAG_RE = re.compile(rb"(?:^|;)\s*d\s*=\s*([^;]*)")


def _sig_domain(sig_value: bytes) -> str:
    m = _D_TAG_RE.search(sig_value)
    if not m:
        return ""
    try:
        return _domain_of(re.sub(rb"\s+", b"", m.group(1)).decode("ascii"))
    except UnicodeDecodeError:
        return ""


class _QuietLogger:
    """dkimpy logs every missing key or bad signature at ERROR level; for a mail filter those
    are ordinary outcomes (they are in the AuthResult), so they go to debug."""

    def _log(self, msg: object, *args: object, **kwargs: object) -> None:
        log.debug("dkimpy: %s", msg)

    debug = info = warning = error = exception = critical = _log


_DKIM_LOG = _QuietLogger()


class _KeyFetcher:
    """Wraps the injected dns callable for dkimpy, remembering what happened.

    dkimpy turns a missing key, a bad key record and a DNS timeout alike into "signature did
    not verify" (False). We need them apart: a DNS failure is temperror, not fail.
    """

    def __init__(self, dns: DnsFunc) -> None:
        self.dns = dns
        self.answers: dict[bytes, bytes] = {}
        self.failed: set[bytes] = set()
        self.failures = 0
        self.last_name: bytes | None = None

    def __call__(self, name: bytes | str, timeout: float = 5) -> bytes:
        key = name.encode("ascii", "replace") if isinstance(name, str) else bytes(name)
        self.last_name = key
        if key in self.answers:
            return self.answers[key]
        if key in self.failed or self.failures >= MAX_DNS_FAILURES:
            raise dkim.DnsTimeoutError("DNS unavailable")
        try:
            answer = self.dns(key)
        except Exception as exc:  # any failure to fetch is the DNS's fault, not the sender's
            self.failed.add(key)
            self.failures += 1
            raise dkim.DnsTimeoutError(f"{type(exc).__name__}: {exc}") from exc
        if answer is None:
            answer = b""
        elif isinstance(answer, str):
            answer = answer.encode("utf-8", "replace")
        self.answers[key] = answer
        return answer

    def outcome_without_pass(self) -> str:
        """The result for a signature dkimpy did not accept, from what the lookup saw."""
        name = self.last_name
        if name is None:
            return "permerror"  # never got as far as the key: the signature is malformed
        if name in self.failed or name not in self.answers:
            return "temperror"
        record = self.answers[name]
        if not record:
            return "permerror"  # no key published (NXDOMAIN / no TXT)
        try:
            dkim.evaluate_pk(name, record)
        except Exception:  # KeyFormatError, or the key type needs a missing library
            return "permerror"
        return "fail"


def _verify_one(signer: dkim.DKIM, idx: int, fetcher: _KeyFetcher) -> str:
    fetcher.last_name = None
    try:
        ok = signer.verify(idx=idx, dnsfunc=fetcher)
    except dkim.ValidationError as exc:
        # Raised both for malformed tags (before the lookup) and for a body hash mismatch
        # (after it): only the latter is a signature that does not match the message.
        if fetcher.last_name is not None and "body hash mismatch" in str(exc):
            return "fail"
        return "permerror"
    except dkim.NaClNotFoundError:
        return "neutral"  # ed25519 without PyNaCl: we cannot say either way
    except Exception:  # KeyFormatError (key too small), MessageFormatError, dkimpy bugs
        return "permerror"
    return "pass" if ok else fetcher.outcome_without_pass()


def verify_dkim(raw: bytes, dns: DnsFunc, limits: Limits) -> tuple[AuthResult, ...]:
    """One AuthResult per DKIM-Signature (the first MAX_SIGNATURES), in header order.

    Never raises. A message over limits.max_message_bytes is not verified (empty result):
    hashing its body is work an attacker chooses, and the parser already flags the size.
    """
    if not raw or len(raw) > limits.max_message_bytes:
        return ()
    try:
        signer = dkim.DKIM(raw, logger=_DKIM_LOG, minkey=1024)
    except Exception:
        return _unparseable(raw)
    sigs = [v for k, v in signer.headers if k.lower() == b"dkim-signature"][:MAX_SIGNATURES]
    fetcher = _KeyFetcher(dns)
    out = []
    for idx, value in enumerate(sigs):
        try:
            result = _verify_one(signer, idx, fetcher)
        except Exception:  # belt and braces: the contract is "never raises"
            result = "permerror"
        out.append(AuthResult(OUR_AUTHSERV_ID, "dkim", result, _sig_domain(value)))
    return tuple(out)


_SIG_HEADER_RE = re.compile(rb"^dkim-signature[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.I | re.M)


def _unparseable(raw: bytes) -> tuple[AuthResult, ...]:
    """dkimpy could not read the header block: every signature in it is permerror."""
    head = re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[0]
    found = _SIG_HEADER_RE.findall(head)[:MAX_SIGNATURES]
    return tuple(AuthResult(OUR_AUTHSERV_ID, "dkim", "permerror", _sig_domain(v)) for v in found)


# --------------------------------------------------------------------------- helpers for checks


def aligned(a: str, b: str) -> bool:
    """Relaxed DMARC alignment: both domains share one registrable (organisational) domain."""
    a = a.strip().rstrip(".").lower()
    b = b.strip().rstrip(".").lower()
    if not a or not b:
        return False
    if a == b:
        return True
    org = registrable(a)
    return bool(org) and org == registrable(b)


def _uniq(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(i for i in items if i))


def results_for(auth: Iterable[AuthResult], method: str) -> tuple[AuthResult, ...]:
    return tuple(r for r in auth if r.method == method)


def dkim_pass_domains(auth: Iterable[AuthResult]) -> tuple[str, ...]:
    """d= domains with a passing signature (ours or a trusted MTA's), first seen first."""
    return _uniq(r.domain for r in auth if r.method == "dkim" and r.result == "pass")


def spf_pass_domain(auth: Iterable[AuthResult]) -> str | None:
    for r in auth:
        if r.method == "spf" and r.result == "pass" and r.domain:
            return r.domain
    return None


def dmarc_pass_domain(auth: Iterable[AuthResult]) -> str | None:
    for r in auth:
        if r.method == "dmarc" and r.result == "pass" and r.domain:
            return r.domain
    return None


def dmarc_fail_domain(auth: Iterable[AuthResult]) -> str | None:
    for r in auth:
        if r.method == "dmarc" and r.result == "fail" and r.domain:
            return r.domain
    return None


def authenticated_domains(auth: Iterable[AuthResult]) -> tuple[str, ...]:
    """Every domain some trusted result vouches for: DKIM d=, DMARC From, SPF mail-from."""
    items = tuple(auth)
    return _uniq(
        [
            *dkim_pass_domains(items),
            dmarc_pass_domain(items) or "",
            spf_pass_domain(items) or "",
        ]
    )


def from_authenticated(auth: Iterable[AuthResult], from_domain: str) -> bool:
    """Is the From domain vouched for, the way DMARC would see it: a trusted DMARC pass for
    it, or a passing DKIM signature aligned with it? (SPF alone is not enough: it speaks for
    the envelope, which a forwarder or an ESP rewrites.)"""
    items = tuple(auth)
    dmarc = dmarc_pass_domain(items)
    if dmarc and aligned(dmarc, from_domain):
        return True
    return any(aligned(d, from_domain) for d in dkim_pass_domains(items))
