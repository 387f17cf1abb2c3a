"""What checks may consult besides the message: the brand registry, lists, lexicon, limits,
the admin's allow and block lists, and the marketplace profile."""

from __future__ import annotations

from dataclasses import dataclass, field

from filters.marketplace import MarketplaceProfile
from filters.registry import BrandRegistry, Lexicon, Lists
from filters.types import Limits


@dataclass(frozen=True, slots=True)
class AccessList:
    """One side (allow or block) of config/allow_block.toml, entries lower-case ASCII."""

    addresses: tuple[str, ...] = ()  # From or envelope sender address
    domains: tuple[str, ...] = ()  # From or envelope sender domain (subdomains included)
    authenticated: tuple[str, ...] = ()  # DKIM d= pass or DMARC pass from a trusted id
    link_domains: tuple[str, ...] = ()  # domains that links point to

    def __bool__(self) -> bool:
        return bool(self.addresses or self.domains or self.authenticated or self.link_domains)


@dataclass(frozen=True, slots=True)
class AccessLists:
    allow: AccessList = AccessList()
    block: AccessList = AccessList()


@dataclass(frozen=True, slots=True)
class Context:
    registry: BrandRegistry
    lists: Lists
    lexicon: Lexicon
    limits: Limits
    access: AccessLists = field(default_factory=AccessLists)
    marketplace: MarketplaceProfile = field(default_factory=MarketplaceProfile)
