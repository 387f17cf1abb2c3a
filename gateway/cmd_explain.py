"""`brandgate explain FILE`, `brandgate check-config`, `brandgate rules`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from config.loader import Config, ConfigError, load_config, with_trusted_authserv
from filters.checks import all_rules
from filters.engine import Engine
from filters.explain import render
from gateway.options import add_config, add_trusted_authserv


def _read(path: str) -> bytes:
    return sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()


def cmd_explain(args: argparse.Namespace) -> int:
    try:
        engine = Engine(with_trusted_authserv(load_config(args.config), args.trusted_authserv))
    except ConfigError as exc:
        print(f"brandgate: config error: {exc}", file=sys.stderr)
        return 2
    status = 0
    for path in args.files:
        try:
            raw = _read(path)
        except OSError as exc:
            print(f"brandgate: {path}: {exc.strerror}", file=sys.stderr)
            status = 1
            continue
        verdict = engine.scan(raw)
        if args.json:
            print(json.dumps({"source": path, **verdict.to_dict()}, ensure_ascii=False))
        else:
            print(render(verdict, path))
            print()
    return status


def config_problems(cfg: Config) -> list[str]:
    """Consistency the per-file validation cannot see: every rule weighted, no stray weights."""
    rules = all_rules()
    problems = [f"rule {r} has no weight in [rules]" for r in rules if r not in cfg.rules]
    problems += [f"[rules] {r}: no such rule" for r in cfg.rules if r not in rules]
    return problems


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    problems = config_problems(cfg)
    try:
        from gateway.settings import gateway_settings

        gateway_settings(cfg)
    except ConfigError as exc:
        problems.append(str(exc))
    for p in problems:
        print(f"config error: {cfg.sources[-1]}: {p}", file=sys.stderr)
    if problems:
        return 2
    summary: dict[str, Any] = {
        "files": list(cfg.sources),
        "brands": len(cfg.registry),
        "rules": len(cfg.rules),
        "lure_terms": len(cfg.lexicon.terms),
        "thresholds": cfg.thresholds,
        "trusted_authserv_ids": list(cfg.engine.trusted_authserv_ids),
    }
    for key, value in summary.items():
        print(f"{key}: {value}")
    print("config OK")
    return 0


def cmd_rules(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    for rule, desc in sorted(all_rules().items()):
        rw = cfg.rules.get(rule)
        weight = f"{rw.weight:+5.1f} {rw.group:<10}" if rw else "  (no weight)   "
        print(f"{rule:<26} {weight} {desc}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("explain", help="explain the verdict on one or more messages")
    p.add_argument("files", nargs="+", metavar="FILE", help=".eml file, or - for stdin")
    add_config(p)
    add_trusted_authserv(p)
    p.add_argument("--json", action="store_true", help="one JSON record per message")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("check-config", help="validate the configuration and brand registry")
    add_config(p)
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("rules", help="list the rules with their weights and groups")
    add_config(p)
    p.set_defaults(func=cmd_rules)
