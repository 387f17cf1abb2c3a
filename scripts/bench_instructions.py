"""Instructions per scanned message, this tree against an earlier revision, counted by
valgrind's callgrind: a figure the machine's noise does not move.

    scripts/bench-instructions REV [CORPUS_DIR] [--messages N]

On these shared 2-CPU machines a CPU-time rate drifts by 10-30 % between runs of the same
tree (scripts/bench --baseline alternates the trees to cancel the drift, but five pairs still
spread from 0.75 to 1.07). A count of executed instructions depends only on the code and the
input, so the ratio of two trees' counts says whether a change costs more than it may. It is
a proxy for time: it does not see cache misses or the decoder process (the QR decoder is a
separate process, which callgrind does not follow; scripts/bench reports its cost).

Each tree runs twice under callgrind, scanning 0 and N messages spread over the corpus; the
difference divided by N is the cost of a message, without interpreter start and config load
(which are reported on their own). The four runs go two at a time.
"""

from __future__ import annotations

import argparse
import io
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus" / "dev"
TARGET_RATIO = 0.9  # issue 7: this tree within 10 % of the baseline

# Run inside the tree under test (its own filters/ and gateway/ on the path): scan the first
# `n` of `size` messages taken at an even stride over the corpus.
_RUNNER = """
import os, sys
sys.path.insert(0, os.getcwd())
from filters.engine import Engine
try:
    from gateway.archives.read import iter_messages
except ImportError:  # revisions before the gateway package was arranged by front door
    from gateway.archive import iter_messages
corpus, size, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
raws = [item.raw for item in iter_messages([corpus])]
raws = raws[:: max(1, len(raws) // size)][:size]
engine = Engine.from_path(None)
engine.scan(raws[0])
for raw in raws[:n]:
    engine.scan(raw).to_dict()
"""
_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def instructions(tree: Path, corpus: Path, size: int, n: int, out: Path) -> int:
    runner = out / f"runner-{n}.py"
    runner.write_text(_RUNNER)
    proc = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out / f'callgrind-{n}.out'}",
            sys.executable,
            str(runner),
            str(corpus),
            str(size),
            str(n),
        ],
        cwd=tree,
        capture_output=True,
        text=True,
        check=False,
    )
    found = _COLLECTED.findall(proc.stderr)
    if proc.returncode != 0 or not found:
        raise SystemExit(f"callgrind run in {tree} failed:\n{proc.stderr[-2000:]}")
    return int(found[-1])


def export(rev: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "archive", "--format=tar", rev], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rev", help="the baseline revision (a commit, tag or branch)")
    ap.add_argument("corpus", nargs="?", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--messages", type=int, default=400, help="messages scanned per tree")
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        print("bench-instructions: needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="brandgate-instructions-"))
    try:
        trees = {"this tree": ROOT, args.rev: export(args.rev, tmp / "baseline")}
        jobs = {}
        with ThreadPoolExecutor(max_workers=2) as pool:
            for name, tree in trees.items():
                for n in (0, args.messages):
                    out = tmp / f"{len(jobs)}"
                    out.mkdir()
                    jobs[(name, n)] = pool.submit(
                        instructions, tree, args.corpus.resolve(), args.messages, n, out
                    )
        counts = {key: job.result() for key, job in jobs.items()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    per = {}
    for name in trees:
        start, full = counts[(name, 0)], counts[(name, args.messages)]
        per[name] = (full - start) / args.messages
        print(
            f"{name:>12}: {per[name] / 1e6:7.2f} M instructions per message "
            f"(start and config load {start / 1e9:.2f} G)"
        )
    ratio = per[args.rev] / per["this tree"]
    verdict = "ok" if ratio >= TARGET_RATIO else "MISSED"
    print(
        f"rate this tree / {args.rev} (inverse ratio of instructions per message, "
        f"{args.messages} messages of {args.corpus}): {ratio:.3f}   "
        f"target >= {TARGET_RATIO}: {verdict}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
