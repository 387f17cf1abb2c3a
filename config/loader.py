"""Load and validate brandgate's configuration: shipped defaults plus an admin overlay.

Every error names the file and the key (``config/brands/retail.toml: brands.amazon.names:
expected a list of strings``) so that `brandgate check-config` tells an admin exactly what to fix.
"""

from __future__ import annotations

import tomllib
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from filters.registry import Brand, BrandRegistry, Lexicon, Lists, LureTerm
from filters.text import normalise, words_skeleton
from filters.types import OVERRUN_ACTIONS, VERDICTS, Limits

SHIPPED_DIR = Path(__file__).resolve().parent
MAIN_FILE = "brandgate.toml"


class ConfigError(Exception):
    def __init__(self, file: Path | str, key: str, problem: str) -> None:
        super().__init__(f"{file}: {key}: {problem}")
        self.file = str(file)
        self.key = key
        self.problem = problem


@dataclass(frozen=True, slots=True)
class EngineSettings:
    trusted_authserv_ids: tuple[str, ...] = ()
    verify_dkim: bool = False
    dns_timeout: float = 3.0
    scan_timeout: float = 20.0


@dataclass(frozen=True, slots=True)
class ScoringSettings:
    unclaimed_factor: float = 0.5
    unclaimed_exempt: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RuleWeight:
    weight: float
    group: str


@dataclass(frozen=True, slots=True)
class Config:
    engine: EngineSettings
    limits: Limits
    thresholds: dict[str, float]  # verdict -> minimum score ("tag", "quarantine", "reject")
    groups: dict[str, float]  # group -> cap
    rules: dict[str, RuleWeight]
    registry: BrandRegistry
    lists: Lists
    lexicon: Lexicon
    scoring: ScoringSettings = ScoringSettings()
    gateway: dict[str, Any] = field(default_factory=dict)  # validated by gateway.settings
    sources: tuple[str, ...] = ()  # files read, in order (for logs and check-config)


# --------------------------------------------------------------------------- TOML helpers


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "(syntax)", str(exc)) from exc
    except OSError as exc:
        raise ConfigError(path, "(file)", exc.strerror or str(exc)) from exc


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _table(doc: Mapping[str, Any], key: str, file: Path, where: str = "") -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(file, f"{where}{key}", "expected a table")
    return value


# Validators shared with gateway/settings.py: each names the file and key in its error.


def number(value: Any, file: Path | str, key: str, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(file, key, f"expected a number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(file, key, f"must be at least {minimum}, got {value!r}")
    return float(value)


def whole(value: Any, file: Path | str, key: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(file, key, f"expected a whole number, got {value!r}")
    if value < minimum:
        raise ConfigError(file, key, f"must be at least {minimum}, got {value!r}")
    return value


def flag(value: Any, file: Path | str, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(file, key, f"expected true or false, got {value!r}")
    return value


def _strs(value: Any, file: Path, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(file, key, "expected a list of strings")
    return tuple(value)


def _domains(value: Any, file: Path, key: str) -> tuple[str, ...]:
    out = []
    for item in _strs(value, file, key):
        dom = item.strip().lower().rstrip(".")
        if not dom or " " in dom or "/" in dom or "@" in dom:
            raise ConfigError(file, key, f"not a domain: {item!r}")
        try:
            dom = dom.encode("idna").decode("ascii") if not dom.isascii() else dom
        except UnicodeError as exc:
            raise ConfigError(file, key, f"not a valid domain: {item!r}") from exc
        out.append(dom)
    return tuple(dict.fromkeys(out))


def _check_keys(table: Mapping[str, Any], allowed: set[str], file: Path, where: str) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(
                file, f"{where}{key}", f"unknown key (known: {', '.join(sorted(allowed))})"
            )


# --------------------------------------------------------------------------- main file

_ENGINE_KEYS = {"trusted_authserv_ids", "verify_dkim", "dns_timeout", "scan_timeout"}
_TOP_KEYS = {"engine", "limits", "thresholds", "groups", "rules", "gateway", "scoring"}


def _scoring(doc: dict[str, Any], file: Path, groups: dict[str, float]) -> ScoringSettings:
    tbl = _table(doc, "scoring", file)
    _check_keys(tbl, {"unclaimed_factor", "unclaimed_exempt"}, file, "scoring.")
    factor = number(tbl.get("unclaimed_factor", 0.5), file, "scoring.unclaimed_factor", 0.0)
    if factor > 1:
        raise ConfigError(file, "scoring.unclaimed_factor", "must be between 0 and 1")
    exempt = _strs(tbl.get("unclaimed_exempt", []), file, "scoring.unclaimed_exempt")
    for g in exempt:
        if g not in groups:
            raise ConfigError(file, "scoring.unclaimed_exempt", f"unknown group {g!r}")
    return ScoringSettings(factor, exempt)


def _engine(doc: dict[str, Any], file: Path) -> EngineSettings:
    tbl = _table(doc, "engine", file)
    _check_keys(tbl, _ENGINE_KEYS, file, "engine.")
    return EngineSettings(
        trusted_authserv_ids=tuple(
            s.lower()
            for s in _strs(tbl.get("trusted_authserv_ids", []), file, "engine.trusted_authserv_ids")
        ),
        verify_dkim=flag(tbl.get("verify_dkim", False), file, "engine.verify_dkim"),
        dns_timeout=number(tbl.get("dns_timeout", 3.0), file, "engine.dns_timeout", 0.1),
        scan_timeout=number(tbl.get("scan_timeout", 20.0), file, "engine.scan_timeout", 0.1),
    )


# Upper bounds where a standard sets one: a longer host is no DNS name (RFC 1035).
_LIMIT_MAX = {"max_host_chars": 253, "max_host_labels": 127}


def _limit(key: str, value: Any, file: Path) -> int | str:
    where = f"limits.{key}"
    if key == "on_overrun":
        if value not in OVERRUN_ACTIONS:
            raise ConfigError(
                file, where, f"expected one of {', '.join(OVERRUN_ACTIONS)}, got {value!r}"
            )
        return str(value)
    number = whole(value, file, where, 1)
    top = _LIMIT_MAX.get(key)
    if top is not None and number > top:
        raise ConfigError(file, where, f"must be at most {top}, got {number!r}")
    return number


def _limits(doc: dict[str, Any], file: Path) -> Limits:
    tbl = _table(doc, "limits", file)
    allowed = set(Limits.__dataclass_fields__)
    _check_keys(tbl, allowed, file, "limits.")
    return Limits(**{k: _limit(k, v, file) for k, v in tbl.items()})  # type: ignore[arg-type]


def _thresholds(doc: dict[str, Any], file: Path) -> dict[str, float]:
    tbl = _table(doc, "thresholds", file)
    names = [v for v in VERDICTS if v != "pass"]
    _check_keys(tbl, set(names), file, "thresholds.")
    out = {}
    for name in names:
        if name not in tbl:
            raise ConfigError(file, f"thresholds.{name}", "missing")
        out[name] = number(tbl[name], file, f"thresholds.{name}")
    if not out["tag"] <= out["quarantine"] <= out["reject"]:
        raise ConfigError(file, "thresholds", "must rise: tag <= quarantine <= reject")
    return out


def _rules(doc: dict[str, Any], file: Path, groups: dict[str, float]) -> dict[str, RuleWeight]:
    out = {}
    for rule, spec in _table(doc, "rules", file).items():
        where = f"rules.{rule}"
        if not isinstance(spec, dict):
            raise ConfigError(file, where, "expected a table with weight and group")
        _check_keys(spec, {"weight", "group"}, file, where + ".")
        group = spec.get("group")
        if not isinstance(group, str) or group not in groups:
            raise ConfigError(file, where + ".group", f"unknown group {group!r}")
        out[rule] = RuleWeight(number(spec.get("weight"), file, where + ".weight"), group)
    return out


# --------------------------------------------------------------------------- brands

_BRAND_KEYS = {
    "name",
    "category",
    "names",
    "context_names",
    "tokens",
    "sender_domains",
    "link_domains",
    "source",
    "notes",
    "enabled",
}


def _brand(key: str, spec: Any, file: Path) -> Brand | None:
    where = f"brands.{key}"
    if not isinstance(spec, dict):
        raise ConfigError(file, where, "expected a table")
    _check_keys(spec, _BRAND_KEYS, file, where + ".")
    if not flag(spec.get("enabled", True), file, where + ".enabled"):
        return None
    name = spec.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(file, where + ".name", "missing or empty")
    source = spec.get("source")
    if not isinstance(source, str) or not source.strip():
        raise ConfigError(file, where + ".source", "missing: say where the entries came from")
    sender = _domains(spec.get("sender_domains", []), file, where + ".sender_domains")
    if not sender:
        raise ConfigError(file, where + ".sender_domains", "at least one domain is needed")
    names = _strs(spec.get("names", [name]), file, where + ".names")
    notes_tbl = spec.get("notes", {})
    if not isinstance(notes_tbl, dict) or not all(isinstance(v, str) for v in notes_tbl.values()):
        raise ConfigError(file, where + ".notes", 'expected a table of entry = "note"')
    tokens = _strs(spec.get("tokens", []), file, where + ".tokens")
    for tok in tokens:
        if len(tok) < 3 or not tok.replace("-", "").isalnum():
            raise ConfigError(file, where + ".tokens", f"token {tok!r}: 3+ letters/digits expected")
    return Brand(
        key=key,
        name=name.strip(),
        category=str(spec.get("category", "other")),
        names=tuple(dict.fromkeys(n for n in names if n.strip())),
        context_names=_strs(spec.get("context_names", []), file, where + ".context_names"),
        tokens=tuple(t.lower() for t in tokens),
        sender_domains=sender,
        link_domains=_domains(spec.get("link_domains", []), file, where + ".link_domains"),
        source=source.strip(),
        notes=tuple((str(k), str(v)) for k, v in notes_tbl.items()),
    )


def _brand_files(root: Path) -> list[Path]:
    folder = root / "brands"
    return sorted(folder.glob("*.toml")) if folder.is_dir() else []


def _load_brands(dirs: list[Path], read: Callable[[Path], dict[str, Any]]) -> dict[str, Brand]:
    brands: dict[str, Brand] = {}
    raw: dict[str, tuple[dict[str, Any], Path]] = {}
    for root in dirs:
        for file in _brand_files(root):
            doc = read(file)
            _check_keys(doc, {"brands"}, file, "")
            for key, spec in _table(doc, "brands", file).items():
                # An overlay entry for a shipped brand is merged key by key, so an admin can
                # add one sender domain without restating the whole brand.
                if key in raw and isinstance(spec, dict):
                    spec = _merge(raw[key][0], spec)
                raw[key] = (spec, file)
    for key, (spec, file) in raw.items():
        brand = _brand(key, spec, file)
        if brand is not None:
            brands[key] = brand
    return brands


# --------------------------------------------------------------------------- lists, lexicon

_LIST_KEYS = set(Lists.__dataclass_fields__)


def _load_lists(dirs: list[Path], read: Callable[[Path], dict[str, Any]]) -> Lists:
    acc: dict[str, set[str]] = {k: set() for k in _LIST_KEYS}
    for root in dirs:
        file = root / "lists.toml"
        if not file.is_file():
            continue
        doc = read(file)
        _check_keys(doc, _LIST_KEYS | {f"remove_{k}" for k in _LIST_KEYS}, file, "")
        for key, value in doc.items():
            if key.startswith("remove_"):
                acc[key[7:]] -= {v.lower().lstrip(".") for v in _strs(value, file, key)}
            else:
                acc[key] |= {v.lower().lstrip(".") for v in _strs(value, file, key)}
    return Lists(**{k: frozenset(v) for k, v in acc.items()})


def _load_lexicon(dirs: list[Path], read: Callable[[Path], dict[str, Any]]) -> Lexicon:
    terms: dict[tuple[str, str], LureTerm] = {}
    for root in dirs:
        file = root / "lures.toml"
        if not file.is_file():
            continue
        doc = read(file)
        _check_keys(doc, {"lures"}, file, "")
        for lang, cats in _table(doc, "lures", file).items():
            if not isinstance(cats, dict):
                raise ConfigError(file, f"lures.{lang}", "expected a table of category = [phrases]")
            for cat, phrases in cats.items():
                for phrase in _strs(phrases, file, f"lures.{lang}.{cat}"):
                    norm = normalise(unicodedata.normalize("NFKC", phrase))
                    if norm:
                        terms[(norm, cat)] = LureTerm(norm, cat, lang)
    cues = _load_cues(dirs, read)
    # A lure word right after a brand name ("Visa Gift Card", "NETTO Gutschein") speaks as
    # the brand just as "account" or "team" do.
    lure_words = frozenset(
        first
        for t in terms.values()
        if (first := (words_skeleton(t.phrase).split() or [""])[0]) and len(first) >= 4
    )
    return Lexicon(
        tuple(terms.values()),
        cues["before"],
        cues["after"],
        cues["generic_author"],
        lure_words,
    )


def _load_cues(
    dirs: list[Path], read: Callable[[Path], dict[str, Any]]
) -> dict[str, frozenset[str]]:
    keys = ("before", "after", "generic_author")
    acc: dict[str, set[str]] = {k: set() for k in keys}
    for root in dirs:
        file = root / "claim_cues.toml"
        if not file.is_file():
            continue
        doc = read(file)
        _check_keys(doc, set(keys), file, "")
        for key in keys:
            acc[key] |= {words_skeleton(w) for w in _strs(doc.get(key, []), file, key) if w.strip()}
    return {k: frozenset(v) for k, v in acc.items()}


# --------------------------------------------------------------------------- entry point


def overlay_dirs(path: Path | str | None) -> tuple[list[Path], list[Path]]:
    """(config directories, main files) in merge order: shipped first, then the admin's."""
    dirs = [SHIPPED_DIR]
    mains = [SHIPPED_DIR / MAIN_FILE]
    if path is not None:
        p = Path(path)
        if p.is_dir():
            dirs.append(p)
            if (p / MAIN_FILE).is_file():
                mains.append(p / MAIN_FILE)
        elif p.is_file():
            dirs.append(p.parent)
            mains.append(p)
        else:
            raise ConfigError(p, "(file)", "no such file or directory")
    # The same directory twice (an admin pointing at the shipped one) must not double lists.
    uniq_dirs = list(dict.fromkeys(d.resolve() for d in dirs))
    uniq_mains = list(dict.fromkeys(m.resolve() for m in mains))
    return uniq_dirs, uniq_mains


def load_config(path: Path | str | None = None) -> Config:
    dirs, mains = overlay_dirs(path)
    read = _read_toml
    doc: dict[str, Any] = {}
    for main in mains:
        part = read(main)
        _check_keys(part, _TOP_KEYS, main, "")
        doc = _merge(doc, part)
    last = mains[-1]
    groups = {
        g: number(v, last, f"groups.{g}", 0.0) for g, v in _table(doc, "groups", last).items()
    }
    registry = BrandRegistry(_load_brands(dirs, read))
    if not registry.brands:
        raise ConfigError(dirs[-1] / "brands", "brands", "no brands defined")
    gateway = _table(doc, "gateway", last)
    return Config(
        engine=_engine(doc, last),
        limits=_limits(doc, last),
        thresholds=_thresholds(doc, last),
        groups=groups,
        rules=_rules(doc, last, groups),
        scoring=_scoring(doc, last, groups),
        registry=registry,
        lists=_load_lists(dirs, read),
        lexicon=_load_lexicon(dirs, read),
        gateway=gateway,
        sources=tuple(str(p) for p in mains),
    )


def with_trusted_authserv(cfg: Config, ids: Iterable[str] | None) -> Config:
    """The config with the trusted authserv-ids given on the command line
    (`--trusted-authserv`, repeatable), which replace the configured list; none given keeps it."""
    given = tuple(dict.fromkeys(i.strip().lower() for i in ids or () if i.strip()))
    if not given:
        return cfg
    return replace(cfg, engine=replace(cfg.engine, trusted_authserv_ids=given))
