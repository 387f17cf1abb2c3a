"""URLs as a browser would follow them: host, registrable domain, and the tricks around them.

A link's text is what the reader trusts; its host is where the click goes. Hosts are read the
way browsers read them (backslashes as slashes, "http:/\\host", percent-encoded and
integer-encoded hosts, userinfo before "@"), so that the host we judge is the one that opens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import parse_qsl, unquote, urljoin

from filters import domains
from filters.types import Link

URL_MAX = 4096  # longer URLs are cut (data: URIs carry whole images)
OPAQUE_MAX = 256  # data: and javascript: are kept only as evidence

_SPECIAL = frozenset({"http", "https", "ftp", "ws", "wss"})
_OPAQUE = frozenset({"data", "javascript", "vbscript"})
# Not destinations a click opens on the web: addresses, phone numbers, inline-part references.
_SKIP = frozenset(
    {"mailto", "tel", "sms", "callto", "fax", "cid", "mid", "about", "x-apple-data-detectors"}
)
_SCHEME = re.compile(r"([a-zA-Z][a-zA-Z0-9+.\-]*):")
_C0_AND_SPACE = "".join(map(chr, range(0x21)))
_INNER_WS = re.compile(r"[\t\r\n]")
_AUTHORITY_END = re.compile(r"[/\\?#]")
# The leading character class lets the regex engine skip most positions cheaply; the
# lookbehind (after it) keeps "xwww." and "a@www." from starting a URL.
_TEXT_URL = re.compile(
    r"[hHfFwW](?<![\w@./-][hHfFwW])"
    r"(?:(?<=[hH])[tT][tT][pP][sS]?://|(?<=[fF])[tT][pP]://|(?<=[wW])[wW][wW]\.)"
    r"[^\s<>\"'`\x00-\x1f\x7f]+"
)
_TRAILING = ".,;:!?'\"*>]}|"
_IPV4_PART = re.compile(r"0x[0-9a-f]*|[0-9]+")


def _ipv4_number(part: str) -> int | None:
    """One part of a WHATWG IPv4 host: decimal, 0x-hex or 0-prefixed octal."""
    if not _IPV4_PART.fullmatch(part):
        return None
    try:
        if part.startswith("0x"):
            return int(part[2:] or "0", 16)
        if len(part) > 1 and part.startswith("0"):
            return int(part[1:], 8)
        return int(part)
    except ValueError:  # "08" is not octal: browsers reject the host, so do we
        return None


def ipv4_host(host: str) -> str | None:
    """Dotted form of a host that browsers read as IPv4 ("3232235777", "0xC0.0250.1"), or None."""
    labels = host.split(".")
    if labels and labels[-1] == "":
        labels.pop()
    if not labels or len(labels) > 4 or not _IPV4_PART.fullmatch(labels[-1]):
        return None
    numbers = [_ipv4_number(label) for label in labels]
    if any(n is None for n in numbers):
        return None
    values = [n for n in numbers if n is not None]
    if any(n > 255 for n in values[:-1]) or values[-1] >= 256 ** (5 - len(values)):
        return None
    address = values[-1]
    for i, n in enumerate(values[:-1]):
        address += n << (8 * (3 - i))
    return ".".join(str((address >> shift) & 255) for shift in (24, 16, 8, 0))


# (max_host_chars, max_host_labels): what a host may be before it is cut (RFC 1035 by default).
HostCaps = tuple[int, int]
RFC1035: HostCaps = (domains.MAX_HOST_CHARS, domains.MAX_HOST_LABELS)
# Authorities longer than this are read without the cache, which must not hold giant keys.
_CACHED_AUTHORITY = 512


@dataclass(frozen=True, slots=True)
class _Host:
    host: str
    is_ip: bool
    has_userinfo: bool
    limit_hit: str | None = None


def _parse_authority(rest: str, caps: HostCaps = RFC1035) -> _Host:
    """rest: what follows "scheme:" with the leading slashes removed."""
    end = _AUTHORITY_END.search(rest)
    authority = rest[: end.start()] if end else rest
    if len(authority) > _CACHED_AUTHORITY:
        return _read_host(authority, caps)
    return _host_of(authority, caps)


@lru_cache(maxsize=4096)
def _host_of(authority: str, caps: HostCaps) -> _Host:
    """Hosts repeat (a sender's tracking links share one): each authority is read once."""
    return _read_host(authority, caps)


def _read_host(authority: str, caps: HostCaps) -> _Host:
    _userinfo, at, hostport = authority.rpartition("@")
    host = hostport
    if host.startswith("["):
        close = host.find("]")
        host = host[: close + 1] if close > 0 else host[: caps[0]]
        return _Host(host.lower(), domains.is_ip(host), bool(at))
    head, colon, port = host.rpartition(":")
    if colon and (port.isdigit() or not port):
        host = head
    if "%" in host:
        host = unquote(host, errors="replace")
    host = host.strip().lower().rstrip(".")
    host, hit = domains.bound_host(host, *caps)
    if host[-1:].isdigit() or "0x" in host:  # only then can browsers read it as IPv4
        dotted = ipv4_host(host)
        if dotted is not None:
            return _Host(dotted, True, bool(at))
    ascii_host, ascii_hit = domains.bound_host(domains.to_ascii(host), *caps)
    return _Host(ascii_host, domains.is_ip(host), bool(at), hit or ascii_hit)


def _bounded_target(url: str, caps: HostCaps) -> tuple[str, str | None]:
    """A redirect target whose host fits the caps, cut like a link's own host when not."""
    scheme, slashes, rest = url.partition("//")
    end = _AUTHORITY_END.search(rest)
    authority, tail = (rest[: end.start()], rest[end.start() :]) if end else (rest, "")
    userinfo, at, hostport = authority.rpartition("@")
    host, colon, port = hostport.rpartition(":")
    if not (colon and port.isdigit()):
        host, colon, port = hostport, "", ""
    bounded, hit = domains.bound_host(host, *caps)
    if hit is None:
        return url[:URL_MAX], None
    return f"{scheme}{slashes}{userinfo}{at}{bounded}{colon}{port}{tail}"[:URL_MAX], hit


@lru_cache(maxsize=8)
def _param_pattern(params: frozenset[str]) -> re.Pattern[str]:
    """One regex for "any redirect parameter is present": a cheap test before parse_qsl."""
    names = "|".join(sorted(map(re.escape, params)))
    return re.compile(rf"(?:^|[&;])(?:{names})=", re.IGNORECASE)


# AMP caches and viewers serve another site's page under their own host, the target in the path
# (google.com/amp/s/evil.example/..., ampproject.org/c/s/evil.example/...): an open redirect.
_AMP_PATH = re.compile(
    r"^https?://[^/?#]+/amp/(?:s/)?([a-z0-9-]+(?:\.[a-z0-9-]+)*\.([a-z]{2,24}))(?=[/?#]|$)", re.I
)
_FILE_ENDINGS = frozenset({"html", "htm", "php", "asp", "aspx", "jsp", "js", "css", "json"})


def _redirect(url: str, params: frozenset[str], depth: int = 0) -> str | None:
    """The http(s) target carried by a redirect parameter (innermost of two levels), or by
    an AMP-style path."""
    amp = _AMP_PATH.match(url[:2048])
    if amp is not None and amp.group(2).lower() not in _FILE_ENDINGS:
        return f"https://{amp.group(1)}/"
    if not params or "?" not in url:
        return None
    query = url.split("?", 1)[1].split("#", 1)[0]
    if not _param_pattern(params).search(query):
        return None
    for name, value in parse_qsl(query, errors="replace"):
        if name.lower() not in params:
            continue
        target = value.strip()
        if target.lower().startswith(("http%3a", "https%3a")):
            target = unquote(target, errors="replace")
        if target.lower().startswith(("http://", "https://", "//")):
            inner = _redirect(target, params, depth + 1) if depth == 0 else None
            return inner or target
    return None


def make_link(
    raw: str,
    where: str,
    shown: str | None = None,
    *,
    base: str | None = None,
    redirect_params: frozenset[str] = frozenset(),
    caps: HostCaps = RFC1035,
) -> Link | None:
    """A Link for one URL as found in the message, or None when it leads nowhere on the web
    (mailto:, tel:, cid:, a bare fragment, a relative path without a base)."""
    url = raw.strip(_C0_AND_SPACE)  # as browsers do with an href
    if "\t" in url or "\n" in url or "\r" in url:
        url = _INNER_WS.sub("", url)
    if not url or url.startswith("#"):
        return None
    match = _SCHEME.match(url)
    scheme = match.group(1).lower() if match else ""
    if "." in scheme and url[len(scheme) + 1 : len(scheme) + 2].isdigit():
        scheme, match = "", None  # "www.example.com:8080/": a host with a port, not a scheme
    if scheme in _SKIP:
        return None
    if scheme in _OPAQUE:
        return Link(url[:OPAQUE_MAX], scheme, "", "", "", shown, where)
    if match is None:
        if url.startswith(("//", "\\\\")):
            rest = url.lstrip("/\\")
        elif url.lower().startswith("www."):
            rest = url
        elif base:
            joined = urljoin(base, url)
            if joined == url or not _SCHEME.match(joined):
                return None
            return make_link(joined, where, shown, redirect_params=redirect_params, caps=caps)
        else:
            return None
    elif scheme in _SPECIAL:
        rest = url[len(scheme) + 1 :].lstrip("/\\")
    elif url[len(scheme) + 1 :].startswith("//"):
        rest = url[len(scheme) + 3 :]
    else:
        return Link(url[:OPAQUE_MAX], scheme, "", "", "", shown, where)
    parsed = _parse_authority(rest, caps)
    host = parsed.host
    target = _redirect(url, redirect_params)
    target_hit = None
    if target is not None:
        target, target_hit = _bounded_target(target, caps)
    return Link(
        url=url[:URL_MAX],
        scheme=scheme,
        host=host,
        host_unicode=host if parsed.is_ip else domains.to_unicode(host),
        registrable=domains.registrable(host) if host else "",
        shown=shown,
        where=where,
        is_ip=parsed.is_ip,
        has_userinfo=parsed.has_userinfo,
        redirect_to=target,
        limit_hit=parsed.limit_hit or target_hit,
    )


def _strip_trailing(url: str) -> str:
    """Drop sentence punctuation after a URL in text; keep a ")" that closes a "(" in it."""
    while url:
        last = url[-1]
        unbalanced = last == ")" and url.count("(") < url.count(")")
        if last in _TRAILING or unbalanced:
            url = url[:-1]
        else:
            break
    return url


def text_urls(text: str) -> list[str]:
    """URLs with a scheme, and "www." hosts without one, in plain text."""
    found = []
    for match in _TEXT_URL.finditer(text):
        url = _strip_trailing(match.group(0))
        if len(url) > 4 and not url.lower().endswith("://"):
            found.append(url)
    return found


@dataclass(slots=True)
class LinkSet:
    """Links in message order, deduplicated on (url, where, shown), capped at `limit`."""

    limit: int
    redirect_params: frozenset[str] = frozenset()
    caps: HostCaps = RFC1035
    links: list[Link] = field(default_factory=list)
    seen: set[tuple[str, str, str | None]] = field(default_factory=set)
    capped: bool = False

    def add(self, raw: str, where: str, shown: str | None = None, base: str | None = None) -> None:
        key = (raw, where, shown)
        if key in self.seen:
            return
        if len(self.links) >= self.limit:
            self.capped = True
            return
        self.seen.add(key)
        try:
            link = make_link(
                raw, where, shown, base=base, redirect_params=self.redirect_params, caps=self.caps
            )
        except Exception:  # one odd URL must not cost the others
            return
        if link is None:
            return
        clean = (link.url, where, shown)
        if clean != key:
            if clean in self.seen:
                return
            self.seen.add(clean)
        self.links.append(link)
