"""The brand registry and the lists the checks consult, as loaded from config/ data.

Nothing here knows any brand: the facts come from TOML (config/brands/*.toml), this module only
indexes them for fast lookup.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache


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
    region: str = ""  # where it mostly operates: "global", "us", "de", "jp" ...
    esps: tuple[str, ...] = ()  # keys of the vendors that mail for it (config/esps.toml)

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


@lru_cache(maxsize=8192)  # the same few hosts come back in every message and check
def suffixes(domain: str, most: int) -> tuple[str, ...]:
    """The `most` shortest dotted suffixes of `domain`, longest first ("a.b.c" -> "a.b.c",
    "b.c", "c"). Only as many as the longest registry entry has labels can match, so a host of
    thousands of labels costs no more than a short one."""
    domain = domain.lower().rstrip(".")
    out: list[str] = []
    cut = len(domain)
    while domain and len(out) < most:
        dot = domain.rfind(".", 0, cut)
        out.append(domain[dot + 1 :])
        if dot < 0:
            break
        cut = dot
    out.reverse()
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Esp:
    """A vendor that sends or hosts mail for many brands: an ESP, a review or survey service.

    Its signature, bounce address or tracking host vouches for its customer account, never for
    a brand; only a brand that names it (`esps`) is known to mail through it."""

    key: str
    name: str
    kind: str  # "esp", "transactional", "marketing", "review", "survey", "helpdesk", "crm"
    dkim_domains: tuple[str, ...]  # d= it signs with on its customers' behalf
    return_path_domains: tuple[str, ...]  # envelope senders (bounce handling) it uses
    link_domains: tuple[str, ...]  # click tracking, hosted pages, images
    sender_domains: tuple[str, ...]  # shared From domains its customers may send from
    source: str

    def all_domains(self) -> tuple[str, ...]:
        return tuple(
            dict.fromkeys(
                (
                    *self.dkim_domains,
                    *self.return_path_domains,
                    *self.link_domains,
                    *self.sender_domains,
                )
            )
        )


@dataclass(slots=True)
class BrandRegistry:
    brands: dict[str, Brand]
    esps: dict[str, Esp] = field(default_factory=dict)
    _sender_index: dict[str, str] = field(default_factory=dict)  # domain -> brand key
    _link_index: dict[str, str] = field(default_factory=dict)
    _esp_index: dict[str, str] = field(default_factory=dict)  # domain -> ESP key
    _esp_labels: dict[str, str] = field(default_factory=dict)  # "bazaarvoice" -> ESP key
    _depth: int = 1  # labels of the longest entry in any index
    # Per brand: its sender domains, and its link and sender domains, as sets.
    _may_send: dict[str, frozenset[str]] = field(default_factory=dict)
    _may_link: dict[str, frozenset[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for brand in self.brands.values():
            for dom in brand.sender_domains:
                self._sender_index.setdefault(dom, brand.key)
            for dom in (*brand.link_domains, *brand.sender_domains):
                self._link_index.setdefault(dom, brand.key)
        for esp in self.esps.values():
            for dom in esp.all_domains():
                self._esp_index.setdefault(dom, esp.key)
                label = dom.split(".", 1)[0]
                if len(label) >= 6 and label.isalpha() and dom.count(".") == 1:
                    self._esp_labels.setdefault(label, esp.key)
        entries = (*self._sender_index, *self._link_index, *self._esp_index)
        self._depth = max((e.count(".") + 1 for e in entries), default=1)
        for brand in self.brands.values():
            self._may_send[brand.key] = frozenset(brand.sender_domains)
            self._may_link[brand.key] = frozenset((*brand.link_domains, *brand.sender_domains))

    def __len__(self) -> int:
        return len(self.brands)

    def get(self, key: str) -> Brand | None:
        return self.brands.get(key)

    def _lookup(self, index: dict[str, str], domain: str) -> tuple[str, str] | None:
        # Longest suffix first, so that a brand's own subdomain entry wins over a parent.
        for suffix in suffixes(domain, self._depth):
            key = index.get(suffix)
            if key is not None:
                return key, suffix
        return None

    def sender_brand(self, domain: str) -> tuple[str, str] | None:
        """(brand key, matching entry) when `domain` may send for some brand."""
        return self._lookup(self._sender_index, domain)

    def link_brand(self, domain: str) -> tuple[str, str] | None:
        """(brand key, matching entry) when `domain` is some brand's own link domain."""
        return self._lookup(self._link_index, domain)

    def esp_of(self, domain: str) -> Esp | None:
        """The vendor (ESP, review or survey service) that `domain` belongs to, if known:
        one of its listed domains, or a domain named after it with a hyphenated suffix
        ("bazaarvoice-cgc.com"), as vendors name the extra domains they send from."""
        hit = self._lookup(self._esp_index, domain)
        if hit:
            return self.esps[hit[0]]
        labels = domain.lower().rstrip(".").rsplit(".", 2)
        label = labels[-2] if len(labels) >= 2 else ""
        head = label.split("-", 1)[0]
        key = self._esp_labels.get(head) if head != label else None
        return self.esps[key] if key else None

    def uses_esp(self, brand: Brand, domain: str) -> Esp | None:
        """The vendor behind `domain` when the brand is known to mail through it."""
        esp = self.esp_of(domain)
        return esp if esp is not None and esp.key in brand.esps else None

    def _in_set(self, sets: dict[str, frozenset[str]], brand: Brand, domain: str) -> str | None:
        # Longest suffix first, as domain_in gives the entry it meets first.
        entries = sets[brand.key]
        for suffix in suffixes(domain, self._depth):
            if suffix in entries:
                return suffix
        return None

    def may_send(self, brand: Brand, domain: str) -> str | None:
        if self.brands.get(brand.key) is not brand:  # a brand from elsewhere (tests, tools)
            return domain_in(domain, brand.sender_domains)
        return self._in_set(self._may_send, brand, domain)

    def may_link(self, brand: Brand, domain: str) -> str | None:
        if self.brands.get(brand.key) is not brand:
            return domain_in(domain, (*brand.link_domains, *brand.sender_domains))
        return self._in_set(self._may_link, brand, domain)


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
    # Words that speak for a sender in a display name only ("Partner", "Quotes", "Perks"):
    # beside a brand there they make a claim; in a subject they are ordinary words.
    display_words: frozenset[str] = frozenset()
