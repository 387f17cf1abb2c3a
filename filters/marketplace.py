"""The marketplace policy profile: which messages a marketplace relays between buyers and
sellers, and how to read a seller's words for steering off the platform.

Marketplaces (Amazon's buyer-seller messaging, eBay's member messages, and the like) relay
those messages from their own domains: the mail is real and authenticated, but its content is
the seller's. The profile (config/marketplace.toml, turned on in brandgate.toml) names the
relays, the platform's own domains, the words of steering in each language and the contact
channels; filters/checks/marketplace.py turns what it finds into findings.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

from filters.types import Features, Finding

CATEGORIES = (
    "visit", "coupon", "elsewhere", "contact", "review", "positive", "reward", "paid_review",
    "phone",
)  # fmt: skip
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
_WORD = re.compile(r"[\w.'-]+")


@dataclass(frozen=True, slots=True)
class Relay:
    key: str
    name: str
    brand: str  # registry key of the platform ("" when none): its domains are the platform's
    domains: tuple[str, ...]  # sender domains of relayed messages (subdomains included)
    headers: tuple[tuple[str, re.Pattern[str] | None], ...] = ()  # (lower-case name, value)
    own_domains: tuple[str, ...] = ()  # more of the platform's own domains
    order_patterns: tuple[re.Pattern[str], ...] = ()  # order numbers: not phone numbers


@dataclass(frozen=True, slots=True)
class Channel:
    key: str
    name: str
    words: tuple[str, ...]  # normalised
    hosts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Phrase:
    text: str  # normalised
    category: str
    lang: str


@dataclass(frozen=True, slots=True)
class MarketplaceProfile:
    enabled: bool = False
    relays: tuple[Relay, ...] = ()
    channels: tuple[Channel, ...] = ()
    phrases: tuple[Phrase, ...] = ()
    # Rules that speak for the platform's own mail (its authenticated domain, links to its
    # own pages) or excuse mail that claims no brand. On a relayed message they say nothing
    # of the seller's words: not counted.
    discount_rules: tuple[str, ...] = ("BRAND_AUTHENTICATED", "BRAND_LINKS_OWN", "NO_BRAND_CLAIM")
    _matchers: dict[int, PhraseMatcher] = field(default_factory=dict, compare=False, repr=False)


# --------------------------------------------------------------------------- relays


def _at(domain: str, domains: tuple[str, ...]) -> bool:
    domain = domain.lower().rstrip(".")
    return any(domain == d or domain.endswith("." + d) for d in domains)


def relay_of(f: Features, profile: MarketplaceProfile) -> Relay | None:
    """The relay that carried this message, by its sender domains or its headers."""
    if not profile.enabled:
        return None
    senders = [a.domain for a in (f.from_addr, f.sender, f.return_path) if a and a.domain]
    mail_from = f.envelope.mail_from.rpartition("@")[2]
    if mail_from:
        senders.append(mail_from)
    for relay in profile.relays:
        if any(_at(d, relay.domains) for d in senders):
            return relay
        if relay.headers and _has_header(f.headers, relay.headers):
            return relay
    return None


def _has_header(
    headers: tuple[tuple[str, str], ...], wanted: tuple[tuple[str, re.Pattern[str] | None], ...]
) -> bool:
    for name, value in headers:
        low = name.lower()
        for want, pattern in wanted:
            if low == want and (pattern is None or pattern.search(value)):
                return True
    return False


def discounted(found: list[Finding], f: Features, profile: MarketplaceProfile) -> list[Finding]:
    """Leave out the rules that vouch for the platform when the seller wrote the message."""
    if not profile.enabled or not profile.discount_rules or relay_of(f, profile) is None:
        return found
    drop = set(profile.discount_rules)
    return [x for x in found if x.rule not in drop]


# --------------------------------------------------------------------------- phrases


@dataclass(slots=True)
class PhraseMatcher:
    # first word -> [(words of the phrase, phrase)], longest first; CJK phrases as substrings
    by_first: dict[str, list[tuple[tuple[str, ...], Phrase]]]
    cjk: list[Phrase]

    def find(self, text: str) -> list[tuple[int, Phrase]]:
        """(character offset, phrase) of every phrase found as a whole-word sequence."""
        found: list[tuple[int, Phrase]] = []
        matches = list(_WORD.finditer(text))
        words = [m.group(0).strip(".'-") for m in matches]
        for i, word in enumerate(words):
            for phrase_words, phrase in self.by_first.get(word, ()):
                n = len(phrase_words)
                if n == 1 or tuple(words[i : i + n]) == phrase_words:
                    found.append((matches[i].start(), phrase))
        if self.cjk and _CJK.search(text):
            for phrase in self.cjk:
                pos = text.find(phrase.text)
                if pos >= 0:
                    found.append((pos, phrase))
        return found


_lock = threading.Lock()


def matcher(profile: MarketplaceProfile) -> PhraseMatcher:
    """The phrase index of a profile, built once."""
    cached = profile._matchers.get(0)
    if cached is not None:
        return cached
    by_first: dict[str, list[tuple[tuple[str, ...], Phrase]]] = {}
    cjk: list[Phrase] = []
    entries = [*profile.phrases]
    entries += [Phrase(w, "channel:" + c.key, "") for c in profile.channels for w in c.words]
    for phrase in entries:
        if _CJK.search(phrase.text):
            cjk.append(phrase)
            continue
        words = tuple(w.strip(".'-") for w in _WORD.findall(phrase.text))
        if words:
            by_first.setdefault(words[0], []).append((words, phrase))
    for items in by_first.values():
        items.sort(key=lambda e: -len(e[0]))
    built = PhraseMatcher(by_first, cjk)
    with _lock:
        profile._matchers[0] = built
    return built
