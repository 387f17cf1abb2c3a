"""Load and validate the marketplace profile: [marketplace] in brandgate.toml (on or off, which
relays, which rules a relay discounts) and config/marketplace.toml (relays, contact channels,
phrases), shipped data first, then each admin overlay extending it.

Every error goes into the loader's `Problems` collector, naming the file and the key, so that
one `brandgate check-config` reports them all.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from config.loader import (
    ConfigError,
    Problems,
    _check_keys,
    _domains,
    _strs,
    _table,
    flag,
    show,
    suggest,
)
from filters.marketplace import CATEGORIES, Channel, MarketplaceProfile, Phrase, Relay
from filters.registry import BrandRegistry
from filters.text import normalise

if TYPE_CHECKING:
    from config.loader import Reader, _ChangeLog, _Main

FILE = "marketplace.toml"
_TOP = {"relays", "channels", "phrases", "remove_phrases"}
_RELAY_LISTS = ("domains", "headers", "own_domains", "order_patterns")
_RELAY_KEYS = {"name", "brand", *_RELAY_LISTS}
_CHANNEL_KEYS = {"name", "words", "hosts"}
_MAIN_KEYS = {"enabled", "relays", "discount_rules"}


def _regex(text: str, file: Path, key: str) -> re.Pattern[str]:
    try:
        return re.compile(text, re.IGNORECASE)
    except re.error as exc:
        raise ConfigError(file, key, f"not a valid regular expression {show(text)}: {exc}") from exc


def _norm(phrase: str) -> str:
    return normalise(unicodedata.normalize("NFKC", phrase))


def _merge_table(
    acc: dict[str, tuple[dict[str, Any], Path]],
    tbl: dict[str, Any],
    file: Path,
    lists: tuple[str, ...],
) -> None:
    """Entries by key: a known key's lists grow, its scalars are replaced; new keys are added."""
    for key, spec in tbl.items():
        if not isinstance(spec, dict):
            acc[key] = (spec, file)
            continue
        base = acc.get(key)
        if base is None or not isinstance(base[0], dict):
            acc[key] = (dict(spec), file)
            continue
        merged = dict(base[0])
        for name, value in spec.items():
            old = merged.get(name)
            if name in lists and isinstance(value, list) and isinstance(old, list):
                merged[name] = list(dict.fromkeys([*old, *value]))
            else:
                merged[name] = value
        acc[key] = (merged, file)


def _entry(
    section: str, key: str, spec: Any, file: Path, keys: set[str], p: Problems
) -> tuple[str, str] | None:
    """(dotted key, display name) of a relay or channel table, or None when it is no table."""
    where = f"{section}.{key}"
    if not isinstance(spec, dict):
        p.report(file, where, "expected a table")
        return None
    _check_keys(spec, keys, file, where + ".", p)
    name = spec.get("name", key)
    if not isinstance(name, str) or not name.strip():
        p.report(file, where + ".name", f"expected a name, got {show(name)}")
        name = key
    return where, name.strip()


def _brand_key(
    spec: dict[str, Any], file: Path, where: str, reg: BrandRegistry, p: Problems
) -> str:
    brand = spec.get("brand", "")
    if not isinstance(brand, str):
        p.report(file, where + ".brand", f"expected a brand key, got {show(brand)}")
        return ""
    if brand and brand not in reg.brands:
        hint = suggest(brand, reg.brands)
        p.report(file, where + ".brand", f"unknown brand {show(brand)}{hint}")
        return ""
    return brand


def _headers(
    spec: dict[str, Any], file: Path, where: str, p: Problems
) -> tuple[tuple[str, re.Pattern[str] | None], ...]:
    """ "Name" (present) or "Name: regex" (a value matching it)."""
    key = where + ".headers"
    out = []
    for item in p.attempt(_strs, spec.get("headers", []), file, key, default=()):
        head, _, value = item.partition(":")
        head, value = head.strip(), value.strip()
        if not head or " " in head:
            p.report(file, key, f'expected "Name" or "Name: regex", got {show(item)}')
            continue
        pattern = p.attempt(_regex, value, file, key, default=None) if value else None
        if value and pattern is None:
            continue
        out.append((head.lower(), pattern))
    return tuple(out)


def _relay(key: str, spec: Any, file: Path, reg: BrandRegistry, p: Problems) -> Relay | None:
    entry = _entry("relays", key, spec, file, _RELAY_KEYS, p)
    if entry is None:
        return None
    where, name = entry
    brand = _brand_key(spec, file, where, reg, p)
    found = p.attempt(_domains, spec.get("domains", []), file, where + ".domains", default=())
    own = p.attempt(_domains, spec.get("own_domains", []), file, where + ".own_domains", default=())
    headers = _headers(spec, file, where, p)
    key_orders = where + ".order_patterns"
    texts = p.attempt(_strs, spec.get("order_patterns", []), file, key_orders, default=())
    orders = [x for t in texts if (x := p.attempt(_regex, t, file, key_orders, default=None))]
    if not found and not headers:
        p.report(file, where, "a relay needs domains or headers to be recognised by")
        return None
    return Relay(key, name, brand, found, headers, own, tuple(orders))


def _channel(key: str, spec: Any, file: Path, p: Problems) -> Channel | None:
    entry = _entry("channels", key, spec, file, _CHANNEL_KEYS, p)
    if entry is None:
        return None
    where, name = entry
    words = p.attempt(_strs, spec.get("words", []), file, where + ".words", default=())
    hosts = p.attempt(_domains, spec.get("hosts", []), file, where + ".hosts", default=())
    normed = tuple(dict.fromkeys(n for w in words if (n := _norm(w))))
    return Channel(key, name, normed, hosts)


def _phrases(
    doc: dict[str, Any], file: Path, p: Problems, acc: dict[tuple[str, str], Phrase]
) -> None:
    for table in ("phrases", "remove_phrases"):
        for lang, cats in p.attempt(_table, doc, table, file, default={}).items():
            if not isinstance(cats, dict):
                p.report(file, f"{table}.{lang}", "expected a table of category = [phrases]")
                continue
            _check_keys(cats, set(CATEGORIES), file, f"{table}.{lang}.", p)
            for cat, items in cats.items():
                if cat not in CATEGORIES:
                    continue
                for phrase in p.attempt(_strs, items, file, f"{table}.{lang}.{cat}", default=()):
                    norm = _norm(phrase)
                    if not norm:
                        continue
                    if table == "phrases":
                        acc[(norm, cat)] = Phrase(norm, cat, lang)
                    else:
                        acc.pop((norm, cat), None)


def load_marketplace(
    m: _Main, dirs: list[Path], read: Reader, registry: BrandRegistry, log: _ChangeLog
) -> MarketplaceProfile:
    """The profile in force: the data of every marketplace.toml, the switches of [marketplace]."""
    p = m.p
    relays: dict[str, tuple[dict[str, Any], Path]] = {}
    channels: dict[str, tuple[dict[str, Any], Path]] = {}
    phrases: dict[tuple[str, str], Phrase] = {}
    for root in dirs:
        file = root / FILE
        if not file.is_file():
            continue
        doc = p.attempt(read, file, default={})
        _check_keys(doc, _TOP, file, "", p)
        log.touch(file)
        before = (len(relays), len(channels), len(phrases))
        _merge_table(relays, p.attempt(_table, doc, "relays", file, default={}), file, _RELAY_LISTS)
        _merge_table(
            channels, p.attempt(_table, doc, "channels", file, default={}), file, ("words", "hosts")
        )
        _phrases(doc, file, p, phrases)
        after = (len(relays), len(channels), len(phrases))
        names = ("relays", "channels", "phrases")
        grown = [f"{n} +{a - b}" for n, a, b in zip(names, after, before, strict=True) if a > b]
        log.add(file, f"marketplace: {', '.join(grown)}" if grown else "")
    built = {k: r for k, (spec, f) in relays.items() if (r := _relay(k, spec, f, registry, p))}
    chans = tuple(c for k, (spec, f) in channels.items() if (c := _channel(k, spec, f, p)))
    return _switches(m, built, chans, tuple(phrases.values()))


def _switches(
    m: _Main, relays: dict[str, Relay], channels: tuple[Channel, ...], phrases: tuple[Phrase, ...]
) -> MarketplaceProfile:
    tbl = m.table("marketplace")
    m.keys(tbl, _MAIN_KEYS, "marketplace.")
    enabled = m.check(flag, "marketplace.enabled", tbl.get("enabled", False), default=False)
    key = "marketplace.relays"
    wanted = m.check(_strs, key, tbl.get("relays", []), default=())
    for name in wanted:
        if name not in relays:
            m.p.report(m.file(key), key, f"unknown relay {show(name)}{suggest(name, relays)}")
    chosen = tuple(r for k, r in relays.items() if not wanted or k in wanted)
    if enabled and not chosen:
        m.p.report(
            m.file("marketplace.enabled"), "marketplace.enabled", "on, but no relay is defined"
        )
    default = MarketplaceProfile().discount_rules
    discount = m.check(
        _strs,
        "marketplace.discount_rules",
        tbl.get("discount_rules", list(default)),
        default=default,
    )
    return MarketplaceProfile(enabled, chosen, channels, phrases, tuple(discount))
