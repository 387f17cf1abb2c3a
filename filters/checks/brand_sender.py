"""Claimed brand, but the sender is not one of the brand's domains."""

from __future__ import annotations

from collections.abc import Iterable

from filters.checks._common import a_or_an, auth_failed, brand_authenticated
from filters.claim import PLACE_NAMES
from filters.context import Context
from filters.domains import registrable
from filters.registry import Brand, BrandRegistry, Lists
from filters.types import BrandClaim, Features, Finding

RULES = {
    "BRAND_SENDER_UNVERIFIED": "Claims a brand, but the From domain is not one of the brand's",
    "BRAND_FREEMAIL_SENDER": "Claims a brand while sending from a freemail mailbox",
    "BRAND_DOMAIN_SPOOF": "Uses the brand's own From domain, but trusted authentication failed",
    "BRAND_DOMAIN_UNAUTHENTICATED": "Uses the brand's own From domain with nothing from the brand "
    "vouching for it",
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
                (f"From {f.from_addr.address} is {a_or_an(brand.name)} domain ({entry})", failed),
            )
        else:
            yield from _unvouched(f, brand, reg, ctx.lists)
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


def _unvouched(f: Features, brand: Brand, reg: BrandRegistry, lists: Lists) -> Iterable[Finding]:
    """The brand's own domain in From, and nothing that the brand controls behind it.

    Brands sign their mail and receive their own bounces (directly or through their ESP's
    arrangement under their domain). A signature only by some other domain, or an envelope
    sender outside the brand, is what a spoof looks like; no signature at all is weaker
    evidence, since archives and forwarders strip headers. So is an ESP's signature or bounce
    address alone: brands send through ESPs, and the ESP signs for all its customers."""
    assert f.from_addr is not None
    signers = [d for d in f.dkim_domains if d]
    if any(reg.may_send(brand, d) for d in signers):
        return
    rp = f.return_path
    foreign_rp = bool(rp and rp.domain and not reg.may_send(brand, rp.domain))
    strangers = [d for d in signers if registrable(d) not in lists.esp_domains]
    if foreign_rp and rp is not None and rp.registrable in lists.esp_domains:
        foreign_rp = False
    if f.mailing_list:
        # A list re-signs and takes the bounces: neither says anything about the author.
        signers, strangers, foreign_rp = [], [], False
    evidence = [f"From {f.from_addr.address} uses {brand.name}'s domain"]
    if signers:
        evidence.append(f"signed only by {', '.join(dict.fromkeys(signers))}")
    else:
        evidence.append(f"no DKIM signature of {a_or_an(brand.name)} domain")
    if foreign_rp and rp is not None:
        evidence.append(f"envelope sender {rp.domain} is not {a_or_an(brand.name)} domain")
    factor = 1.0 if strangers or foreign_rp else 0.5
    yield Finding("BRAND_DOMAIN_UNAUTHENTICATED", tuple(evidence), factor=factor)
