"""Load and validate brandgate's configuration: shipped defaults plus an admin overlay.

Every error names the file and the key (``config/brands/retail.toml: brands.amazon.names:
expected a list of strings``) so that `brandgate check-config` tells an admin exactly what to fix.
Every validator reports into one `Problems` collector and loading goes on with the default in
place of a bad value, so one run reports every error at once (as `ConfigErrors`).
"""

from __future__ import annotations

import difflib
import math
import tomllib
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from filters.context import AccessList, AccessLists
from filters.marketplace import MarketplaceProfile
from filters.registry import Brand, BrandRegistry, Esp, Lexicon, Lists, LureTerm
from filters.text import normalise, words_skeleton
from filters.types import OVERRUN_ACTIONS, VERDICTS, Limits, QrSettings

SHIPPED_DIR = Path(__file__).resolve().parent
MAIN_FILE = "brandgate.toml"
# The shipped rule weights and thresholds, learned by `scripts/tune` (brandgate tune) from
# labelled mail; merged right after brandgate.toml, whose [rules] hold the priors (sign, group,
# the weight of rules too rare to learn).
LEARNED_FILE = "weights.toml"
ACCESS_FILE = "allow_block.toml"
T = TypeVar("T")


class ConfigError(Exception):
    def __init__(self, file: Path | str, key: str, problem: str) -> None:
        super().__init__(f"{file}: {key}: {problem}")
        self.file = str(file)
        self.key = key
        self.problem = problem

    @property
    def errors(self) -> list[ConfigError]:
        """Every error this one stands for (itself; several for ConfigErrors)."""
        return [self]


class ConfigErrors(ConfigError):
    """Several configuration errors found in one load; str() gives one per line."""

    def __init__(self, errors: list[ConfigError]) -> None:
        first = errors[0]
        super().__init__(first.file, first.key, first.problem)
        self.args = ("\n".join(str(e) for e in errors),)
        self._errors = list(errors)

    @property
    def errors(self) -> list[ConfigError]:
        return list(self._errors)


class Problems:
    """The collector every validator reports into, so that one load reports every error."""

    def __init__(self) -> None:
        self.errors: list[ConfigError] = []

    def add(self, exc: ConfigError) -> None:
        for err in exc.errors:
            if not any(str(e) == str(err) for e in self.errors):
                self.errors.append(err)

    def report(self, file: Path | str, key: str, problem: str) -> None:
        self.add(ConfigError(file, key, problem))

    def attempt(self, fn: Callable[..., T], *args: Any, default: Any) -> T:
        """fn(*args), or `default` after recording the ConfigError fn raised."""
        try:
            return fn(*args)
        except ConfigError as exc:
            self.add(exc)
            return default

    def raise_if_any(self) -> None:
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise ConfigErrors(self.errors)


def suggest(word: str, known: Iterable[str]) -> str:
    """ "; did you mean 'x'?" for a near miss among `known`, else ""."""
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f"; did you mean {show(close[0])}?" if close else ""


def unknown_key(key: str, known: Iterable[str]) -> str:
    names = sorted(known)
    return f"unknown key{suggest(key, names)} (known: {', '.join(names)})"


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
    # combination rule -> the rules that must all fire (its factor: the product of theirs)
    combos: dict[str, tuple[str, ...]] = field(default_factory=dict)
    gateway: dict[str, Any] = field(default_factory=dict)  # validated by gateway.settings
    sources: tuple[str, ...] = ()  # main files read, in order (for logs and check-config)
    access: AccessLists = field(default_factory=AccessLists)  # allow_block.toml
    files: tuple[str, ...] = ()  # every file read, in order
    # What each admin file changed over the shipped data: (file, human lines).
    changes: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # The main file that set each dotted key last (errors name it).
    origin: dict[str, str] = field(default_factory=dict)
    # [qr]: decoding QR and 2-D codes in images and PDFs
    qr: QrSettings = field(default_factory=QrSettings)
    # [marketplace] and marketplace.toml: the marketplace policy profile (off by default)
    marketplace: MarketplaceProfile = field(default_factory=MarketplaceProfile)


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
        raise ConfigError(file, key, f"expected a number, got {show(value)}")
    if minimum is not None and value < minimum:
        raise ConfigError(file, key, f"must be at least {minimum:g}, got {show(value)}")
    return float(value)


def whole(value: Any, file: Path | str, key: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(file, key, f"expected a whole number, got {show(value)}")
    if value < minimum:
        raise ConfigError(file, key, f"must be at least {minimum}, got {show(value)}")
    return value


def flag(value: Any, file: Path | str, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(file, key, f"expected true or false, got {show(value)}")
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
            raise ConfigError(file, key, f"not a domain: {show(item)}")
        try:
            dom = dom.encode("idna").decode("ascii") if not dom.isascii() else dom
        except UnicodeError as exc:
            raise ConfigError(file, key, f"not a valid domain: {show(item)}") from exc
        out.append(dom)
    return tuple(dict.fromkeys(out))


def _check_keys(
    table: Mapping[str, Any],
    allowed: set[str],
    file: Path | str,
    where: str,
    problems: Problems | None = None,
) -> None:
    """Unknown keys: all of them into `problems`, or the first raised when there is none."""
    for key in table:
        if key not in allowed:
            err = ConfigError(file, f"{where}{key}", unknown_key(key, allowed))
            if problems is None:
                raise err
            problems.add(err)


# --------------------------------------------------------------------------- main file

_ENGINE_KEYS = {"trusted_authserv_ids", "verify_dkim", "dns_timeout", "scan_timeout"}
_TOP_KEYS = {
    "engine", "limits", "thresholds", "groups", "rules", "gateway", "scoring", "combos", "qr",
    "marketplace",
}  # fmt: skip


class _Main:
    """The merged main files, with the file that set each key, reporting into `problems`."""

    def __init__(self, doc: dict[str, Any], origin: dict[str, str], problems: Problems) -> None:
        self.doc = doc
        self.origin = origin
        self.p = problems
        self.last = next(reversed(origin.values()), str(SHIPPED_DIR / MAIN_FILE))

    def file(self, key: str) -> str:
        """The file that set `key` (or, for a table, the last file that set one of its keys)."""
        if key in self.origin:
            return self.origin[key]
        for dotted in reversed(list(self.origin)):
            if dotted.startswith(key + "."):
                return self.origin[dotted]
        head = key.rpartition(".")[0]
        return self.file(head) if head else self.last

    def table(self, key: str) -> dict[str, Any]:
        value = self.doc.get(key, {})
        if not isinstance(value, dict):
            self.p.report(self.file(key), key, "expected a table")
            return {}
        return value

    def check(self, fn: Callable[..., T], key: str, value: Any, *args: Any, default: Any) -> T:
        return self.p.attempt(fn, value, self.file(key), key, *args, default=default)

    def keys(self, table: Mapping[str, Any], allowed: set[str], where: str) -> None:
        for key in table:
            if key not in allowed:
                self.p.report(self.file(where + key), where + key, unknown_key(key, allowed))


# Upper bounds where a standard sets one: a longer host is no DNS name (RFC 1035).
_LIMIT_MAX = {"max_host_chars": 253, "max_host_labels": 127}


def _limit(value: Any, file: Path | str, where: str) -> int | str:
    if where == "limits.on_overrun":
        if value not in OVERRUN_ACTIONS:
            raise ConfigError(
                file, where, f"expected one of {', '.join(OVERRUN_ACTIONS)}, got {value!r}"
            )
        return str(value)
    n = whole(value, file, where, 1)
    top = _LIMIT_MAX.get(where.removeprefix("limits."))
    if top is not None and n > top:
        raise ConfigError(file, where, f"must be at most {top}, got {n!r}")
    return n


def _groups(m: _Main) -> dict[str, float]:
    out = {}
    for g, v in m.table("groups").items():
        out[g] = m.check(number, f"groups.{g}", v, 0.0, default=0.0)
    return out


def _scoring(m: _Main, groups: dict[str, float]) -> ScoringSettings:
    tbl = m.table("scoring")
    m.keys(tbl, {"unclaimed_factor", "unclaimed_exempt"}, "scoring.")
    key = "scoring.unclaimed_factor"
    factor = m.check(number, key, tbl.get("unclaimed_factor", 0.5), 0.0, default=0.5)
    if factor > 1:
        m.p.report(m.file(key), key, f"must be between 0 and 1, got {factor:g}")
        factor = 0.5
    key = "scoring.unclaimed_exempt"
    exempt = m.check(_strs, key, tbl.get("unclaimed_exempt", []), default=())
    for g in exempt:
        if g not in groups:
            m.p.report(m.file(key), key, f"unknown group {show(g)}{suggest(g, groups)}")
    return ScoringSettings(factor, tuple(g for g in exempt if g in groups))


def _engine(m: _Main) -> EngineSettings:
    tbl = m.table("engine")
    m.keys(tbl, _ENGINE_KEYS, "engine.")
    d = EngineSettings()
    ids = m.check(
        _strs, "engine.trusted_authserv_ids", tbl.get("trusted_authserv_ids", []), default=()
    )
    return EngineSettings(
        trusted_authserv_ids=tuple(s.lower() for s in ids),
        verify_dkim=m.check(
            flag, "engine.verify_dkim", tbl.get("verify_dkim", False), default=d.verify_dkim
        ),
        dns_timeout=m.check(
            number, "engine.dns_timeout", tbl.get("dns_timeout", 3.0), 0.1, default=d.dns_timeout
        ),
        scan_timeout=m.check(
            number,
            "engine.scan_timeout",
            tbl.get("scan_timeout", 20.0),
            0.1,
            default=d.scan_timeout,
        ),
    )


def _limits(m: _Main) -> Limits:
    tbl = m.table("limits")
    allowed = set(Limits.__dataclass_fields__)
    m.keys(tbl, allowed, "limits.")
    defaults = Limits()
    values = {
        k: m.check(_limit, f"limits.{k}", v, default=getattr(defaults, k))
        for k, v in tbl.items()
        if k in allowed
    }
    return Limits(**values)  # type: ignore[arg-type]  # each key checked by _limit


def _qr(m: _Main) -> QrSettings:
    """[qr]: every key validated (whole numbers at least 1, seconds at least 0.1)."""
    tbl = m.table("qr")
    allowed = set(QrSettings.__dataclass_fields__)
    m.keys(tbl, allowed, "qr.")
    d = QrSettings()
    values: dict[str, Any] = {}
    for k, v in tbl.items():
        if k not in allowed:
            continue
        key, default = f"qr.{k}", getattr(d, k)
        if k == "enabled":
            values[k] = m.check(flag, key, v, default=default)
        elif k == "max_seconds":
            values[k] = m.check(number, key, v, 0.1, default=default)
        else:
            values[k] = m.check(whole, key, v, 1, default=default)
    qr = QrSettings(**values)
    if qr.scan_pixels > qr.max_image_pixels:
        key = "qr.scan_pixels"
        m.p.report(m.file(key), key, f"must not exceed qr.max_image_pixels ({qr.max_image_pixels})")
    return qr


def _thresholds(m: _Main) -> dict[str, float]:
    tbl = m.table("thresholds")
    names = [v for v in VERDICTS if v != "pass"]
    m.keys(tbl, set(names), "thresholds.")
    fallback = {"tag": 4.0, "quarantine": 8.0, "reject": 12.0}
    out = {}
    for name in names:
        key = f"thresholds.{name}"
        if name not in tbl:
            m.p.report(m.file("thresholds"), key, "missing")
            out[name] = fallback[name]
            continue
        out[name] = m.check(number, key, tbl[name], default=fallback[name])
    if not out["tag"] <= out["quarantine"] <= out["reject"]:
        shown = ", ".join(f"{k} = {v:g}" for k, v in out.items())
        rise = f"must rise: tag <= quarantine <= reject ({shown})"
        m.p.report(m.file("thresholds"), "thresholds", rise)
    return out


def _rules(m: _Main, groups: dict[str, float]) -> dict[str, RuleWeight]:
    out = {}
    for rule, spec in m.table("rules").items():
        where = f"rules.{rule}"
        if not isinstance(spec, dict):
            m.p.report(m.file(where), where, "expected a table with weight and group")
            continue
        m.keys(spec, {"weight", "group"}, where + ".")
        group = spec.get("group")
        if not isinstance(group, str) or group not in groups:
            hint = suggest(group, groups) if isinstance(group, str) else ""
            m.p.report(
                m.file(where + ".group"), where + ".group", f"unknown group {show(group)}{hint}"
            )
            continue
        weight = m.check(number, where + ".weight", spec.get("weight"), default=None)
        if weight is not None:
            out[rule] = RuleWeight(weight, group)
    return out


def _combos(m: _Main, rules: dict[str, RuleWeight]) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for name, parts in m.table("combos").items():
        key = f"combos.{name}"
        file = m.file(key)
        members = m.check(_strs, key, parts, default=())
        if len(set(members)) < 2:
            m.p.report(file, key, "a combination needs two or more different rules")
        elif name in members:
            m.p.report(file, key, "a combination cannot contain itself")
        elif name not in rules:
            m.p.report(file, f"rules.{name}", "combination without a weight and group")
        else:
            out[name] = tuple(dict.fromkeys(members))
    return out


# --------------------------------------------------------------------------- brands

# Brand fields that hold lists: an overlay adds to them, and `remove_<field>` takes shipped
# entries out, as in lists.toml. Scalars (name, category, source ...) are replaced.
_BRAND_LISTS = ("names", "context_names", "tokens", "sender_domains", "link_domains", "esps")
_BRAND_KEYS = {
    "name",
    "category",
    "region",
    *_BRAND_LISTS,
    *(f"remove_{k}" for k in _BRAND_LISTS),
    "source",
    "notes",
    "enabled",
}


def _extend_brand(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """An overlay entry for a brand already defined: lists grow, `remove_*` shrink them,
    notes merge, scalars are replaced. Malformed values are left for _brand to report."""
    out = dict(base)
    for key, value in over.items():
        field_ = key[7:] if key.startswith("remove_") else key
        if field_ in _BRAND_LISTS and isinstance(value, list):
            current = out.get(field_, [])
            if not isinstance(current, list):
                out[key] = value
            elif key == field_:
                out[key] = list(dict.fromkeys([*current, *value]))
            else:
                gone = {str(v).casefold() for v in value}
                out[field_] = [v for v in current if str(v).casefold() not in gone]
        elif key == "notes" and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def _brand(key: str, spec: Any, file: Path) -> Brand | None:
    where = f"brands.{key}"
    if not isinstance(spec, dict):
        raise ConfigError(file, where, "expected a table")
    _check_keys(spec, _BRAND_KEYS, file, where + ".")
    for rm in (k for k in spec if k.startswith("remove_")):
        _strs(spec[rm], file, f"{where}.{rm}")
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
    context = _strs(spec.get("context_names", []), file, where + ".context_names")
    # The brand's name is a claim by itself unless it is an ordinary word (then it is one of
    # the context names, and only context makes it a claim).
    plain = [] if name.casefold() in {c.casefold() for c in context} else [name]
    names = _strs(spec.get("names", plain), file, where + ".names")
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
        context_names=context,
        tokens=tuple(t.lower() for t in tokens),
        sender_domains=sender,
        link_domains=_domains(spec.get("link_domains", []), file, where + ".link_domains"),
        source=source.strip(),
        notes=tuple((str(k), str(v)) for k, v in notes_tbl.items()),
        region=str(spec.get("region", "")),
        esps=tuple(s.lower() for s in _strs(spec.get("esps", []), file, where + ".esps")),
    )


def _brand_files(root: Path) -> list[Path]:
    folder = root / "brands"
    return sorted(folder.glob("*.toml")) if folder.is_dir() else []


def _load_brands(
    dirs: list[Path], read: Callable[[Path], dict[str, Any]], problems: Problems | None = None
) -> tuple[dict[str, Brand], dict[str, Path]]:
    """Every brand, and the file that last defined or extended each one."""
    p = problems if problems is not None else Problems()
    brands: dict[str, Brand] = {}
    raw: dict[str, tuple[dict[str, Any], Path]] = {}
    for root in dirs:
        for file in _brand_files(root):
            doc = p.attempt(read, file, default={})
            _check_keys(doc, {"brands"}, file, "", p)
            for key, spec in p.attempt(_table, doc, "brands", file, default={}).items():
                # An entry for a brand defined before extends it, so an admin adds one sender
                # domain in one line without restating (or losing) the shipped ones.
                if key in raw and isinstance(spec, dict) and isinstance(raw[key][0], dict):
                    spec = _extend_brand(raw[key][0], spec)
                raw[key] = (spec, file)
    for key, (spec, file) in raw.items():
        brand = p.attempt(_brand, key, spec, file, default=None)
        if brand is not None:
            brands[key] = brand
    if problems is None:
        p.raise_if_any()
    return brands, {key: file for key, (_, file) in raw.items()}


_ESP_KEYS = {
    "name",
    "kind",
    "dkim_domains",
    "return_path_domains",
    "link_domains",
    "sender_domains",
    "source",
}
ESP_KINDS = ("esp", "transactional", "marketing", "review", "survey", "helpdesk", "crm")


def _esp(key: str, spec: Any, file: Path) -> Esp:
    where = f"esps.{key}"
    if not isinstance(spec, dict):
        raise ConfigError(file, where, "expected a table")
    _check_keys(spec, _ESP_KEYS, file, where + ".")
    name = spec.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(file, where + ".name", "missing or empty")
    kind = spec.get("kind", "esp")
    if kind not in ESP_KINDS:
        raise ConfigError(file, where + ".kind", f"one of {', '.join(ESP_KINDS)}, got {kind!r}")
    source = spec.get("source")
    if not isinstance(source, str) or not source.strip():
        raise ConfigError(file, where + ".source", "missing: say where the entries came from")
    doms = {
        k: _domains(spec.get(k, []), file, f"{where}.{k}")
        for k in ("dkim_domains", "return_path_domains", "link_domains", "sender_domains")
    }
    if not any(doms.values()):
        raise ConfigError(file, where, "no domains: give dkim, return-path or link domains")
    return Esp(key=key, name=name.strip(), kind=kind, source=source.strip(), **doms)


def _load_esps(dirs: list[Path], read: Reader, p: Problems) -> dict[str, Esp]:
    """config/esps.toml: the vendors that mail for brands. An overlay adds vendors, or domains
    to a shipped one (lists grow, as for brands)."""
    raw: dict[str, tuple[dict[str, Any], Path]] = {}
    for root in dirs:
        file = root / "esps.toml"
        if not file.is_file():
            continue
        doc = p.attempt(read, file, default={})
        _check_keys(doc, {"esps"}, file, "", p)
        for key, spec in p.attempt(_table, doc, "esps", file, default={}).items():
            if key in raw and isinstance(spec, dict):
                base = raw[key][0]
                spec = {
                    **base,
                    **{
                        k: list(dict.fromkeys([*base.get(k, []), *v]))
                        if isinstance(v, list) and isinstance(base.get(k), list)
                        else v
                        for k, v in spec.items()
                    },
                }
            raw[key] = (spec, file)
    esps = {
        key: p.attempt(_esp, key, spec, file, default=None) for key, (spec, file) in raw.items()
    }
    return {k: v for k, v in esps.items() if v is not None}


def _with_esp_domains(lists: Lists, esps: dict[str, Esp]) -> Lists:
    """Every vendor's domains count as ESP infrastructure for the checks that ask."""
    extra = {d for esp in esps.values() for d in esp.all_domains()}
    return replace(lists, esp_domains=lists.esp_domains | extra) if extra else lists


def _check_brand_esps(
    brands: dict[str, Brand], esps: dict[str, Esp], files: dict[str, Path], p: Problems
) -> None:
    for brand in brands.values():
        for key in brand.esps:
            if key not in esps:
                p.report(
                    files[brand.key],
                    f"brands.{brand.key}.esps",
                    f"unknown vendor {key!r}{suggest(key, esps)}",
                )


# --------------------------------------------------------------------------- lists, lexicon

_LIST_KEYS = set(Lists.__dataclass_fields__)
Reader = Callable[[Path], dict[str, Any]]


def _sample(items: Iterable[str], n: int = 4) -> str:
    got = sorted(items)
    more = f", … ({len(got)} in all)" if len(got) > n else ""
    return ", ".join(got[:n]) + more


def _is_shipped(file: Path) -> bool:
    return file.resolve().parent in (SHIPPED_DIR, SHIPPED_DIR / "brands")


def _load_lists(dirs: list[Path], read: Reader, p: Problems, log: _ChangeLog) -> Lists:
    acc: dict[str, set[str]] = {k: set() for k in _LIST_KEYS}
    for root in dirs:
        file = root / "lists.toml"
        if not file.is_file():
            continue
        doc = p.attempt(read, file, default={})
        _check_keys(doc, _LIST_KEYS | {f"remove_{k}" for k in _LIST_KEYS}, file, "", p)
        for key, value in doc.items():
            name = key[7:] if key.startswith("remove_") else key
            if name not in acc:
                continue
            given = p.attempt(_strs, value, file, key, default=())
            entries = {v.lower().lstrip(".") for v in given}
            if key.startswith("remove_"):
                gone = entries & acc[name]
                missing = entries - acc[name]
                acc[name] -= entries
                if gone:
                    log.add(file, f"{name}: removed {len(gone)} ({_sample(gone)})")
                if missing:
                    log.add(file, f"{name}: not there to remove: {_sample(missing)}")
            else:
                added = entries - acc[name]
                acc[name] |= entries
                log.add(file, f"{name}: added {len(added)} ({_sample(added)})" if added else "")
    return Lists(**{k: frozenset(v) for k, v in acc.items()})


def _load_lexicon(dirs: list[Path], read: Reader, p: Problems, log: _ChangeLog) -> Lexicon:
    terms: dict[tuple[str, str], LureTerm] = {}
    for root in dirs:
        file = root / "lures.toml"
        if not file.is_file():
            continue
        doc = p.attempt(read, file, default={})
        _check_keys(doc, {"lures"}, file, "", p)
        before = len(terms)
        for lang, cats in p.attempt(_table, doc, "lures", file, default={}).items():
            if not isinstance(cats, dict):
                p.report(file, f"lures.{lang}", "expected a table of category = [phrases]")
                continue
            for cat, phrases in cats.items():
                key = f"lures.{lang}.{cat}"
                for phrase in p.attempt(_strs, phrases, file, key, default=()):
                    norm = normalise(unicodedata.normalize("NFKC", phrase))
                    if norm:
                        terms[(norm, cat)] = LureTerm(norm, cat, lang)
        log.add(file, f"lure phrases: added {len(terms) - before}")
    cues = _load_cues(dirs, read, p, log)
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
        display_words=cues["display_words"],
    )


def _load_cues(
    dirs: list[Path], read: Reader, p: Problems, log: _ChangeLog
) -> dict[str, frozenset[str]]:
    keys = ("before", "after", "generic_author", "display_words")
    acc: dict[str, set[str]] = {k: set() for k in keys}
    for root in dirs:
        file = root / "claim_cues.toml"
        if not file.is_file():
            continue
        doc = p.attempt(read, file, default={})
        _check_keys(doc, set(keys), file, "", p)
        for key in keys:
            words = p.attempt(_strs, doc.get(key, []), file, key, default=())
            new = {words_skeleton(w) for w in words if w.strip()} - acc[key]
            acc[key] |= new
            log.add(file, f"{key}: added {len(new)} ({_sample(new)})" if new else "")
    return {k: frozenset(v) for k, v in acc.items()}


# --------------------------------------------------------------------------- allow / block

_ACCESS_KEYS = set(AccessList.__dataclass_fields__)
_ACCESS_TABLES = ("allow", "block")


def _addresses(value: Any, file: Path, key: str) -> tuple[str, ...]:
    out = []
    for item in _strs(value, file, key):
        addr = item.strip().lower()
        local, at, dom = addr.rpartition("@")
        if not at or not local or not dom or " " in addr:
            raise ConfigError(file, key, f"not an address like user@example.com: {show(item)}")
        out.append(f"{local}@{_domains([dom], file, key)[0]}")
    return tuple(dict.fromkeys(out))


def _access_entries(value: Any, file: Path, key: str, name: str) -> tuple[str, ...]:
    return _addresses(value, file, key) if name == "addresses" else _domains(value, file, key)


def _load_access(dirs: list[Path], read: Reader, p: Problems, log: _ChangeLog) -> AccessLists:
    acc: dict[str, dict[str, dict[str, None]]] = {
        t: {k: {} for k in _ACCESS_KEYS} for t in _ACCESS_TABLES
    }
    known = set(_ACCESS_TABLES) | {f"remove_{t}" for t in _ACCESS_TABLES}
    for root in dirs:
        file = root / ACCESS_FILE
        if not file.is_file():
            continue
        doc = p.attempt(read, file, default={})
        _check_keys(doc, known, file, "", p)
        for table in (*_ACCESS_TABLES, *(f"remove_{t}" for t in _ACCESS_TABLES)):
            tbl = p.attempt(_table, doc, table, file, default={})
            _check_keys(tbl, _ACCESS_KEYS, file, f"{table}.", p)
            target = acc[table.removeprefix("remove_")]
            for name, value in tbl.items():
                if name not in _ACCESS_KEYS:
                    continue
                key = f"{table}.{name}"
                entries = p.attempt(_access_entries, value, file, key, name, default=())
                if table.startswith("remove_"):
                    gone = [e for e in entries if target[name].pop(e, "") is None]
                    if gone:
                        log.add(file, f"{key}: removed {len(gone)} ({_sample(gone)})")
                else:
                    added = [e for e in entries if e not in target[name]]
                    target[name].update(dict.fromkeys(entries))
                    log.add(file, f"{key}: added {len(added)} ({_sample(added)})" if added else "")
    lists = {t: AccessList(**{k: tuple(v) for k, v in acc[t].items()}) for t in _ACCESS_TABLES}
    return AccessLists(allow=lists["allow"], block=lists["block"])


# --------------------------------------------------------------------------- change log


class _ChangeLog:
    """What each admin file changed over the shipped data, for `brandgate check-config`."""

    def __init__(self) -> None:
        self.lines: dict[str, list[str]] = {}

    def add(self, file: Path | str, line: str) -> None:
        if not line or _is_shipped(Path(file)):
            return
        self.lines.setdefault(str(file), []).append(line)

    def touch(self, file: Path | str) -> None:
        if not _is_shipped(Path(file)):
            self.lines.setdefault(str(file), [])

    def freeze(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        return tuple((f, tuple(lines) or ("(no change)",)) for f, lines in self.lines.items())


def _flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def show(value: Any) -> str:
    """A config value as an admin writes it in TOML (not as a Python repr)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float):
        if math.isinf(value) or math.isnan(value):
            return ("-" if value < 0 else "") + ("inf" if math.isinf(value) else "nan")
        return f"{value:g}" if value != int(value) else f"{value:.1f}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {show(v)}" for k, v in value.items()) + " }"
    return str(value)


def _brand_changes(dirs: list[Path], read: Reader, log: _ChangeLog) -> None:
    """Which brands an admin file adds, and for each shipped one it changes, the values
    added and removed (as for lists), e.g.
    `brands.amazon: sender_domains added 1 (amazon-mail.example); names removed 1 (Amazon)`."""
    merged: dict[str, dict[str, Any]] = {}
    for root in dirs:
        for file in _brand_files(root):
            try:
                doc = read(file)
            except ConfigError:
                continue
            brands = doc.get("brands")
            if not isinstance(brands, dict):
                continue
            log.touch(file)
            added = sorted(k for k in brands if k not in merged)
            if merged and added:
                log.add(file, f"brands added: {', '.join(added)}")
            for key, spec in sorted(brands.items()):
                if not isinstance(spec, dict):
                    continue  # _brand reports it
                if key in merged:
                    parts = _brand_diff(merged[key], spec)
                    log.add(file, f"brands.{key}: {'; '.join(parts) or 'no change'}")
                    merged[key] = _extend_brand(merged[key], spec)
                else:
                    merged[key] = dict(spec)


def _brand_diff(base: Mapping[str, Any], over: Mapping[str, Any]) -> list[str]:
    out = []
    for key, value in over.items():
        field_ = key.removeprefix("remove_")
        current = base.get(field_)
        if field_ in _BRAND_LISTS and isinstance(value, list) and isinstance(current, list):
            given = [str(v) for v in value]
            if key == field_:
                new = [v for v in given if v not in current]
                out.append(f"{key} added {len(new)} ({_sample(new)})" if new else "")
            else:
                have = {str(v).casefold() for v in current}
                gone = [v for v in given if v.casefold() in have]
                missing = [v for v in given if v.casefold() not in have]
                out.append(f"{field_} removed {len(gone)} ({_sample(gone)})" if gone else "")
                out.append(f"{field_} not there to remove: {_sample(missing)}" if missing else "")
        elif key == "notes" and isinstance(value, dict):
            out.append(f"notes for {_sample(str(k) for k in value)}" if value else "")
        elif base.get(key) != value:
            was = f" (was {show(base[key])})" if key in base else " (new)"
            out.append(f"{key} = {show(value)}{was}")
    return [line for line in out if line]


# --------------------------------------------------------------------------- entry point


def overlay_dirs(path: Path | str | None, learned: bool = True) -> tuple[list[Path], list[Path]]:
    """(config directories, main files) in merge order: shipped first, then the admin's."""
    dirs = [SHIPPED_DIR]
    mains = [SHIPPED_DIR / MAIN_FILE]
    if learned and (SHIPPED_DIR / LEARNED_FILE).is_file():
        mains.append(SHIPPED_DIR / LEARNED_FILE)
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


def _merge_main(
    mains: list[Path], read: Reader, p: Problems, log: _ChangeLog
) -> tuple[dict[str, Any], dict[str, str]]:
    doc: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for main in mains:
        part = p.attempt(read, main, default={})
        _check_keys(part, _TOP_KEYS, main, "", p)
        before = _flatten(doc)
        log.touch(main)
        for key, value in _flatten(part).items():
            origin[key] = str(main)
            if key not in before:
                log.add(main, f"{key} = {show(value)} (new)")
            elif before[key] != value:
                log.add(main, f"{key} = {show(value)} (was {show(before[key])})")
        doc = _merge(doc, part)
    return doc, origin


def _marketplace(
    m: _Main, dirs: list[Path], read: Reader, registry: BrandRegistry, log: _ChangeLog
) -> MarketplaceProfile:
    from config.marketplace import load_marketplace  # it uses this module's validators

    return load_marketplace(m, dirs, read, registry, log)


# A check of the finished Config that a caller adds (gateway settings, rule consistency):
# it reports into the same collector, so its errors come out with the loader's.
Extra = Callable[[Config, Problems], None]


def load_config(
    path: Path | str | None = None, extra: Iterable[Extra] = (), learned: bool = True
) -> Config:
    """The config in force; raises ConfigError (ConfigErrors when there are several).
    learned=False leaves out the shipped learned weights (weights.toml): `tune` starts from
    the priors."""
    dirs, mains = overlay_dirs(path, learned)
    files: list[str] = []

    def read(file: Path) -> dict[str, Any]:
        files.append(str(file))
        return _read_toml(file)

    p = Problems()
    log = _ChangeLog()
    doc, origin = _merge_main(mains, read, p, log)
    m = _Main(doc, origin, p)
    groups = _groups(m)
    engine, limits, thresholds = _engine(m), _limits(m), _thresholds(m)
    rules, scoring = _rules(m, groups), _scoring(m, groups)
    gateway = m.table("gateway")
    brands, brand_files = _load_brands(dirs, read, p)
    esps = _load_esps(dirs, read, p)
    _check_brand_esps(brands, esps, brand_files, p)
    registry = BrandRegistry(brands, esps)
    if not registry.brands and not p.errors:
        p.report(dirs[-1] / "brands", "brands", "no brands defined")
    _brand_changes(dirs, _read_toml, log)
    marketplace = _marketplace(m, dirs, read, registry, log)  # before `files` is frozen
    cfg = Config(
        engine=engine,
        limits=limits,
        thresholds=thresholds,
        groups=groups,
        rules=rules,
        scoring=scoring,
        combos=_combos(m, rules),
        registry=registry,
        lists=_with_esp_domains(_load_lists(dirs, read, p, log), esps),
        lexicon=_load_lexicon(dirs, read, p, log),
        access=_load_access(dirs, read, p, log),
        gateway=gateway,
        sources=tuple(str(x) for x in mains),
        files=tuple(dict.fromkeys(files)),
        changes=log.freeze(),
        origin=origin,
        qr=_qr(m),
        marketplace=marketplace,
    )
    for check in extra:
        check(cfg, p)
    p.raise_if_any()
    return cfg


def with_trusted_authserv(cfg: Config, ids: Iterable[str] | None) -> Config:
    """The config with the trusted authserv-ids given on the command line
    (`--trusted-authserv`, repeatable), which replace the configured list; none given keeps it."""
    given = tuple(dict.fromkeys(i.strip().lower() for i in ids or () if i.strip()))
    if not given:
        return cfg
    return replace(cfg, engine=replace(cfg.engine, trusted_authserv_ids=given))
