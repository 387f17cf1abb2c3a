"""What checks may consult besides the message: the brand registry, lists, lexicon, limits."""

from __future__ import annotations

from dataclasses import dataclass

from filters.registry import BrandRegistry, Lexicon, Lists
from filters.types import Limits


@dataclass(frozen=True, slots=True)
class Context:
    registry: BrandRegistry
    lists: Lists
    lexicon: Lexicon
    limits: Limits
