"""The check registry. A check is a module with

    RULES: dict[str, str]        # rule id -> one-line description
    def run(f: Features, claim: BrandClaim | None, ctx: Context) -> Iterable[Finding]

Adding a check: write filters/checks/<name>.py, add it to CHECKS below, give each of its rules a
weight and group in config/brandgate.toml, and add a firing case and a near miss to the tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType, ModuleType
from typing import Protocol, cast

from filters.context import Context
from filters.marketplace import discounted
from filters.types import BrandClaim, Features, Finding


class Check(Protocol):
    RULES: dict[str, str]

    def run(self, f: Features, claim: BrandClaim | None, ctx: Context) -> Iterable[Finding]: ...


def _load() -> tuple[Check, ...]:
    # Imported here, one line per check, so that the registry reads as a table.
    from filters.checks import (
        allow_block,
        auth_claim,
        brand_sender,
        disguise,
        link_diversion,
        link_mismatch,
        links_suspicious,
        lookalike,
        lure,
        marketplace,
        qr,
        reply_to,
        structure,
    )

    modules: list[ModuleType] = [
        brand_sender,  # claimed brand, sender not among its domains; freemail; exact-domain spoof
        auth_claim,  # authenticated brand mail: lowers the score
        disguise,  # invisible characters, mixed scripts, styled letters in names
        lookalike,  # sender or link domains imitating a brand
        link_diversion,  # claimed brand whose calls to action go elsewhere
        link_mismatch,  # shown URL / host differs from the href
        links_suspicious,  # shorteners, redirectors, IP literals, userinfo, suspicious TLDs
        lure,  # gift card, cash back, refund, prize, urgency ... in many languages
        reply_to,  # Reply-To diverging from From
        structure,  # limits crossed, forms, HTML attachments
        allow_block,  # the admin's allow and block lists (config/allow_block.toml)
        qr,  # links carried by QR and 2-D codes in images and PDFs
        marketplace,  # relayed seller messages steering buyers off the platform (off by default)
    ]
    return tuple(cast(Check, m) for m in modules)


CHECKS: tuple[Check, ...] = _load()


def _collect() -> dict[str, str]:
    out: dict[str, str] = {}
    for check in CHECKS:
        out.update(check.RULES)
    return out


# Every registered rule id -> its description, read-only, built once at import.
RULE_DESCRIPTIONS: Mapping[str, str] = MappingProxyType(_collect())


def all_rules() -> dict[str, str]:
    """Every registered rule id -> its description (a copy: callers may keep or change it)."""
    return dict(RULE_DESCRIPTIONS)


def run_checks(f: Features, claim: BrandClaim | None, ctx: Context) -> tuple[Finding, ...]:
    found: list[Finding] = []
    for check in CHECKS:
        found.extend(check.run(f, claim, ctx))
    # A relayed seller message is the platform's mail with a stranger's words in it: what
    # vouches for the platform does not vouch for them.
    return tuple(discounted(found, f, ctx.marketplace))
