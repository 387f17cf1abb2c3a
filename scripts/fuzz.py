"""brandgate's own fuzz campaign (issue 11). See tests/fuzzing.py for what a case is.

    scripts/fuzz [--cases N] [--seed S] [--jobs J] [--timeout SEC] [--json FILE]
    scripts/fuzz --growth [--repeat R]       cost per generator class at sizes growing x2
    scripts/fuzz --peers [--fetch-peers]     other projects' parser test messages

Exit status 1 when a case raised, hung, took over --slow seconds (CPU or wall), a worker's
peak memory went past --max-rss MiB, or (with --growth) a class grew faster than linearly.
--fetch-peers downloads the peer suites into ~/.cache/brandgate/peers (it needs the network;
without it the suites already cached are scanned, and CPython's own test messages when the
interpreter ships them, and the rest is reported as skipped).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
import sys
import sysconfig
import tarfile
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import fuzzing  # noqa: E402
from tests.hostile import GENERATORS  # noqa: E402

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "brandgate" / "peers"
# Parser test suites of other projects: (name, repository, ref, folder of messages).
PEERS = [
    ("rspamd", "rspamd/rspamd", "master", "test/functional/messages/"),
    ("mime4j", "apache/james-mime4j", "master", "core/src/test/resources/"),
    ("mimekit", "jstedfast/MimeKit", "master", "UnitTests/TestData/messages/"),
    ("nodemailer", "nodemailer/mailparser", "master", "test/fixtures/"),
    ("zbateson", "zbateson/mail-mime-parser", "master", "tests/_data/emails/"),
    ("php-mime-mail-parser", "php-mime-mail-parser/php-mime-mail-parser", "main", "tests/mails/"),
    ("cpython", "python/cpython", "main", "Lib/test/test_email/data/"),
]
GROWTH_EXPONENT = 1.2  # cost ~ bytes**k over a class's whole series: k above this fails
STEP_EXPONENT = 1.6  # and no stretch of two doublings may cost more than this exponent says
# A stretch spans two doublings, not one: at a few milliseconds one noisy measurement can make
# a single doubling look quadratic and the next free; a quadratic regime shows across both.
STEP_SPAN = 2


# --------------------------------------------------------------------------- campaign


def run_campaign(args: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    report = fuzzing.campaign(
        args.cases, seed=args.seed, jobs=args.jobs, timeout=args.timeout, slow_seconds=args.slow
    )
    doc = report.to_dict()
    doc["max_worker_rss_mb"] = args.max_rss
    print(
        f"fuzz: {doc['tried']} cases in {doc['seconds']} s (seed {args.seed}, {args.jobs} "
        f"workers, hard timeout {args.timeout:g} s): {doc['exceptions']} exceptions, "
        f"{doc['hangs']} hangs, {doc['slow']} cases over {args.slow:g} s (CPU or wall), "
        f"mean {doc['cpu_mean_ms']} ms CPU per case, peak worker memory (max RSS) "
        f"{doc['peak_worker_rss_mb']} MiB of {args.max_rss} allowed (reached at {doc['peak_case']})"
    )
    print("slowest cases (CPU s, wall s, bytes, verdict, limits crossed):")
    for r in doc["slowest"]:
        limits = "; ".join(r.get("limits") or []) or "-"
        print(
            f"  {r['cpu']:7.3f} {r['wall']:7.3f} {r['bytes']:>9}  {r['verdict']:10} "
            f"{r['case']} (seed {r['seed']})  [{limits}]"
        )
    print("per class: cases, mean CPU ms, the slowest (CPU s, bytes, rss MiB):")
    for name, row in doc["by_class"].items():
        top = row["slowest"]
        print(
            f"  {name:18} {row['cases']:6} {1000 * row['cpu'] / row['cases']:8.2f}   "
            f"{top['cpu']:.3f} {top['bytes']:>9} {top['rss_mb']:6.1f}  {top['case']}"
        )
    for r in doc["slow_list"][:5]:
        print(f"SLOW {r['cpu']:.3f} s CPU {r['wall']:.3f} s wall: {r['case']} seed {r['seed']}")
    for r in doc["crashes"][:5]:
        print(f"EXCEPTION {r['case']} seed {r['seed']}:\n{r['error']}")
    for r in doc["hangs_list"][:5]:
        print(f"HANG {r['case']} seed {r['seed']}: {r.get('reason')}")
    over_rss = doc["peak_worker_rss_mb"] > args.max_rss
    return doc, bool(doc["exceptions"] or doc["hangs"] or doc["slow"] or over_rss)


# --------------------------------------------------------------------------- growth


def growth_table(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool]:
    by_class: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_class.setdefault(row["case"].split(":")[1], []).append(row)
    table = []
    failed = False
    for gen in GENERATORS:
        series = by_class.get(gen.name, [])
        if any(r.get("error") for r in series) or len(series) < 2:
            table.append({"class": gen.name, "error": [r.get("error") for r in series]})
            failed = True
            continue
        steps = _steps(series)
        overall = _exponent(series[0], series[-1])
        ok = overall <= GROWTH_EXPONENT and max(steps) <= STEP_EXPONENT
        failed |= not ok
        table.append(
            {
                "class": gen.name,
                "what": gen.what,
                "sizes": [int(r["case"].split(":")[2]) for r in series],
                "bytes": [r["bytes"] for r in series],
                "cpu_ms": [round(r["cpu"] * 1000, 1) for r in series],
                "rss_mb": [round(r["rss_mb"]) for r in series],
                "limits": [_cut(r) for r in series],
                "step_exponents": [round(x, 2) for x in steps],
                "exponent": round(overall, 2),
                "linear": ok,
            }
        )
    return table, failed


def _steps(series: list[dict[str, Any]]) -> list[float]:
    """The exponent over each stretch of STEP_SPAN doublings (one, for a two-point series)."""
    span = min(STEP_SPAN, len(series) - 1)
    return [_exponent(series[i], series[i + span]) for i in range(len(series) - span)]


def _cut(row: dict[str, Any]) -> str:
    """The limits a measurement crossed, by name ("-" for none): where the caps begin."""
    names = re.findall(r"\bmax_[a-z_]+", " ".join(row.get("limits") or []))
    return ",".join(dict.fromkeys(names)) or "-"


# Below this, a case's CPU time is the fixed cost of a scan plus noise (one doubling of a
# 100-byte case was measured at 0.5 then 0.9 ms): not a cost that grows with the input.
NOISE_FLOOR = 1e-3


def _exponent(a: dict[str, Any], b: dict[str, Any]) -> float:
    """k in cost ~ bytes**k between two measurements (costs under NOISE_FLOOR count as it)."""
    ca, cb = max(a["cpu"], NOISE_FLOOR), max(b["cpu"], NOISE_FLOOR)
    if b["bytes"] <= a["bytes"]:
        return 0.0
    return math.log(cb / ca) / math.log(b["bytes"] / a["bytes"])


def run_growth(args: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    table, failed = growth_table(fuzzing.growth(repeat=args.repeat))
    print(
        f"cost per generator class, cheapest of {args.repeat} runs (CPU ms), sizes x2; "
        f"k = exponent of cost ~ bytes**k (linear: k <= {GROWTH_EXPONENT} overall, "
        f"<= {STEP_EXPONENT} over any {STEP_SPAN} doublings; costs under {NOISE_FLOOR * 1000:g} ms count as that); "
        "RSS = the worker's peak so far"
    )
    for row in table:
        if "error" in row:
            print(f"  {row['class']:18} ERROR {row['error']}")
            continue
        print(f"  {row['class']:18} ({row['what']})  k={row['exponent']}  linear={row['linear']}")
        head = ("size", "bytes", "CPU ms", "step k", "RSS MiB")
        print("      {:>9} {:>10}   {:>8}  {:>6}  {:>7}  cut by".format(*head))
        # A stretch's exponent stands on the row where it ends.
        span = len(row["sizes"]) - len(row["step_exponents"])
        steps = [""] * span + [f"{k:.2f}" for k in row["step_exponents"]]
        columns = (row["sizes"], row["bytes"], row["cpu_ms"], steps, row["rss_mb"], row["limits"])
        for size, size_bytes, ms, step, rss, cut in zip(*columns, strict=True):
            print(f"      {size:>9} {size_bytes:>10} B {ms:>8.1f}  {step:>6}  {rss:>7}  {cut}")
    return {"growth": table}, failed


# --------------------------------------------------------------------------- peers


def fetch_peers() -> list[str]:
    """Download each peer suite's messages into the cache; returns what could not be had."""
    missing = []
    for name, repo, ref, folder in PEERS:
        target = CACHE / name
        if target.is_dir() and any(target.iterdir()):
            continue
        url = f"https://codeload.github.com/{repo}/tar.gz/refs/heads/{ref}"
        try:
            with urllib.request.urlopen(url, timeout=20) as resp:
                data = resp.read()
        except OSError as exc:
            missing.append(f"{name}: {type(exc).__name__}")
            continue
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for member in tar.getmembers():
                inner = member.name.split("/", 1)[-1]
                if member.isfile() and inner.startswith(folder) and member.size < 8 << 20:
                    out = target / inner[len(folder) :].replace("/", "__")
                    extracted = tar.extractfile(member)
                    if extracted is not None:
                        out.write_bytes(extracted.read())
    return missing


def peer_files() -> tuple[dict[str, list[Path]], list[str]]:
    found: dict[str, list[Path]] = {}
    skipped = []
    for name, *_rest in PEERS:
        files = sorted(p for p in (CACHE / name).glob("*") if p.is_file())
        if files:
            found[name] = files
        elif name != "cpython":
            skipped.append(name)
    local = Path(sysconfig.get_paths()["stdlib"]) / "test" / "test_email" / "data"
    if "cpython" not in found and local.is_dir():
        found["cpython"] = sorted(p for p in local.glob("msg_*.txt"))
    elif "cpython" not in found:
        skipped.append("cpython")
    return found, skipped


def run_peers(args: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    unavailable = fetch_peers() if args.fetch_peers else []
    found, skipped = peer_files()
    summary = fuzzing.scan_files({n: list(map(str, fs)) for n, fs in found.items()})
    print(f"peer suites: {sum(len(f) for f in found.values())} messages from {len(found)}")
    for name, row in summary.items():
        print(
            f"  {name:22} {row['messages']:4} messages, {row['errors']} errors, "
            f"{row['flagged']} flagged ({', '.join(row['flagged_files'][:5]) or '-'})"
        )
    if skipped:
        print(f"  skipped (not cached; scripts/fuzz --peers --fetch-peers): {', '.join(skipped)}")
    doc = {"peers": summary, "skipped": skipped, "unavailable": unavailable}
    return doc, any(row["errors"] for row in summary.values())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=fuzzing.HARD_TIMEOUT, help="per case")
    ap.add_argument(
        "--slow", type=float, default=fuzzing.SLOW_SECONDS, help="a case over this (s) fails"
    )
    ap.add_argument(
        "--max-rss", type=int, default=300, help="peak worker memory (MiB) above this fails"
    )
    ap.add_argument("--growth", action="store_true", help="the cost table per generator class")
    ap.add_argument("--repeat", type=int, default=5, help="runs per growth measurement")
    ap.add_argument("--peers", action="store_true", help="scan other projects' test messages")
    ap.add_argument("--fetch-peers", action="store_true", help="download them first (network)")
    ap.add_argument("--json", metavar="FILE", help="write the report as JSON")
    args = ap.parse_args(argv)
    if args.growth:
        doc, failed = run_growth(args)
    elif args.peers:
        doc, failed = run_peers(args)
    else:
        doc, failed = run_campaign(args)
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
