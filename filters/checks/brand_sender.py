"""Claimed brand, but the sender is not one of the brand's domains."""

from __future__ import annotations

from collections.abc import Iterable

from filters.auth import aligned
from filters.checks._common import a_or_an, auth_failed, brand_authenticated, sender_is_brand
from filters.claim import AUTHOR_PLACES, PLACE_NAMES
from filters.context import Context
from filters.domains import registrable
from filters.registry import Brand, BrandRegistry, Lists
from filters.types import BrandClaim, Features, Finding

RULES = {
    "BRAND_SENDER_UNVERIFIED": "Claims a brand, but the From domain is not one of the brand's",
    "BRAND_MENTION_UNVERIFIED": "Speaks as a brand in the subject or body only, from a domain "
    "that is not the brand's",
    "BRAND_SENDER_VENDOR": "Claims a brand from a vendor's shared domain (an ESP, review or "
    "survey service): its customer, the brand or anybody, sent it",
    "BRAND_FREEMAIL_SENDER": "Claims a brand while sending from a freemail mailbox",
    "BRAND_DOMAIN_SPOOF": "Uses the brand's own From domain, but trusted authentication failed",
    "BRAND_DOMAIN_UNAUTHENTICATED": "Uses the brand's own From domain with nothing from the brand "
    "vouching for it",
    "BRAND_DOMAIN_FORGED": "Uses the brand's own From domain, but another domain signed it or "
    "takes its bounces",
    "NO_BRAND_CLAIM": "Speaks as no known brand (lowers the score: brandgate judges brand "
    "misuse, not mail in general)",
}


def run(f: Features, claim: BrandClaim | None, ctx: Context) -> Iterable[Finding]:
    if claim is None:
        yield Finding("NO_BRAND_CLAIM", ("the message does not present itself as a known brand",))
        return
    if f.from_addr is None:
        return
    reg = ctx.registry
    brand = reg.brands[claim.brand]
    where = " and ".join(PLACE_NAMES.get(w, w) for w in claim.where[:2])
    domain = f.from_addr.domain or "(no domain)"
    if brand_authenticated(f, brand, reg):
        return
    entry = sender_is_brand(f, brand, reg)
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
    vendor = reg.esp_of(f.from_addr.domain) if f.from_addr.domain else None
    if vendor is not None:
        # A vendor's shared domain vouches for one of its customers: the brand, if it is
        # known to mail through it, or anybody with an account there.
        declared = vendor.key in brand.esps
        said = "is known to mail" if declared else "is not known to mail"
        yield Finding(
            "BRAND_SENDER_VENDOR",
            (f"sent from {domain}, a shared domain of {vendor.name}; {brand.name} {said} there",),
            factor=round(claim.strength * (0.5 if declared else 1.0), 2),
        )
        return
    authored = any(w in AUTHOR_PLACES for w in claim.where)
    yield Finding(
        "BRAND_SENDER_UNVERIFIED" if authored else "BRAND_MENTION_UNVERIFIED",
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
    # The brand's own domains sign; so does its country site for the mail it sends from there.
    country = reg.may_send(brand, f.from_addr.domain) is None
    if any(reg.may_send(brand, d) or (country and aligned(d, f.from_addr.domain)) for d in signers):
        return
    rp = f.return_path
    evidence = [f"From {f.from_addr.address} uses {brand.name}'s domain"]
    if f.mailing_list:
        # A list re-signs and takes the bounces: neither says anything about the author.
        evidence.append("relayed by a mailing list, which re-signs and takes the bounces")
        yield Finding("BRAND_DOMAIN_UNAUTHENTICATED", tuple(evidence), factor=0.5)
        return
    strangers = [d for d in signers if not _infrastructure(d, brand, reg, lists)]
    foreign_rp = bool(
        rp
        and rp.domain
        and not reg.may_send(brand, rp.domain)
        and not _infrastructure(rp.domain, brand, reg, lists)
    )
    # Mail software names its own host in the Message-ID: a webmail provider's there means
    # the message was written in somebody's webmail account, not by the brand's systems.
    webmail_id = registrable(f.message_id_domain) in lists.freemail
    if strangers:
        evidence.append(f"signed only by {', '.join(dict.fromkeys(strangers))}")
    if foreign_rp and rp is not None:
        evidence.append(f"envelope sender {rp.domain} is not {a_or_an(brand.name)} domain")
    if webmail_id:
        evidence.append(f"Message-ID written at the webmail provider {f.message_id_domain}")
    if strangers or foreign_rp or webmail_id:
        yield Finding("BRAND_DOMAIN_FORGED", tuple(evidence))
        return
    if signers:
        evidence.append(f"signed only by the vendor {', '.join(dict.fromkeys(signers))}")
    else:
        evidence.append(f"no DKIM signature of {a_or_an(brand.name)} domain")
    vendor_only = bool(signers) and all(reg.uses_esp(brand, d) for d in signers)
    yield Finding(
        "BRAND_DOMAIN_UNAUTHENTICATED", tuple(evidence), factor=0.5 if vendor_only else 1.0
    )


def _infrastructure(domain: str, brand: Brand, reg: BrandRegistry, lists: Lists) -> bool:
    """An ESP's or vendor's domain: it signs and bounces for all its customers, brands too."""
    return registrable(domain) in lists.esp_domains or reg.esp_of(domain) is not None
