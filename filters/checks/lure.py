"""Why would anyone click? Gifts, cash back, refunds, prizes, account trouble, urgency."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from filters.checks._common import sample, sender_is_brand
from filters.context import Context, derived
from filters.registry import Lexicon
from filters.types import BrandClaim, Features, Finding

RULES = {
    "LURE_REWARD": "Promises a gift card, cash back, refund, prize or reward",
    "LURE_ACCOUNT": "Claims a problem with an account, payment or delivery",
    "LURE_URGENCY": "Presses for action within a deadline",
    "LURE_OFFPLATFORM": "Invites the reader to deal outside the platform",
    "LURE_CALLBACK": "Asks the reader to phone a number, and gives nothing to click: the "
    "call, not a link, is the way in",
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
    # The words that ask for a call ("call us", "ligue"), as word tuples: a lure only
    # right before a phone number.
    callback: frozenset[tuple[str, ...]] = frozenset()


_WORD = re.compile(r"\w+")


def _matcher(lex: Lexicon) -> _Matcher:
    return derived(lex, ("lure-matcher",), lambda: _build_matcher(lex))


def _build_matcher(lex: Lexicon) -> _Matcher:
    by_first: dict[str, list[tuple[tuple[str, ...], str, str]]] = {}
    cjk: list[tuple[str, str]] = []
    callback: set[tuple[str, ...]] = set()
    for term in lex.terms:
        if term.category == "callback":
            callback.add(tuple(_WORD.findall(term.phrase)))
            continue
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
    return _Matcher(by_first, cjk, frozenset(w for w in callback if w))


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


# A phone number: 10 to 13 digits in groups, "+1 (805) 248-4054", "0800 123 4567".
# Bounded repetition: the scan stays linear in the text.
_PHONE = re.compile(r"(?<![\w+])\+?\(?\d[\d \t().-]{8,18}\d(?!\w)")
_PHONE_DIGITS = range(10, 14)
_CALL_WINDOW = 48  # characters before the number where the request to call stands
_CLICKABLE = frozenset({"html-a", "html-area", "html-form", "text", "qr"})
_NOT_WEB = ("mailto:", "tel:", "sms:")


def _callback(m: _Matcher, f: Features, text: str) -> str | None:
    """A request to phone a number ("please call us at +1 (805) 248-4054") in a message
    with nothing to click: the scam that wants the reader on the line, where a link would
    be caught. Returns the words and the number, for the evidence."""
    if not m.callback:
        return None
    for link in f.links:
        if link.where in _CLICKABLE and not link.url.lower().startswith(_NOT_WEB):
            return None
    most = max(len(w) for w in m.callback)
    for number in _PHONE.finditer(text):
        if sum(ch.isdigit() for ch in number.group()) not in _PHONE_DIGITS:
            continue
        window = text[max(0, number.start() - _CALL_WINDOW) : number.start()]
        window = window.rpartition(". ")[2]  # the sentence that gives the number
        spans = list(_WORD.finditer(window))
        words = [w.group() for w in spans]
        for i in range(len(words)):
            for n in range(1, min(most, len(words) - i) + 1):
                if tuple(words[i : i + n]) in m.callback:
                    said = " ".join(window[spans[i].start() :].split())
                    return f"{said} {number.group().strip()}"
    return None


def run(f: Features, claim: BrandClaim | None, ctx: Context) -> Iterable[Finding]:
    text = f.subject_norm + " \n " + f.body[:_SCAN_CHARS]
    matcher = _matcher(ctx.lexicon)
    found = _find(matcher, text)
    # Lure words matter most when the message also speaks as a brand from elsewhere; alone,
    # or from the brand's own domain, they are the everyday vocabulary of shops and carriers.
    weight = 1.0 if claim else 0.35
    if claim and sender_is_brand(f, ctx.registry.brands[claim.brand], ctx.registry):
        weight = 0.5
    for rule, phrases in found.items():
        distinct = len(set(phrases))
        factor = weight * min(1.0, 0.6 + 0.2 * (distinct - 1))
        yield Finding(rule, (f'says "{sample(phrases)}"',), factor=round(factor, 2))
    call = _callback(matcher, f, f.body[:_SCAN_CHARS])
    if call is not None:
        yield Finding(
            "LURE_CALLBACK",
            (f'asks for a phone call: "{call}"', "and has no link to click"),
            factor=round(weight, 2),
        )
