"""`brandgate tune PATH... --labels FILE`: learn weights and thresholds, report honest figures.

Writes a brandgate.toml overlay (`--out`) that `--config` takes; `--cv K` adds K-fold
cross-validated figures, per label, per source and for legitimate brand mail, with 95 %
intervals and the gap to the fit.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from config.loader import ConfigError, load_config
from gateway.archives import replay
from gateway.cli.options import add_config, add_trusted_authserv, config_error, error
from gateway.cli.scan import jobs_arg


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text}")
    return value


def _folds(text: str) -> int:
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError("cross-validation needs at least 2 folds")
    return value


def add_fit_options(p: argparse.ArgumentParser) -> None:
    """Options shared by `tune` and `replay --cv`."""
    p.add_argument(
        "--cv",
        type=_folds,
        metavar="K",
        help="K-fold cross-validated figures (each fold scored by weights learned without it)",
    )
    p.add_argument(
        "--tune-target-fpr",
        type=_fraction,
        default=0.0025,
        metavar="F",
        help="share of training ham the tag threshold may flag (default %(default)s)",
    )
    p.add_argument(
        "--l2", type=float, default=0.001, metavar="X", help="ridge penalty (default %(default)s)"
    )
    p.add_argument(
        "--ham-cost",
        type=float,
        default=2.0,
        metavar="X",
        help="one ham weighs this many phish in the fit (default %(default)s)",
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "tune",
        help="learn rule weights and thresholds from labelled mail",
        description=(
            "Scan labelled mail once, fit the rule weights with a regularised logistic "
            "regression, choose thresholds for a target false-positive rate and write a "
            "brandgate.toml overlay; --cv K reports cross-validated figures. Needs the "
            "'tune' extra (numpy, scipy)."
        ),
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help=".eml files, folders, mbox, Maildir")
    p.add_argument(
        "--labels",
        required=True,
        metavar="FILE|folders",
        help="CSV with path,label[,brand,source] (paths relative to the CSV), or 'folders'",
    )
    p.add_argument("--positive", default="phish", metavar="L,L", help="default: phish")
    p.add_argument("--negative", default="ham", metavar="L,L", help="default: ham")
    p.add_argument("--out", metavar="FILE|DIR", help="write the overlay (DIR/brandgate.toml)")
    p.add_argument("--json", metavar="FILE", help="every figure as JSON ('-' = stdout)")
    p.add_argument(
        "--jobs", "-j", type=jobs_arg, default=1, metavar="N", help="processes (0 = per core)"
    )
    add_fit_options(p)
    add_config(p)
    add_trusted_authserv(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=cmd_tune)


def _split(text: str) -> frozenset[str]:
    return frozenset(t.strip().lower() for t in text.split(",") if t.strip())


def labeller_for(labels: str, known: Sequence[str]) -> tuple[replay.Labeller, Any]:
    """(label of a source, (brand, origin) of a source) from a CSV or from folder names."""
    if labels == "folders":
        return replay.FolderLabels(known), lambda _source: ("", "")
    csv_labels = replay.CsvLabels(labels)
    if not len(csv_labels):
        raise replay.LabelError(f"{labels}: no labelled rows")
    return csv_labels, csv_labels.meta


def fit_options(
    args: argparse.Namespace, positive: frozenset[str], negative: frozenset[str]
) -> Any:
    from gateway.archives.tune import FitOptions

    return FitOptions(
        positive=positive,
        negative=negative,
        l2=args.l2,
        ham_cost=args.ham_cost,
        target_fpr=args.tune_target_fpr,
    )


def tuning(samples: Sequence[Any], prior: Any, opt: Any, cv: int | None) -> dict[str, Any]:
    """The model fitted on everything, its figures, and (with cv) the cross-validated ones."""
    from gateway.archives import tune

    model = tune.fit(samples, prior, opt)
    fit_fig = tune.figures(samples, tune.evaluate(samples, model))
    doc: dict[str, Any] = {
        "messages": len(samples),
        "errors": sum(s.error for s in samples),
        "thresholds": model.thresholds,
        "weights": model.weights,
        "learned": list(model.learned),
        "intercept": model.intercept,
        "fit": fit_fig,
        "_model": model,
    }
    if cv:
        ev, models = tune.cross_validate(samples, prior, opt, cv)
        cv_fig = tune.figures(samples, ev)
        doc["cv"] = {
            "folds": cv,
            **cv_fig,
            "thresholds_per_fold": [m.thresholds for m in models],
        }
        doc["overfit"] = tune.gap(fit_fig, cv_fig)
    return doc


def _pct(row: dict[str, Any]) -> str:
    if row["rate"] is None:
        return "-"
    lo, hi = row["ci95"]
    return (
        f"{row['flagged']:>5}/{row['total']:<5} {100 * row['rate']:6.2f}% "
        f"[{100 * lo:.2f}-{100 * hi:.2f}]"
    )


def print_tuning(doc: dict[str, Any], out: TextIO) -> None:
    w = out.write
    t = doc["thresholds"]
    w(
        f"thresholds: tag {t['tag']}  quarantine {t['quarantine']}  reject {t['reject']}; "
        f"{len(doc['learned'])} rules learned\n"
    )
    sections = [("fit on all", doc["fit"])] + (
        [(f"{doc['cv']['folds']}-fold CV", doc["cv"])] if "cv" in doc else []
    )
    for name, fig in sections:
        w(f"{name}: flagged (tag or higher), 95 % interval\n")
        for label, row in fig["labels"].items():
            w(f"  {label:<40} {_pct(row)}\n")
        w(f"  {'ham naming a brand':<40} {_pct(fig['brand_ham'])}\n")
    if "cv" in doc:
        w("per source (cross-validated):\n")
        for key, row in doc["cv"]["sources"].items():
            w(f"  {key:<40} {_pct(row)}\n")
        w("over-fit (fit minus CV, points): ")
        w(
            ", ".join(f"{lb} {100 * v:+.2f}" for lb, v in doc["overfit"].items() if v is not None)
            + "\n"
        )


def cmd_tune(args: argparse.Namespace) -> int:
    from gateway.archives import tune

    positive, negative = _split(args.positive), _split(args.negative)
    try:
        cfg = load_config(args.config)
        # Signs, groups and the weights of rare rules come from the priors, not from the
        # weights a previous tuning shipped (a weight learned as 0 would lose its sign).
        prior = tune.Prior.of(load_config(args.config, learned=False))
        labeller, meta = labeller_for(args.labels, sorted(positive | negative | {"malformed"}))
    except ConfigError as exc:
        return config_error(exc)
    except replay.LabelError as exc:
        error(str(exc))
        return 2
    started = time.monotonic()
    samples = tune.collect(
        args.paths,
        labeller,
        meta,
        config_path=args.config,
        trusted_authserv=args.trusted_authserv,
        jobs=args.jobs,
        max_bytes=cfg.limits.max_message_bytes,
    )
    try:
        doc = tuning(samples, prior, fit_options(args, positive, negative), args.cv)
    except ValueError as exc:
        error(str(exc))
        return 2
    doc["seconds"] = round(time.monotonic() - started, 1)
    model = doc.pop("_model")
    status = 0
    if args.out:
        status = _write_overlay(Path(args.out), tune.overlay_toml(model, prior, _header(doc)))
    if args.json:
        text = json.dumps(doc, indent=1) + "\n"
        if args.json == "-":
            sys.stdout.write(text)
        else:
            Path(args.json).write_text(text, encoding="utf-8")
    out = sys.stderr if args.json == "-" else sys.stdout
    out.write(f"{doc['messages']} labelled messages in {doc['seconds']} s\n")
    print_tuning(doc, out)
    return status


def _header(doc: dict[str, Any]) -> list[str]:
    lines = [
        "brandgate weights and thresholds learned by `brandgate tune`.",
        f"command: brandgate {shlex.join(sys.argv[1:])}",
        f"from {doc['messages']} labelled messages; regenerate with scripts/tune",
    ]
    for name in ("fit", "cv"):
        fig = doc.get(name)
        if not fig:
            continue
        rates = ", ".join(
            f"{lb} {100 * row['rate']:.2f}%" for lb, row in fig["labels"].items() if row["rate"]
        )
        brand = fig["brand_ham"]
        lines.append(
            f"{'cross-validated' if name == 'cv' else 'fit'}: {rates}; "
            f"brand ham {brand['flagged']}/{brand['total']}"
        )
    return lines


def _write_overlay(path: Path, text: str) -> int:
    target = path / "brandgate.toml" if path.is_dir() else path
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        error(f"cannot write {target}: {exc.strerror or exc}")
        return 1
    print(f"overlay written to {target}", file=sys.stderr)
    return 0
