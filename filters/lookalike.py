"""Does a domain imitate a brand, and how?

`classify(host, registry)` answers for one host (a From domain, Reply-To, Return-Path, DKIM d=,
or a link host). The techniques, by stable name:

- "homoglyph": an IDN label whose skeleton (confusables and accents folded) spells a brand.
- "typo-insertion", "typo-omission", "typo-transposition", "typo-substitution": one edit away
  from a brand token of 5+ characters (substitutions: look-alike pairs such as rn/m, 0/o, 1/l,
  and keyboard neighbours in tokens of 6+).
- "combosquat": the brand token plus words or hyphens in the registrable label
  (paypal-secure-login.com, amazonrewards.shop).
- "subdomain": the brand's domain or token as a subdomain of something else
  (paypal.com.secure-login.example, www-paypal-com.evil.net).
- "tld-swap": the brand's label under another public suffix (paypal.co).

False positives are the main risk, so matching is deliberately narrow: a token inside a longer
word counts only when the rest of the word is made of known lure words ("amazonrewards" yes,
"pineapple" no); tokens shorter than 5 characters never take typos and must start their word
("ups" is not in "groups"); edit distance 2 is never used. A domain the registry lists for any
brand (or a subdomain of one) is never an imitation.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import tldextract

from filters.domains import is_ip, split, to_ascii, to_unicode
from filters.registry import BrandRegistry
from filters.text import skeleton


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


TECHNIQUES: tuple[str, ...] = (
    "homoglyph",
    "typo-insertion",
    "typo-omission",
    "typo-transposition",
    "typo-substitution",
    "combosquat",
    "subdomain",
    "tld-swap",
)

# Words that phishers glue to a brand token ("paypal-secure-login", "amazonrewards"). A token
# inside a longer run of letters counts only when the rest of the run is made of these words.
# Kept here rather than in config/lists.toml because Lists has no field for it yet; the lead
# may move it to data later.
COMBO_WORDS: frozenset[str] = _wordset(
    """
    secure security safe trust trusted login logon signin sign auth verify verification verified
    confirm confirmation validate validation account accounts update updates support service
    services help helpdesk desk care assist assistance contact rewards reward bonus gift gifts
    giftcard card cards refund refunds prime pay payment payments billing bill invoice id online
    web app apps mail email info customer customers client clients center centre team alert
    alerts notice notices notification notify message messages official portal access user users
    member members membership my www wallet bank banking points prize prizes win winner lucky
    offer offers promo promos deal deals sale sales free cash cashback claim unlock unlocked
    locked restore recovery recover reset check status track tracking trace parcel parcels
    package packages delivery deliveries express shipping shipment ship post postal fee fees
    customs pending order orders store shop shopping cloud secured protect protection kunden
    konto sicherheit paket sendung zahlung gewinn conta cliente clientes seguro seguranca
    atualizar atualizacao pagamento premio premios promocao entrega encomenda rastreio compte
    colis remboursement securite cuenta pago seguridad envio taxa taxas frete fatura rechnung
    versand livraison facture
    """
)

# Keyboard neighbours (QWERTY) and visual pairs: the substitutions people make by accident or
# that read as the original. Substitutions into a 5-letter label must be one of these.
_KEYBOARD_ROWS = ("1234567890", "qwertyuiop", "asdfghjkl", "zxcvbnm")
_VISUAL_PAIRS = frozenset(
    {
        frozenset(p)
        for p in ("0o", "1l", "1i", "li", "5s", "3e", "4a", "8b", "6g", "9g", "uv", "nm", "ce")
    }
)
_SEPARATORS = frozenset("-0123456789")
_WORD_SPLIT = re.compile(r"[.\-]+")
_PIECE_SPLIT = re.compile(r"[-0-9]+")
_ASCII_LABEL = re.compile(r"[a-z0-9-]+")
_PORT = re.compile(r":\d+$")
_LEET = str.maketrans({"0": "o", "1": "l", "3": "e", "4": "a", "5": "s"})
_VISUAL_HINT = re.compile(r"[01345]|rn|vv")
_MAYBE_IP = re.compile(r"[0-9.]+|\[?[0-9a-f:.]+\]?")
# Country codes registered for their likeness to .com, not for the country.
_COM_LOOKALIKES = frozenset({"co", "cm", "om"})
_LEGACY_GTLDS = frozenset({"com", "net", "org", "edu", "gov", "mil", "int"})

MIN_TYPO_LEN = 5  # typos of shorter labels are mostly other words
MIN_SWAP_LEN = 4  # shortest domain label (not token) a tld-swap may imitate
SHORT_TOKEN = 5  # tokens shorter than this must start their word in a combosquat


@dataclass(frozen=True, slots=True)
class Imitation:
    brand: str  # registry key
    technique: str  # one of TECHNIQUES
    imitated: str  # the brand domain (or token, when no domain carries it) imitated
    detail: str  # short human phrase: how the host imitates it
    lure: str = ""  # lure word glued to the brand ("secure", "rewards"), "" when none
    weak: bool = False  # bare token as a subdomain label, tld-swap under .net or a country
    # code: only a hint, which the check counts under a claim of the brand or on free hosting


def _neighbours() -> frozenset[frozenset[str]]:
    pairs: set[frozenset[str]] = set()
    for row in _KEYBOARD_ROWS:
        for a, b in itertools.pairwise(row):
            pairs.add(frozenset((a, b)))
    # Letters above/below each other on adjacent rows (offset layout: same and next column).
    for upper, lower in itertools.pairwise(_KEYBOARD_ROWS[1:]):
        for i, ch in enumerate(lower):
            for j in (i, i + 1):
                if j < len(upper):
                    pairs.add(frozenset((ch, upper[j])))
    return frozenset(pairs)


_KEYBOARD_PAIRS = _neighbours()


@lru_cache(maxsize=8192)
def segment(run: str) -> tuple[str, ...] | None:
    """`run` split entirely into COMBO_WORDS (fewest words), or None when it cannot be."""
    if not run:
        return ()
    best: list[tuple[str, ...] | None] = [None] * (len(run) + 1)
    best[0] = ()
    for end in range(1, len(run) + 1):
        for start in range(max(0, end - 16), end):
            prev = best[start]
            word = run[start:end]
            if prev is not None and word in COMBO_WORDS:
                cand = (*prev, word)
                cur = best[end]
                if cur is None or len(cand) < len(cur):
                    best[end] = cand
    return best[len(run)]


def _edit1(x: str, t: str) -> tuple[str, str] | None:
    """(technique, detail) when `x` is one edit away from `t`, else None."""
    if len(x) == len(t) + 1:
        i = next((k for k in range(len(t)) if x[k] != t[k]), len(t))
        if x[:i] + x[i + 1 :] == t:
            return "typo-insertion", f"adds {x[i]!r} to {t}"
        return None
    if len(x) == len(t) - 1:
        i = next((k for k in range(len(x)) if x[k] != t[k]), len(x))
        if t[:i] + t[i + 1 :] == x:
            return "typo-omission", f"drops {t[i]!r} from {t}"
        return None
    if len(x) != len(t):
        return None
    diffs = [k for k in range(len(t)) if x[k] != t[k]]
    if len(diffs) == 1:
        a, b = x[diffs[0]], t[diffs[0]]
        pair = frozenset((a, b))
        if pair in _VISUAL_PAIRS:
            return "typo-substitution", f"{a!r} for {b!r} in {t} (look-alike)"
        if pair in _KEYBOARD_PAIRS:
            return "typo-substitution", f"{a!r} for {b!r} in {t} (keyboard neighbour)"
        # Any other letter: mostly another word or name (nypost/nzpost, lindows/windows).
        # Bit flips are left out on purpose: they model memory errors in DNS lookups, not
        # readers, and half the alphabet is one bit from a given letter (mycell/mybell).
        return None
    if len(diffs) == 2 and diffs[1] == diffs[0] + 1:
        i = diffs[0]
        if x[i] == t[i + 1] and x[i + 1] == t[i]:
            return "typo-transposition", f"swaps {t[i : i + 2]!r} in {t}"
    return None


def _plausible_typo(x: str, t: str, technique: str, detail: str) -> bool:
    """Typos that usually spell another real word are dropped."""
    if x in COMBO_WORDS:
        return False  # a lure word of its own ("trust" is not a typo of "truist")
    if technique == "typo-insertion" and x[:-1] == t and x[-1] in "es":
        return False  # inflections and surnames: "apples", "chases", "schwabe"
    if technique == "typo-omission" and t[:-1] == x and t[-1] in "es":
        return False  # the same the other way round: "window" is not a typo of "windows"
    if technique == "typo-insertion" and (x[0].isdigit() or x[-1].isdigit()):
        return False  # "ryanair2": a token plus digits, judged as a combosquat
    if technique != "typo-substitution" or detail.endswith("(look-alike)"):
        return True
    # Keyboard slips into a five-letter token, or in the first letter that readers look at,
    # mostly give other words or names (chose/chase, hoder/hofer).
    return len(t) > MIN_TYPO_LEN and x[0] == t[0]


def _read_visually(word: str) -> str:
    """An ASCII label or word read the way it looks (the ASCII part of text.skeleton, which
    is too slow to run on every host), hyphens kept."""
    return word.translate(_LEET).replace("rn", "m").replace("vv", "w")


def _visual_variants(label: str) -> list[str]:
    """ASCII label read the way it looks: 0->o, 1->l (or i), 5->s, rn->m, vv->w..., keeping
    hyphens. Only variants that differ from the label."""
    if not _VISUAL_HINT.search(label):
        return []
    out: list[str] = []
    for src in (label, label.replace("1", "i")):
        folded = _read_visually(src)
        if folded != label and folded not in out:
            out.append(folded)
    return out


def _homoglyph_fold(unicode_label: str) -> str | None:
    """Skeleton of an IDN label with hyphens kept, or None when it does not fold to Latin
    (an IDN in another script, such as a Chinese domain, imitates nothing Latin)."""
    folded = "-".join(skeleton(piece) for piece in unicode_label.split("-"))
    return folded if folded and _ASCII_LABEL.fullmatch(folded) else None


@dataclass(frozen=True, slots=True)
class _Combo:
    brand: str
    token: str
    lure: tuple[str, ...]
    spelled: str  # the brand domain spelled out in the label ("paypal-com"), "" when none


class LookalikeIndex:
    """Everything classify() needs, precomputed once per registry."""

    def __init__(self, registry: BrandRegistry) -> None:
        self.registry = registry
        self.tokens: dict[str, str] = {}  # token -> brand key
        self.labels: dict[str, str] = {}  # brand domain label (and token) -> brand key
        self.imitated: dict[str, str] = {}  # label/token -> the brand domain carrying it
        self.domains: dict[str, str] = {}  # brand domain (every entry) -> brand key
        for brand in registry.brands.values():
            for tok in brand.tokens:
                self.tokens.setdefault(tok, brand.key)
                self.labels.setdefault(tok, brand.key)
            for dom in (*brand.sender_domains, *brand.link_domains):
                self.domains.setdefault(dom, brand.key)
            for dom in brand.sender_domains:
                sub, label, suffix = split(dom)
                # Only whole registrable sender domains lend their label, and only when it
                # carries one of the brand's tokens: an ESP arrangement ("brand.esp.example")
                # must not make "esp" a brand label, nor canada.ca make "canada" one; link
                # domains (CDNs such as mlcdn.com.br) are not names people recognise.
                if sub or not label or not suffix:
                    continue
                self.imitated.setdefault(label, dom)
                if any(tok in label for tok in brand.tokens):
                    self.labels.setdefault(label, brand.key)
        for tok, key in self.tokens.items():
            brand = registry.brands[key]
            for dom in brand.sender_domains:
                if split(dom)[1] == tok:
                    self.imitated.setdefault(tok, dom)
                    break
        # Substring search: the first characters of a token give the lengths worth trying.
        self.prefix_len = min((len(t) for t in self.tokens), default=1)
        by_prefix: dict[str, set[int]] = {}
        for tok in self.tokens:
            by_prefix.setdefault(tok[: self.prefix_len], set()).add(len(tok))
        self.by_prefix = {k: sorted(v, reverse=True) for k, v in by_prefix.items()}
        self.max_domain_words = max((len(_WORD_SPLIT.split(d)) for d in self.domains), default=0)
        # Symmetric-delete neighbourhood: every typo target and its one-deletion variants.
        # Typos are taken of curated tokens only: domain labels such as "hpsmart" sit one
        # letter from ordinary names ("hipsmart").
        self.deletes: dict[str, set[str]] = {}
        for label in self.tokens:
            if len(label) >= MIN_TYPO_LEN:
                for key in {label, *(_deletions(label))}:
                    self.deletes.setdefault(key, set()).add(label)
        self.classify = lru_cache(maxsize=4096)(self._classify)

    # ------------------------------------------------------------------ building blocks

    def _target(self, label: str) -> str:
        return self.imitated.get(label, label)

    def _typo(self, x: str) -> tuple[str, str, str] | None:
        """(target label, technique, detail) for the closest one-edit typo of a brand label."""
        if len(x) < MIN_TYPO_LEN:
            return None
        cands: set[str] = set()
        for key in (x, *_deletions(x)):
            cands |= self.deletes.get(key, set())
        for target in sorted(cands, key=lambda t: (-len(t), t)):
            if target == x:
                continue
            hit = _edit1(x, target)
            if hit and _plausible_typo(x, target, *hit):
                return target, hit[0], hit[1]
        return None

    def _combos(self, label: str) -> list[_Combo]:
        """Brand tokens sitting at a word boundary of `label`, best first."""
        found: list[_Combo] = []
        n = len(label)
        p = self.prefix_len
        for i in range(n - p + 1):
            for k in self.by_prefix.get(label[i : i + p], ()):
                if i + k > n:
                    continue
                tok = label[i : i + k]
                key = self.tokens.get(tok)
                if key is None or tok == label:
                    continue
                combo = self._accept(label, i, i + k, tok, key)
                if combo is not None:
                    found.append(combo)
        found.sort(key=lambda c: (not c.lure, -len(c.token)))
        return found

    def _accept(self, label: str, start: int, end: int, tok: str, key: str) -> _Combo | None:
        left_start = start
        while left_start > 0 and label[left_start - 1] not in _SEPARATORS:
            left_start -= 1
        right_end = end
        while right_end < len(label) and label[right_end] not in _SEPARATORS:
            right_end += 1
        left, right = label[left_start:start], label[end:right_end]
        # A token glued to other letters needs those letters to be lure words; a short token
        # must also start its word ("mailing" is not ING, "groups" is not UPS).
        if left and len(tok) < SHORT_TOKEN:
            return None
        left_words, right_words = segment(left), segment(right)
        if left_words is None or right_words is None:
            return None
        lure = [*left_words, *right_words]
        rest = label[:left_start] + "-" + label[right_end:]
        for piece in _PIECE_SPLIT.split(rest):
            words = segment(piece) if piece else None
            if words:
                lure.extend(words)
        spelled = ""
        dom = self._target(tok)
        if dom != tok and dom.replace(".", "-") in label:
            spelled = dom
        return _Combo(key, tok, tuple(dict.fromkeys(lure)), spelled)

    def _spelled_domain(self, words: list[str]) -> tuple[int, str] | None:
        """(start word index, brand domain) when consecutive words spell a brand domain."""
        for i in range(len(words)):
            for k in range(2, self.max_domain_words + 1):
                if i + k > len(words):
                    break
                dom = ".".join(words[i : i + k])
                if dom in self.domains:
                    return i, dom
        return None

    # ------------------------------------------------------------------ classification

    def _classify(self, host: str) -> Imitation | None:
        host = _PORT.sub("", host.strip().lower().rstrip("."))
        if not host or (_MAYBE_IP.fullmatch(host) and is_ip(host)):
            return None
        host = to_ascii(host)
        reg = self.registry
        if reg.sender_brand(host) or reg.link_brand(host):
            return None
        sub, label, suffix = split(host)
        if not label or not suffix:
            return None
        if not _known_suffix(suffix):
            # Not a listed suffix (.example, .test, a typo like .comm): only the subdomain trick
            # reads the same there ("paypal.com.secure-login.example"); a made-up TLD cannot
            # carry a registered typo or swap.
            return self._subdomain(sub, label, suffix)
        return self._label(label, suffix) or self._subdomain(sub, label, suffix)

    def _label(self, label: str, suffix: str) -> Imitation | None:
        """The registrable label: homoglyph, tld-swap, typo, combosquat, in that order."""
        registrable = f"{label}.{suffix}"
        if label.startswith("xn--"):
            folded = _homoglyph_fold(to_unicode(label))
            if folded is None:
                return None
            return self._exact_or_combo(folded, "homoglyph", f"{to_unicode(label)} spells")
        key = self.labels.get(label)
        if key is not None:
            dom = self.imitated.get(label)
            # A token no brand domain carries (a freemail name like "gmail" is kept out of the
            # brand's sender domains) has nothing to swap the suffix of; labels of two or three
            # letters (td.com, 53.com) are other people's names under other suffixes.
            if dom is None or (len(label) < MIN_SWAP_LEN and label not in self.tokens):
                return None
            # Brands hold their name under .net/.org and most country codes (verizon.net,
            # yahoo.es, ikea.cn) and registries never list them all: there the swap is only a
            # hint. New generic suffixes (.shop, .top, .xyz) are where phishers register.
            return Imitation(
                key,
                "tld-swap",
                dom,
                f"{label} under .{suffix} instead of {dom}",
                weak=_owned_suffix(suffix),
            )
        variants = _visual_variants(label)
        for variant in variants:
            key = self.labels.get(variant)
            if key is not None:
                dom = self._target(variant)
                return Imitation(key, "typo-substitution", dom, f"{label} reads as {variant}")
        typo = self._typo(label)
        if typo is not None:
            target, technique, detail = typo
            return Imitation(self.labels[target], technique, self._target(target), detail)
        combos = self._combos(label)
        if combos:
            return self._combo_imitation(combos[0], registrable, "combosquat")
        # Only now the visual reading with words around it: "amazon24" is a plain combosquat
        # above, not "amazon2a".
        for variant in variants:
            hit = self._exact_or_combo(variant, "typo-substitution", f"{label} reads as")
            if hit is not None:
                return hit
        return self._piece_typo(label)

    def _exact_or_combo(self, folded: str, technique: str, lead: str) -> Imitation | None:
        plain = folded.replace("-", "")
        for cand in (folded, plain):
            key = self.labels.get(cand)
            if key is not None:
                return Imitation(key, technique, self._target(cand), f"{lead} {cand}")
        combos = self._combos(folded)
        if combos:
            c = combos[0]
            extra = f" ({c.token} plus {', '.join(c.lure)})" if c.lure else ""
            return Imitation(
                c.brand,
                technique,
                self._target(c.token),
                f"{lead} {folded}{extra}",
                lure=c.lure[0] if c.lure else "",
            )
        return None

    def _combo_imitation(self, c: _Combo, registrable: str, technique: str) -> Imitation:
        if c.spelled:
            detail = f"spells {c.spelled} inside {registrable}"
            return Imitation(c.brand, technique, c.spelled, detail, lure=c.spelled)
        rest = registrable.split(".", 1)[0].replace(c.token, "", 1).strip("-")
        extra = f" plus {', '.join(c.lure)}" if c.lure else f" plus {rest!r}"
        return Imitation(
            c.brand,
            technique,
            self._target(c.token),
            f"{c.token}{extra} in {registrable}",
            lure=c.lure[0] if c.lure else "",
        )

    def _piece_typo(self, label: str) -> Imitation | None:
        """A typo of a brand in one hyphen piece, next to a lure word ("amazom-rewards")."""
        pieces = [p for p in _PIECE_SPLIT.split(label) if p]
        if len(pieces) < 2:
            return None
        for i, piece in enumerate(pieces):
            typo = self._typo(piece)
            if typo is None:
                continue
            others = [w for j, p in enumerate(pieces) if j != i for w in (segment(p) or ())]
            if others:
                target, technique, detail = typo
                return Imitation(
                    self.labels[target],
                    technique,
                    self._target(target),
                    f"{detail}, with {', '.join(others)}",
                    lure=others[0],
                )
        return None

    def _subdomain(self, sub: str, label: str, suffix: str) -> Imitation | None:
        """The brand's domain or token placed left of an unrelated registrable domain."""
        registrable = f"{label}.{suffix}"
        if not sub:
            return None
        sub_labels = [_fold_idn(lab) for lab in sub.split(".") if lab]
        sub_words = [w for lab in sub_labels for w in _WORD_SPLIT.split(lab) if w]
        words = sub_words + [w for w in _WORD_SPLIT.split(label) if w]
        # Raw words first, then read visually ("paypa1.com.evil.net").
        spelled = self._spelled_domain(words)
        if spelled is None:
            visual = [_read_visually(w) for w in words]
            if visual != words:
                spelled = self._spelled_domain(visual)
        if spelled is not None:
            start, dom = spelled
            technique = "subdomain" if start < len(sub_words) else "combosquat"
            return Imitation(
                self.domains[dom],
                technique,
                dom,
                f"puts {dom} in a subdomain of {registrable}",
                lure=dom,
            )
        weak: Imitation | None = None
        for lab in sub_labels:
            key = self.tokens.get(lab)
            if key is not None:
                weak = weak or Imitation(
                    key,
                    "subdomain",
                    self._target(lab),
                    f"{lab} as a subdomain of {registrable}",
                    weak=True,
                )
                continue
            combos = self._combos(lab)
            if not combos:
                continue
            c = combos[0]
            detail = f"{lab} ({c.token}{' plus ' + ', '.join(c.lure) if c.lure else ''})"
            hit = Imitation(
                c.brand,
                "subdomain",
                self._target(c.token),
                f"{detail} as a subdomain of {registrable}",
                lure=c.lure[0] if c.lure else "",
                weak=not c.lure,
            )
            if not hit.weak:
                return hit
            weak = weak or hit
        return weak


def _owned_suffix(suffix: str) -> bool:
    """A suffix under which brands usually hold their own name: the legacy generic ones
    (verizon.net, comcast.net) and country codes (.es, .co.uk, .com.au, IDN ccTLDs), except
    the country codes sold as look-alikes of .com."""
    last = suffix.rsplit(".", 1)[-1]
    if suffix in _COM_LOOKALIKES:
        return False
    return last in _LEGACY_GTLDS or len(last) == 2 or last.startswith("xn--")


@lru_cache(maxsize=1)
def _suffix_list() -> frozenset[str]:
    # The bundled snapshot only (no download), as everywhere in brandgate.
    return frozenset(tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None).tlds)


@lru_cache(maxsize=4096)
def _known_suffix(suffix: str) -> bool:
    known = _suffix_list()
    return suffix in known or to_unicode(suffix) in known


def _deletions(word: str) -> Iterable[str]:
    return (word[:i] + word[i + 1 :] for i in range(len(word)))


def _fold_idn(label: str) -> str:
    if label.startswith("xn--"):
        return _homoglyph_fold(to_unicode(label)) or label
    return label


_INDEXES: dict[int, LookalikeIndex] = {}
_LOCK = threading.Lock()


def index_for(registry: BrandRegistry) -> LookalikeIndex:
    """The index of `registry`, built on first use. Keyed by identity: a registry is built once
    per configuration load and not edited afterwards."""
    idx = _INDEXES.get(id(registry))
    if idx is not None and idx.registry is registry:
        return idx
    with _LOCK:
        idx = _INDEXES.get(id(registry))
        if idx is None or idx.registry is not registry:
            if len(_INDEXES) >= 8:  # config reloads: keep memory bounded
                _INDEXES.clear()
            idx = LookalikeIndex(registry)
            _INDEXES[id(registry)] = idx
        return idx


def classify(host: str, registry: BrandRegistry) -> Imitation | None:
    """How `host` imitates a brand of `registry`, or None when it does not."""
    return index_for(registry).classify(host)


def country_site(host: str, brand: str, registry: BrandRegistry) -> str | None:
    """The brand domain whose name `host` carries under a country code or legacy suffix
    (netflix.de for netflix.com), when the brand is `brand`: most likely the brand's own
    site, which the registry cannot list in full. Authentication, not the name, decides."""
    im = classify(host, registry)
    if im is not None and im.brand == brand and im.technique == "tld-swap" and im.weak:
        return im.imitated
    return None
