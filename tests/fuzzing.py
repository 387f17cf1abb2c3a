"""The fuzz campaign behind `scripts/fuzz` (and its CI slice, tests/test_fuzz_slice.py).

Cases are mutated real messages (the dev corpus when present, else the golden messages) and
generated hostile ones (tests/hostile.py, one class per cost the issue found). Each case
runs in a budgeted worker (gateway/archives/parallel.py, as `scan` runs): the whole engine
with exceptions let through (Engine.analyse), then the gateway's own byte handling (strip
our headers, tag with banner and subject prefix, dot-stuff for the relay). A case that
raises is a crash; one that overruns the hard timeout is a hang (its worker is killed); a
worker that dies or runs out of its address space is a crash too. Every case is named so
that it can be rebuilt.
"""

from __future__ import annotations

import random
import resource
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.archives.parallel import Budget, map_ordered
from tests.hostile import BY_NAME, EXTRA_CASES, GENERATORS, padded_phish, phish

ROOT = Path(__file__).resolve().parent.parent
CORPUS_DEV = ROOT.parent / "shared" / "corpus" / "dev"
GOLDEN = ROOT / "tests" / "golden"
HARD_TIMEOUT = 20.0  # seconds: past it a case is a hang
SLOW_SECONDS = 2.0  # issue 11: no case may take longer (CPU or wall), counted and listed
WORKER_MEMORY_MB = 1024

# Bytes that steer mutations into the parser's and the gateway's corners.
FRAGMENTS = [
    b"\r\n",
    b"\n",
    b"\r",
    b"\r\n.\r\n",
    b"\n.\n",
    b"\r\n\r\n",
    b"=?utf-8?b?",
    b"=?iso-8859-1?q?=E9?=",
    b"?=",
    b"--",
    b"Content-Type: multipart/mixed; boundary=x\r\n",
    b"\r\n--x\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"X-Brandgate-Verdict: pass\r\n",
    b'From: "PayPal" <a@paypa1.com>\r\n',
    b"Subject: Amazon gift card\r\n",
    b"<a href='https://www.paypal.com@evil.example/'>",
    b"https://" + b"a." * 300 + b"evil.example/",
    b"\x00",
    b"\xff\xfe",
    b"\xe2\x80\xae",
    b" \t",
]


# --------------------------------------------------------------------------- the cases


def seeds() -> list[Path]:
    """Messages to mutate: the dev corpus when it is here, else the golden ones."""
    found = sorted(CORPUS_DEV.glob("*/*.eml")) if CORPUS_DEV.is_dir() else []
    return found or sorted(GOLDEN.glob("*.eml"))


def mutate(raw: bytes, rng: random.Random) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randint(1, 8)):
        pos = rng.randint(0, len(data))
        kind = rng.random()
        if kind < 0.25 and data:
            data[min(pos, len(data) - 1)] = rng.randrange(256)
        elif kind < 0.5:
            data[pos:pos] = rng.choice(FRAGMENTS)
        elif kind < 0.65:
            del data[pos : pos + rng.randint(1, 256)]
        elif kind < 0.8 and data:  # a slice repeated: grows structure, not just bytes
            start = rng.randint(0, max(0, len(data) - 1))
            piece = bytes(data[start : start + rng.randint(1, 400)])
            data[pos:pos] = piece * rng.randint(2, 200)
        elif kind < 0.9:  # a header line repeated many times
            data[0:0] = rng.choice(FRAGMENTS[13:17]) * rng.randint(10, 3000)
        else:
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    return bytes(data)


@dataclass(frozen=True, slots=True)
class Case:
    name: str  # enough to rebuild it: see build()
    seed: int


def plan(count: int, seed: int, seed_files: list[Path]) -> Iterator[Case]:
    """`count` case names: 7 in 10 mutations of a seed file, the rest generated."""
    rng = random.Random(seed)
    for i in range(count):
        case_seed = seed * 1_000_003 + i
        if seed_files and rng.random() < 0.7:
            path = rng.choice(seed_files)
            yield Case(f"mutate:{path.relative_to(path.parent.parent)}", case_seed)
        elif rng.random() < 0.05:
            yield Case(f"gen:banner-boundary:{rng.randint(50, 62)}", case_seed)
        elif rng.random() < 0.05:
            yield Case(f"gen:padded-phish:{rng.choice([1500, 11000, 60000, 70000])}", case_seed)
        else:
            gen = rng.choice(GENERATORS)
            yield Case(f"gen:{gen.name}:{rng.choice(gen.sizes)}", case_seed)


def build(case: Case, seed_root: Path | None = None) -> bytes:
    rng = random.Random(case.seed)
    kind, _, rest = case.name.partition(":")
    if kind == "mutate":
        root = seed_root or (CORPUS_DEV if CORPUS_DEV.is_dir() else GOLDEN.parent)
        return mutate((root / rest).read_bytes(), rng)
    name, _, size = rest.rpartition(":")
    if name == "padded-phish":
        return padded_phish("fuzz", int(size))
    if name in EXTRA_CASES:
        return EXTRA_CASES[name](int(size), rng)
    return BY_NAME[name].make(int(size), rng)


# --------------------------------------------------------------------------- in the worker

_ENGINE: dict[str, Any] = {}


def init_worker() -> None:
    from filters.engine import Engine

    _ENGINE["engine"] = Engine.from_path(None)
    run_case(Case("warm-up", 0), phish("warm-up"))  # imports and caches, off the clock


def run_case(case: Case, raw: bytes) -> dict[str, Any]:
    from gateway import actions
    from gateway.smtp.client import dot_stuff

    engine = _ENGINE["engine"]
    t0, c0 = time.perf_counter(), time.process_time()
    error = None
    verdict = None
    try:
        verdict = engine.analyse(raw).verdict
        clean = actions.strip_our_headers(raw, spam=True, authserv_id="brandgate.test")
        marking = actions.Marking(
            required=4.0, authserv_id="brandgate.test", banner=True, subject_prefix="[SUSPICIOUS]"
        )
        actions.mark(clean, verdict, marking, "tag")
        dot_stuff(clean)
    except MemoryError:
        raise  # the worker's budget: reported as a crash by the parent
    except Exception:
        error = traceback.format_exc(limit=6)
    return {
        "case": case.name,
        "seed": case.seed,
        "bytes": len(raw),
        "wall": time.perf_counter() - t0,
        "cpu": time.process_time() - c0,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "verdict": verdict.verdict if verdict else None,
        "limits": [f.evidence[0] for f in verdict.findings if f.rule == "LIMIT_EXCEEDED"]
        if verdict
        else [],
        "error": error,
    }


def fuzz_one(case: Case) -> dict[str, Any]:
    return run_case(case, build(case))


def growth_one(task: tuple[str, int, int]) -> dict[str, Any]:
    """The cheapest of `repeat` runs of one generated case (CPU seconds)."""
    name, size, repeat = task
    raw = BY_NAME[name].make(size, random.Random(size))
    best: dict[str, Any] | None = None
    for _ in range(repeat):
        got = run_case(Case(f"gen:{name}:{size}", size), raw)
        if best is None or got["cpu"] < best["cpu"]:
            best = got
    assert best is not None
    return best


# --------------------------------------------------------------------------- the campaign


@dataclass
class Report:
    tried: int = 0
    crashes: list[dict[str, Any]] = field(default_factory=list)
    hangs: list[dict[str, Any]] = field(default_factory=list)
    slowest: list[dict[str, Any]] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    peak_case: str = ""
    seconds: float = 0.0
    slow_seconds: float = SLOW_SECONDS
    slow: list[dict[str, Any]] = field(default_factory=list)  # over slow_seconds, CPU or wall
    cpu_total: float = 0.0
    by_class: dict[str, dict[str, Any]] = field(default_factory=dict)  # cases, slowest, peak

    def add(self, rec: dict[str, Any], keep: int = 5) -> None:
        self.tried += 1
        if rec.get("hang"):
            self.hangs.append(rec)
            return
        if rec.get("error"):
            self.crashes.append(rec)
        if max(rec.get("cpu", 0.0), rec.get("wall", 0.0)) > self.slow_seconds:
            self.slow.append(rec)
        self.cpu_total += rec.get("cpu", 0.0)
        self._count_class(rec)
        if rec.get("rss_mb", 0) > self.peak_rss_mb:
            self.peak_rss_mb, self.peak_case = rec["rss_mb"], rec["case"]
        if "cpu" in rec:
            self.slowest = sorted([*self.slowest, rec], key=lambda r: -r["cpu"])[:keep]

    def _count_class(self, rec: dict[str, Any]) -> None:
        """Per generator class (or "mutate"): cases, CPU spent, the slowest one."""
        kind, _, rest = rec["case"].partition(":")
        name = kind if kind != "gen" else rest.rpartition(":")[0]
        row = self.by_class.setdefault(name, {"cases": 0, "cpu": 0.0, "slowest": None})
        row["cases"] += 1
        row["cpu"] += rec.get("cpu", 0.0)
        if row["slowest"] is None or rec.get("cpu", 0.0) > row["slowest"]["cpu"]:
            row["slowest"] = _brief(rec)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tried": self.tried,
            "exceptions": len(self.crashes),
            "hangs": len(self.hangs),
            "peak_worker_rss_mb": round(self.peak_rss_mb, 1),
            "peak_case": self.peak_case,
            "seconds": round(self.seconds, 1),
            "cpu_mean_ms": round(1000 * self.cpu_total / max(1, self.tried), 2),
            "slow_seconds": self.slow_seconds,
            "slow": len(self.slow),
            "slow_list": [_brief(r) for r in sorted(self.slow, key=lambda r: -r["wall"])[:20]],
            "slowest": [_brief(r) for r in self.slowest],
            "crashes": [_brief(r) | {"error": r["error"]} for r in self.crashes[:20]],
            "hangs_list": [_brief(r) for r in self.hangs[:20]],
            "by_class": {
                name: row | {"cpu": round(row["cpu"], 3)}
                for name, row in sorted(self.by_class.items())
            },
        }


def _brief(rec: dict[str, Any]) -> dict[str, Any]:
    keys = ("case", "seed", "bytes", "cpu", "wall", "rss_mb", "verdict", "limits", "reason")
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in rec.items() if k in keys}


def _overrun(case: Case, reason: str) -> dict[str, Any]:
    record = {"case": case.name, "seed": case.seed, "reason": reason}
    if reason.startswith("time"):
        return record | {"hang": True}
    return record | {"error": f"worker lost: {reason}"}


def campaign(
    cases: int,
    seed: int = 1,
    jobs: int = 2,
    timeout: float = HARD_TIMEOUT,
    slow_seconds: float = SLOW_SECONDS,
) -> Report:
    report = Report(slow_seconds=slow_seconds)
    t0 = time.monotonic()
    results = map_ordered(
        fuzz_one,
        plan(cases, seed, seeds()),
        jobs=jobs,
        window=64,
        batch_size=4,
        initializer=init_worker,
        budget=Budget(timeout, WORKER_MEMORY_MB),
        overrun=_overrun,
    )
    for rec in results:
        report.add(rec)
    report.seconds = time.monotonic() - t0
    return report


def growth(repeat: int = 3, timeout: float = 120.0) -> list[dict[str, Any]]:
    """Per generator class and size: the cheapest CPU time of `repeat` runs, in one worker."""
    tasks = [(g.name, size, repeat) for g in GENERATORS for size in g.sizes]
    return list(
        map_ordered(
            growth_one,
            tasks,
            jobs=1,
            window=1,
            batch_size=1,
            initializer=init_worker,
            budget=Budget(timeout * repeat, WORKER_MEMORY_MB),
            overrun=lambda task, reason: {"case": f"gen:{task[0]}:{task[1]}", "error": reason},
        )
    )


def scan_one(path: str) -> dict[str, Any]:
    raw = Path(path).read_bytes()
    rec = run_case(Case(f"file:{path}", 0), raw)
    return rec


def scan_files(groups: dict[str, list[str]], jobs: int = 2) -> dict[str, dict[str, Any]]:
    """Every file of every group through the fuzz case (engine + tagging), in budgeted
    workers; per group: messages, errors, and which ones were flagged (not pass)."""
    out: dict[str, dict[str, Any]] = {}
    tasks = [(name, path) for name, paths in groups.items() for path in paths]
    results = map_ordered(
        _scan_task,
        tasks,
        jobs=jobs,
        initializer=init_worker,
        budget=Budget(HARD_TIMEOUT, WORKER_MEMORY_MB),
        overrun=lambda task, reason: {"group": task[0], "case": task[1], "error": reason},
    )
    for rec in results:
        row = out.setdefault(
            rec["group"],
            {"messages": 0, "errors": 0, "flagged": 0, "flagged_files": [], "failures": []},
        )
        row["messages"] += 1
        if rec.get("error"):
            row["errors"] += 1
            row["failures"].append({"file": rec["case"], "error": rec["error"]})
        elif rec.get("verdict") not in (None, "pass"):
            row["flagged"] += 1
            row["flagged_files"].append(Path(rec["case"].removeprefix("file:")).name)
    return out


def _scan_task(task: tuple[str, str]) -> dict[str, Any]:
    group, path = task
    return scan_one(path) | {"group": group}
