"""Text normalisation for matching: what a reader sees, not how the bytes spell it.

Phishers write "PаyPal" with a Cyrillic "а", "Amazon" with a zero-width joiner inside, or
"ＡＭＡＺＯＮ" in full-width letters. `normalise` folds all of those to plain lower-case text;
`skeleton` goes further for brand-name matching (digits that pass for letters, "rn" for "m").
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

# Characters that render as nothing (or as a space) and are used to break up brand names.
_INVISIBLE = dict.fromkeys(
    map(
        ord,
        "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180e\u200b\u200c\u200d"
        "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2060\u2061\u2062\u2063\u2064\u2066\u2067"
        "\u2068\u2069\u206a\u206b\u206c\u206d\u206e\u206f\u3164\ufe00\ufe01\ufe02\ufe03\ufe04"
        "\ufe05\ufe06\ufe07\ufe08\ufe09\ufe0a\ufe0b\ufe0c\ufe0d\ufe0e\ufe0f\ufeff\uffa0",
    ),
    None,
)

# Characters that pass for a Latin letter or digit (Cyrillic "а", Greek "ο", Cherokee, math
# and fullwidth forms...): Unicode's confusables table, as built into filters/data by
# scripts/build-confusables. Only lookalikes of one ASCII character are kept.
_TABLE = Path(__file__).resolve().parent / "data" / "confusables.tsv"
# Letters that look like a Latin one but do not decompose into it, so accent stripping leaves
# them: folded by spelling, not by shape.
_ORTHOGRAPHIC = {"ł": "l", "ø": "o", "ß": "ss", "đ": "d", "ð": "d", "þ": "p", "ħ": "h", "ŀ": "l"}


def _load_confusables() -> dict[str, str]:
    pairs = dict(_ORTHOGRAPHIC)
    with _TABLE.open(encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("#") or not line.strip():
                continue
            code, ascii_char, _name = line.rstrip("\n").split("\t", 2)
            # normalise applies NFKC and lower-casing first: only the characters that survive
            # both need a place here (math and full-width letters are already plain by then).
            char = unicodedata.normalize("NFKC", chr(int(code, 16))).lower()
            if len(char) == 1 and not char.isascii():
                pairs.setdefault(char, ascii_char)
    return pairs


_CONFUSABLE_PAIRS = _load_confusables()

# For brand-name skeletons only: digits and signs that pass for letters in a display name.
_LEETSPEAK = str.maketrans({"0": "o", "1": "l", "3": "e", "4": "a", "5": "s", "$": "s", "|": "l"})


# Combining marks of the scripts phishers use to break up names (Latin, Greek, Cyrillic,
# Hebrew, Arabic, Syriac, and the generic blocks): a regex over these is several times faster
# than testing unicodedata.combining() character by character.
_MARKS = re.compile(
    "[\u0300-\u036f\u0483-\u0489\u0591-\u05c7\u0610-\u061a\u064b-\u065f\u0670"
    "\u06d6-\u06ed\u0711\u0730-\u074a\u07a6-\u07b0\u1ab0-\u1aff\u1dc0-\u1dff"
    "\u20d0-\u20ff\ufe20-\ufe2f]"
)


def _strip_marks(text: str) -> str:
    """Drop combining marks ("é" -> "e") so that accents cannot hide a name."""
    if text.isascii():
        return text
    return _MARKS.sub("", unicodedata.normalize("NFD", text))


_INVISIBLE_RE = re.compile("[" + "".join(chr(c) for c in _INVISIBLE) + "]")
# str.translate: with a table of this size, and Cyrillic or Greek text where most letters
# change, it is an order of magnitude faster than a regex substitution with a callback.
_CONFUSABLE_TABLE = str.maketrans(_CONFUSABLE_PAIRS)
# Most non-ASCII text (accented Latin, CJK) holds none of them; a set says so faster than a
# regex character class of this size (which sre tests character by character).
_CONFUSABLE_SET = frozenset(_CONFUSABLE_PAIRS)
_INVISIBLE_SET = frozenset(chr(c) for c in _INVISIBLE)


def normalise(text: str) -> str:
    """NFKC, invisible characters removed, lower-case, confusables folded, one space between
    words. Accents are kept (they carry meaning in lure words like "réclamer")."""
    if text.isascii():  # most mail: NFKC and both tables change nothing
        return " ".join(text.lower().split())  # str.split knows the same spaces as \s
    text = unicodedata.normalize("NFKC", text)
    # Against the set of its characters: a set tests a set by the smaller side.
    if not _INVISIBLE_SET.isdisjoint(set(text)):
        text = _INVISIBLE_RE.sub("", text)
    text = text.lower()
    if not _CONFUSABLE_SET.isdisjoint(set(text)):
        text = text.translate(_CONFUSABLE_TABLE)
    return " ".join(text.split())


def fold_accents(text: str) -> str:
    if text.isascii():
        return text
    return unicodedata.normalize("NFC", _strip_marks(text))


_LEET_CHARS = re.compile(r"[0-9$|]")
_NOT_WORD = re.compile(r"[^\w$|]+|_+")


def unleet(word: str) -> str:
    # Only words that mix letters and digits ("amaz0n", "paypa1"): "2002" stays a number.
    if word.isdigit() or not _LEET_CHARS.search(word):
        return word
    return word.translate(_LEETSPEAK)


def words_skeleton(text: str, leet: bool = True) -> str:
    """A brand-matching form keeping word boundaries as single spaces: normalised, accents
    dropped, digits that pass for letters folded inside words (unless leet=False: for names
    that really have digits, "11st", "3M"), punctuation removed. Folding maps one character
    to one, so both forms have the same words in the same places."""
    return skeleton_of_normalised(normalise(text), leet)


# _NOT_WORD for ASCII text, as a byte table: what is not a letter, a digit, "$" or "|" is a
# space. One C pass over the bytes, several times faster than the regex on a message's opening.
_ASCII_WORD_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789$|")
_ASCII_NOT_WORD = bytes(c if c in _ASCII_WORD_CHARS else 0x20 for c in range(256))


def _words(text: str) -> list[str]:
    if text.isascii():
        return text.encode("ascii").translate(_ASCII_NOT_WORD).decode("ascii").split()
    return _NOT_WORD.sub(" ", text).split()


def skeleton_of_normalised(text: str, leet: bool = True) -> str:
    """words_skeleton of text already normalised (a Features body): the same result,
    without normalising twice."""
    words = _words(fold_accents(text))
    if not leet or not _LEET_CHARS.search(text):
        return " ".join(words)
    return " ".join(unleet(w) for w in words)


def skeleton(text: str) -> str:
    """A brand-matching key with no word boundaries: like `words_skeleton`, with "rn"/"vv"
    read as "m"/"w" and everything but letters and digits removed."""
    text = words_skeleton(text).replace("rn", "m").replace("vv", "w")
    return "".join(ch for ch in text if ch.isalnum())
