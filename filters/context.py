"""What checks may consult besides the message: the brand registry, lists, lexicon, limits,
the admin's allow and block lists, and the marketplace profile."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

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


# --------------------------------------------------------------------------- derived data

_lock = threading.Lock()
_MEMO_ENTRIES = 64  # a few configs' worth (each builds a handful)
_memo: dict[tuple[Hashable, ...], tuple[object, Any]] = {}
_V = TypeVar("_V")


def derived(source: object, key: tuple[Hashable, ...], build: Callable[[], _V]) -> _V:
    """What `build` derives from `source` (a registry, a lexicon: built once per loaded
    config), kept while that very object is the one in use. Keyed by identity, since the
    config's values are not hashable; the object is held so that its id is not reused.
    Checks share it, each with keys of its own."""
    hit = _memo.get((id(source), *key))
    if hit is not None and hit[0] is source:
        return cast(_V, hit[1])
    value = build()
    with _lock:
        if len(_memo) >= _MEMO_ENTRIES:  # config reloads: keep what replaced configs built
            _memo.clear()  # from outliving them
        _memo[(id(source), *key)] = (source, value)
    return value
