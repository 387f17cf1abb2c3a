"""Authenticated brand mail: the guard against false positives on the brand's real mail."""

from __future__ import annotations

from collections.abc import Iterable

from filters.checks._common import brand_authenticated
from filters.context import Context
from filters.types import BrandClaim, Features, Finding

RULES = {
    "BRAND_AUTHENTICATED": "The claimed brand's own domain authenticated it (lowers the score)",
}


def run(f: Features, claim: BrandClaim | None, ctx: Context) -> Iterable[Finding]:
    if claim is None:
        return
    evidence = brand_authenticated(f, ctx.registry.brands[claim.brand], ctx.registry)
    if evidence:
        yield Finding("BRAND_AUTHENTICATED", (evidence,))
