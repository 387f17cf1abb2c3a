"""The `[gateway]` table of the configuration, validated into one frozen value.

Every error is a ConfigError naming the file and the key, like the rest of the loader. Command
line flags of `brandgate serve` are applied on top with `with_overrides` and validated the same
way (their "file" is "command line").
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from config.loader import (
    Config,
    ConfigError,
    ConfigErrors,
    Problems,
    flag,
    number,
    show,
    suggest,
    unknown_key,
    whole,
)
from filters.types import VERDICTS
from gateway.milter import settings as milter_settings
from gateway.milter.settings import MilterSettings

MODES = ("after-queue", "before-queue")
ACTIONS = ("pass", "tag", "quarantine", "reject")
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_KEYS = {
    "listen",
    "next_hop",
    "mode",
    "hostname",
    "allowed_networks",
    "max_sessions",
    "command_timeout",
    "data_timeout",
    "data_size_limit",
    "relay_timeout",
    "drain_timeout",
    "fail_open",
    "workers",
    "quarantine_dir",
    "metrics",
    "subject_prefix",
    "banner",
    "banner_language",
    "banner_report",
    "banner_texts",
    "pass_headers",
    "spam_headers",
    "authentication_results",
    "authserv_id",
    "tls_cert",
    "tls_key",
    "arc",
    "recipients",
    "actions",
    "milter",
}
_BANNER_TEXT_KEYS = {"brand", "generic", "report"}
_PLACEHOLDERS = {
    "brand": ("brand", "report", "summary"),
    "generic": ("report", "summary"),
    "report": ("report",),
}
_ARC_KEYS = {"domain", "selector", "key_file"}
_POLICY_KEYS = {"thresholds", "actions", "banner", "banner_language"}


@dataclass(frozen=True, slots=True)
class BannerText:
    """One language's banner: with a brand claim, without one, and the report line."""

    brand: str
    generic: str
    report: str = ""


# Used when the config has no text for a language at all (the shipped brandgate.toml has
# several); worded as a suspicion, never as a fact: the engine scores, it does not know.
FALLBACK_BANNER = BannerText(
    brand="Caution: this message presents itself as {brand}, but brandgate could not confirm "
    "that {brand} sent it. Check before you click a link, open an attachment or reply.",
    generic="Caution: brandgate found signs that this message may not be what it seems. "
    "Check before you click a link, open an attachment or reply.",
    report="Report it: {report}",
)


@dataclass(frozen=True, slots=True)
class ArcSettings:
    """ARC-seal what brandgate changes (banner, Subject prefix), so that receivers who trust
    us still see the authentication results from before the change."""

    domain: str
    selector: str
    key_file: Path


@dataclass(frozen=True, slots=True)
class Policy:
    """What applies to one recipient: thresholds and actions, banner on or off, its language.

    `key` names where it came from ("" = the [gateway] defaults, else the recipients entry)."""

    key: str
    thresholds: dict[str, float] | None  # None = the engine's [thresholds]
    actions: dict[str, str]
    banner: bool
    banner_language: str


def default_quarantine_dir() -> Path:
    """/var/lib when we may write there (root, a packaged service), else the user's state dir."""
    if os.geteuid() == 0:
        return Path("/var/lib/brandgate/quarantine")
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "brandgate" / "quarantine"


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    listen: tuple[str, int] = ("127.0.0.1", 10025)
    next_hop: tuple[str, int] = ("127.0.0.1", 10026)
    mode: str = "after-queue"
    hostname: str = ""  # greeting name; "" = this host's name
    allowed_networks: tuple[IpNetwork, ...] = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    max_sessions: int = 200
    command_timeout: float = 300.0
    data_timeout: float = 600.0
    data_size_limit: int = 26_214_400
    relay_timeout: float = 60.0
    drain_timeout: float = 30.0
    fail_open: bool = False
    workers: int = 0  # 0 = one per CPU
    quarantine_dir: Path = field(default_factory=default_quarantine_dir)
    metrics: tuple[str, int] | None = ("127.0.0.1", 9425)
    subject_prefix: str = ""
    banner: bool = False
    banner_language: str = "en"
    banner_report: str = ""  # "mailto:..." or a URL, shown in the banner
    banner_texts: dict[str, BannerText] = field(default_factory=dict)
    # Passed mail gets the header fields too (prepended only: DKIM stays valid); false
    # leaves it byte for byte as it came, but for forged fields of ours taken out.
    pass_headers: bool = True
    spam_headers: bool = False  # X-Spam-Flag / X-Spam-Status, SpamAssassin style
    authentication_results: bool = True  # our own DKIM results as Authentication-Results
    authserv_id: str = ""  # "" = the greeting name
    tls_cert: Path | None = None
    tls_key: Path | None = None
    arc: ArcSettings | None = None
    # recipient address or domain (lower-case) -> its policy overrides, as validated
    recipients: dict[str, dict[str, Any]] = field(default_factory=dict)
    actions: dict[str, str] = field(default_factory=lambda: {v: v for v in VERDICTS})
    milter: MilterSettings = field(default_factory=MilterSettings)  # [gateway.milter]
    # Not from the [gateway] table: serve's view of the engine settings it overrides.
    trusted_authserv_ids: tuple[str, ...] | None = None

    @property
    def greeting_name(self) -> str:
        return self.hostname or socket.gethostname()

    @property
    def our_authserv_id(self) -> str:
        return (self.authserv_id or self.greeting_name).lower()

    def banner_text(self, language: str) -> BannerText:
        return (
            self.banner_texts.get(language)
            or self.banner_texts.get(self.banner_language)
            or self.banner_texts.get("en")
            or FALLBACK_BANNER
        )

    def policy_for(self, rcpt: str) -> Policy:
        """The recipient's policy: its address, else its domain or a parent domain, else the
        [gateway] defaults; each key a recipients entry leaves out comes from the defaults."""
        addr = rcpt.strip().strip("<>").lower()
        domain = addr.rpartition("@")[2]
        labels = domain.split(".")
        keys = [addr] + [".".join(labels[i:]) for i in range(len(labels))]
        for key in keys:
            entry = self.recipients.get(key)
            if entry is not None:
                return Policy(
                    key=key,
                    thresholds=entry.get("thresholds"),
                    actions={**self.actions, **entry.get("actions", {})},
                    banner=entry.get("banner", self.banner),
                    banner_language=entry.get("banner_language", self.banner_language),
                )
        return Policy("", None, dict(self.actions), self.banner, self.banner_language)

    @property
    def worker_count(self) -> int:
        return self.workers or max(1, os.cpu_count() or 1)

    def action_for(
        self, verdict: str, policy: Policy | None = None, *, in_session: bool | None = None
    ) -> str:
        """The configured action, after the mode's rule: never reject after the queue.
        in_session: the sender still waits for the answer (before the queue, the milter)."""
        actions = policy.actions if policy is not None else self.actions
        action = actions.get(verdict, "pass")
        if in_session is None:
            in_session = self.mode != "after-queue"
        if action == "reject" and not in_session:
            # Postfix would bounce to the (often forged) sender: keep it instead.
            return "quarantine"
        return action


# --------------------------------------------------------------------------- validators


def parse_hostport(value: Any, file: str, key: str, any_port: bool = False) -> tuple[str, int]:
    """HOST:PORT ([v6]:PORT too); any_port allows 0 (the OS picks a free port; tests)."""
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(file, key, f'expected "HOST:PORT", got {show(value)}')
    host, _, port_s = value.rpartition(":")
    host = host.strip("[]")
    low = 0 if any_port else 1
    if not host or not port_s.isdigit() or not low <= int(port_s) < 65536:
        raise ConfigError(file, key, f'expected "HOST:PORT" with a port 1-65535, got {show(value)}')
    return host, int(port_s)


def _text(value: Any, file: str, key: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(file, key, f"expected a string, got {show(value)}")
    if any(c in value for c in "\r\n\0"):
        raise ConfigError(file, key, "must not contain line breaks or NUL")
    return value


def _networks(value: Any, file: str, key: str) -> tuple[IpNetwork, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(file, key, 'expected a list of networks like "127.0.0.0/8"')
    out = []
    for item in value:
        try:
            out.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError as exc:
            raise ConfigError(file, key, f"not a network: {show(item)}") from exc
    return tuple(out)


def _mode(value: Any, file: str, key: str) -> str:
    if value not in MODES:
        hint = suggest(str(value), MODES)
        raise ConfigError(file, key, f"expected one of {', '.join(MODES)}, got {show(value)}{hint}")
    return str(value)


def _actions(value: Any, file: str, where: str = "gateway.actions") -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ConfigError(file, where, 'expected a table of verdict = "action"')
    out = {}
    for verdict, action in value.items():
        key = f"{where}.{verdict}"
        if verdict not in VERDICTS:
            raise ConfigError(file, key, unknown_key(verdict, VERDICTS).replace("key", "verdict"))
        if action not in ACTIONS:
            hint = suggest(str(action), ACTIONS)
            raise ConfigError(
                file, key, f"expected one of {', '.join(ACTIONS)}, got {show(action)}{hint}"
            )
        out[verdict] = action
    return out


def _thresholds(value: Any, file: str, where: str) -> dict[str, float]:
    names = [v for v in VERDICTS if v != "pass"]
    if not isinstance(value, Mapping):
        raise ConfigError(
            file, where, "expected a table like { tag = 4, quarantine = 8, reject = 12 }"
        )
    out = {}
    for name in names:
        if name not in value:
            raise ConfigError(file, f"{where}.{name}", "missing (give all three thresholds)")
        out[name] = number(value[name], file, f"{where}.{name}")
    for key in value:
        if key not in names:
            raise ConfigError(file, f"{where}.{key}", unknown_key(key, names))
    if not out["tag"] <= out["quarantine"] <= out["reject"]:
        raise ConfigError(file, where, "must rise: tag <= quarantine <= reject")
    return out


def _language(value: Any, file: str, key: str) -> str:
    text = _text(value, file, key).strip().lower()
    if not text or not text.replace("-", "").isalnum():
        raise ConfigError(file, key, f'expected a language code like "en", got {show(value)}')
    return text


def _banner_texts(value: Any, file: str, where: str) -> dict[str, BannerText]:
    if not isinstance(value, Mapping):
        raise ConfigError(file, where, "expected tables [gateway.banner_texts.LANGUAGE]")
    out = {}
    for lang, spec in value.items():
        key = f"{where}.{lang}"
        if not isinstance(spec, Mapping):
            raise ConfigError(file, key, "expected a table with brand, generic and report")
        for name in spec:
            if name not in _BANNER_TEXT_KEYS:
                raise ConfigError(file, f"{key}.{name}", unknown_key(name, _BANNER_TEXT_KEYS))
        texts = {}
        for name in _BANNER_TEXT_KEYS:
            if name not in spec:
                if name == "report":
                    texts[name] = ""
                    continue
                raise ConfigError(file, f"{key}.{name}", "missing")
            texts[name] = _placeholders(spec[name], file, f"{key}.{name}", _PLACEHOLDERS[name])
        out[_language(lang, file, key)] = BannerText(**texts)
    return out


def _placeholders(value: Any, file: str, key: str, allowed: tuple[str, ...]) -> str:
    text = _text(value, file, key)
    try:
        text.format(**{a: "x" for a in allowed})
    except (KeyError, IndexError, ValueError) as exc:
        named = ", ".join("{" + a + "}" for a in allowed)
        raise ConfigError(file, key, f"only {named} may be filled in ({exc})") from exc
    return text


def _path(value: Any, file: str, key: str) -> Path | None:
    text = _text(value, file, key)
    return Path(text) if text else None


def _readable(path: Path, file: str, key: str) -> Path:
    if not path.is_file():
        raise ConfigError(file, key, f"no such file: {path}")
    if not os.access(path, os.R_OK):
        raise ConfigError(file, key, f"not readable: {path}")
    return path


def _arc(value: Any, file: str) -> ArcSettings | None:
    where = "gateway.arc"
    if not isinstance(value, Mapping):
        raise ConfigError(file, where, "expected a table with domain, selector, key_file")
    for name in value:
        if name not in _ARC_KEYS:
            raise ConfigError(file, f"{where}.{name}", unknown_key(name, _ARC_KEYS))
    if not any(value.get(k) for k in _ARC_KEYS):
        return None  # all empty: ARC sealing off
    got = {k: _text(value.get(k, ""), file, f"{where}.{k}").strip() for k in _ARC_KEYS}
    for name, text in got.items():
        if not text:
            raise ConfigError(
                file, f"{where}.{name}", "missing (ARC needs domain, selector and key_file)"
            )
    key_file = _readable(Path(got["key_file"]), file, f"{where}.key_file")
    return ArcSettings(got["domain"].lower(), got["selector"], key_file)


def _recipient_key(key: str, file: str, where: str) -> str:
    low = key.strip().lower()
    local, at, dom = low.rpartition("@")
    if (at and not local) or not dom or " " in low or "." not in dom:
        raise ConfigError(
            file, where, "expected a recipient address (user@example.com) or domain (example.com)"
        )
    return low


def _recipients(value: Any, file: str) -> dict[str, dict[str, Any]]:
    where = "gateway.recipients"
    if not isinstance(value, Mapping):
        raise ConfigError(file, where, 'expected tables [gateway.recipients."ADDRESS-OR-DOMAIN"]')
    out: dict[str, dict[str, Any]] = {}
    errors: list[ConfigError] = []
    for rcpt, spec in value.items():
        try:
            name, entry = _recipient(rcpt, spec, file, where)
        except ConfigError as exc:
            errors.append(exc)
            continue
        out[name] = entry
    if errors:
        raise ConfigErrors(errors)
    return out


def _recipient(rcpt: str, spec: Any, file: str, where: str) -> tuple[str, dict[str, Any]]:
    """One [gateway.recipients."ADDRESS-OR-DOMAIN"] entry, validated."""
    key = f'{where}."{rcpt}"'
    name = _recipient_key(rcpt, file, key)
    if not isinstance(spec, Mapping):
        raise ConfigError(
            file, key, "expected a table of thresholds, actions, banner, banner_language"
        )
    for item in spec:
        if item not in _POLICY_KEYS:
            raise ConfigError(file, f"{key}.{item}", unknown_key(item, _POLICY_KEYS))
    entry: dict[str, Any] = {}
    if "thresholds" in spec:
        entry["thresholds"] = _thresholds(spec["thresholds"], file, f"{key}.thresholds")
    if "actions" in spec:
        entry["actions"] = _actions(spec["actions"], file, f"{key}.actions")
    if "banner" in spec:
        entry["banner"] = flag(spec["banner"], file, f"{key}.banner")
    if "banner_language" in spec:
        entry["banner_language"] = _language(
            spec["banner_language"], file, f"{key}.banner_language"
        )
    return name, entry


def _metrics(value: Any, file: str, key: str) -> tuple[str, int] | None:
    if value in ("", None, False):
        return None
    return parse_hostport(value, file, key)


# --------------------------------------------------------------------------- entry points


FileOf = Callable[[str], str]


def from_table(
    table: Mapping[str, Any], file: str | FileOf, problems: Problems | None = None
) -> GatewaySettings:
    """Validate a [gateway] table (already merged over the shipped one).

    `file` is the file to name in errors, or a function from the dotted key to the file that
    set it. Every error goes to `problems` when given (the defaults stand in for bad values),
    else all of them are raised at once."""
    p = problems if problems is not None else Problems()
    file_of: FileOf = file if callable(file) else _fixed(file)
    k = "gateway."
    for key in table:
        if key not in _KEYS:
            p.report(file_of(k + key), k + key, unknown_key(key, _KEYS))
    changes: dict[str, Any] = {}
    for name, value in table.items():
        if name not in _KEYS:
            continue
        key = k + name
        where = file_of(key)
        try:
            changes[name] = _one(name, value, where, key)
        except ConfigError as exc:
            p.add(exc)
    settings = replace(GatewaySettings(), **changes)
    for problem in _consistency(settings, table, file_of):
        p.add(problem)
    if problems is None:
        p.raise_if_any()
    return settings


def _fixed(file: str) -> FileOf:
    def file_of(_key: str) -> str:
        return file

    return file_of


def _one(name: str, value: Any, file: str, key: str) -> Any:
    """One [gateway] key, validated."""
    if name in ("listen", "next_hop"):
        return parse_hostport(value, file, key, any_port=name == "listen")
    if name == "mode":
        return _mode(value, file, key)
    if name in ("hostname", "subject_prefix", "banner_report", "authserv_id"):
        return (
            _text(value, file, key).strip() if name != "subject_prefix" else _text(value, file, key)
        )
    if name == "allowed_networks":
        return _networks(value, file, key)
    if name in ("max_sessions", "data_size_limit", "workers"):
        return whole(value, file, key, 0 if name == "workers" else 1)
    if name in ("command_timeout", "data_timeout", "relay_timeout", "drain_timeout"):
        return number(value, file, key, 0.1)
    if name in ("fail_open", "banner", "pass_headers", "spam_headers", "authentication_results"):
        return flag(value, file, key)
    if name == "banner_language":
        return _language(value, file, key)
    if name == "banner_texts":
        return _banner_texts(value, file, key)
    if name == "quarantine_dir":
        qdir = _text(value, file, key)
        return Path(qdir) if qdir else default_quarantine_dir()
    if name == "metrics":
        return _metrics(value, file, key)
    if name in ("tls_cert", "tls_key"):
        path = _path(value, file, key)
        return _readable(path, file, key) if path is not None else None
    if name == "milter":
        return milter_settings.from_table(value, file)
    if name == "arc":
        return _arc(value, file)
    if name == "recipients":
        return _recipients(value, file)
    if name == "actions":
        return {**{v: v for v in VERDICTS}, **_actions(value, file)}
    raise ConfigError(file, key, "unknown key")  # pragma: no cover - _KEYS lists them all


def _consistency(
    s: GatewaySettings, table: Mapping[str, Any], file_of: FileOf
) -> list[ConfigError]:
    out = []
    # What was written, not what loaded: a missing file is already its own error.
    cert_given, key_given = bool(table.get("tls_cert")), bool(table.get("tls_key"))
    if cert_given != key_given:
        # Named where the one that is set was set: the admin's file, not the shipped default.
        given, missing = ("tls_cert", "tls_key") if cert_given else ("tls_key", "tls_cert")
        key = f"gateway.{given}"
        out.append(ConfigError(file_of(key), key, f"set without {missing}: STARTTLS needs both"))
    elif s.tls_cert is not None and s.tls_key is not None:
        problem = _tls_problem(s.tls_cert, s.tls_key)
        if problem is not None:
            key, text = problem
            out.append(ConfigError(file_of(key), key, text))
    langs = {s.banner_language} | {
        e["banner_language"] for e in s.recipients.values() if "banner_language" in e
    }
    for lang in sorted(langs):
        if s.banner_texts and lang not in s.banner_texts:
            key = "gateway.banner_language"
            known = ", ".join(sorted(s.banner_texts))
            out.append(
                ConfigError(
                    file_of(key),
                    key,
                    f"no banner text for {show(lang)} (there are: {known})"
                    + suggest(lang, s.banner_texts),
                )
            )
    return out


def _tls_problem(cert: Path, key: Path) -> tuple[str, str] | None:
    """(the key to blame, what is wrong) when the pair does not load, in words and naming the
    file: OpenSSL's own "[SSL] PEM lib (_ssl.c:3905)" says neither which file nor why."""
    try:
        tls_context(cert, key)
        return None
    except PassphraseNeeded:
        return "gateway.tls_key", f"{key} is protected by a passphrase: give the key without one"
    except (OSError, ssl.SSLError) as exc:
        failure = exc
    try:
        # The certificate on its own, so that a bad one is not blamed on the key.
        ssl.create_default_context(cafile=str(cert))
    except (OSError, ssl.SSLError):
        return "gateway.tls_cert", f"no PEM certificate in {cert}"
    if isinstance(failure, ssl.SSLError) and failure.reason == "KEY_VALUES_MISMATCH":
        return "gateway.tls_key", f"{key} is not the private key of the certificate in {cert}"
    if isinstance(failure, ssl.SSLError):
        return "gateway.tls_key", f"no PEM private key without a passphrase in {key}"
    return "gateway.tls_cert", f"cannot load {cert} with {key}: {failure.strerror or failure}"


class PassphraseNeeded(Exception):
    """The private key is encrypted; a service has no one to type the passphrase."""


def _no_passphrase() -> bytes:
    raise PassphraseNeeded()


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """The server side of STARTTLS: TLS 1.2 or newer, the certificate chain and its key.
    Raises PassphraseNeeded for an encrypted key (OpenSSL would prompt on the terminal)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key), password=_no_passphrase)
    return ctx


def from_config(config: Config, problems: Problems | None = None) -> GatewaySettings:
    def file_of(key: str) -> str:
        return _config_file_of(config, key)

    return from_table(config.gateway, file_of, problems)


def _config_file_of(config: Config, key: str) -> str:
    if key in config.origin:
        return config.origin[key]
    for dotted in reversed(list(config.origin)):
        if dotted.startswith(key + "."):
            return config.origin[dotted]
    return config.sources[-1] if config.sources else "(defaults)"


def check_gateway(config: Config, problems: Problems) -> None:
    """For load_config(extra=...): the [gateway] errors reported with the loader's."""
    from_config(config, problems)


def with_overrides(
    settings: GatewaySettings,
    *,
    listen: str | None = None,
    next_hop: str | None = None,
    mode: str | None = None,
    quarantine_dir: str | None = None,
    trusted_authserv: list[str] | None = None,
    metrics: str | None = None,
    workers: int | None = None,
) -> GatewaySettings:
    """Apply command line flags (each wins over the file)."""
    src = "command line"
    changes: dict[str, Any] = {}
    if listen is not None:
        changes["listen"] = parse_hostport(listen, src, "--listen", any_port=True)
    if next_hop is not None:
        changes["next_hop"] = parse_hostport(next_hop, src, "--next-hop")
    if mode is not None:
        changes["mode"] = _mode(mode, src, "--mode")
    if quarantine_dir is not None:
        changes["quarantine_dir"] = Path(quarantine_dir)
    if trusted_authserv:
        changes["trusted_authserv_ids"] = tuple(s.lower() for s in trusted_authserv)
    if metrics is not None:
        changes["metrics"] = _metrics(metrics, src, "--metrics")
    if workers is not None:
        changes["workers"] = whole(workers, src, "--workers", 0)
    return replace(settings, **changes)


# The name `brandgate check-config` (gateway/cli/explain.py) calls.
gateway_settings = from_config
