"""Why would anyone click? Gifts, cash back, refunds, prizes, account trouble, urgency."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from filters.checks._common import sample, sender_is_brand
from filters.context import Context
from filters.registry import Lexicon
from filters.types import BrandClaim, Features, Finding

RULES = {
    "LURE_REWARD": "Promises a gift card, cash back, refund, prize or reward",
    "LURE_ACCOUNT": "Claims a problem with an account, payment or delivery",
    "LURE_URGENCY": "Presses for action within a deadline",
    "LURE_OFFPLATFORM": "Invites the reader to deal outside the platform",
}
# Lexicon categories -> rule.
_RULE_OF = {
    "gift": "LURE_REWARD",
    "cashback": "LURE_REWARD",
    "refund": "LURE_REWARD",
    "prize": "LURE_REWARD",
    "survey": "LURE_REWARD",
    "selected": "LURE_REWARD",
    "claim": "LURE_REWARD",
    "reward": "LURE_REWARD",
    "account": "LURE_ACCOUNT",
    "payment": "LURE_ACCOUNT",
    "delivery": "LURE_ACCOUNT",
    "urgency": "LURE_URGENCY",
    "offplatform": "LURE_OFFPLATFORM",
}
_SCAN_CHARS = 20_000  # lure words live in the opening screens, not in quoted threads
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")


@dataclass(slots=True)
class _Matcher:
    # first word -> [(all words of the phrase, phrase, rule)], longest phrases first
    by_first: dict[str, list[tuple[tuple[str, ...], str, str]]]
    cjk: list[tuple[str, str]]  # (phrase, rule), matched as substrings


_lock = threading.Lock()
_cache: dict[int, tuple[Lexicon, _Matcher]] = {}
_WORD = re.compile(r"\w+")


def _matcher(lex: Lexicon) -> _Matcher:
    hit = _cache.get(id(lex))
    if hit is not None and hit[0] is lex:
        return hit[1]
    by_first: dict[str, list[tuple[tuple[str, ...], str, str]]] = {}
    cjk: list[tuple[str, str]] = []
    for term in lex.terms:
        rule = _RULE_OF.get(term.category)
        if rule is None:
            continue
        if _CJK.search(term.phrase):
            cjk.append((term.phrase, rule))
            continue
        words = tuple(_WORD.findall(term.phrase))
        if words:
            by_first.setdefault(words[0], []).append((words, term.phrase, rule))
    for entries in by_first.values():
        entries.sort(key=lambda e: -len(e[0]))
    m = _Matcher(by_first, cjk)
    with _lock:
        _cache[id(lex)] = (lex, m)
    return m


def _find(m: _Matcher, text: str) -> dict[str, list[str]]:
    """Phrases found as whole-word sequences (one pass over the words, not one regex per
    phrase: the lexicon has hundreds of phrases and this runs on every message)."""
    found: dict[str, list[str]] = {}
    words = _WORD.findall(text)
    for i, word in enumerate(words):
        for phrase_words, phrase, rule in m.by_first.get(word, ()):
            n = len(phrase_words)
            if n == 1 or tuple(words[i : i + n]) == phrase_words:
                found.setdefault(rule, []).append(phrase)
                break
    if m.cjk and _CJK.search(text):
        for phrase, rule in m.cjk:
            if phrase in text:
                found.setdefault(rule, []).append(phrase)
    return found


def run(f: Features, claim: BrandClaim | None, ctx: Context) -> Iterable[Finding]:
    text = f.subject_norm + " \n " + f.body[:_SCAN_CHARS]
    found = _find(_matcher(ctx.lexicon), text)
    # Lure words matter most when the message also speaks as a brand from elsewhere; alone,
    # or from the brand's own domain, they are the everyday vocabulary of shops and carriers.
    weight = 1.0 if claim else 0.35
    if claim and sender_is_brand(f, ctx.registry.brands[claim.brand], ctx.registry):
        weight = 0.5
    for rule, phrases in found.items():
        distinct = len(set(phrases))
        factor = weight * min(1.0, 0.6 + 0.2 * (distinct - 1))
        yield Finding(rule, (f'says "{sample(phrases)}"',), factor=round(factor, 2))
