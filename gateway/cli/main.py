# PYTHON_ARGCOMPLETE_OK
"""`brandgate` command line: one sub-command per module, each with register(subparsers).

Shell completion comes from argcomplete: `eval "$(brandgate completion bash)"` (or zsh, fish).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import logging.handlers
import os
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any

from config.loader import ConfigError
from gateway.cli.options import config_error, error, set_prog
from gateway.version import version

# Each module defines register(subparsers) which adds its parser and sets `func`.
COMMAND_MODULES = (
    "gateway.cli.scan",  # scan PATH...
    "gateway.cli.filter",  # filter [FILE]: the tagged message on stdout (spamc style)
    "gateway.cli.explain",  # explain FILE, check-config, rules
    "gateway.cli.replay",  # replay PATH... --labels
    "gateway.cli.tune",  # tune PATH... --labels (learn weights and thresholds)
    "gateway.cli.serve",  # serve
    "gateway.cli.milter",  # milter
    "gateway.cli.quarantine",  # quarantine list|show|release|delete|purge
)
SHELLS = ("bash", "zsh", "fish", "tcsh")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brandgate",
        description="Catch brand-misuse (diversion) mail and explain every verdict.",
    )
    parser.add_argument("--version", action="version", version=f"brandgate {version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="log lines as text or as one JSON object each (default text)",
    )
    parser.add_argument(
        "--syslog",
        nargs="?",
        const="/dev/log",
        metavar="SOCKET|HOST:PORT",
        help="log to syslog as well (facility mail; default socket /dev/log)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    p = sub.add_parser(
        "completion",
        help="print the shell completion script",
        description='Print the completion script for a shell: eval "$(brandgate completion bash)"',
    )
    p.add_argument("shell", choices=SHELLS, nargs="?", default="bash")
    p.set_defaults(func=cmd_completion)
    return parser


def cmd_completion(args: argparse.Namespace) -> int:
    import argcomplete

    sys.stdout.write(argcomplete.shellcode(["brandgate"], shell=args.shell))
    return 0


# --------------------------------------------------------------------------- logging


class JsonFormatter(logging.Formatter):
    """One JSON object per line. A record may carry `fields` (a dict): the per-message log
    line of the gateway does, so its keys arrive as JSON keys rather than inside a string."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update({k: v for k, v in fields.items() if k not in out})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


class _Stderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (tests and embedders swap it)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _syslog_handler(target: str) -> logging.Handler:
    address: str | tuple[str, int]
    if target.startswith("/"):
        address = target
    else:
        host, _, port = target.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--syslog: expected a socket path or HOST:PORT, got {target!r}")
        address = (host.strip("[]"), int(port))
    handler = logging.handlers.SysLogHandler(
        address=address,
        facility=logging.handlers.SysLogHandler.LOG_MAIL,
        socktype=socket.SOCK_DGRAM,
    )
    handler.ident = f"brandgate[{os.getpid()}]: "
    return handler


def setup_logging(verbose: bool, fmt: str, syslog: str | None) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    formatter: logging.Formatter = (
        JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    handlers: list[logging.Handler] = [_Stderr()]
    if syslog:
        handlers.append(_syslog_handler(syslog))
    for h in handlers:
        h.setFormatter(formatter)
    if syslog:
        # syslog stamps time and host itself
        handlers[-1].setFormatter(
            JsonFormatter() if fmt == "json" else logging.Formatter("%(name)s: %(message)s")
        )
    logging.basicConfig(level=level, handlers=handlers, force=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        import argcomplete

        argcomplete.autocomplete(parser)
    except ImportError:  # completion is a convenience; the command works without it
        pass
    args = parser.parse_args(argv)
    set_prog(args.command)
    try:
        setup_logging(args.verbose, args.log_format, args.syslog)
    except (OSError, ValueError) as exc:
        error(f"cannot set up logging: {exc}")
        return 2
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        return config_error(exc)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
