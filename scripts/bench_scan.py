"""Throughput and memory of `brandgate scan`, beside a floor measured in the same run.

    scripts/bench [CORPUS_DIR] [--repeat N] [--no-cli] [--json FILE] [--baseline REV]

--baseline REV also measures the engine of an earlier revision (exported from git into a
temporary folder) against this tree, alternating the two several times in one run, and
reports the ratio of their CPU-time rates: the way to check that a change costs no more than
it may, on a machine whose speed drifts.

QR decoding (filters/qr.py) is measured on its own: the engine with [qr] on and off in this
process by wall time (the decoder is another process, so this process's CPU time would
leave it out), alternating every 100 messages so that the machine's drift falls on both,
the decoder's cache emptied before each pass; and `brandgate scan` with QR off beside it
for peak memory. The decoder process reports its own CPU time and peak RSS.

Floor: the stdlib parse of the same messages (BytesParser(policy=policy.default)) plus
get_content() of every text/* part: what any Python scanner pays before it checks anything.
Messages are read into memory before any timing, so disk is excluded from the in-process
figures; the end-to-end CLI runs read the (page-cached) files themselves and include the
interpreter start.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config.loader import load_config  # noqa: E402
from filters import qr  # noqa: E402
from filters.engine import Engine  # noqa: E402
from gateway.archives.parallel import engine_from_config, scan_items  # noqa: E402
from gateway.archives.read import Item, iter_messages  # noqa: E402

TARGET_RATE = 500.0
TARGET_RATIO = 0.6
TARGET_SCALING = 1.8
TARGET_RSS_MB = 300.0
TARGET_QR_RATIO = 0.9


def floor_one(raw: bytes) -> int:
    """Stdlib parse + text extraction of one message; returns characters extracted."""
    chars = 0
    try:
        message = BytesParser(policy=policy.default).parsebytes(raw)
        for part in message.walk():
            if part.get_content_maintype() != "text" or part.is_multipart():
                continue
            try:
                chars += len(part.get_content())
            except Exception:  # unknown charsets, broken encodings: a floor, not a judge
                continue
    except Exception:
        pass
    return chars


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Best (wall seconds, CPU seconds of this process) of `repeat` runs. CPU time makes the
    single-process figures comparable on a machine busy with other work."""
    best_wall = best_cpu = float("inf")
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best_wall, best_cpu


def run_cli(corpus: Path, jobs: int, config: str | None = None) -> tuple[float, float, int]:
    """(seconds, peak RSS in MB of the command and its waited-for workers, exit status)."""
    cmd = [sys.executable, "-m", "gateway.cli", "scan", str(corpus)]
    cmd += ["--jobs", str(jobs), "--format", "jsonl", "--quiet", "--output", os.devnull]
    cmd += ["--config", config] if config else []
    start = time.perf_counter()
    # stderr to a file, not a pipe: wait4 reads nothing meanwhile, and a pipe could fill
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
        # wait4 gives this child's own rusage, not the maximum over every child we ever ran.
        _pid, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        err = log.read().decode(errors="replace")
    if proc.returncode != 0:
        print(f"  CLI --jobs {jobs} failed ({proc.returncode}):\n{err[-2000:]}", file=sys.stderr)
    return seconds, usage.ru_maxrss / 1024.0, proc.returncode


def measure(corpus: Path, repeat: int, cli: bool) -> dict[str, Any]:
    items: list[Item] = list(iter_messages([str(corpus)]))
    raws = [item.raw for item in items]
    n = len(items)
    if not n:
        raise SystemExit(f"no messages under {corpus}")
    config = load_config(None)
    engine = engine_from_config(config)
    engine.scan(raws[0])  # lazily built indexes are not part of per-message cost

    res: dict[str, Any] = {
        "corpus": str(corpus),
        "messages": n,
        "bytes": sum(map(len, raws)),
        "cpus": os.cpu_count(),
    }

    def floor() -> None:
        for raw in raws:
            floor_one(raw)

    def engine_run() -> None:
        for raw in raws:
            engine.scan(raw).to_dict()

    def pipeline(jobs: int) -> Callable[[], None]:
        def go() -> None:
            for _ in scan_items(iter(items), config_path=None, jobs=jobs, config=config):
                pass

        return go

    res["load_before"] = os.getloadavg()[0]
    res["floor_s"], res["floor_cpu_s"] = timed(floor, repeat)
    res["engine_s"], res["engine_cpu_s"] = timed(engine_run, repeat)
    res.update(measure_qr(raws, config, repeat))
    res["jobs1_s"], _ = timed(pipeline(1), repeat)
    res["jobs2_s"], _ = timed(pipeline(2), repeat)
    if cli:
        res["cli1_s"], res["cli1_rss_mb"], res["cli1_rc"] = run_cli(corpus, 1)
        res["cli2_s"], res["cli2_rss_mb"], res["cli2_rc"] = run_cli(corpus, 2)
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "brandgate.toml").write_text("[qr]\nenabled = false\n")
            res["cli1off_s"], res["cli1off_rss_mb"], _ = run_cli(corpus, 1, tmp)
    res["load_after"] = os.getloadavg()[0]
    for key in [k for k in res if k.endswith("_s")]:
        res[key[:-2] + "_rate"] = n / res[key]
    return res


TARGET_VS_BASELINE = 0.9


def versus_baseline(corpus: Path, rev: str, rounds: int) -> dict[str, Any]:
    """CPU-time rates of this tree and of `rev`, alternated `rounds` times."""
    import shutil
    import statistics
    import tarfile
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="brandgate-baseline-"))
    try:
        archive = subprocess.run(
            ["git", "archive", "--format=tar", rev], cwd=ROOT, capture_output=True, check=True
        ).stdout
        with tarfile.open(fileobj=__import__("io").BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        helper = str(ROOT / "scripts" / "bench_engine_rate.py")

        def rate(tree: Path) -> float:
            out = subprocess.run(
                [sys.executable, helper, str(corpus), "1"],
                cwd=tree,
                capture_output=True,
                text=True,
                check=True,
            )
            return float(out.stdout.strip().splitlines()[-1])

        ours: list[float] = []
        theirs: list[float] = []
        for _ in range(rounds):
            theirs.append(rate(tmp))
            ours.append(rate(ROOT))
        ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
        return {
            "baseline": rev,
            "rates": ours,
            "baseline_rates": theirs,
            "ratio_median": statistics.median(ratios),
            "ratios": ratios,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


QR_CHUNK = 100  # messages per turn of the QR on / off alternation
QR_PASSES = 5  # passes over the corpus, at least (--repeat may ask for more)


def measure_qr(raws: list[bytes], config: Any, repeat: int) -> dict[str, Any]:
    """The engine with QR decoding on and off over the same messages, by wall time (the
    decoder is another process: this one's CPU time would leave it out).

    The two alternate every QR_CHUNK messages, in the order off-on, on-off, ... On a shared
    machine the speed drifts by 15 % within a minute; whole runs one after the other put
    that drift into the ratio, while turns a second long give it to both alike. Each pass
    goes over all the messages with the decoder's cache emptied at its start, so a pass
    decodes what a run over the corpus would (a repeated image once). The ratio is the
    median over the passes; the best pass of each gives the rates."""
    on = Engine(config)
    off = Engine(replace(config, qr=replace(config.qr, enabled=False)))
    for engine in (on, off):
        for raw in raws[:50]:  # warm both, and start the decoder before any timing
            engine.scan(raw)
    chunks = [raws[i : i + QR_CHUNK] for i in range(0, len(raws), QR_CHUNK)]
    best: dict[str, float] = {}
    pairs: list[float] = []
    stats = qr.STATS
    for _ in range(max(QR_PASSES, repeat)):
        qr.clear_cache()
        qr.reset_stats()
        walls = {"qroff": 0.0, "qron": 0.0}
        cpus = dict(walls)
        for turn, chunk in enumerate(chunks):
            order = (("qroff", off), ("qron", on))
            for name, engine in order if turn % 2 == 0 else reversed(order):
                wall, cpu = time.perf_counter(), time.process_time()
                for raw in chunk:
                    engine.scan(raw).to_dict()
                walls[name] += time.perf_counter() - wall
                cpus[name] += time.process_time() - cpu
        stats = qr.STATS
        cpus["qron"] += stats.decoder_cpu
        for name in walls:
            best[f"{name}_s"] = min(best.get(f"{name}_s", float("inf")), walls[name])
            best[f"{name}_cpu_s"] = min(best.get(f"{name}_cpu_s", float("inf")), cpus[name])
        pairs.append(walls["qroff"] / walls["qron"])  # throughput on / off, this pass
    pairs.sort()
    return {
        **best,
        "qr_pair_ratios": pairs,
        "qr_messages": stats.messages,
        "qr_payloads": stats.payloads,
        "qr_decoded": stats.decoded,
        "qr_codes": stats.codes,
        "qr_wait_s": stats.seconds,
        "qr_decoder_cpu_s": stats.decoder_cpu,
        "qr_decoder_rss_mb": stats.decoder_rss_mb,
        "qr_hits": dict(stats.hits),
    }


def qr_lines(res: dict[str, Any]) -> list[str]:
    n = res["messages"]
    ratio = res["qron_rate"] / res["qroff_rate"]
    pairs = res["qr_pair_ratios"]
    median = pairs[len(pairs) // 2]
    cpu_ratio = res["qron_cpu_rate"] / res["qroff_cpu_rate"]
    per = 1000.0 * res["qr_decoder_cpu_s"] / max(1, res["qr_decoded"])
    # The decoder's own CPU time against the scan's: the cost, whatever else the machine does.
    implied = res["qroff_cpu_s"] / (res["qroff_cpu_s"] + res["qr_decoder_cpu_s"])
    hits = ", ".join(f"{k} {v}" for k, v in sorted(res["qr_hits"].items())) or "none"
    return [
        f"QR decoding cost: decoder CPU {res['qr_decoder_cpu_s']:.2f} s for "
        f"{res['qr_decoded']} images and PDFs ({per:.1f} ms each; "
        f"{res['qr_payloads'] - res['qr_decoded']} more from the cache) in "
        f"{res['qr_messages']} of {n} messages = {1 / implied - 1:.1%} of the scan's CPU; "
        f"{res['qr_wait_s']:.2f} s from hand-over to answers (beside the scanner's own work); "
        f"{res['qr_codes']} codes; limits: {hits}",
        f"scan with QR on / off (engine, 1 process, wall, alternating every {QR_CHUNK} "
        f"messages; median of {len(pairs)} passes): {median:.2f} (passes {pairs[0]:.2f}.."
        f"{pairs[-1]:.2f}; best passes {ratio:.2f})   "
        f"target >= {TARGET_QR_RATIO}: {verdict(median >= TARGET_QR_RATIO)}",
        f"  by CPU time, decoder process included: {cpu_ratio:.2f}; from the decoder's CPU "
        f"share: {implied:.2f}",
    ]


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def report(res: dict[str, Any]) -> str:
    n = res["messages"]
    floor = res["floor_rate"]
    lines = [
        f"brandgate scan benchmark: {n} messages, {res['bytes'] / 1e6:.1f} MB "
        f"from {res['corpus']} ({res['cpus']} CPUs)",
        "",
        f"{'':44}{'msg/s':>9}{'seconds':>9}{'/ floor':>9}",
    ]

    def row(label: str, key: str) -> None:
        rate = res[f"{key}_rate"]
        base = res["floor_cpu_rate"] if key.endswith("_cpu") else floor
        lines.append(f"{label:44}{rate:>9.1f}{res[f'{key}_s']:>9.2f}{rate / base:>9.2f}")

    row("floor: stdlib parse + text parts", "floor")
    row("  same, by CPU time", "floor_cpu")
    row("engine.scan in-process, preloaded bytes", "engine")
    row("  same, by CPU time", "engine_cpu")
    row("engine.scan, QR decoding off (wall)", "qroff")
    row("engine.scan, QR decoding on (wall)", "qron")
    row("scan_items --jobs 1, preloaded", "jobs1")
    row("scan_items --jobs 2, preloaded (pool start)", "jobs2")
    if "cli1_s" in res:
        row("brandgate scan --jobs 1 (end to end)", "cli1")
        row("brandgate scan --jobs 2 (end to end)", "cli2")
        row("brandgate scan --jobs 1, QR off (end to end)", "cli1off")
    ratio = res["engine_cpu_rate"] / res["floor_cpu_rate"]
    scaling = res["jobs2_rate"] / res["jobs1_rate"]
    rate = res["engine_cpu_rate"]
    load = max(res["load_before"], res["load_after"])
    lines += [
        "",
        f"scan / floor (engine, 1 process, CPU time): {ratio:.2f}   target >= {TARGET_RATIO}: "
        f"{verdict(ratio >= TARGET_RATIO)}",
        f"scan rate (engine, 1 process, CPU time): {rate:.0f} msg/s   target >= "
        f"{TARGET_RATE:.0f}: {verdict(rate >= TARGET_RATE)}",
        f"jobs 2 / jobs 1 (scan_items, preloaded): {scaling:.2f}   target ~{TARGET_SCALING}: "
        f"{verdict(scaling >= TARGET_SCALING)}",
        *qr_lines(res),
    ]
    if "cli1_s" in res:
        cli_scaling = res["cli2_rate"] / res["cli1_rate"]
        rss = res["cli1_rss_mb"]
        lines += [
            f"jobs 2 / jobs 1 (CLI end to end): {cli_scaling:.2f}",
            f"peak RSS, brandgate scan --jobs 1 --format jsonl: {rss:.0f} MB   target < "
            f"{TARGET_RSS_MB:.0f}: {verdict(rss < TARGET_RSS_MB and res['cli1_rc'] == 0)}",
            f"peak RSS with QR off: {res['cli1off_rss_mb']:.0f} MB; QR decoder process: "
            f"{res['qr_decoder_rss_mb']:.0f} MB (its own, at most qr.max_memory_mb)",
        ]
    lines.append(f"load average during the run: up to {load:.1f} on {res['cpus']} CPUs")
    if load > (res["cpus"] or 1):
        lines.append("  (the machine was busy: wall-clock rates and jobs scaling are understated)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = ROOT.parent / "shared" / "corpus" / "dev"
    parser.add_argument("corpus", nargs="?", default=str(default), help=f"default {default}")
    parser.add_argument("--repeat", type=int, default=1, help="best of N in-process runs")
    parser.add_argument("--no-cli", action="store_true", help="skip the end-to-end CLI runs")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument(
        "--baseline", metavar="REV", help="also compare the engine with git revision REV"
    )
    parser.add_argument("--rounds", type=int, default=5, help="alternations with --baseline")
    args = parser.parse_args(argv)
    corpus = Path(args.corpus)
    if not corpus.is_dir():
        print(f"no corpus at {corpus}", file=sys.stderr)
        return 2
    res = measure(corpus, max(1, args.repeat), not args.no_cli)
    print(report(res))
    if args.baseline:
        vs = versus_baseline(corpus, args.baseline, max(1, args.rounds))
        res["versus_baseline"] = vs
        print(
            f"engine vs {args.baseline} (CPU-time rate, median of {len(vs['ratios'])} "
            f"alternations): {vs['ratio_median']:.2f}   target >= {TARGET_VS_BASELINE}: "
            f"{verdict(vs['ratio_median'] >= TARGET_VS_BASELINE)}"
        )
        print(
            "  rates: this tree "
            + ", ".join(f"{r:.0f}" for r in vs["rates"])
            + f"; {args.baseline} "
            + ", ".join(f"{r:.0f}" for r in vs["baseline_rates"])
        )
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
