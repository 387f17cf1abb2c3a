"""The `[gateway]` table of the configuration, validated into one frozen value.

Every error is a ConfigError naming the file and the key, like the rest of the loader. Command
line flags of `brandgate serve` are applied on top with `with_overrides` and validated the same
way (their "file" is "command line").
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from config.loader import Config, ConfigError, flag, number, whole
from filters.types import VERDICTS
from gateway import milter_settings
from gateway.milter_settings import MilterSettings

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
    "actions",
    "milter",
}


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
    banner: bool = True
    actions: dict[str, str] = field(default_factory=lambda: {v: v for v in VERDICTS})
    milter: MilterSettings = field(default_factory=MilterSettings)  # [gateway.milter]
    # Not from the [gateway] table: serve's view of the engine settings it overrides.
    trusted_authserv_ids: tuple[str, ...] | None = None

    @property
    def greeting_name(self) -> str:
        return self.hostname or socket.gethostname()

    @property
    def worker_count(self) -> int:
        return self.workers or max(1, os.cpu_count() or 1)

    def action_for(self, verdict: str, *, in_session: bool | None = None) -> str:
        """The configured action, after the mode's rule: never reject after the queue.
        in_session: the sender still waits for the answer (before the queue, the milter)."""
        action = self.actions.get(verdict, "pass")
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
        raise ConfigError(file, key, f'expected "HOST:PORT", got {value!r}')
    host, _, port_s = value.rpartition(":")
    host = host.strip("[]")
    low = 0 if any_port else 1
    if not host or not port_s.isdigit() or not low <= int(port_s) < 65536:
        raise ConfigError(file, key, f'expected "HOST:PORT" with a port 1-65535, got {value!r}')
    return host, int(port_s)


def _text(value: Any, file: str, key: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(file, key, f"expected a string, got {value!r}")
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
            raise ConfigError(file, key, f"not a network: {item!r}") from exc
    return tuple(out)


def _mode(value: Any, file: str, key: str) -> str:
    if value not in MODES:
        raise ConfigError(file, key, f"expected one of {', '.join(MODES)}, got {value!r}")
    return str(value)


def _actions(value: Any, file: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ConfigError(file, "gateway.actions", 'expected a table of verdict = "action"')
    out = {v: v for v in VERDICTS}
    for verdict, action in value.items():
        key = f"gateway.actions.{verdict}"
        if verdict not in VERDICTS:
            raise ConfigError(file, key, f"unknown verdict (known: {', '.join(VERDICTS)})")
        if action not in ACTIONS:
            raise ConfigError(file, key, f"expected one of {', '.join(ACTIONS)}, got {action!r}")
        out[verdict] = action
    return out


def _metrics(value: Any, file: str, key: str) -> tuple[str, int] | None:
    if value in ("", None, False):
        return None
    return parse_hostport(value, file, key)


# --------------------------------------------------------------------------- entry points


def from_table(table: Mapping[str, Any], file: str) -> GatewaySettings:
    """Validate a [gateway] table (already merged over the shipped one)."""
    for key in table:
        if key not in _KEYS:
            known = ", ".join(sorted(_KEYS))
            raise ConfigError(file, f"gateway.{key}", f"unknown key (known: {known})")
    s = GatewaySettings()
    t = table
    k = "gateway."
    changes: dict[str, Any] = {}
    if "listen" in t:
        changes["listen"] = parse_hostport(t["listen"], file, k + "listen", any_port=True)
    if "next_hop" in t:
        changes["next_hop"] = parse_hostport(t["next_hop"], file, k + "next_hop")
    if "mode" in t:
        changes["mode"] = _mode(t["mode"], file, k + "mode")
    if "hostname" in t:
        changes["hostname"] = _text(t["hostname"], file, k + "hostname")
    if "allowed_networks" in t:
        changes["allowed_networks"] = _networks(t["allowed_networks"], file, k + "allowed_networks")
    for name in ("max_sessions", "data_size_limit", "workers"):
        if name in t:
            changes[name] = whole(t[name], file, k + name, 0 if name == "workers" else 1)
    for name in ("command_timeout", "data_timeout", "relay_timeout", "drain_timeout"):
        if name in t:
            changes[name] = number(t[name], file, k + name, 0.1)
    for name in ("fail_open", "banner"):
        if name in t:
            changes[name] = flag(t[name], file, k + name)
    if "quarantine_dir" in t:
        qdir = _text(t["quarantine_dir"], file, k + "quarantine_dir")
        changes["quarantine_dir"] = Path(qdir) if qdir else default_quarantine_dir()
    if "metrics" in t:
        changes["metrics"] = _metrics(t["metrics"], file, k + "metrics")
    if "subject_prefix" in t:
        changes["subject_prefix"] = _text(t["subject_prefix"], file, k + "subject_prefix")
    if "actions" in t:
        changes["actions"] = _actions(t["actions"], file)
    if "milter" in t:
        changes["milter"] = milter_settings.from_table(t["milter"], file)
    return replace(s, **changes)


def from_config(config: Config) -> GatewaySettings:
    file = config.sources[-1] if config.sources else "(defaults)"
    return from_table(config.gateway, file)


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


# The name `brandgate check-config` (gateway/cmd_explain.py) calls.
gateway_settings = from_config
