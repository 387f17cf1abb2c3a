"""The `[gateway.milter]` table: what only the milter front door needs.

Everything the milter shares with the SMTP modes (allowed_networks, max_sessions,
data_size_limit, fail_open, workers, quarantine_dir, metrics, banner, subject_prefix,
actions, drain_timeout) stays in `[gateway]` and means the same there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from config.loader import ConfigError, number

QUARANTINE_MODES = ("hold", "store", "both")
OVERSIZE = ("reject", "tempfail", "accept")
_KEYS = {"listen", "socket_mode", "idle_timeout", "quarantine", "oversize"}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the milter listens: TCP (host, port) or a UNIX socket path."""

    kind: str  # "inet" or "unix"
    host: str = ""
    port: int = 0
    path: Path | None = None

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"inet:{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class MilterSettings:
    listen: Endpoint = Endpoint("inet", "127.0.0.1", 10030)
    socket_mode: int = 0o660  # UNIX socket: the MTA's group must be able to connect
    idle_timeout: float = 600.0  # between two packets from the MTA
    quarantine: str = "hold"  # Postfix's hold queue, brandgate's store, or both
    oversize: str = "reject"  # beyond gateway.data_size_limit


def parse_endpoint(value: Any, file: str, key: str) -> Endpoint:
    """Postfix's and Sendmail's spellings: inet:HOST:PORT, inet:PORT@HOST, inet6:PORT@HOST,
    unix:/path, local:/path; also a bare /path or HOST:PORT. Port 0 lets the OS choose."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(file, key, f'expected "inet:HOST:PORT" or "unix:/path", got {value!r}')
    spec = value.strip()
    kind, colon, rest = spec.partition(":")
    if spec.startswith("/") or (kind in ("unix", "local") and colon):
        path = Path(spec if spec.startswith("/") else rest)
        if not path.is_absolute():
            raise ConfigError(file, key, f"a UNIX socket needs an absolute path, got {value!r}")
        return Endpoint("unix", path=path)
    if kind in ("inet", "inet6") and colon:
        spec = rest
    if "@" in spec:  # Sendmail: PORT@HOST
        port_s, _, host = spec.partition("@")
    else:
        host, _, port_s = spec.rpartition(":")
    host = host.strip("[]")
    if not host or not port_s.isdigit() or int(port_s) > 65535:
        raise ConfigError(file, key, f'expected "inet:HOST:PORT" or "unix:/path", got {value!r}')
    return Endpoint("inet", host, int(port_s))


def _mode(value: Any, file: str, key: str) -> int:
    if not isinstance(value, str) or not value or any(c not in "01234567" for c in value):
        raise ConfigError(file, key, f'expected an octal mode like "0660", got {value!r}')
    return int(value, 8) & 0o777


def _choice(value: Any, choices: tuple[str, ...], file: str, key: str) -> str:
    if value not in choices:
        raise ConfigError(file, key, f"expected one of {', '.join(choices)}, got {value!r}")
    return str(value)


def from_table(table: Any, file: str) -> MilterSettings:
    k = "gateway.milter."
    if not isinstance(table, Mapping):
        raise ConfigError(file, "gateway.milter", "expected a table")
    for key in table:
        if key not in _KEYS:
            known = ", ".join(sorted(_KEYS))
            raise ConfigError(file, k + key, f"unknown key (known: {known})")
    changes: dict[str, Any] = {}
    if "listen" in table:
        changes["listen"] = parse_endpoint(table["listen"], file, k + "listen")
    if "socket_mode" in table:
        changes["socket_mode"] = _mode(table["socket_mode"], file, k + "socket_mode")
    if "idle_timeout" in table:
        changes["idle_timeout"] = number(table["idle_timeout"], file, k + "idle_timeout", 0.1)
    if "quarantine" in table:
        changes["quarantine"] = _choice(
            table["quarantine"], QUARANTINE_MODES, file, k + "quarantine"
        )
    if "oversize" in table:
        changes["oversize"] = _choice(table["oversize"], OVERSIZE, file, k + "oversize")
    return replace(MilterSettings(), **changes)
