"""Domain names: IDNA both ways, IP literals, and the registrable domain (eTLD+1).

The public suffix list is the snapshot bundled with tldextract: a mail filter must not fetch
anything from the network to decide where a link goes, and must decide the same way offline.
Every function here takes whatever a message contains and never raises.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

import idna
import tldextract

# suffix_list_urls=() and cache_dir=None: the bundled snapshot only, no download, no disk cache.
_EXTRACT = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

_ASCII_HOST = re.compile(r"[a-z0-9._-]*")
# Dots that IDNA (UTS 46) maps to "." and that browsers honour: ideographic, full-width, halfwidth.
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})


@lru_cache(maxsize=16384)
def is_ip(host: str) -> bool:
    """True for an IPv4 or IPv6 literal (brackets allowed)."""
    text = host.strip().strip("[]")
    if not text:
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@lru_cache(maxsize=16384)
def to_ascii(host: str) -> str:
    """Lower-case ASCII form (punycode for IDN labels). Falls back label by label, then to the
    lower-cased input, so a host IDNA rejects still gives a stable key."""
    host = host.strip().translate(_DOTS).lower().rstrip(".")
    if _ASCII_HOST.fullmatch(host):
        return host
    try:
        return idna.encode(host, uts46=True).decode("ascii")
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
    return ".".join(labels)


@lru_cache(maxsize=16384)
def to_unicode(host: str) -> str:
    """Display form: punycode labels decoded; a label that does not decode is kept as is."""
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
def split(host: str) -> tuple[str, str, str]:
    """(subdomain, domain label, public suffix) of the ASCII host; ("", ip, "") for an IP."""
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
def registrable(host: str) -> str:
    """eTLD+1 in ASCII ("mail.paypal.co.uk" -> "paypal.co.uk"); the IP itself for an IP
    literal; "" when the host has no registrable part (a bare suffix, "localhost", "").
    A TLD the bundled list does not know (".example", ".internal", a gTLD newer than the
    snapshot) is treated as a one-label suffix, so every dotted name still gets a key."""
    ascii_host = to_ascii(host)
    if not ascii_host:
        return ""
    if is_ip(ascii_host):
        return ascii_host.strip("[]")
    _sub, domain, suffix = split(ascii_host)
    return f"{domain}.{suffix}" if domain and suffix else ""
