"""Benchmark `brandgate replay`: parallel speed-up and memory as the archive grows.

1. Throughput on the dev corpus with --jobs 1 and --jobs 2, alternating, in this one run
   (target >= 1.8x). A busy machine lowers the --jobs 2 figure most: check the load average.
2. Peak memory replaying a 1,000-message and a 100,000-message archive built by repeating small
   corpus messages (target: the large one within 20 % of the small one). Each archive is two
   mbox files, ham/box.mbox and phish/box.mbox, labelled with --labels folders. Each replay runs
   under its own wrapper process, so that getrusage(RUSAGE_CHILDREN) covers that replay alone.

Usage: scripts/bench-replay [--corpus DIR] [--rounds N] [--small N] [--large N] [--jobs N]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = Path(os.environ.get("BRANDGATE_CORPUS", ROOT.parent / "shared" / "corpus"))
BRANDGATE = shutil.which("brandgate", path=os.path.dirname(sys.executable)) or "brandgate"
_FROM_LINE = re.compile(rb"^(>*From )", re.MULTILINE)

# Runs one command, polls its VmHWM (the peak RSS of the replay process itself) and prints
# {"rc", "seconds", "children_maxrss_kb", "main_hwm_kb", "cpu_seconds"} as JSON.
# RUSAGE_CHILDREN's ru_maxrss is the largest single process of the tree it waited for (the
# replay or one of its workers).
_WRAPPER = r"""
import json, resource, subprocess, sys, time
t0 = time.monotonic()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
hwm = 0
def sample():
    global hwm
    try:
        with open(f"/proc/{p.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    hwm = max(hwm, int(line.split()[1]))
    except OSError:
        pass
while p.poll() is None:
    sample()
    time.sleep(0.2)
rc = p.wait()
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": rc, "seconds": time.monotonic() - t0, "main_hwm_kb": hwm,
                  "children_maxrss_kb": ru.ru_maxrss, "cpu_seconds": ru.ru_utime + ru.ru_stime}))
"""


def wrapped(cmd: list[str]) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", _WRAPPER, *cmd], capture_output=True, text=True, check=True
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise SystemExit(f"replay failed ({result['rc']}): {' '.join(cmd)}\n{out.stderr[-2000:]}")
    return result


def replay_cmd(paths: list[str], labels: str, jobs: int, json_out: Path) -> list[str]:
    return [
        BRANDGATE,
        "replay",
        *paths,
        "--labels",
        labels,
        "--jobs",
        str(jobs),
        "--no-progress",
        "--json",
        str(json_out),
    ]


# --------------------------------------------------------------------------- throughput


def _busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all processes, all cores)."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def wait_idle(limit: float) -> float:
    """Wait (up to `limit` s) until the rest of the machine uses under 0.2 core; return the
    load last seen. Linux shares CPU between sessions (autogroups), so while anyone else
    is busy a 2-process run gets no more CPU than a 1-process one and the ratio means nothing."""
    deadline = time.monotonic() + limit
    while True:
        before = _busy_seconds()
        time.sleep(2.0)
        used = (_busy_seconds() - before) / 2.0
        if used < 0.2 or time.monotonic() >= deadline:
            return used


def _spin(n: int) -> int:
    x = 0
    for i in range(n):
        x += i * i % 7
    return x


def machine_ceiling(loops: int = 8_000_000) -> float:
    """What 2 processes of plain Python gain over 1 on this machine right now (shared caches,
    SMT siblings and neighbours' load included): the most --jobs 2 could reach."""
    import multiprocessing

    walls = {}
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.map(_spin, [1, 1])  # start both workers before timing
        for procs in (1, 2):
            started = time.monotonic()
            for _ in range(2 // procs):
                pool.map(_spin, [loops] * procs, chunksize=1)
            walls[procs] = time.monotonic() - started
    return walls[1] / walls[2]


def throughput(corpus: Path, tmp: Path, rounds: int, idle_wait: float) -> float:
    """Alternate --jobs 1 and --jobs 2 `rounds` times, each after waiting for a quiet machine;
    the best rate of each is compared, as the one least disturbed by other work."""
    print(f"== throughput: replay of {corpus / 'dev'} (labels.csv), {rounds} rounds")
    rates: dict[int, list[float]] = {1: [], 2: []}
    cpu: dict[int, list[float]] = {1: [], 2: []}  # user+sys of the whole process tree
    for rnd in range(1, rounds + 1):
        for jobs in (1, 2):
            idle_before = wait_idle(idle_wait)
            out = tmp / f"tp-{jobs}.json"
            cmd = replay_cmd([str(corpus / "dev")], str(corpus / "labels.csv"), jobs, out)
            busy0 = _busy_seconds()
            res = wrapped(cmd)
            others = max(0.0, _busy_seconds() - busy0 - res["cpu_seconds"]) / res["seconds"]
            doc = json.loads(out.read_text())
            rates[jobs].append(doc["messages"] / doc["seconds"])
            cpu[jobs].append(res["cpu_seconds"])
            print(
                f"round {rnd} --jobs {jobs}: {doc['messages']} messages, scan loop "
                f"{doc['seconds']:.1f} s ({rates[jobs][-1]:.1f} msg/s); wall {res['seconds']:.1f} s"
                f", CPU {res['cpu_seconds']:.1f} s; other processes used {others:.2f} cores "
                f"(before: {idle_before:.2f})"
            )
        print(f"round {rnd}: plain-Python 2-process speed-up right now {machine_ceiling():.2f}x")
    best1, best2 = max(rates[1]), max(rates[2])
    ratio = best2 / best1
    print(
        f"best --jobs 1 {best1:.1f} msg/s, best --jobs 2 {best2:.1f} msg/s: "
        f"speed-up {ratio:.2f}x (target >= 1.8x)"
    )
    # CPU per run barely depends on what else the machine does: the parallel overhead it shows
    # (IPC, a second engine to build) bounds the speed-up an idle 2-core machine can reach.
    overhead = min(cpu[2]) / min(cpu[1])
    print(
        f"CPU --jobs 2 / --jobs 1: {overhead:.2f} (so at most {2 / overhead:.2f}x on 2 idle cores)"
    )
    return ratio


# --------------------------------------------------------------------------- memory


def small_messages(folder: Path, lo: int, hi: int, limit: int = 30) -> list[bytes]:
    """Up to `limit` messages of lo..hi bytes, in name order (no message is singled out)."""
    out = []
    for path in sorted(folder.glob("*.eml")):
        if lo <= path.stat().st_size <= hi:
            raw = path.read_bytes()
            if raw.startswith(b"From "):  # a SpamAssassin-style From_ line: not part of it
                raw = raw.split(b"\n", 1)[1] if b"\n" in raw else b""
            out.append(raw)
            if len(out) >= limit:
                break
    if not out:
        raise SystemExit(f"no messages of {lo}..{hi} bytes in {folder}")
    return out


def write_mbox(path: Path, messages: list[bytes], count: int) -> None:
    """`count` messages cycling through `messages`, mboxrd style: a From_ line before each,
    ">From " escaping of body lines, and a blank line after each message."""
    path.parent.mkdir(parents=True, exist_ok=True)
    escaped = []
    for raw in messages:
        body = _FROM_LINE.sub(rb">\1", raw.replace(b"\r\n", b"\n"))
        if not body.endswith(b"\n"):
            body += b"\n"
        escaped.append(body)
    with path.open("wb", buffering=1 << 20) as fh:
        for i in range(count):
            fh.write(b"From bench@example.invalid Sat Jan  1 00:00:00 2000\n")
            fh.write(escaped[i % len(escaped)])
            fh.write(b"\n")


def build_archive(root: Path, count: int, ham: list[bytes], phish: list[bytes]) -> list[str]:
    half = count // 2
    write_mbox(root / "ham" / "box.mbox", ham, count - half)
    write_mbox(root / "phish" / "box.mbox", phish, half)
    return [str(root / "ham" / "box.mbox"), str(root / "phish" / "box.mbox")]


def memory(corpus: Path, tmp: Path, small: int, large: int, jobs: int) -> float:
    print(f"== memory: {small:,} vs {large:,} messages (mbox, --labels folders, --jobs {jobs})")
    ham = small_messages(corpus / "dev" / "ham", 1000, 4000)
    phish = small_messages(corpus / "dev" / "phish", 1500, 6000)
    peaks = {}
    for count in (small, large):
        root = tmp / f"mem-{count}"
        paths = build_archive(root, count, ham, phish)
        size = sum(os.path.getsize(p) for p in paths)
        out = tmp / f"mem-{count}.json"
        res = wrapped(replay_cmd(paths, "folders", jobs, out))
        doc = json.loads(out.read_text())
        assert doc["messages"] == count, (doc["messages"], count)
        peaks[count] = res
        print(
            f"{count:>7,} messages ({size / 1e6:.0f} MB): {res['seconds']:.0f} s, "
            f"{doc['messages'] / doc['seconds']:.0f} msg/s; peak RSS replay process "
            f"{res['main_hwm_kb'] / 1024:.1f} MiB, largest process of the run (RUSAGE_CHILDREN) "
            f"{res['children_maxrss_kb'] / 1024:.1f} MiB"
        )
        shutil.rmtree(root)
    main_ratio = peaks[large]["main_hwm_kb"] / peaks[small]["main_hwm_kb"]
    tree_ratio = peaks[large]["children_maxrss_kb"] / peaks[small]["children_maxrss_kb"]
    print(
        f"peak RSS ratio {large:,}/{small:,}: replay process {main_ratio:.3f}, "
        f"RUSAGE_CHILDREN {tree_ratio:.3f} (target <= 1.20)"
    )
    return max(main_ratio, tree_ratio)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--small", type=int, default=1_000)
    ap.add_argument("--large", type=int, default=100_000)
    ap.add_argument("--jobs", type=int, default=2, help="jobs for the memory runs")
    ap.add_argument("--rounds", type=int, default=3, help="throughput rounds (alternating)")
    ap.add_argument(
        "--idle-wait", type=float, default=300, help="max seconds to wait for a quiet machine"
    )
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    args = ap.parse_args()
    if not (args.corpus / "labels.csv").is_file():
        print(f"bench-replay: no corpus at {args.corpus} (set BRANDGATE_CORPUS)", file=sys.stderr)
        return 2
    started = time.monotonic()
    ok = True
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        if not args.skip_throughput:
            ok &= throughput(args.corpus, Path(tmp), args.rounds, args.idle_wait) >= 1.8
        if not args.skip_memory:
            ok &= memory(args.corpus, Path(tmp), args.small, args.large, args.jobs) <= 1.20
    verdict = "targets met" if ok else "TARGET MISSED"
    print(f"bench-replay: {verdict} ({time.monotonic() - started:.0f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
