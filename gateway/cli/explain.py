"""`brandgate explain FILE`, `brandgate check-config`, `brandgate rules`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from typing import Any

from config.loader import Config, Problems, load_config, suggest, with_trusted_authserv
from filters.checks import all_rules
from filters.engine import Engine
from filters.explain import render
from filters.sniff import scan_file
from gateway.archives.read import Item, iter_messages
from gateway.archives.replay import split_source
from gateway.cli.options import add_config, add_trusted_authserv, error
from gateway.settings import check_gateway, from_config


def _items(path: str, max_bytes: int) -> Iterator[Item]:
    """The messages a name stands for: a file (an mbox gives each of its messages), stdin,
    or one message of an mbox as `scan` names it ("box.mbox#3")."""
    if path == "-" or os.path.lexists(path):
        yield from iter_messages([path], max_bytes=max_bytes)
        return
    base, num = split_source(path)
    if num is None or not os.path.lexists(base):
        raise FileNotFoundError(path)
    for item in iter_messages([base], max_bytes=max_bytes):
        if item.source == path:
            yield item
            return
    raise FileNotFoundError(path)


def cmd_explain(args: argparse.Namespace) -> int:
    config = with_trusted_authserv(load_config(args.config), args.trusted_authserv)
    engine = Engine(config)
    status = 0
    for path in args.files:
        try:
            for item in _items(path, config.limits.max_message_bytes):
                _explain_one(engine, item, args.json)
        except FileNotFoundError:
            error(f"{path}: no such file, directory or message")
            status = 1
        except OSError as exc:
            error(f"{path}: {exc.strerror or exc}")
            status = 1
    return status


def _explain_one(engine: Engine, item: Item, as_json: bool) -> None:
    verdict = scan_file(engine, item.raw)
    if as_json:
        print(json.dumps({"source": item.source, **verdict.to_dict()}, ensure_ascii=False))
    else:
        print(render(verdict, item.source))
        print()


def check_rules(cfg: Config, problems: Problems) -> None:
    """Consistency the per-file validation cannot see: every rule weighted, no stray weights,
    every combination made of registered rules."""
    rules = all_rules()
    for r in rules:
        given = any(k.startswith(f"rules.{r}.") or k == f"rules.{r}" for k in cfg.origin)
        if r not in cfg.rules and not given:  # a given but invalid one is reported already
            problems.report(cfg.sources[-1], f"rules.{r}", "this rule has no weight")
    for r in cfg.rules:
        if r not in rules and r not in cfg.combos:
            where = cfg.origin.get(f"rules.{r}.weight", cfg.sources[-1])
            problems.report(where, f"rules.{r}", f"no such rule{suggest(r, rules)}")
    for name, parts in cfg.combos.items():
        for r in parts:
            if r not in rules:
                where = cfg.origin.get(f"combos.{name}", cfg.sources[-1])
                problems.report(where, f"combos.{name}", f"no such rule {r}{suggest(r, rules)}")
    key = "marketplace.discount_rules"
    for r in cfg.marketplace.discount_rules:
        if r not in rules:
            where = cfg.origin.get(key, cfg.sources[-1])
            problems.report(where, key, f"no such rule {r}{suggest(r, rules)}")


def config_problems(cfg: Config) -> list[str]:
    """The consistency problems as text (kept for callers of the earlier API)."""
    p = Problems()
    check_rules(cfg, p)
    return [str(e) for e in p.errors]


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, extra=[check_rules, check_gateway])
    settings = from_config(cfg)
    out = sys.stdout
    out.write("files read:\n")
    for f in cfg.files:
        out.write(f"  {f}\n")
    admin = [(f, lines) for f, lines in cfg.changes]
    if admin:
        out.write("changes over the shipped configuration:\n")
        for f, lines in admin:
            out.write(f"  {f}:\n")
            for line in lines:
                out.write(f"    {line}\n")
    t = cfg.thresholds
    facts = [
        ("brands", str(len(cfg.registry))),
        ("rules", str(len(cfg.rules))),
        ("lure phrases", str(len(cfg.lexicon.terms))),
        ("thresholds", f"tag {t['tag']:g}, quarantine {t['quarantine']:g}, reject {t['reject']:g}"),
        ("trusted authserv-ids", ", ".join(cfg.engine.trusted_authserv_ids) or "(none)"),
        ("allow list", _access_count(cfg, "allow")),
        ("block list", _access_count(cfg, "block")),
        ("recipient policies", str(len(settings.recipients))),
        ("tagging", _tagging(settings)),
        ("passed mail", _passed(settings)),
    ]
    width = max(len(k) for k, _ in facts)
    for key, value in facts:
        out.write(f"{key + ':':<{width + 1}} {value}\n")
    out.write("config OK\n")
    return 0


def _access_count(cfg: Config, side: str) -> str:
    lst = getattr(cfg.access, side)
    parts = [
        f"{len(getattr(lst, k))} {k.replace('_', ' ')}"
        for k in ("addresses", "domains", "authenticated", "link_domains")
    ]
    return ", ".join(parts)


def _tagging(s: Any) -> str:
    changes = [
        name
        for name, on in (("banner", s.banner), ("subject prefix", bool(s.subject_prefix)))
        if on
    ]
    if not changes:
        return "headers only (DKIM signatures stay valid)"
    seal = "ARC-sealed" if s.arc is not None else "not ARC-sealed: DKIM breaks for later hops"
    return f"headers + {' + '.join(changes)} ({seal})"


def _passed(s: Any) -> str:
    if s.pass_headers:
        return "header fields prepended, the rest as it came (gateway.pass_headers)"
    return "left byte for byte as it came (gateway.pass_headers = false)"


def cmd_rules(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    rules = sorted(all_rules().items())
    width = max(len("rule"), *(len(r) for r, _ in rules))
    gwidth = max(len("group"), *(len(rw.group) for rw in cfg.rules.values()))
    print(f"{'rule':<{width}}  {'weight':>7}  {'group':<{gwidth}}  description")
    for rule, desc in rules:
        rw = cfg.rules.get(rule)
        weight = f"{rw.weight:+7.2f}" if rw else "   none"
        group = rw.group if rw else "-"
        print(f"{rule:<{width}}  {weight}  {group:<{gwidth}}  {desc}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("explain", help="explain the verdict on one or more messages")
    p.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help=".eml file, mbox (every message), BOX#N (one message of an mbox, as scan names "
        "it), or - for stdin",
    )
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
