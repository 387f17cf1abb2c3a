"""Links built to hide where they go: shorteners, open redirects, IP literals, tricks."""

from __future__ import annotations

from collections.abc import Iterable

from filters.checks._common import cta_links, free_hosted, redirect_target, sample
from filters.context import Context
from filters.types import BrandClaim, Features, Finding, Link

RULES = {
    "LINK_SHORTENER": "Links through a URL shortener, which hides the destination",
    "LINK_REDIRECTOR": "Links through a redirect parameter to another site",
    "LINK_IP_LITERAL": "Links to a bare IP address instead of a domain",
    "LINK_USERINFO": "Link with user@host form, showing one host and going to another",
    "LINK_SUSPICIOUS_TLD": "Links to a domain under a top-level domain abused far beyond its share",
    "LINK_FREE_HOSTING": "Links to a free site builder, bucket or form service",
    "LINK_DATA_URI": "Link or form carrying a data: URI (a page inside the mail)",
}


def _redirect_elsewhere(link: Link) -> str | None:
    target = redirect_target(link)
    return target if target and target != link.registrable else None


def _tld(host: str) -> str:
    return host.rsplit(".", 1)[-1] if "." in host else ""


def run(f: Features, claim: BrandClaim | None, ctx: Context) -> Iterable[Finding]:
    links = cta_links(f, ctx.lists)
    hits: dict[str, list[str]] = {rule: [] for rule in RULES}
    for link in links:
        if link.registrable in ctx.lists.shorteners or link.host in ctx.lists.shorteners:
            hits["LINK_SHORTENER"].append(link.host)
        target = _redirect_elsewhere(link)
        if target:
            hits["LINK_REDIRECTOR"].append(f"{link.host} -> {target}")
        if link.is_ip:
            hits["LINK_IP_LITERAL"].append(link.host)
        if link.has_userinfo:
            hits["LINK_USERINFO"].append(link.url[:80])
        if _tld(link.host) in ctx.lists.suspicious_tlds:
            hits["LINK_SUSPICIOUS_TLD"].append(link.host)
        free = free_hosted(link.host, ctx.lists)
        if free:
            hits["LINK_FREE_HOSTING"].append(link.host)
    hits["LINK_DATA_URI"] = [
        link.where for link in f.links if link.scheme == "data" and link.where != "html-img"
    ]
    for rule, found in hits.items():
        if found:
            yield Finding(rule, (f"{_SAYS[rule]} {sample(found)}",))


# How the evidence introduces what was found.
_SAYS = {
    "LINK_SHORTENER": "links through the shortener",
    "LINK_REDIRECTOR": "links redirect:",
    "LINK_IP_LITERAL": "links to the IP address",
    "LINK_USERINFO": "link with a user@host trick:",
    "LINK_SUSPICIOUS_TLD": "links to a much-abused top-level domain:",
    "LINK_FREE_HOSTING": "links to free hosting:",
    "LINK_DATA_URI": "a data: URI in",
}
