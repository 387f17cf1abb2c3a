"""Names written to slip past a reader's eye or a filter: invisible characters inside words,
letters of two scripts in one word, styled Unicode letters, digits standing in for letters.

Brands write their own names plainly; a display name or subject disguised like this is made to
be read as something it does not spell ("Т​rust Wаllet" with Cyrillic letters and zero-width
spaces, "𝖣𝖨𝖤 𝖫ö𝗌𝗎𝗇𝗀", "PayPa1"). Words wholly in another script (a Russian or Greek name) are
ordinary writing, not disguise.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from filters.context import Context
from filters.types import BrandClaim, Features, Finding

RULES = {
    "TEXT_DISGUISED": "The display name or subject hides its letters: invisible characters, "
    "two scripts in one word, styled Unicode letters, a capital I for an l, or digits for "
    "letters",
}

_MAX_CHARS = 512  # of a display name or subject: where the disguise would matter
_INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180e\u200b-\u200f\u202a-\u202e"
    "\u2060-\u2064\u2066-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0]"
)
_WORD = re.compile(r"[^\W\d_]+(?:[\u00ad\u034f\u200b-\u200f\u2060-\u2064\ufeff][^\W\d_]+)*")
_LEET_WORD = re.compile(r"\b(?=[a-z]*\d)(?=\d*[a-z])[a-z\d]{4,}\b", re.IGNORECASE)
# "WaImart", "CompIemetary": a capital I between small letters reads as an l.
_CAPITAL_I = re.compile(r"(?<![A-Z]c)(?<![A-Z]ac)(?<=[a-z])I(?=[a-z])")  # not McIntosh
_PLACES = (("the display name", 1.0), ("the subject", 0.7))


def _script(ch: str) -> str:
    name = unicodedata.name(ch, "")
    return name.split(" ", 1)[0] if name else ""


def _styled(ch: str) -> bool:
    # Mathematical alphanumerics and full-width forms: NFKC turns them into plain letters.
    return ch.isalpha() and not ch.isascii() and unicodedata.normalize("NFKC", ch).isascii()


def kind_of(text: str) -> str | None:
    """How `text` disguises its words, or None when it is plainly written."""
    text = text[:_MAX_CHARS]
    if _CAPITAL_I.search(text):
        return "a capital I for a small l"
    if text.isascii():
        return "digits for letters" if _leet(text) else None
    for word in _WORD.findall(text):
        core = _INVISIBLE.sub("", word)
        if len(core) < len(word) and len(core) >= 2:
            return "invisible characters inside words"
        scripts = {_script(ch) for ch in core if ch.isalpha() and not _styled(ch)}
        if "LATIN" in scripts and len(scripts) > 1:
            return "letters of two scripts in one word"
    styled = sum(1 for ch in text if _styled(ch))
    if styled >= 3:
        return "styled Unicode letters"
    return "digits for letters" if _leet(text) else None


def _leet(text: str) -> bool:
    # "PayPa1", "Amaz0n": a word mixing letters and digits where a digit sits between letters
    # or ends the word after a letter; order numbers ("NP113951") and codes with no letter
    # after the digits are left alone.
    for m in _LEET_WORD.finditer(text):
        w = m.group()
        if re.search(r"[a-z][0135][a-z]", w, re.I) or re.fullmatch(r"[a-z]{3,}[01]", w, re.I):
            return True
    return False


def run(f: Features, claim: BrandClaim | None, ctx: Context) -> Iterable[Finding]:
    display = f.from_addr.display if f.from_addr else ""
    for (place, factor), text in zip(_PLACES, (display, f.subject), strict=True):
        kind = kind_of(text) if text else None
        if kind:
            shown = (
                text[:80].encode("unicode_escape").decode("ascii")
                if kind.startswith("invisible")
                else text[:80]
            )
            yield Finding("TEXT_DISGUISED", (f"{place} uses {kind}: {shown!r}",), factor=factor)
            return
