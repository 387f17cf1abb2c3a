"""The diversion itself: a message speaking as a brand sends the reader somewhere else."""

from __future__ import annotations

from collections.abc import Iterable

from filters.checks._common import (
    cta_links,
    free_hosted,
    sample,
    sender_is_brand,
    target_domains,
)
from filters.context import Context
from filters.lookalike import country_site
from filters.types import BrandClaim, Features, Finding

RULES = {
    "BRAND_LINK_DIVERSION": "Claims a brand, but its links lead outside the brand's domains",
    "BRAND_DOMAIN_LINKS_OUT": "Sent from the claimed brand's own domain, with links to other "
    "sites (a partner, a tracker, or a spoof's landing page)",
    "BRAND_LINKS_OWN": "Sent from the brand's domain or vendor, and every link stays on the "
    "brand's own domains (lowers the score: a diversion needs somewhere else to go)",
}


def run(f: Features, claim: BrandClaim | None, ctx: Context) -> Iterable[Finding]:
    if claim is None:
        return
    reg = ctx.registry
    brand = reg.brands[claim.brand]
    own_sender = sender_is_brand(f, brand, reg) is not None
    sender_vendor = reg.esp_of(f.from_addr.domain) if f.from_addr else None
    links = cta_links(f, ctx.lists)
    if not links:
        return
    foreign: list[str] = []
    for link in links:
        for dom in target_domains(link):
            if reg.may_link(brand, dom):
                continue
            # Another brand's own site (a carrier's tracking page in a shop's mail) is not
            # somebody else's website; pages on free hosting under a brand's domain still are.
            if reg.link_brand(dom) and not free_hosted(link.host, ctx.lists):
                continue
            # The brand's own mail is tracked through its ESP; only then is that host fine.
            if own_sender and dom in ctx.lists.esp_domains:
                continue
            if reg.uses_esp(brand, dom) or country_site(dom, brand.key, reg):
                continue
            # The sending vendor's own hosts (review forms, click tracking) in its mail.
            if sender_vendor is not None and reg.esp_of(dom) is sender_vendor:
                continue
            foreign.append(link.host_unicode if dom == link.registrable else dom)
    # The brand's own domain, or a vendor's shared one (brands mail through ESPs and review
    # services from those): with every link on the brand's domains that is the brand's mail
    # or, at worst, a reply scam; a stranger's own domain earns nothing.
    vouched = own_sender or sender_vendor is not None
    if not foreign:
        # Only the brand's own (or its vendor's) mail earns this: a stranger copying the
        # brand's links wants a reply or a call, not a click. A page anyone can publish on
        # the brand's own service (its forms, sites, buckets) is no link of the brand's.
        hosted = any(free_hosted(link.host, ctx.lists) for link in links)
        if (
            vouched
            and not hosted
            and any(reg.may_link(brand, d) for link in links for d in target_domains(link))
        ):
            yield Finding(
                "BRAND_LINKS_OWN",
                (f"all {len(links)} links go to {brand.name}'s own domains",),
                factor=claim.strength,
            )
        return
    share = len(foreign) / max(1, len(links))
    # From the brand's own domain a stray link among many is a partner or a tracker; a spoof
    # of that domain sends most of its links away.
    base = 0.25 if own_sender else 0.5
    factor = min(1.0, base + (1 - base) * share) * max(claim.strength, 0.5)
    if own_sender and any(reg.may_send(brand, d) for d in f.dkim_domains):
        # The brand's domain signed it (as it claims; verification, where there is DNS, says
        # whether it holds): a brand linking to partners, not a spoof sending people away.
        factor *= 0.5
    yield Finding(
        # From the brand's own domain the links' destination means less: brands link to
        # partners and trackers; a spoof of that domain is judged by brand_sender.
        "BRAND_DOMAIN_LINKS_OUT" if own_sender else "BRAND_LINK_DIVERSION",
        (
            f"claims to be {brand.name}; links go to {sample(foreign)}",
            f"{len(foreign)} of {len(links)} links leave {brand.name}'s domains",
        ),
        factor=round(factor, 2),
    )
