"""The diversion itself: a message speaking as a brand sends the reader somewhere else."""

from __future__ import annotations

from collections.abc import Iterable

from filters.checks._common import cta_links, free_hosted, sample, target_domains
from filters.context import Context
from filters.lookalike import country_site
from filters.types import BrandClaim, Features, Finding

RULES = {
    "BRAND_LINK_DIVERSION": "Claims a brand, but its links lead outside the brand's domains",
    "BRAND_LINKS_OWN": "Sent from the brand's domain or vendor, and every link stays on the "
    "brand's own domains (lowers the score: a diversion needs somewhere else to go)",
}


def run(f: Features, claim: BrandClaim | None, ctx: Context) -> Iterable[Finding]:
    if claim is None:
        return
    reg = ctx.registry
    brand = reg.brands[claim.brand]
    sender_is_brand = bool(f.from_addr and reg.may_send(brand, f.from_addr.domain))
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
            if sender_is_brand and dom in ctx.lists.esp_domains:
                continue
            if reg.uses_esp(brand, dom) or country_site(dom, brand.key, reg):
                continue
            foreign.append(link.host_unicode if dom == link.registrable else dom)
    vouched = sender_is_brand or bool(f.from_addr and reg.uses_esp(brand, f.from_addr.domain))
    if not foreign:
        # Only the brand's own (or its vendor's) mail earns this: a stranger copying the
        # brand's links wants a reply or a call, not a click.
        if vouched and any(reg.may_link(brand, d) for link in links for d in target_domains(link)):
            yield Finding(
                "BRAND_LINKS_OWN",
                (f"all {len(links)} links go to {brand.name}'s own domains",),
                factor=claim.strength,
            )
        return
    share = len(foreign) / max(1, len(links))
    yield Finding(
        "BRAND_LINK_DIVERSION",
        (
            f"claims to be {brand.name}; links go to {sample(foreign)}",
            f"{len(foreign)} of {len(links)} links leave {brand.name}'s domains",
        ),
        factor=round(min(1.0, 0.5 + 0.5 * share) * max(claim.strength, 0.5), 2),
    )
