"""Which brand does a message present itself as? A mention is not a claim.

A claim is made where a reader looks for the author: the From display name, the From address
(local part and domain), and, less plainly, the subject, the opening lines, the logo at the top
and link texts that show a brand's address. The model answers questions of structure rather
than looking words up in closed lists:

- Is the brand's name distinctive ("PayPal", registry `names`), so that it claims the brand
  wherever it stands as the author, or an ordinary word ("Chase", "Target": `context_names`),
  which claims only beside words that speak for a sender ("Chase Bank", "Target Support")?
- Does the display name read as a person ("Damien Morton" <damien.morton@...>) or as the
  sender's own organisation (its own domain's name)? Then a brand inside it is no claim.
- Is the brand glued into the sender's address or domain ("walmartnoticescenter@",
  "starbuckskle.com")?
- Does the subject or the opening speak as the brand ("Your PayPal account", "Amazon: ...")?

Vocabulary (service words in many languages, config/claim_cues.toml) refines the strength; it is
never what makes a distinctive name a claim. Matching is done on a folded form in which
confusables, digits passing for letters, "rn" for "m", dropped apostrophes and the I/l swap
("WaImart") all read alike.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol

from filters.context import Context, derived
from filters.lookalike import Imitation, classify, segment
from filters.registry import Brand, BrandRegistry, Lexicon
from filters.text import (
    fold_accents,
    normalise,
    skeleton,
    skeleton_of_normalised,
    unleet,
    words_skeleton,
)
from filters.types import BrandClaim, Features

# How strongly each place speaks *as* the brand (the factor of the claim's findings).
STRENGTH = {
    "display-name": 1.0,
    "from-local-part": 0.8,
    "from-domain": 0.7,
    "subject": 0.6,
    "link-text": 0.5,
    "img-alt": 0.4,
    "body": 0.4,
}
# Places where the message names its author; the rest only mention the brand.
AUTHOR_PLACES = frozenset({"display-name", "from-local-part", "from-domain"})
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
_URLISH = re.compile(r"(?:https?://|www\.)|\b[a-z0-9-]+\.(?:com|net|org|co|de|fr|br|uk|it|es)\b")
_NONLATIN = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
_APOSTROPHES = re.compile(r"(?<=\w)['’`´](?=\w)")
_LETTERS = re.compile(r"[a-z]+")
_BODY_HEAD = 600  # characters of the body that count as the "opening lines"
_MAX_NAME_TEXT = 256  # characters of a display name or subject worth reading for a claim
_MAX_ALTS = 3  # the first images: where a logo stands in for the sender's name
MIN_GLUED = 5  # shortest distinctive form found glued inside another word
_DISPLAY_STRENGTH_UNKNOWN_WORDS = 0.8  # distinctive name beside words of unknown role
_WEAK_STRENGTH = 0.9  # an ordinary-word name made a claim by service words beside it


@lru_cache(maxsize=2048)
def fold(text: str, leet: bool = True, normalised: bool = False) -> str:
    """The matching form: words_skeleton without apostrophes, with "i" read as "l" (the
    capital I and small l look alike in most fonts, and phishers swap them), and a break
    where Latin letters meet another script ("ㅐㅐFreedom": filler glued to a name)."""
    if "'" in text or "’" in text or "`" in text or "´" in text:
        text = _APOSTROPHES.sub("", text)
    if not text.isascii():
        text = _SCRIPT_EDGE.sub(" ", text)
    if normalised:
        return skeleton_of_normalised(text, leet).replace("i", "l")
    return words_skeleton(text, leet).replace("i", "l")


# A Latin letter next to a CJK or Hangul one (either order).
_SCRIPT_EDGE = re.compile(
    r"(?<=[A-Za-z])(?=[\u1100-\u11ff\u3130-\u318f\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af])"
    r"|(?<=[\u1100-\u11ff\u3130-\u318f\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af])(?=[A-Za-z])"
)


_DIGITISH = re.compile(r"[0-9$|]")


def _token_forms(text: str, normalised: bool = False) -> tuple[list[str], list[str]]:
    """(digits kept, digits read as letters): "11st" must stay a name, "amaz0n" must not."""
    plain = fold(text, leet=False, normalised=normalised).split()
    if not _DIGITISH.search(text):
        return plain, plain
    # Reading digits as letters maps one character to one: the same words, word by word.
    leet = [tok if tok.isalpha() else unleet(tok).replace("i", "l") for tok in plain]
    return plain, leet if leet != plain else plain


@lru_cache(maxsize=4096)  # domain labels: the same few in every message
def fold_joined(text: str) -> str:
    if "'" in text or "’" in text or "`" in text or "´" in text:
        text = _APOSTROPHES.sub("", text)
    return skeleton(text).replace("i", "l")


@dataclass(slots=True)
class _Index:
    by_first: dict[str, list[tuple[tuple[str, ...], str, bool]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    # The same entries split for speed: names of one word by that word, longer names by
    # their first two words (most words of a text start no name, and "the" starts many).
    single: dict[str, tuple[str, bool]] = field(default_factory=dict)
    multi: dict[tuple[str, str], list[tuple[tuple[str, ...], str, bool]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    cjk: list[tuple[str, str]] = field(default_factory=list)  # (normalised name, brand key)
    glued: dict[str, str] = field(default_factory=dict)  # distinctive joined form -> key
    # Their lengths, longest first, by their first `head` characters: at most offsets of a
    # text no name starts, and one lookup says so.
    glued_sizes: dict[str, list[int]] = field(default_factory=dict)
    # The same, unfolded, for addresses and domains: they are lower-case, so there is no I/l
    # swap to undo, and folding would read "mail" as "mall".
    plain: dict[str, str] = field(default_factory=dict)
    plain_heads: dict[str, list[int]] = field(default_factory=dict)
    plain_tails: dict[str, list[int]] = field(default_factory=dict)  # by the last characters
    head: int = MIN_GLUED

    def add(self, name: str, key: str, strong: bool) -> None:
        if _NONLATIN.search(name):
            self.cjk.append((words_skeleton(name).replace(" ", ""), key))
            return
        words = tuple(fold(name, leet=False).split())
        if not words or len("".join(words)) < 2:
            return  # a one-letter name ("X") matches everything
        self.by_first[words[0]].append((words, key, strong))
        if len(words) == 1:
            # A strong entry wins over an ambiguous one for the same word.
            if words[0] not in self.single or (strong and not self.single[words[0]][1]):
                self.single[words[0]] = (key, strong)
        else:
            self.multi[(words[0], words[1])].append((words, key, strong))
        joined = "".join(words)
        if strong and len(joined) >= MIN_GLUED:
            self.glued.setdefault(joined, key)
            plain = skeleton(_APOSTROPHES.sub("", name))
            if plain.isascii():
                self.plain.setdefault(plain, key)


def _index(registry: BrandRegistry) -> _Index:
    return derived(registry, ("index",), lambda: _build_index(registry))


def _build_index(registry: BrandRegistry) -> _Index:
    idx = _Index()
    for brand in registry.brands.values():
        strong = [n for n in (brand.name, *brand.names) if n not in brand.context_names]
        for name in strong:
            idx.add(name, brand.key, True)
        for name in brand.context_names:
            idx.add(name, brand.key, False)
        for tok in brand.tokens:  # curated distinctive labels ("bathbodyworks")
            if len(tok) >= MIN_GLUED and tok.isalpha():
                idx.glued.setdefault(tok.replace("i", "l"), brand.key)
                idx.plain.setdefault(tok, brand.key)
    for entries in idx.by_first.values():
        entries.sort(key=lambda e: -len(e[0]))  # the longest name first: "tim hortons" > "tim"
    for pairs in idx.multi.values():
        pairs.sort(key=lambda e: -len(e[0]))
    idx.head = head = min((len(n) for n in (*idx.glued, *idx.plain)), default=MIN_GLUED)
    idx.glued_sizes = _sizes_by(idx.glued, lambda n: n[:head])
    idx.plain_heads = _sizes_by(idx.plain, lambda n: n[:head])
    idx.plain_tails = _sizes_by(idx.plain, lambda n: n[-head:])
    return idx


def _sizes_by(names: Iterable[str], part: Callable[[str], str]) -> dict[str, list[int]]:
    sizes: dict[str, set[int]] = defaultdict(set)
    for name in names:
        sizes[part(name)].add(len(name))
    return {k: sorted(v, reverse=True) for k, v in sizes.items()}


class _Vote(Protocol):
    def __call__(self, key: str, place: str, word: str, factor: float = 1.0) -> None: ...


@dataclass(slots=True)
class _Match:
    key: str
    name: str  # the words matched
    start: int
    end: int  # token positions, for cue lookups
    strong: bool = True  # False for an ambiguous context name ("Chase", "Three")


def _scan_tokens(idx: _Index, tokens: list[str], allow_weak: bool) -> list[_Match]:
    """Brand names as whole-word sequences, longest first and never overlapping."""
    found: list[_Match] = []
    by_first, single, multi = idx.by_first, idx.single, idx.multi
    # Only the positions whose word starts some name: most words start none.
    starts = [i for i, tok in enumerate(tokens) if tok in by_first]
    end = 0
    last = len(tokens) - 1
    for i in starts:
        if i < end:
            continue
        tok = tokens[i]
        hit = None
        if i < last:
            for words, key, strong in multi.get((tok, tokens[i + 1]), ()):
                n = len(words)
                if (strong or allow_weak) and (n == 2 or tuple(tokens[i : i + n]) == words):
                    hit = _Match(key, " ".join(words), i, i + n, strong)
                    break
        if hit is None and tok in single:
            key, strong = single[tok]
            if strong or allow_weak:
                hit = _Match(key, tok, i, i + 1, strong)
        if hit is not None:
            found.append(hit)
            end = hit.end
    return found


def _scan_forms(idx: _Index, plain: list[str], leet: list[str], allow_weak: bool) -> list[_Match]:
    """Matches in the digits-kept form, then the letters-for-digits form where it adds any."""
    found = _scan_tokens(idx, plain, allow_weak)
    if leet is not plain:
        taken = {i for m in found for i in range(m.start, m.end)}
        changed = [i for i, (a, b) in enumerate(zip(plain, leet, strict=True)) if a != b]
        for m in _scan_tokens(idx, leet, allow_weak):
            if any(m.start <= i < m.end for i in changed) and not taken.intersection(
                range(m.start, m.end)
            ):
                found.append(m)
    return found


def _scan(
    idx: _Index, text: str, allow_weak: bool, normalised: bool = False
) -> tuple[list[_Match], list[str]]:
    """The matches in `text`, and its folded tokens (for the cue lookups that follow)."""
    plain, tokens = _token_forms(text, normalised)
    found = _scan_forms(idx, plain, tokens, allow_weak)
    found.extend(_joined_words(idx, tokens, found))
    found.extend(_cjk_matches(idx, text))
    return found, tokens


def _joined_words(idx: _Index, tokens: list[str], found: list[_Match]) -> list[_Match]:
    """A name of several words written as one ("AlbertHeijn", "TractorSupply"): a whole
    word that is a distinctive name's joined form. One lookup per word."""
    glued, by_first = idx.glued, idx.by_first
    if glued.keys().isdisjoint(tokens):  # the common case, decided in one pass in C
        return []
    taken = {i for m in found for i in range(m.start, m.end)}
    out = []
    for i, tok in enumerate(tokens):
        if len(tok) > MIN_GLUED and tok in glued and tok not in by_first and i not in taken:
            out.append(_Match(glued[tok], tok, i, i + 1))
    return out


def _cjk_matches(idx: _Index, text: str) -> list[_Match]:
    """Names in CJK scripts, found as substrings (those scripts have no word breaks)."""
    if not idx.cjk or not _NONLATIN.search(text):
        return []
    flat = words_skeleton(text).replace(" ", "")
    return [_Match(key, name, 0, 0) for name, key in idx.cjk if name in flat]


def _glued_in_words(idx: _Index, raw_tokens: list[str]) -> list[_Match]:
    """A distinctive name spelled across or inside words ("P-a-y-P-a-l", "TMobile",
    "AmazonPrime"): it must start at a word boundary, and end at one or be followed only by
    service words ("amazonprime"), so that "Interactive" does not read as "Interac".
    `raw_tokens` are unfolded (i and l apart), so that service words can be recognised."""
    raw = "".join(raw_tokens)[: _MAX_NAME_TEXT * 2]
    joined = raw.replace("i", "l")
    tokens = raw_tokens
    starts: dict[int, int] = {}  # offset in joined -> token index
    ends: set[int] = set()
    pos = 0
    for i, tok in enumerate(tokens):
        starts[pos] = i
        pos += len(tok)
        ends.add(pos)
    for start in sorted(starts):
        for size in idx.glued_sizes.get(joined[start : start + idx.head], ()):
            end = start + size
            key = idx.glued.get(joined[start:end]) if end <= len(joined) else None
            if key is None:
                continue
            if end in ends or _service_rest(raw, end, ends):
                return [_Match(key, joined[start:end], 0, 0)]
    return []


def _service_rest(raw: str, end: int, ends: set[int]) -> bool:
    """The rest of the word after a name is digits or service words ("prime", "rewards")."""
    stop = min((e for e in ends if e > end), default=len(raw))
    rest = raw[end:stop]
    if not rest:
        return False
    return len(rest) <= 2 or rest.isdigit() or segment(rest) is not None


_MAX_STUTTER_WORD = 40


def _doubled(idx: _Index, tokens: list[str]) -> list[_Match]:
    """A distinctive one-word name with a letter doubled or a double undone ("Amazonn",
    "Paypall", "Facebok"): the slips a reader's eye passes over. Other one-letter edits are
    mostly other words and names (Kragen, Hylton), so they are not tried."""
    for word in tokens:
        if not MIN_GLUED + 1 <= len(word) <= _MAX_STUTTER_WORD:
            continue
        for i in range(1, len(word)):
            dropped = word[:i] + word[i + 1 :] if word[i] == word[i - 1] else ""
            added = word[:i] + word[i - 1] + word[i:]
            for variant in (dropped, added):
                key = idx.glued.get(variant) if variant else None
                if key is not None and _one_word(idx, variant):
                    return [_Match(key, variant, 0, 0)]
    return []


def _one_word(idx: _Index, name: str) -> bool:
    return any(len(words) == 1 for words, _, strong in idx.by_first.get(name, ()) if strong)


def _glued_in_label(idx: _Index, label: str, min_len: int = MIN_GLUED) -> _Match | None:
    """A distinctive name at the start or the end of an address local part or a domain
    label, glued to other letters ("walmartnoticescenter", "starbuckskle",
    "greetingswalmart"). Longest name first."""
    text = label.lower()[:64]
    if len(text) < idx.head:
        return None
    head = idx.plain_heads.get(text[: idx.head], ())
    tail = idx.plain_tails.get(text[-idx.head :], ())
    for size in sorted({*head, *tail}, reverse=True):
        if size > len(text) or size < min_len:
            continue
        for start in (0, len(text) - size):
            key = idx.plain.get(text[start : start + size])
            if key is not None:
                return _Match(key, text[start : start + size], 0, 0)
    return None


# --------------------------------------------------------------------------- the display name


def _service_words(lex: Lexicon) -> frozenset[str]:
    """Words that speak for a sender ("team", "support", "Prämien"), in the folded form."""

    def build() -> frozenset[str]:
        words = (
            *lex.generic_author,
            *lex.cues_after,
            *lex.cues_before,
            *lex.lure_words,
            *lex.display_words,
        )
        return frozenset(w.replace("i", "l") for w in words)

    return derived(lex, ("service",), build)


def _display_claims(idx: _Index, f: Features, ctx: Context) -> list[tuple[_Match, float]]:
    """Display-name matches with the strength each deserves."""
    lex = ctx.lexicon
    display = (f.from_addr.display if f.from_addr else "")[:_MAX_NAME_TEXT]
    # "X via SurveyMonkey", "X (via Google Docs)": the platform relays, X is who speaks --
    # unless the platform is the sender's own brand ("DPD (via Allegro)" from Allegro's
    # domain): then a marketplace relays a carrier's notice, and the sender is known.
    display, via = _split_via(display)
    if via and _relayed_by_sender(idx, via, f, ctx):
        return []
    # An address written as the display name ("support@paypal.com" <x@evil>): its domain is
    # the claim; its local part is only a mailbox name ("hyatt@mozilla" is a person).
    written = _ADDRESS_IN_TEXT.sub(r" \1 ", display)  # as written, for the person test
    display = _ADDRESS_IN_TEXT.sub(r" \1 ", fold_accents(normalise(display)))
    if not display.strip():
        return []
    raw_tokens = words_skeleton(_APOSTROPHES.sub("", display)).split()
    plain, tokens = _token_forms(display)
    matches = _scan_forms(idx, plain, tokens, allow_weak=True)
    if not matches and tokens:
        matches = _glued_in_words(idx, raw_tokens) or _doubled(idx, tokens)
        if matches:  # a name spelled out, glued on or stuttered: a trick, not a person's name
            return [(matches[0], 1.0)]
    # A name in a CJK script is distinctive wherever it stands, whatever Latin words are
    # beside it ("e-Tax（国税電子申告・納税システム）"): those words cannot make it a person's.
    cjk = _cjk_matches(idx, display)
    if not matches:
        return [(m, 1.0) for m in cjk]
    covered = {i for m in matches for i in range(m.start, m.end)}
    rest = [t for i, t in enumerate(tokens) if i not in covered]
    service = _service_words(lex)
    unknown = [w for w in rest if w not in service and not w.isdigit() and len(w) > 1]
    own = "" if via else _own_label(f)
    out = []
    for m in matches:
        if own and any(_names_own(w, own) for w in unknown):
            continue  # the sender's own organisation, writing about the brand
        if not m.strong:
            # An ordinary word is a claim beside service words, or as "<someone> from
            # <Brand>"; alone it is a claim unless the mailbox is a person's (tim.od@...).
            spoken_for = m.start > 0 and tokens[m.start - 1] in _FROM_WORDS
            if spoken_for or (not unknown and not (not rest and _own_mailbox(m.name, f))):
                out.append((m, _WEAK_STRENGTH))
            elif len(unknown) == 1 and _signs_beside(tokens, m, service):
                # "Courtesy AAA Support": the name signs as a department, one word of
                # unknown role beside it; less sure than service words alone.
                out.append((m, _WEAK_STRENGTH * _DISPLAY_STRENGTH_UNKNOWN_WORDS))
            continue
        if unknown and m.end - m.start == 1 and _person(written, unknown, f, m.name, _cues(lex)[0]):
            continue
        if f.mailing_list and unknown and m.end == len(tokens) and m.end - m.start == 1:
            continue  # "Felipe Soberon Vargas Prada" posting to a list: a surname
        out.append((m, 1.0 if not unknown else _DISPLAY_STRENGTH_UNKNOWN_WORDS))
    seen = {m.key for m, _ in out}
    out.extend((m, 1.0) for m in cjk if m.key not in seen)
    return out


def _signs_beside(tokens: list[str], m: _Match, service: frozenset[str]) -> bool:
    """A service word right after the name ("AAA Support", "Chase Billing")."""
    return m.end < len(tokens) and tokens[m.end] in service


_ADDRESS_IN_TEXT = re.compile(r"[\w.+-]+@([\w-]+(?:\.[\w-]+)*)")
_VIA = re.compile(r"\s*\(?\s*\b(?:via|über|par|por|através de|tramite)\s+[^()]*\)?\s*$", re.I)


def _split_via(display: str) -> tuple[str, str]:
    """(who speaks, the platform that relays it) of "X via Y"; ("...", "") without one."""
    m = _VIA.search(display)
    if m is None or m.start() == 0:
        return display, ""
    return display[: m.start()], m.group()


def _relayed_by_sender(idx: _Index, via: str, f: Features, ctx: Context) -> bool:
    owner = ctx.registry.sender_brand(f.from_addr.domain) if f.from_addr else None
    return owner is not None and any(m.key == owner[0] for m in _scan(idx, via, True)[0])


_FROM_WORDS = frozenset({"from", "von", "de", "da", "do", "van", "di", "del", "od", "z"})


def _own_mailbox(name: str, f: Features) -> bool:
    """The mailbox is named after this word plus more letters ("Tim" <timod@...>,
    "Chase" <chase.miller@...>): a person's first name, not a brand."""
    local = (f.from_addr.local if f.from_addr else "").lower()
    word = name.replace(" ", "")
    if not local.replace("i", "l").startswith(word) or len(local) <= len(word):
        return False
    rest = local[len(word) :].lstrip("._-")
    # "appleverification", "chase-alerts": service words after the name are no person's.
    return len(rest) >= 2 and rest.isalpha() and segment(rest) is None


def _person(
    display: str,
    unknown: list[str],
    f: Features,
    brand_name: str = "",
    addressing: frozenset[str] = frozenset(),
) -> bool:
    """A person's name beside the brand word: "Damien Morton" <damien.morton@...>.

    Structural test: the other words are few, written as names (capitalised letters), and the
    mailbox is named after one of them, as personal mailboxes are. A display name led by the
    brand, at a mailbox that spells it ("McAfee Secure" <mcafeesecure...@>, "IRS Tax Report"
    <irsgov-tax...@>), is named after the brand; a surname comes last ("Damien Norton")."""
    if not unknown or len(unknown) > 4:
        return False
    if brand_name and _leads_with(brand_name, display) and _spells_brand(brand_name, f):
        return False
    raw_words = [w for w in re.split(r"[\s,]+", display) if w]
    if not raw_words or not all(
        w[:1].isupper() and w.replace(".", "").isalpha() for w in raw_words
    ):
        return False
    # A name that addresses the reader ("Your Rewards Desk", "Ihr Kundenservice") is
    # nobody's own: people do not sign with "your".
    if addressing and any(fold(w, leet=False) in addressing for w in raw_words):
        return False
    local = fold(f.from_addr.local if f.from_addr else "").replace(" ", "")
    if any(len(w) >= 3 and w in local for w in unknown):
        return True
    # Initials: "Felipe Soberon Vargas Prada" <fso@...>, "Jane Q. Doe" <jqd@...>.
    initials = "".join(w[0] for w in fold(display).split())
    return 2 <= len(local) <= len(initials) and initials.startswith(local)


def _names_itself(f: Features) -> bool:
    """The display name is the sender's own organisation ("WinXPnews" from winxpnews.com,
    "Media Unspun" from mediaunspun.imakenews.net, a newsletter host's tenant): the author is
    known, so brands in its subject are its topics."""
    display = fold_joined(f.display_norm)
    return bool(display) and any(label in display for label in _domain_labels(f))


def _domain_labels(f: Features) -> list[str]:
    """The names in the sender's domain that could be an organisation's (4+ letters, the
    public suffix and generic mail labels left out)."""
    addr = f.from_addr
    if addr is None or not addr.domain or not addr.registrable:
        return []
    head = addr.domain[: -len(addr.registrable)].rstrip(".")
    labels = [addr.registrable.split(".", 1)[0], *head.split(".")[-3:]]
    return [fold_joined(x) for x in labels if len(x) >= 4 and x.isalpha() and x not in _MAIL_LABELS]


_MAIL_LABELS = frozenset({"mail", "email", "news", "info", "newsletter", "mailer", "smtp", "send"})


def _leads_with(name: str, display: str) -> bool:
    return fold(display).replace(" ", "").startswith(name.replace(" ", ""))


def _spells_brand(name: str, f: Features) -> bool:
    local = fold_joined(f.from_addr.local if f.from_addr else "")
    word = name.replace(" ", "")
    return len(word) >= 3 and word in local


def _names_own(word: str, own: str) -> bool:
    """A display-name word that names the sender's own organisation ("Lockergnome" from
    lockergnome.com): the label itself, or a word that is most of it or stands at its start
    or end. A short word somewhere inside ("care" in customercare-hjh) is only a word."""
    if word == own:
        return True
    if len(word) < 4 or word not in own:
        return False
    return own.startswith(word) or own.endswith(word) or 2 * len(word) >= len(own)


def _own_label(f: Features) -> str:
    """The sender's own organisation name, from its registrable domain ("lockergnome")."""
    reg = f.from_addr.registrable if f.from_addr else ""
    label = reg.split(".", 1)[0] if reg else ""
    return fold_joined(label) if len(label) >= 4 else ""


# --------------------------------------------------------------------------- other places


def _with_cue(tokens: list[str], matches: list[_Match], lex: Lexicon) -> list[_Match]:
    """Keep the matches that speak as the brand ("your PayPal account", "Amazon Security",
    "Visa Gift Card", "Walmart: ..." at the start). Matches without token positions (names in
    CJK scripts, which have no word breaks) stay."""
    before_cues, after_cues = _cues(lex)
    out = []
    for m in matches:
        # An ordinary word needs a service word of its own ("Next account"), not a
        # possessive: "your next phone", "your free gift" speak of no brand.
        before = set(tokens[max(0, m.start - 3) : m.start]) if m.strong else set()
        # The name's own words count ("Visa Card", "Apple Support"), and so do longer forms
        # of a cue word ("Gutscheins", "rewards").
        after = [*tokens[m.start + 1 : m.end], *tokens[m.end : m.end + 2]]
        if (
            before & before_cues
            or any(_cued_word(w, after_cues) for w in after)
            or m.start == m.end == 0
            or _after_instrument(tokens, m.start, lex)
        ):
            out.append(m)
    return out


# Words that may stand between a gift instrument and the brand it is drawn on ("a gift card
# for Target", "Gutschein von Lidl", "bon d'achat chez Leclerc").
_INSTRUMENT_LINKS = frozenset(
    {"for", "at", "from", "von", "bei", "für", "fur", "de", "chez", "van", "voor", "bij",
     "da", "do", "di", "del", "na", "w", "z", "od", "dla"}
)  # fmt: skip
# Lure categories that name an instrument a brand issues: its gift card, its cash back.
_INSTRUMENTS = ("gift", "cashback")


def _after_instrument(tokens: list[str], start: int, lex: Lexicon) -> bool:
    """The brand follows one of its gift instruments ("carte-cadeau Shein", "bon d'achat
    Leclerc", "gift card for Target"): the message hands out the brand's own voucher, and so
    speaks for it. Ordinary-word names count too: an instrument is no possessive."""
    if start == 0:
        return False
    end = start - 1 if tokens[start - 1] in _INSTRUMENT_LINKS else start
    phrases = _instrument_phrases(lex)
    return any(
        n <= end and tuple(tokens[end - n : end]) in phrases
        for n in range(1, _MAX_INSTRUMENT_WORDS + 1)
    )


_MAX_INSTRUMENT_WORDS = 3
# Lure categories that give something away: a subject with one offers a prize.
_PRIZES = ("gift", "cashback", "prize", "selected", "claim", "reward", "survey")
_MAX_PRIZE_WORDS = 4


def _phrases(lex: Lexicon, categories: tuple[str, ...], most: int) -> frozenset[tuple[str, ...]]:
    """The lure phrases of `categories` (at most `most` words) as folded word tuples."""

    def build() -> frozenset[tuple[str, ...]]:
        folded = (
            tuple(fold(t.phrase, leet=False, normalised=True).split())
            for t in lex.terms
            if t.category in categories
        )
        return frozenset(w for w in folded if 0 < len(w) <= most)

    return derived(lex, ("phrases", categories, most), build)


def _instrument_phrases(lex: Lexicon) -> frozenset[tuple[str, ...]]:
    return _phrases(lex, _INSTRUMENTS, _MAX_INSTRUMENT_WORDS)


def _offers_prize(tokens: list[str], lex: Lexicon) -> bool:
    phrases = _phrases(lex, _PRIZES, _MAX_PRIZE_WORDS)
    if any(
        tuple(tokens[i : i + n]) in phrases
        for i in range(len(tokens))
        for n in range(1, _MAX_PRIZE_WORDS + 1)
    ):
        return True
    # An inflected prize word ("Gutscheins", "vouchers"): as cue words are read.
    words = _prize_words(lex)
    return any(_cued_word(t, words) for t in tokens if len(t) >= 7)


def _prize_words(lex: Lexicon) -> frozenset[str]:
    """The one-word prize phrases, for inflected forms."""
    return derived(
        lex,
        ("prize-words",),
        lambda: frozenset(p[0] for p in _phrases(lex, _PRIZES, _MAX_PRIZE_WORDS) if len(p) == 1),
    )


def _cued_word(word: str, cues: frozenset[str]) -> bool:
    if word in cues:
        return True
    # An inflected form: a cue of six letters or more plus an ending of at most two.
    return len(word) >= 7 and any(word[:n] in cues for n in (len(word) - 1, len(word) - 2))


def _cues(lex: Lexicon) -> tuple[frozenset[str], frozenset[str]]:
    """The cue words in the folded form, computed once per lexicon."""

    def build() -> tuple[frozenset[str], frozenset[str]]:
        before = frozenset(c.replace("i", "l") for c in lex.cues_before)
        after = frozenset(c.replace("i", "l") for c in lex.cues_after | lex.lure_words)
        return before, after

    return derived(lex, ("cues",), build)


def _generic_author(f: Features, lex: Lexicon) -> bool:
    words = words_skeleton(f.display_norm).split()
    return not words or all(w in lex.generic_author for w in words)


def _local_matches(idx: _Index, local: str) -> list[tuple[_Match, float]]:
    # "paypal.support.team", "amazon-rewards2024": split on separators and digits; then a
    # distinctive name glued to other letters ("walmartnoticescenter").
    parts = [p for p in re.split(r"[^a-z]+", _APOSTROPHES.sub("", local.lower()[:64])) if p]
    whole = len(parts) == 1  # the mailbox is the name itself ("dpd@...", "ups@...")
    found = [
        (m, 1.0)
        for m in _scan_forms(
            idx, [fold(p, leet=False) for p in parts], [fold(p) for p in parts], False
        )
        if len(m.name) >= 4 or whole
    ]
    if found:
        return found
    for part in parts:
        glued = _glued_in_label(idx, part)
        if glued is None:
            continue
        rest = part.replace(glued.name, "", 1)
        # A short name must be followed or led by service words ("lowesupdate"); a long
        # one stands out whatever is glued to it ("walmartnoticescenter", "starbuckskle").
        if len(glued.name) > MIN_GLUED or not rest or segment(rest) is not None:
            return [(glued, 0.875)]
    return []


def _link_text_matches(f: Features, ctx: Context) -> list[tuple[str, str]]:
    """Link texts that display a brand's own URL ("www.paypal.com") while pointing elsewhere."""
    out = []
    for link in f.links:
        shown = (link.shown or "").lower()[:200]
        if not shown or not _URLISH.search(shown):
            continue
        for word in re.findall(r"[a-z0-9.-]+\.[a-z]{2,}", shown):
            hit = ctx.registry.sender_brand(word.strip(".")) or ctx.registry.link_brand(
                word.strip(".")
            )
            if hit and ctx.registry.may_link(ctx.registry.brands[hit[0]], link.host) is None:
                out.append((hit[0], word))
    return out


_MAX_BUTTONS = 12  # the first links: where the calls to action stand
_MAX_BUTTON_TEXT = 80  # characters of a link's text: a button's label, not a paragraph


def _button_matches(idx: _Index, f: Features, ctx: Context) -> list[tuple[str, str]]:
    """Calls to action that speak as a brand ("Activate your Sam's Club offer", "Sign in to
    your PayPal account") on links that leave it: the button is the brand's voice, and the
    click goes to somebody else. A link to the brand's own site, or a text without a cue
    ("Shop Amazon deals"), says nothing of who speaks."""
    out: list[tuple[str, str]] = []
    reg, lex = ctx.registry, ctx.lexicon
    seen: set[str] = set()
    for link in f.links[:_MAX_BUTTONS]:
        shown = link.shown
        if not shown or link.where not in _BUTTON_PLACES or shown in seen:
            continue
        seen.add(shown)
        text = shown[:_MAX_BUTTON_TEXT]
        if _URLISH.search(text.lower()):
            continue  # a shown address: _link_text_matches reads those
        hits, tokens = _scan(idx, text, allow_weak=False)
        for m in _with_cue(tokens, hits, lex) if hits else ():
            if m.start == m.end:
                continue  # a CJK name found as a substring: no cue was read
            if reg.may_link(reg.brands[m.key], link.host) is None:
                out.append((m.key, m.name))
    return out


_BUTTON_PLACES = frozenset({"html-a", "html-area"})


def find_claim(f: Features, ctx: Context) -> BrandClaim | None:
    idx = _index(ctx.registry)
    votes: dict[str, dict[str, float]] = defaultdict(dict)
    matched: dict[str, set[str]] = defaultdict(set)

    def vote(key: str, place: str, word: str, factor: float = 1.0) -> None:
        strength = STRENGTH[place] * factor
        votes[key][place] = max(votes[key].get(place, 0.0), strength)
        matched[key].add(word)

    for m, factor in _display_claims(idx, f, ctx):
        vote(m.key, "display-name", m.name, factor)
    personal = _personal_mailbox(idx, f, ctx.lexicon)
    if f.from_addr and f.from_addr.local and not personal:
        for m, factor in _local_matches(idx, f.from_addr.local):
            vote(m.key, "from-local-part", m.name, factor)
    domain_brand = _domain_claim(f, ctx, idx)
    if domain_brand:
        vote(domain_brand[0], "from-domain", domain_brand[1], domain_brand[2])
    _mentions(f, ctx, idx, vote, personal)
    if not votes:
        return None
    return _best(votes, matched, ctx.registry, f)


def _personal_mailbox(idx: _Index, f: Features, lex: Lexicon) -> bool:
    """A person's mailbox named after them ("Damien Norton" <damien.norton@...>): the words
    of the address are the person's name, whatever brand they spell. The name is what is left
    of the display name without service words and distinctive brand names: "USPS Customer
    Care" <usps@...> has no person in it, and its mailbox is the brand's name."""
    display = f.from_addr.display if f.from_addr else ""
    if not display:
        return False
    plain, tokens = _token_forms(display)
    names = _scan_forms(idx, plain, tokens, allow_weak=False)
    if any(m.start == 0 and _spells_brand(m.name, f) for m in names):
        return False
    covered = {i for m in names for i in range(m.start, m.end)}
    service = _service_words(lex)
    words = [w for i, w in enumerate(tokens) if i not in covered and w not in service]
    return _person(display, words, f, addressing=_cues(lex)[0])


def _mentions(f: Features, ctx: Context, idx: _Index, vote: _Vote, personal: bool) -> None:
    """The subject, the opening lines, the logo and link texts. They speak for the author
    when they address the reader as the brand's customer ("your PayPal account") or when
    the author is left vague. Where the author is known (an organisation named after its own
    domain, a person writing from a mailbox named after them, a mailing list), brands in these
    places are its topics."""
    lex = ctx.lexicon
    if _names_itself(f):
        for key, word in _link_text_matches(f, ctx):
            vote(key, "link-text", word)
        return
    vague = _generic_author(f, lex)
    subject = f.subject[:_MAX_NAME_TEXT]
    hits, tokens = _scan(idx, subject, allow_weak=True)
    cued = _with_cue(tokens, hits, lex)
    # A subject that hands out a prize names the brand as what is given away ("Sie wurden
    # für eine Oral-B ausgewählt", "500€ IKEA Gutscheins"): bait in the brand's name.
    baited = any(m.strong for m in hits) and _offers_prize(tokens, lex)
    for m in hits:
        if m in cued or (m.strong and (vague or baited)):
            vote(m.key, "subject", m.name)
    for key, word in _link_text_matches(f, ctx):
        vote(key, "link-text", word)
    if f.mailing_list:
        return
    for key, word in _button_matches(idx, f, ctx):
        vote(key, "link-text", word)
    head = f.body[:_BODY_HEAD]
    hits, tokens = _scan(idx, head, allow_weak=False, normalised=True)
    cued = _with_cue(tokens, hits, lex) if hits else []
    if personal:
        # A person's mailbox: the opening speaks as a brand only where the brand signs as
        # its own department more than once ("Geek Squad Support: ... Geek Squad Billing
        # Department"), as invoice scams sent from hijacked mailboxes do; a person mentions.
        cued = _signed_twice(tokens, cued, lex)
    for m in cued:
        vote(m.key, "body", m.name, 1.25 if vague else 1.0)
    if personal:
        return
    for alt in f.image_alts[:_MAX_ALTS]:
        plain, words = _token_forms(alt)
        for m in _scan_forms(idx, plain, words, allow_weak=False):
            if len(words) <= len(m.name.split()) + 2:  # a logo's alt, not a caption
                vote(m.key, "img-alt", m.name)


def _signed_twice(tokens: list[str], matches: list[_Match], lex: Lexicon) -> list[_Match]:
    """The matches of a brand that stands at least twice before a service word."""
    service = _service_words(lex)
    signed: dict[str, list[_Match]] = defaultdict(list)
    for m in matches:
        if m.end < len(tokens) and tokens[m.end] in service:
            signed[m.key].append(m)
    return [ms[0] for ms in signed.values() if len(ms) >= 2]


def _domain_claim(f: Features, ctx: Context, idx: _Index) -> tuple[str, str, float] | None:
    """An address at a brand's own domain, at one imitating it, or at one with a brand's
    distinctive name glued into it, claims that brand.

    Not so for freemail (anyone can have an address there), for a vendor's shared domain, nor
    for mailing-list traffic, where the address is a person talking about other things."""
    addr = f.from_addr
    if addr is None or not addr.domain or f.mailing_list:
        return None
    if addr.registrable in ctx.lists.freemail or addr.domain in ctx.lists.freemail:
        return None
    if ctx.registry.esp_of(addr.domain) is not None or addr.registrable in ctx.lists.esp_domains:
        # A vendor's host that spells its customer's domain ("digital.costco.com.cname.cjm.
        # adobe.com"): the customer speaks, through the vendor.
        return _customer_of_vendor(addr.domain, addr.registrable, ctx)
    own = ctx.registry.sender_brand(addr.domain)
    if own:
        return own[0], own[1], 1.0
    imitation = classify(addr.domain, ctx.registry)
    if imitation is not None and (not imitation.weak or _country(imitation)):
        return imitation.brand, addr.domain, 1.0
    label = addr.registrable.split(".", 1)[0]
    glued = _glued_in_label(idx, label, MIN_GLUED + 1)
    if glued is not None and _LETTERS.fullmatch(label.replace("-", "")):
        return glued.key, addr.registrable, 0.85
    return None


def _customer_of_vendor(domain: str, vendor: str, ctx: Context) -> tuple[str, str, float] | None:
    """The brand whose domain a vendor's host spells in its subdomain, if any."""
    head = domain[: -len(vendor)].rstrip(".").split(".")[:10]
    for i in range(len(head) - 1):
        for size in (3, 2):
            spelled = ".".join(head[i : i + size])
            hit = ctx.registry.sender_brand(spelled)
            if hit is not None and hit[1] == spelled:
                return hit[0], spelled, 0.7
    return None


def _country(im: Imitation) -> bool:
    """The brand's own name under another country's domain (netflix.de for netflix.com):
    brands register their name in the countries they serve, so this speaks as the brand,
    and authentication, not the name, decides whether it is really theirs."""
    return im.technique == "tld-swap" and im.weak


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
