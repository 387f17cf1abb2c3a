"""`brandgate replay PATH... --labels FILE|folders`: measure the engine on labelled mail."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from config.loader import load_config
from gateway.archives import replay
from gateway.archives.output import plural
from gateway.archives.report import render
from gateway.cli.options import add_config, add_trusted_authserv, error
from gateway.cli.scan import jobs_arg


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text}")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "replay",
        help="replay labelled mail: precision/recall, rule statistics, threshold sweep",
        description=(
            "Scan a labelled archive with the same engine as the gateway and report precision, "
            "recall, false positives/negatives, rule hit frequencies and a threshold sweep; "
            "with --compare-config, every message whose verdict changes under another config."
        ),
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help=".eml files, folders, mbox, Maildir")
    p.add_argument(
        "--labels",
        required=True,
        metavar="FILE|folders",
        help="CSV with a path,label header (paths relative to the CSV), or 'folders' to take "
        "the nearest parent folder named as a label (phish/, spam/, ham/ ...)",
    )
    p.add_argument(
        "--positive",
        type=_csv_list,
        default=list(replay.DEFAULT_POSITIVE),
        metavar="L,L",
        help="labels that should be flagged (default: phish; spam is out of scope)",
    )
    p.add_argument(
        "--negative",
        type=_csv_list,
        default=list(replay.DEFAULT_NEGATIVE),
        metavar="L,L",
        help="labels that should pass (default: ham)",
    )
    p.add_argument(
        "--other",
        type=_csv_list,
        default=list(replay.DEFAULT_OTHER),
        metavar="L,L",
        help="more folder names taken as labels, reported but not scored (default: spam,malformed)",
    )
    p.add_argument(
        "--jobs", "-j", type=jobs_arg, default=1, metavar="N", help="processes (0 = per core)"
    )
    add_config(p)
    add_trusted_authserv(p)
    from gateway.cli.tune import add_fit_options

    add_fit_options(p)
    p.add_argument("--compare-config", metavar="DIR", help="second config to diff verdicts with")
    p.add_argument(
        "--target-fpr",
        type=_fraction,
        default=0.005,
        metavar="F",
        help="FP rate the tag threshold must meet (default 0.005)",
    )
    p.add_argument(
        "--target-fpr-quarantine",
        type=_fraction,
        default=0.001,
        metavar="F",
        help="the same for quarantine (default 0.001)",
    )
    p.add_argument("--report", metavar="FILE.html", help="write a self-contained HTML report")
    p.add_argument("--json", metavar="FILE", help="write every figure as JSON ('-' = stdout)")
    p.add_argument(
        "--list-cap",
        type=int,
        default=replay.LIST_CAP,
        metavar="N",
        help="false positives/negatives/changes listed (default %(default)s)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=cmd_replay)


def _labeller(args: argparse.Namespace) -> replay.Labeller:
    if args.labels == "folders":
        return replay.FolderLabels([*args.positive, *args.negative, *args.other])
    labels = replay.CsvLabels(args.labels)
    if not len(labels):
        raise replay.LabelError(f"{args.labels}: no labelled rows")
    return labels


def _progress(args: argparse.Namespace) -> tuple[Callable[[int], None] | None, Callable[[], None]]:
    if args.no_progress or not sys.stderr.isatty():
        return None, lambda: None
    from gateway.archives.progress import Progress
    from gateway.archives.read import count_hint, estimate_messages

    bar = Progress(count_hint(args.paths) or estimate_messages(args.paths))
    return bar.update, bar.close


def _warm_up(config: str | None, jobs: int) -> None:
    """Pay the engine's one-off costs (imports, suffix list, compiled patterns) before the
    scan starts, so that the rate measured over the scan is the steady one for any --jobs."""
    from gateway.archives.parallel import build_engine, mp_context

    if jobs > 1 and mp_context().get_start_method() == "forkserver":
        # The forkserver (a fresh interpreter importing the engine) boots on another core
        # while this one gets the scan going.
        from multiprocessing import forkserver

        forkserver.ensure_running()
        return
    # Inline (--jobs 1) or forked workers: they inherit these imports and module-level
    # caches, paid once here instead of once in every worker.
    build_engine(config).scan(_WARM_UP)


_WARM_UP = (
    b"From: Example <news@example.com>\r\nTo: a@example.org\r\nSubject: hello\r\n"
    b"Content-Type: text/html\r\n\r\n<a href='https://example.com/'>example.com</a>\r\n"
)


def cmd_replay(args: argparse.Namespace) -> int:
    if args.compare_config is not None and "-" in args.paths:
        error("--compare-config reads the archive twice: not from stdin")
        return 2
    try:
        options = replay.Options(
            paths=list(args.paths),
            labeller=_labeller(args),
            labels_from=args.labels,
            policy=replay.LabelPolicy.of(args.positive, args.negative),
            config=args.config,
            compare_config=args.compare_config,
            target_fpr=args.target_fpr,
            target_fpr_quarantine=args.target_fpr_quarantine,
            list_cap=max(0, args.list_cap),
        )
        # Load both configs before scanning, so a typo fails now rather than in the workers.
        configs = [args.config] + ([args.compare_config] if args.compare_config else [])
        loaded = {c: load_config(c) for c in configs}
    except replay.LabelError as exc:
        error(str(exc))
        return 2
    # Like scan: an output that cannot be written fails now, not after an hour of replay.
    for path in (args.report, args.json):
        if path and path != "-" and (why := unwritable(Path(path))):
            error(f"cannot write {path}: {why}")
            return 2
    thresholds = {c: dict(cfg.thresholds) for c, cfg in loaded.items()}
    _warm_up(args.config, args.jobs)
    scanner = replay.EngineScan(
        trusted_authserv=args.trusted_authserv,
        jobs=args.jobs,
        # Cut messages as `scan` does, so both commands judge the same bytes.
        max_bytes=loaded[args.config].limits.max_message_bytes,
    )
    tick, close = _progress(args)
    try:
        outcome = replay.run(
            options,
            scanner,
            thresholds=thresholds.__getitem__,
            rules=replay.registered_rules(),
            pair=scanner.pair,
            tick=tick,
        )
    finally:
        close()
    doc = replay.result(outcome)
    doc["archive"] = {
        "files": scanner.stats.files,
        "unreadable": scanner.stats.errors,
        "truncated": scanner.stats.oversize,
    }
    if args.cv and not outcome.interrupted:
        doc["cv"] = _cross_validated(args, options)
    status = write_outputs(doc, args.report, args.json)
    # With --json -, stdout carries the JSON alone.
    print_summary(doc, sys.stderr if args.json == "-" else sys.stdout)
    if outcome.interrupted:
        return 130
    return status


def _cross_validated(args: argparse.Namespace, options: replay.Options) -> dict[str, Any]:
    """`--cv K`: every fold scored by weights and thresholds learned without it (the tune
    extra), beside the figures of the configured weights above."""
    from gateway.archives import tune
    from gateway.cli.tune import fit_options, print_tuning, tuning

    cfg = load_config(args.config)
    meta = getattr(options.labeller, "meta", lambda _s: ("", ""))
    samples = tune.collect(
        args.paths,
        options.labeller,
        meta,
        config_path=args.config,
        trusted_authserv=args.trusted_authserv,
        jobs=args.jobs,
        max_bytes=cfg.limits.max_message_bytes,
    )
    opt = fit_options(args, options.policy.positive, options.policy.negative)
    doc = tuning(samples, tune.Prior.of(load_config(args.config, learned=False)), opt, args.cv)
    doc.pop("_model")
    out = sys.stderr if args.json == "-" else sys.stdout
    out.write("cross-validated (weights learned per fold, as `brandgate tune` does):\n")
    print_tuning(doc, out)
    # The cross-validated figures first, then the fit on everything they are compared with.
    return {**doc["cv"], "fit": doc["fit"], "overfit": doc["overfit"], "learned": doc["learned"]}


def write_outputs(doc: dict[str, Any], report: str | None, json_path: str | None) -> int:
    status = 0
    outputs: list[tuple[str, Callable[[], str]]] = []
    if report:
        outputs.append((report, lambda: render(doc)))
    if json_path:
        outputs.append((json_path, lambda: json.dumps(doc, indent=1, ensure_ascii=False) + "\n"))
    for path, make in outputs:
        try:
            if path == "-":
                sys.stdout.write(make())
                continue
            _write_atomic(Path(path), make())
        except OSError as exc:
            error(f"cannot write {path}: {exc.strerror or exc}")
            status = 1
    return status


def unwritable(path: Path) -> str | None:
    """Why a file cannot be written at `path` (checked by creating and removing a file beside
    it, as the atomic write will), or None."""
    if path.is_dir():
        return "is a directory"
    folder = path.parent
    if not folder.is_dir():
        return f"no such directory: {folder}"
    probe = folder / f".{path.name}.{os.getpid()}.probe"
    try:
        probe.write_bytes(b"")
    except OSError as exc:
        return exc.strerror or str(exc)
    probe.unlink(missing_ok=True)
    return None


def _write_atomic(path: Path, text: str) -> None:
    # A report open in a browser is never seen half-written.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def print_summary(doc: dict[str, Any], out: TextIO) -> None:
    w = out.write
    for note in doc.get("notes") or ([doc["note"]] if doc.get("note") else []):
        w(f"NOTE: {note}\n")
    n = doc["messages"]
    w(f"{n} {plural(n, 'message')} in {doc['seconds']} s")
    w(f" ({doc['rate']}/s)\n" if doc.get("rate") else "\n")
    w(f"{'label':<12} {'kind':<9} {'total':>7} {'pass':>7} {'tag':>7} {'quar':>7} {'reject':>7}\n")
    for label, row in doc["per_label"].items():
        w(
            f"{label:<12} {row['kind']:<9} {row['total']:>7} {row['pass']:>7} {row['tag']:>7} "
            f"{row['quarantine']:>7} {row['reject']:>7}\n"
        )
    m = doc["metrics"]
    w(
        f"TP {m['tp']}  FP {m['fp']}  FN {m['fn']}  TN {m['tn']}  precision {_pct(m['precision'])}"
        f"  recall {_pct(m['recall'])}  F1 {_pct(m['f1'])}  FPR {_pct(m['fpr'])}"
        f" (95 % upper bound {_pct(m.get('fpr_upper95'))})\n"
    )
    sweep = doc["sweep"]
    for key, name, target in (
        ("recommended_tag", "tag", sweep["target_fpr"]),
        ("recommended_quarantine", "quarantine", sweep["target_fpr_quarantine"]),
    ):
        p = sweep.get(key)
        if p is None:
            w(f"{name}: no threshold meets FPR <= {_pct(target)}\n")
        else:
            w(
                f"{name}: lowest threshold with FPR <= {_pct(target)}: {p['threshold']:g} "
                f"(FP {p['fp']} in {p['negatives']}, FPR at most {_pct(p.get('fpr_upper95'))} "
                f"with 95 % confidence; FN {p['fn']}, recall {_pct(p['recall'])})\n"
            )
    fired = [r for r in doc["rules"] if r["hits"]]
    w(f"rules fired: {len(fired)}; never fired: {len(doc['rules_never_fired'])}\n")
    if "compare" in doc:
        ch = doc["compare"]["changed"]
        cm = doc["compare"]["metrics"]
        w(
            f"compare-config: {ch['total']} verdicts changed {ch['transitions']}; precision "
            f"{_pct(cm['precision'])} recall {_pct(cm['recall'])} FPR {_pct(cm['fpr'])}\n"
        )
