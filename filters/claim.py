"""Which brand does a message present itself as? A mention is not a claim.

A claim is made where the message names its author: the From display name, the From local part,
and, when the author is left vague, the subject and the opening lines ("Your PayPal account has
been limited", "Amazon Security Team"). A shop listing the marketplaces it sells on, a news
digest about Amazon or a friend linking to amazon.com speak *about* the brand, and are not
claims.
"""

from __future__ import annotations

import re
import threading
from collections import defaultdict
from dataclasses import dataclass, field

from filters.context import Context
from filters.lookalike import classify
from filters.registry import Brand, BrandRegistry, Lexicon
from filters.text import skeleton, words_skeleton
from filters.types import BrandClaim, Features

# How strongly each place speaks *as* the brand.
STRENGTH = {
    "display-name": 1.0,
    "from-domain": 0.7,
    "from-local-part": 0.8,
    "subject": 0.6,
    "link-text": 0.5,
    "img-alt": 0.5,
    "body": 0.5,
}
# How explanations name each place a claim can be made.
PLACE_NAMES = {
    "display-name": "the display name",
    "from-domain": "the sender's domain",
    "from-local-part": "the sender address",
    "subject": "the subject",
    "img-alt": "an image's alt text",
    "link-text": "a link's text",
    "body": "the opening lines",
}
_FROM_WORDS = frozenset({"from", "von", "de", "da", "do", "van", "di", "del"})
_URLISH = re.compile(r"(?:https?://|www\.)|\b[a-z0-9-]+\.(?:com|net|org|co|de|fr|br|uk|it|es)\b")
_NONLATIN = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
_BODY_HEAD = 600  # characters of the body that count as the "opening lines"


@dataclass(slots=True)
class _Index:
    by_first: dict[str, list[tuple[tuple[str, ...], str, bool]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    cjk: list[tuple[str, str]] = field(default_factory=list)  # (normalised name, brand key)
    joined: dict[str, str] = field(default_factory=dict)  # skeleton of a 5+ char name -> key
    joined_sizes: list[int] = field(default_factory=list)  # their lengths, longest first
    fuzzy: dict[str, str] = field(default_factory=dict)  # one-deletion variants -> key

    def add(self, name: str, key: str, strong: bool) -> None:
        if _NONLATIN.search(name):
            self.cjk.append((words_skeleton(name).replace(" ", ""), key))
            return
        words = tuple(words_skeleton(name).split())
        if not words:
            return
        self.by_first[words[0]].append((words, key, strong))
        joined = "".join(words)
        if strong and len(joined) >= 5:
            self.joined.setdefault(joined, key)
        if strong and len(words) == 1 and len(joined) >= 6:
            for i in range(len(joined)):
                self.fuzzy.setdefault(joined[:i] + joined[i + 1 :], key)


_lock = threading.Lock()
_cache: dict[int, tuple[BrandRegistry, _Index]] = {}


def _index(registry: BrandRegistry) -> _Index:
    hit = _cache.get(id(registry))
    if hit is not None and hit[0] is registry:
        return hit[1]
    idx = _Index()
    for brand in registry.brands.values():
        # The brand's own name is distinctive unless the registry marks it as an ordinary
        # word ("TIM", "Three"): then it counts only where context names do.
        strong = [n for n in (brand.name, *brand.names) if n not in brand.context_names]
        for name in strong:
            idx.add(name, brand.key, True)
        for name in brand.context_names:
            idx.add(name, brand.key, False)
    idx.joined_sizes = sorted({len(n) for n in idx.joined}, reverse=True)
    with _lock:
        _cache[id(registry)] = (registry, idx)
    return idx


@dataclass(slots=True)
class _Match:
    key: str
    name: str  # the words matched
    start: int
    end: int  # token positions, for cue lookups
    strong: bool = True  # False for an ambiguous context name ("Chase", "Three")


def _scan(idx: _Index, text: str, allow_weak: bool) -> list[_Match]:
    tokens = words_skeleton(text).split()
    found: list[_Match] = []
    for i, tok in enumerate(tokens):
        for words, key, strong in idx.by_first.get(tok, ()):
            if (strong or allow_weak) and tuple(tokens[i : i + len(words)]) == words:
                found.append(_Match(key, " ".join(words), i, i + len(words), strong))
    if idx.cjk and _NONLATIN.search(text):
        flat = words_skeleton(text).replace(" ", "")
        found.extend(_Match(key, name, 0, 0) for name, key in idx.cjk if name in flat)
    return found


def _display_claims(idx: _Index, f: Features, lex: Lexicon) -> list[tuple[_Match, float]]:
    """Display-name matches with the strength each deserves.

    Phishers' display names are the brand plus service words ("Amazon Rewards", "PayPal
    Security Team"): those are full claims. A display name with other words is usually a person
    ("Tim Peters") or an organisation writing about the brand ("Lockergnome Windows Daily"):
    an ambiguous name then is no claim, a distinctive one a weaker claim, and a name beside the
    sender's own domain name is the newsletter's topic, not its author."""
    display = f.from_addr.display if f.from_addr else ""
    if not display.strip():
        return []
    words = words_skeleton(display).split()
    own = _own_label(f)
    out = []
    for m in _display_matches(idx, display):
        brand_words = set(m.name.split())
        rest = [
            w
            for w in words
            if w not in brand_words and w not in lex.generic_author and w not in lex.cues_after
        ]
        if not rest:
            out.append((m, 1.0))
        elif own and own in rest:
            continue
        elif m.strong:
            out.append((m, 0.5))
    return out


def _names_itself(f: Features) -> bool:
    """The display name is the sender's own organisation ("WinXPnews" from winxpnews.com):
    the author is known, so brands in its subject are its topics."""
    own = _own_label(f)
    return bool(own) and own in skeleton(f.display_norm)


def _own_label(f: Features) -> str:
    """The sender's own organisation name, from its registrable domain ("lockergnome")."""
    reg = f.from_addr.registrable if f.from_addr else ""
    label = reg.split(".", 1)[0] if reg else ""
    return words_skeleton(label) if len(label) >= 4 else ""


def _display_matches(idx: _Index, display: str) -> list[_Match]:
    """The display name is where a claim is plainest, and where obfuscation is most common:
    "P-a-y-P-a-l", "Amaz0n", "PayPaI Service" all count."""
    found = _scan(idx, display, allow_weak=True)
    if found:
        return found
    joined = skeleton(display)
    # Every substring of the (short) display name of a length some name has: a few hundred
    # dict lookups instead of a scan over every brand name.
    for size in idx.joined_sizes:
        for start in range(len(joined) - size + 1):
            key = idx.joined.get(joined[start : start + size])
            if key is not None:
                return [_Match(key, joined[start : start + size], 0, 0)]
    for word in words_skeleton(display).split():
        if len(word) >= 6:
            key = idx.fuzzy.get(word) or next(
                (idx.fuzzy[v] for v in _deletions(word) if v in idx.fuzzy), None
            )
            if key is not None:
                return [_Match(key, word, 0, 0)]
    return []


def _deletions(word: str) -> list[str]:
    return [word[:i] + word[i + 1 :] for i in range(len(word))]


def _with_cue(text: str, matches: list[_Match], lex: Lexicon) -> list[_Match]:
    """Keep the matches that speak as the brand ("your PayPal account", "Amazon Security",
    "Visa Gift Card"). Matches without token positions (names in CJK scripts, which have no
    word breaks) stay."""
    tokens = words_skeleton(text).split()
    out = []
    for m in matches:
        before = set(tokens[max(0, m.start - 2) : m.start])
        after = tokens[m.end] if m.end < len(tokens) else ""
        if (
            before & lex.cues_before
            or after in lex.cues_after
            or after in lex.lure_words
            or m.start == m.end == 0
        ):
            out.append(m)
    return out


def _generic_author(f: Features, lex: Lexicon) -> bool:
    words = words_skeleton(f.display_norm).split()
    return not words or all(w in lex.generic_author for w in words)


def _local_matches(idx: _Index, local: str) -> list[_Match]:
    # "paypal.support.team", "amazon-rewards2024": split on separators and digits.
    parts = re.split(r"[^a-z]+", local.lower())
    return [m for m in _scan(idx, " ".join(p for p in parts if p), False) if len(m.name) >= 4]


def _link_text_matches(f: Features, ctx: Context) -> list[tuple[str, str]]:
    """Link texts that display a brand's own URL ("www.paypal.com") while pointing elsewhere."""
    out = []
    for link in f.links:
        shown = (link.shown or "").lower()
        if not shown or not _URLISH.search(shown):
            continue
        for word in re.findall(r"[a-z0-9.-]+\.[a-z]{2,}", shown):
            hit = ctx.registry.sender_brand(word.strip(".")) or ctx.registry.link_brand(
                word.strip(".")
            )
            if hit and ctx.registry.may_link(ctx.registry.brands[hit[0]], link.host) is None:
                out.append((hit[0], word))
    return out


def find_claim(f: Features, ctx: Context) -> BrandClaim | None:
    idx = _index(ctx.registry)
    lex = ctx.lexicon
    votes: dict[str, dict[str, float]] = defaultdict(dict)
    matched: dict[str, set[str]] = defaultdict(set)

    def vote(key: str, place: str, word: str, factor: float = 1.0) -> None:
        strength = STRENGTH[place] * factor
        votes[key][place] = max(votes[key].get(place, 0.0), strength)
        matched[key].add(word)

    for m, factor in _display_claims(idx, f, lex):
        vote(m.key, "display-name", m.name, factor)
    if f.from_addr and f.from_addr.local:
        for m in _local_matches(idx, f.from_addr.local):
            vote(m.key, "from-local-part", m.name)
    domain_brand = _domain_claim(f, ctx)
    if domain_brand:
        vote(domain_brand[0], "from-domain", domain_brand[1])
    # The subject speaks for the author when it talks about "your" brand account or a brand's
    # gift card, or when the author is left vague. Where the author is named, the opening
    # lines, images and link texts speak about things; where it is vague, they speak for it.
    vague = _generic_author(f, lex)
    subject_hits = [] if _names_itself(f) else _scan(idx, f.subject, allow_weak=True)
    cued = _with_cue(f.subject, subject_hits, lex)
    for m in subject_hits:
        if m in cued or (vague and m.strong):
            vote(m.key, "subject", m.name)
    if vague:
        head = f.body[:_BODY_HEAD]
        for m in _with_cue(head, _scan(idx, head, allow_weak=False), lex):
            vote(m.key, "body", m.name)
        for alt in f.image_alts[:20]:
            for m in _scan(idx, alt, allow_weak=False):
                vote(m.key, "img-alt", m.name)
        for key, word in _link_text_matches(f, ctx):
            vote(key, "link-text", word)
    if not votes:
        return None
    return _best(votes, matched, ctx.registry, f)


def _domain_claim(f: Features, ctx: Context) -> tuple[str, str] | None:
    """An address at a brand's own domain, or at one imitating it, claims that brand.

    Not so for freemail (anyone can have an address there), nor for mailing-list traffic,
    where the address is a person at the company talking about other things."""
    if f.from_addr is None or not f.from_addr.domain or f.mailing_list:
        return None
    if f.from_addr.registrable in ctx.lists.freemail or f.from_addr.domain in ctx.lists.freemail:
        return None
    own = ctx.registry.sender_brand(f.from_addr.domain)
    if own:
        return own
    imitation = classify(f.from_addr.domain, ctx.registry)
    if imitation is not None and not imitation.weak:
        return imitation.brand, f.from_addr.domain
    return None


def _best(
    votes: dict[str, dict[str, float]],
    matched: dict[str, set[str]],
    reg: BrandRegistry,
    f: Features,
) -> BrandClaim:
    def strength(key: str) -> float:
        places = votes[key]
        total = max(places.values()) + 0.1 * (len(places) - 1)
        # The sender's own brand wins ties: Amazon's mail mentioning Prime Video is Amazon's.
        own = f.from_addr is not None and reg.may_send(reg.brands[key], f.from_addr.domain)
        return min(1.0, total) + (0.01 if own else 0.0)

    key = max(votes, key=strength)
    brand: Brand = reg.brands[key]
    where = tuple(p for p in STRENGTH if p in votes[key])
    return BrandClaim(
        brand=key,
        name=brand.name,
        where=where,
        matched=tuple(sorted(matched[key])),
        strength=round(min(1.0, strength(key)), 2),
    )
