"""The brand registry and the lists the checks consult, as loaded from config/ data.

Nothing here knows any brand: the facts come from TOML (config/brands/*.toml), this module only
indexes them for fast lookup.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Brand:
    key: str  # registry key, e.g. "amazon"
    name: str  # how verdicts name it, e.g. "Amazon"
    category: str
    names: tuple[str, ...]  # names that make a claim wherever the message speaks as itself
    context_names: tuple[str, ...]  # ambiguous words: a claim only in display name / local part
    tokens: tuple[str, ...]  # distinctive labels that lookalike domains imitate ("paypal")
    sender_domains: tuple[str, ...]  # registrable or full domains that may send as the brand
    link_domains: tuple[str, ...]  # domains its links may point to (sender domains included)
    source: str  # where the entries came from
    notes: tuple[tuple[str, str], ...] = ()  # per-entry provenance: (entry, note)

    def note_for(self, entry: str) -> str | None:
        for key, note in self.notes:
            if key == entry:
                return note
        return None


def domain_in(domain: str, domains: Iterable[str]) -> str | None:
    """The entry of `domains` that `domain` equals or is a subdomain of, or None."""
    domain = domain.lower().rstrip(".")
    for entry in domains:
        if domain == entry or domain.endswith("." + entry):
            return entry
    return None


def _suffixes(domain: str) -> list[str]:
    labels = domain.lower().rstrip(".").split(".")
    return [".".join(labels[i:]) for i in range(len(labels))]


@dataclass(slots=True)
class BrandRegistry:
    brands: dict[str, Brand]
    _sender_index: dict[str, str] = field(default_factory=dict)  # domain -> brand key
    _link_index: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for brand in self.brands.values():
            for dom in brand.sender_domains:
                self._sender_index.setdefault(dom, brand.key)
            for dom in (*brand.link_domains, *brand.sender_domains):
                self._link_index.setdefault(dom, brand.key)

    def __len__(self) -> int:
        return len(self.brands)

    def get(self, key: str) -> Brand | None:
        return self.brands.get(key)

    def sender_brand(self, domain: str) -> tuple[str, str] | None:
        """(brand key, matching entry) when `domain` may send for some brand."""
        for suffix in _suffixes(domain):
            key = self._sender_index.get(suffix)
            if key is not None:
                return key, suffix
        return None

    def link_brand(self, domain: str) -> tuple[str, str] | None:
        """(brand key, matching entry) when `domain` is some brand's own link domain."""
        for suffix in _suffixes(domain):
            key = self._link_index.get(suffix)
            if key is not None:
                return key, suffix
        return None

    def may_send(self, brand: Brand, domain: str) -> str | None:
        return domain_in(domain, brand.sender_domains)

    def may_link(self, brand: Brand, domain: str) -> str | None:
        return domain_in(domain, (*brand.link_domains, *brand.sender_domains))


@dataclass(frozen=True, slots=True)
class Lists:
    """Domain and word lists from config/lists.toml (admins extend them)."""

    freemail: frozenset[str] = frozenset()
    shorteners: frozenset[str] = frozenset()
    redirect_params: frozenset[str] = frozenset()
    suspicious_tlds: frozenset[str] = frozenset()
    free_hosting: frozenset[str] = frozenset()  # site builders, buckets, form services
    esp_domains: frozenset[str] = frozenset()  # bulk senders / click trackers (not brands)
    # Hosts that appear as URLs but are nobody's call to action (XML namespaces, DTDs).
    ignored_link_hosts: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class LureTerm:
    phrase: str  # normalised (lower-case, NFKC, confusables folded)
    category: str  # "gift", "cashback", "refund", "prize", "survey", "selected", "claim",
    # "urgency", "account", "payment", "delivery", "offplatform"
    lang: str


@dataclass(frozen=True, slots=True)
class Lexicon:
    terms: tuple[LureTerm, ...] = ()
    # Claim cues (config/claim_cues.toml), as words_skeleton() forms.
    cues_before: frozenset[str] = frozenset()
    cues_after: frozenset[str] = frozenset()
    generic_author: frozenset[str] = frozenset()
    lure_words: frozenset[str] = frozenset()  # first words of lure phrases ("gift", "verify")
