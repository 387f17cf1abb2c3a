"""Link text that shows one address while the link goes to another."""

from __future__ import annotations

import re
from collections.abc import Iterable

from filters.checks._common import sample, target_domains
from filters.context import Context
from filters.domains import registrable, split
from filters.types import BrandClaim, Features, Finding, Link

RULES = {
    "LINK_TEXT_MISMATCH": "A link shows one web address but leads to another domain",
}

# A shown text "looks like an address" when it is one host-like token (optionally with a
# scheme and path), not a sentence that happens to contain a dot.
_SHOWN_URL = re.compile(
    r"^\s*(?:https?://)?(?:www\.)?((?:[a-z0-9-]+\.)+[a-z]{2,})(?:[:/?#]\S*)?\s*$", re.I
)


def _shown_domain(link: Link) -> str | None:
    if link.where not in ("html-a", "html-area") or not link.shown:
        return None
    m = _SHOWN_URL.match(link.shown)
    if not m:
        return None
    dom = registrable(m.group(1).lower())
    return dom or None


def _same_label(a: str, b: str) -> bool:
    """amazon.com vs amazon.co.uk: the same name under another public suffix."""
    return split(a)[1] == split(b)[1]


def _excused(link: Link, shown: str, f: Features, ctx: Context) -> bool:
    targets = target_domains(link)
    if shown in targets or any(_same_label(shown, t) for t in targets):
        return True
    # The sender's own click tracking: a link through an ESP or the sender's own domain.
    sender = f.from_addr.registrable if f.from_addr else ""
    if link.registrable in ctx.lists.esp_domains or link.registrable == sender:
        return True
    # Both sides belong to the same brand (its CDN, its shortener).
    reg = ctx.registry
    a, b = reg.link_brand(shown), reg.link_brand(link.registrable)
    return a is not None and b is not None and a[0] == b[0]


def run(f: Features, claim: BrandClaim | None, ctx: Context) -> Iterable[Finding]:
    pairs: list[str] = []
    brand_shown = False
    for link in f.links:
        shown = _shown_domain(link)
        if shown is None or _excused(link, shown, f, ctx):
            continue
        pairs.append(f"shows {shown} but goes to {link.host_unicode or link.url[:60]}")
        brand_shown = brand_shown or ctx.registry.link_brand(shown) is not None
    if pairs:
        yield Finding(
            "LINK_TEXT_MISMATCH",
            (sample(pairs, 2),),
            factor=1.0 if brand_shown else 0.6,
        )
