"""Replies diverted to another domain than the one the message comes from."""

from __future__ import annotations

from collections.abc import Iterable

from filters.context import Context
from filters.types import BrandClaim, Features, Finding

RULES = {
    "REPLY_TO_DIVERGES": "Reply-To points at another domain than From",
    "REPLY_TO_FREEMAIL": "Reply-To is a freemail mailbox while From is not",
}


def run(f: Features, claim: BrandClaim | None, ctx: Context) -> Iterable[Finding]:
    # A mailing list sets Reply-To to itself: that is how lists work, not a diversion.
    if f.from_addr is None or not f.from_addr.registrable or f.mailing_list:
        return
    own = f.from_addr.registrable
    reg = ctx.registry
    for rt in f.reply_to:
        if not rt.registrable or rt.registrable == own:
            continue
        # Replies to a brand's own domain (the brand itself, or the carrier a shop's notice
        # names) reach the brand, not a stranger.
        if reg.sender_brand(rt.domain):
            continue
        if rt.registrable in ctx.lists.freemail and own not in ctx.lists.freemail:
            yield Finding(
                "REPLY_TO_FREEMAIL",
                (f"From {f.from_addr.address}, but replies go to {rt.address}",),
                factor=1.0 if claim else 0.5,
            )
            return
        yield Finding(
            "REPLY_TO_DIVERGES",
            (f"From {f.from_addr.domain}, but replies go to {rt.domain}",),
            factor=1.0 if claim else 0.5,
        )
        return
