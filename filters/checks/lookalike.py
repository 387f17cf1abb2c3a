"""Sender, reply and link domains that imitate a brand (homoglyphs, typos, combosquats...).

This check needs no claim: a From domain like paypa1-secure.com is suspicious on its own. A
claim only matters for the weakest form (a bare brand token as a subdomain label, as in
amazon.some-host.example), which also names SaaS tenants and news sections.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from filters.checks._common import CTA_PLACES, brand_authenticated
from filters.context import Context
from filters.domains import registrable, to_unicode
from filters.lookalike import Imitation, classify, country_site
from filters.types import BrandClaim, Features, Finding

RULES = {
    "LOOKALIKE_SENDER_DOMAIN": "From, Sender, Return-Path or DKIM d= domain imitates a brand",
    "LOOKALIKE_LINK_DOMAIN": "A link points to a host that imitates a brand domain",
    "LOOKALIKE_REPLY_DOMAIN": "Reply-To domain imitates a brand domain",
}

MAX_EVIDENCE = 3
IMAGE_FACTOR = 0.5  # an image source only decorates; the reader is not sent there
_FACTORS = {"combosquat": 0.8, "tld-swap": 0.6}
WEAK_FACTOR = 0.6


@dataclass(frozen=True, slots=True)
class _Hit:
    factor: float
    evidence: str


def _factor(im: Imitation) -> float:
    if im.weak:
        return WEAK_FACTOR
    if im.technique == "combosquat" and im.lure:
        return 1.0
    return _FACTORS.get(im.technique, 1.0)


def _show(host: str) -> str:
    uni = to_unicode(host)
    return host if uni == host else f"{host} ({uni})"


def _hit(
    role: str, host: str, claim: BrandClaim | None, ctx: Context, authed: bool = False
) -> _Hit | None:
    reg = registrable(host)
    if reg in ctx.lists.freemail or host in ctx.lists.freemail:
        return None  # a mailbox provider is no imitation (brand_sender judges freemail)
    im = classify(host, ctx.registry)
    if im is None:
        return None
    if claim is not None and im.brand == claim.brand and country_site(host, im.brand, ctx.registry):
        return None  # the claimed brand's own name under a country suffix: its site
    if im.weak:
        # A bare token as a subdomain label is a tenant name on SaaS and ESP hosts and a
        # section name on news sites, a swap to .net or a country code often the brand's own
        # site: a hint that counts on free hosting, or under an unauthenticated claim.
        claimed = claim is not None and claim.brand == im.brand and not authed
        if reg in ctx.lists.esp_domains or not (claimed or reg in ctx.lists.free_hosting):
            return None
    if im.technique == "subdomain":
        text = f"{role} {_show(host)}: {im.detail}"
    else:
        text = f"{role} {_show(host)} imitates {im.imitated} ({im.technique}: {im.detail})"
    if claim is not None and claim.brand == im.brand:
        text += f"; the message claims to be {claim.name}"
    return _Hit(_factor(im), text)


def _finding(rule: str, hits: Iterable[_Hit | None]) -> Finding | None:
    found = sorted((h for h in hits if h is not None), key=lambda h: -h.factor)
    if not found:
        return None
    evidence = tuple(dict.fromkeys(h.evidence for h in found))[:MAX_EVIDENCE]
    return Finding(rule, evidence, factor=found[0].factor)


def _sender_hosts(f: Features) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if f.from_addr and f.from_addr.domain:
        out.append(("sender domain", f.from_addr.domain))
    if f.sender and f.sender.domain:
        out.append(("Sender domain", f.sender.domain))
    if f.return_path and f.return_path.domain:
        out.append(("Return-Path domain", f.return_path.domain))
    out.extend(("DKIM d= domain", d) for d in f.dkim_domains if d)
    return list(dict.fromkeys(out))


def _link_hosts(f: Features) -> dict[str, float]:
    """Distinct link hosts (redirect targets included) -> the weight of where they appear."""
    out: dict[str, float] = {}
    for link in f.links:
        if link.is_ip or not link.host:
            continue
        if link.where in CTA_PLACES:
            weight = 1.0
        elif link.where == "html-img":
            weight = IMAGE_FACTOR
        else:
            continue
        hosts = [link.host]
        if link.redirect_to:
            try:
                target = urlsplit(link.redirect_to).hostname
            except ValueError:
                target = None
            if target:
                hosts.append(target)
        for host in hosts:
            out[host] = max(out.get(host, 0.0), weight)
    return out


def run(f: Features, claim: BrandClaim | None, ctx: Context) -> Iterable[Finding]:
    brand = ctx.registry.get(claim.brand) if claim else None
    authed = brand is not None and brand_authenticated(f, brand, ctx.registry) is not None
    sender = _finding(
        "LOOKALIKE_SENDER_DOMAIN",
        (_hit(role, host, claim, ctx, authed) for role, host in _sender_hosts(f)),
    )
    reply = _finding(
        "LOOKALIKE_REPLY_DOMAIN",
        (_hit("Reply-To domain", a.domain, claim, ctx, authed) for a in f.reply_to if a.domain),
    )
    link_hits: list[_Hit] = []
    for host, weight in _link_hosts(f).items():
        hit = _hit("link host", host, claim, ctx, authed)
        if hit is not None:
            link_hits.append(_Hit(hit.factor * weight, hit.evidence))
    link = _finding("LOOKALIKE_LINK_DOMAIN", link_hits)
    return [x for x in (sender, reply, link) if x is not None]
