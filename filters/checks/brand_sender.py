"""Claimed brand, but the sender is not one of the brand's domains."""

from __future__ import annotations

from collections.abc import Iterable

from filters.checks._common import auth_failed, brand_authenticated
from filters.claim import PLACE_NAMES
from filters.context import Context
from filters.types import BrandClaim, Features, Finding

RULES = {
    "BRAND_SENDER_UNVERIFIED": "Claims a brand, but the From domain is not one of the brand's",
    "BRAND_FREEMAIL_SENDER": "Claims a brand while sending from a freemail mailbox",
    "BRAND_DOMAIN_SPOOF": "Uses the brand's own From domain, but trusted authentication failed",
}


def run(f: Features, claim: BrandClaim | None, ctx: Context) -> Iterable[Finding]:
    if claim is None or f.from_addr is None:
        return
    reg = ctx.registry
    brand = reg.brands[claim.brand]
    where = " and ".join(PLACE_NAMES.get(w, w) for w in claim.where[:2])
    domain = f.from_addr.domain or "(no domain)"
    if brand_authenticated(f, brand, reg):
        return
    entry = reg.may_send(brand, f.from_addr.domain) if f.from_addr.domain else None
    if entry:
        failed = auth_failed(f, f.from_addr.domain)
        if failed:
            yield Finding(
                "BRAND_DOMAIN_SPOOF",
                (f"From {f.from_addr.address} is a {brand.name} domain ({entry})", failed),
            )
        return
    yield Finding(
        "BRAND_SENDER_UNVERIFIED",
        (
            f"claims to be {brand.name} in {where} ({', '.join(claim.matched[:3])})",
            f"sent from {domain}, which is not among {brand.name}'s sender domains",
        ),
        factor=claim.strength,
    )
    if f.from_addr.registrable in ctx.lists.freemail or domain in ctx.lists.freemail:
        yield Finding(
            "BRAND_FREEMAIL_SENDER",
            (f"{brand.name} claimed from the freemail address {f.from_addr.address}",),
            factor=claim.strength,
        )
