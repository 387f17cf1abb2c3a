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
from filters.registry import Brand, BrandRegistry, Lexicon
from filters.text import skeleton, words_skeleton
from filters.types import BrandClaim, Features

# How strongly each place speaks *as* the brand.
STRENGTH = {
    "display-name": 1.0,
    "from-local-part": 0.8,
    "subject": 0.6,
    "link-text": 0.5,
    "img-alt": 0.5,
    "body": 0.5,
}
# How explanations name each place a claim can be made.
PLACE_NAMES = {
    "display-name": "the display name",
    "from-local-part": "the sender address",
    "subject": "the subject",
    "img-alt": "an image's alt text",
    "link-text": "a link's text",
    "body": "the opening lines",
}
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
        for name in (brand.name, *brand.names):
            idx.add(name, brand.key, True)
        for name in brand.context_names:
            idx.add(name, brand.key, False)
    with _lock:
        _cache[id(registry)] = (registry, idx)
    return idx


@dataclass(slots=True)
class _Match:
    key: str
    name: str  # the words matched
    start: int
    end: int  # token positions, for cue lookups


def _scan(idx: _Index, text: str, allow_weak: bool) -> list[_Match]:
    tokens = words_skeleton(text).split()
    found: list[_Match] = []
    for i, tok in enumerate(tokens):
        for words, key, strong in idx.by_first.get(tok, ()):
            if (strong or allow_weak) and tuple(tokens[i : i + len(words)]) == words:
                found.append(_Match(key, " ".join(words), i, i + len(words)))
    if idx.cjk and _NONLATIN.search(text):
        flat = words_skeleton(text).replace(" ", "")
        found.extend(_Match(key, name, 0, 0) for name, key in idx.cjk if name in flat)
    return found


def _display_matches(idx: _Index, display: str) -> list[_Match]:
    """The display name is where a claim is plainest, and where obfuscation is most common:
    "P-a-y-P-a-l", "Amaz0n", "PayPaI Service" all count."""
    found = _scan(idx, display, allow_weak=True)
    if found:
        return found
    joined = skeleton(display)
    for name, key in idx.joined.items():
        if name in joined:
            return [_Match(key, name, 0, 0)]
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
    """Keep the matches that speak as the brand ("your PayPal account", "Amazon Security").
    Matches without token positions (names in CJK scripts, which have no word breaks) stay."""
    tokens = words_skeleton(text).split()
    out = []
    for m in matches:
        before = set(tokens[max(0, m.start - 2) : m.start])
        after = set(tokens[m.end : m.end + 2])
        if before & lex.cues_before or after & lex.cues_after or m.start == m.end == 0:
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
    votes: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))

    for m in _display_matches(idx, f.from_addr.display if f.from_addr else ""):
        votes[m.key]["display-name"].add(m.name)
    if f.from_addr and f.from_addr.local:
        for m in _local_matches(idx, f.from_addr.local):
            votes[m.key]["from-local-part"].add(m.name)
    vague = _generic_author(f, ctx.lexicon)
    subject_hits = _scan(idx, f.subject, allow_weak=False)
    for m in subject_hits if vague else _with_cue(f.subject, subject_hits, ctx.lexicon):
        votes[m.key]["subject"].add(m.name)
    head = f.body[:_BODY_HEAD]
    for m in _with_cue(head, _scan(idx, head, allow_weak=False), ctx.lexicon):
        votes[m.key]["body"].add(m.name)
    for alt in f.image_alts[:20]:
        for m in _scan(idx, alt, allow_weak=False):
            votes[m.key]["img-alt"].add(m.name)
    for key, word in _link_text_matches(f, ctx):
        votes[key]["link-text"].add(word)
    if not votes:
        return None
    return _best(votes, ctx.registry, f)


def _best(votes: dict[str, dict[str, set[str]]], reg: BrandRegistry, f: Features) -> BrandClaim:
    def strength(key: str) -> float:
        places = votes[key]
        total = max(STRENGTH[p] for p in places) + 0.15 * (len(places) - 1)
        # The sender's own brand wins ties: Amazon's mail mentioning Prime Video is Amazon's.
        own = f.from_addr is not None and reg.may_send(reg.brands[key], f.from_addr.domain)
        return min(1.0, total) + (0.01 if own else 0.0)

    key = max(votes, key=strength)
    brand: Brand = reg.brands[key]
    places = votes[key]
    where = tuple(p for p in STRENGTH if p in places)
    matched = tuple(sorted({w for p in where for w in places[p]}))
    return BrandClaim(
        brand=key,
        name=brand.name,
        where=where,
        matched=matched,
        strength=round(min(1.0, strength(key)), 2),
    )
