"""`brandgate scan PATH...`: verdicts for .eml files, directories, mbox files, Maildirs or stdin."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, TextIO

from config.loader import Config, load_config
from gateway.archives.output import FORMATS, Tally, make_writer, summary_table
from gateway.archives.parallel import ScannerFactory, scan_items
from gateway.archives.progress import Progress
from gateway.archives.read import ArchiveStats, count_hint, estimate_messages, iter_messages
from gateway.cli.options import add_config, add_trusted_authserv, error

# --exit-code: what a script or a Sieve/procmail rule can test, as with `spamassassin -e`.
EXIT_FLAGGED = 1  # some message got tag, quarantine or reject
EXIT_UNSCANNED = 3  # nothing flagged, but some message could not be read or scanned


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "scan",
        help="scan .eml files, directories, mbox files, Maildirs or - (stdin)",
        description=(
            "Scan messages and print one verdict per message, then a summary table. "
            "Directories are read recursively; an mbox is split into its messages."
        ),
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="file, directory, mbox, Maildir or -")
    p.add_argument("--format", choices=FORMATS, default="text", help="record format (text)")
    p.add_argument(
        "-j", "--jobs", type=jobs_arg, default=1, help="worker processes (0 = one per core)"
    )
    add_config(p)
    add_trusted_authserv(p)
    p.add_argument("-o", "--output", metavar="FILE", help="write records here (default stdout)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary")
    p.add_argument(
        "-e",
        "--exit-code",
        action="store_true",
        help=f"exit {EXIT_FLAGGED} when any message is tagged or worse (like spamassassin -e), "
        f"{EXIT_UNSCANNED} when none was but some could not be scanned",
    )
    p.set_defaults(func=run)


def jobs_arg(text: str) -> int:
    """`--jobs N`: N worker processes; 0 means one per core (shared with replay)."""
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 (one per core) or more")
    return value or (os.cpu_count() or 1)


def run(args: argparse.Namespace) -> int:
    return scan_command(args)


def scan_command(args: argparse.Namespace, *, factory: ScannerFactory | None = None) -> int:
    """The scan itself; `factory` replaces the engine in tests."""
    missing = [p for p in args.paths if p != "-" and not os.path.lexists(p)]
    if missing:
        error(f"no such file or directory: {missing[0]}")
        return 2
    config = load_config(args.config)
    try:
        out = _open_output(args.output)
    except OSError as exc:
        error(f"cannot write {args.output}: {exc.strerror or exc}")
        return 2
    try:
        return _scan(args, config, out, factory)
    except BrokenPipeError:
        # `brandgate scan ... | head`: stop quietly, and keep Python from complaining again
        # when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    finally:
        if out is not sys.stdout:
            out.close()


def _open_output(path: str | None) -> TextIO:
    if path is None or path == "-":
        reconfigure = getattr(sys.stdout, "reconfigure", None)
        if reconfigure is not None:
            # Summaries come from mail headers: never die on an unencodable character.
            reconfigure(encoding="utf-8", errors="replace")
        return sys.stdout
    return open(path, "w", encoding="utf-8", errors="replace", newline="")


def _scan(
    args: argparse.Namespace, config: Config, out: TextIO, factory: ScannerFactory | None
) -> int:
    stats = ArchiveStats()
    items = iter_messages(args.paths, max_bytes=config.limits.max_message_bytes, stats=stats)
    # On a terminal that also shows the records, the records are the progress: a bar redrawn
    # between them would only garble both.
    records_on_tty = out is sys.stdout and _isatty(sys.stdout)
    show_progress = not (args.no_progress or args.quiet or records_on_tty) and _isatty(sys.stderr)
    total = (count_hint(args.paths) or estimate_messages(args.paths)) if show_progress else None
    progress = Progress(total, enabled=show_progress)
    writer = make_writer(args.format, out)
    tally = Tally()
    results = scan_items(
        items,
        config_path=args.config,
        trusted_authserv=args.trusted_authserv,
        jobs=args.jobs,
        config=config,
        factory=factory,
    )
    interrupted = False
    try:
        for source, verdict in results:
            writer.write(source, verdict)
            tally.add(verdict)
            progress.update()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        results.close()  # stops the workers at once if we left early
        tally.stop()
        progress.close()
        writer.close()
    if not args.quiet:
        table = summary_table(
            tally,
            archive_errors=stats.errors,
            oversize=stats.oversize,
            jobs=args.jobs,
            interrupted=interrupted,
        )
        to_stdout = args.format == "text" and out is sys.stdout
        dest = sys.stdout if to_stdout else sys.stderr
        if to_stdout:
            dest.write("\n")
        dest.write(table)
        dest.flush()
    if interrupted:
        return 130
    if getattr(args, "exit_code", False):
        if sum(n for v, n in tally.verdicts.items() if v != "pass"):
            return EXIT_FLAGGED
        if tally.scan_errors or stats.errors:
            return EXIT_UNSCANNED
    return 0


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
