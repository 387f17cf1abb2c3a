"""Domain names: IDNA both ways, IP literals, and the registrable domain (eTLD+1).

The public suffix list is the snapshot bundled with tldextract: a mail filter must not fetch
anything from the network to decide where a link goes, and must decide the same way offline.
Every function here takes whatever a message contains and never raises.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from functools import lru_cache

import idna
import tldextract

# suffix_list_urls=() and cache_dir=None: the bundled snapshot only, no download, no disk cache.
_EXTRACT = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

_ASCII_HOST = re.compile(r"[a-z0-9._-]*")
# Dots that IDNA (UTS 46) maps to "." and that browsers honour: ideographic, full-width, halfwidth.
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})


# RFC 1035: a DNS name has at most 253 characters in at most 127 labels of at most 63.
MAX_HOST_CHARS = 253
MAX_HOST_LABELS = 127
MAX_LABEL_CHARS = 63


def bound_host(
    host: str, max_chars: int = MAX_HOST_CHARS, max_labels: int = MAX_HOST_LABELS
) -> tuple[str, str | None]:
    """(host, None) when it fits RFC 1035's bounds (or tighter ones); else a stand-in that
    does, and the name of the limit crossed ("max_host_labels" or "max_host_chars").

    Nothing resolves such a host, but what it shows must still be judged: the stand-in keeps
    the last labels (registrable domain and suffix) and the first ones (where a brand name is
    put in front: "paypal.com.secure.<padding>.evil.example"), each cut to 63 characters.
    Linear in the length of the host; every later stage then works on a bounded name.
    """
    if len(host) < max_labels - 1 and len(host) <= max_chars:
        return host, None  # too short for that many labels: every real host, at no cost
    labels_over = host.count(".") >= max_labels
    if not labels_over and len(host) <= max_chars:
        return host, None
    labels = [label[:MAX_LABEL_CHARS] for label in host.split(".")]
    tail = _fit(reversed(labels), max_chars - max_chars // 2, max_labels - max_labels // 2)
    head_room = max_chars - sum(len(x) + 1 for x in tail)
    head = _fit(labels[: len(labels) - len(tail)], head_room, max_labels - len(tail))
    kept = ".".join([*head, *reversed(tail)])[:max_chars]
    return kept, "max_host_labels" if labels_over else "max_host_chars"


def _fit(labels: Iterable[str], chars: int, count: int) -> list[str]:
    """The leading labels of `labels` that fit in `chars` characters (dots included)."""
    kept: list[str] = []
    used = -1
    for label in labels:
        if len(kept) >= count or used + len(label) + 1 > chars:
            break
        kept.append(label)
        used += len(label) + 1
    return kept


def _rfc1035(host: str) -> str:
    if len(host) < MAX_HOST_LABELS - 1:
        return host  # too short for that many labels
    if len(host) > MAX_HOST_CHARS or host.count(".") >= MAX_HOST_LABELS:
        return bound_host(host)[0]
    return host


# The public functions take anything a message holds; past RFC 1035's bounds nothing reaches
# IDNA, the suffix list or the caches (whose keys would otherwise hold every giant name).
# Extraction (urls.py, features.py) has already cut to the configured limits and said so.


def is_ip(host: str) -> bool:
    """True for an IPv4 or IPv6 literal (brackets allowed)."""
    return _is_ip(_rfc1035(host))


def to_ascii(host: str) -> str:
    """Lower-case ASCII form (punycode for IDN labels). Falls back label by label, then to the
    lower-cased input, so a host IDNA rejects still gives a stable key."""
    return _to_ascii(_rfc1035(host))


def to_unicode(host: str) -> str:
    """Display form: punycode labels decoded; a label that does not decode is kept as is."""
    return _to_unicode(_rfc1035(host))


def split(host: str) -> tuple[str, str, str]:
    """(subdomain, domain label, public suffix) of the ASCII host; ("", ip, "") for an IP."""
    return _split(_rfc1035(host))


def registrable(host: str) -> str:
    """eTLD+1 in ASCII ("mail.paypal.co.uk" -> "paypal.co.uk"); the IP itself for an IP
    literal; "" when the host has no registrable part (a bare suffix, "localhost", "").
    A TLD the bundled list does not know (".example", ".internal", a gTLD newer than the
    snapshot) is treated as a one-label suffix, so every dotted name still gets a key."""
    return _registrable(_rfc1035(host))


@lru_cache(maxsize=16384)
def _is_ip(host: str) -> bool:
    text = host.strip().strip("[]")
    if not text:
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@lru_cache(maxsize=16384)
def _to_ascii(host: str) -> str:
    host = host.strip().translate(_DOTS).lower().rstrip(".")
    if _ASCII_HOST.fullmatch(host):
        return host
    try:
        return _rfc1035(idna.encode(host, uts46=True).decode("ascii"))
    except (idna.IDNAError, UnicodeError, ValueError):
        pass
    labels = []
    for label in host.split("."):
        try:
            labels.append(label.encode("idna").decode("ascii") if label else label)
        except UnicodeError:
            try:
                labels.append("xn--" + label.encode("punycode").decode("ascii"))
            except UnicodeError:
                labels.append(label)
    return _rfc1035(".".join(labels))


@lru_cache(maxsize=16384)
def _to_unicode(host: str) -> str:
    host = host.strip().lower().rstrip(".")
    if "xn--" not in host:
        return host
    labels = []
    for label in host.split("."):
        if label.startswith("xn--"):
            try:
                labels.append(idna.decode(label))
                continue
            except (idna.IDNAError, UnicodeError, ValueError):
                try:  # IDNA 2003 (emoji and symbol labels that IDNA 2008 refuses)
                    decoded = label.encode("ascii").decode("idna")
                    if not decoded.isascii():  # an ASCII result would hide the xn-- form
                        labels.append(decoded)
                        continue
                except UnicodeError:
                    pass
        labels.append(label)
    return ".".join(labels)


@lru_cache(maxsize=16384)
def _split(host: str) -> tuple[str, str, str]:
    ascii_host = to_ascii(host)
    if not ascii_host or is_ip(ascii_host):
        return "", ascii_host.strip("[]"), ""
    try:
        parts = _EXTRACT(ascii_host)
    except Exception:  # tldextract on arbitrary text: never let a lookup break a scan
        return "", ascii_host, ""
    if parts.suffix:
        return parts.subdomain, parts.domain, parts.suffix
    # A TLD the list does not know: take the last label as the suffix (see registrable).
    labels = [label for label in ascii_host.split(".") if label]
    if len(labels) < 2:
        return "", ascii_host, ""
    return ".".join(labels[:-2]), labels[-2], labels[-1]


@lru_cache(maxsize=16384)
def _registrable(host: str) -> str:
    ascii_host = to_ascii(host)
    if not ascii_host:
        return ""
    if is_ip(ascii_host):
        return ascii_host.strip("[]")
    _sub, domain, suffix = split(ascii_host)
    return f"{domain}.{suffix}" if domain and suffix else ""
