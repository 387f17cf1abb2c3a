"""Replay a labelled archive through the engine: metrics, rule statistics, threshold sweep and a
verdict diff between two configurations.

Memory stays flat however large the archive: nothing per message is kept. Every message is
folded into counters at once (verdicts per label, a histogram of scores in hundredths -- the
precision of `Verdict.to_dict()` -- per label, rule hits per label); only the first
`list_cap` false positives, false negatives and changed verdicts are kept for people to read,
and the rest are counted.

The scan itself is injected (`ScanFn`): the default runs `gateway.archives.parallel.scan_items` over
`gateway.archives.read.iter_messages`, the very engine `brandgate scan` and the gateway run; tests
may pass a fake.
"""

from __future__ import annotations

import csv
import functools
import math
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filters.types import VERDICTS
from gateway.archives.output import plural

# (paths, config dir or None) -> (source, verdict dict) in input order.
ScanFn = Callable[[Sequence[str], str | None], Iterator[tuple[str, dict[str, Any]]]]
# (paths, config a, config b) -> (source, verdict under a, verdict under b) in input order.
PairFn = Callable[
    [Sequence[str], str | None, str | None], Iterator[tuple[str, dict[str, Any], dict[str, Any]]]
]
# source -> label, or None when the message carries none.
Labeller = Callable[[str], str | None]

UNLABELLED = "unlabelled"
# brandgate catches brand misuse, not spam in general: by default only phish is a positive,
# and spam is reported per label but left out of precision and recall.
DEFAULT_POSITIVE = ("phish",)
DEFAULT_NEGATIVE = ("ham",)
# Folder names that are labels even though they are neither positive nor negative by default.
DEFAULT_OTHER = ("spam", "malformed")
# Labels whose mail is outside what brandgate is for: counted as positives, they pull recall
# down for mail it was never meant to flag, so the report warns.
OUT_OF_SCOPE = ("spam",)
NOT_MAIL = "not-mail"  # the status of a file that is no mail (filters.sniff)
NO_CLAIM = "(no brand claimed)"
LIST_CAP = 500
SCHEMA = "brandgate-replay/1"

_VERDICT_INDEX = {v: i for i, v in enumerate(VERDICTS)}


class LabelError(Exception):
    """A labels file that cannot be used (missing, no header, no path/label columns)."""


# --------------------------------------------------------------------------- labels


@dataclass(frozen=True, slots=True)
class LabelPolicy:
    positive: frozenset[str]
    negative: frozenset[str]

    @classmethod
    def of(cls, positive: Iterable[str], negative: Iterable[str]) -> LabelPolicy:
        pos = frozenset(_norm_label(p) for p in positive if p.strip())
        neg = frozenset(_norm_label(n) for n in negative if n.strip())
        if pos & neg:
            raise LabelError(f"labels both positive and negative: {', '.join(sorted(pos & neg))}")
        return cls(pos, neg)

    def kind(self, label: str) -> str:
        if label in self.positive:
            return "positive"
        if label in self.negative:
            return "negative"
        return "other"


def _norm_label(label: str) -> str:
    return label.strip().lower()


def _resolved(path: str) -> str:
    """The path with its folder made absolute and symlink-free (the file name kept as is):
    the same file named from another cwd or through a linked folder gives the same key."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(_real_dir(folder), name)


@functools.lru_cache(maxsize=4096)
def _real_dir(folder: str) -> str:
    # Cached per folder: a million-row labels file or archive resolves each folder once.
    return os.path.realpath(folder)


def split_source(source: str) -> tuple[str, str | None]:
    """("box.mbox", "12") for "box.mbox#12"; (source, None) for a plain file."""
    base, sep, num = source.rpartition("#")
    if sep and base and num.isdigit():
        return base, num
    return source, None


class CsvLabels:
    """Labels from a CSV with a `path,label[,...]` header; paths relative to the CSV's folder.

    A row may name one message of an mbox ("box.mbox#3") or the whole file ("box.mbox").
    """

    def __init__(self, csv_path: Path | str) -> None:
        self.path = Path(csv_path)
        self._labels: dict[str, str] = {}
        # Optional columns kept for per-source and per-brand figures (tune, replay --cv).
        self._meta: dict[str, tuple[str, str]] = {}
        base = self.path.resolve().parent
        try:
            with self.path.open(newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh)
                fields = [f.strip().lower() for f in reader.fieldnames or ()]
                if "path" not in fields or "label" not in fields:
                    raise LabelError(f"{self.path}: needs a header with 'path' and 'label' columns")
                reader.fieldnames = fields
                for row in reader:
                    rel, label = (row.get("path") or "").strip(), (row.get("label") or "")
                    if not rel or not label.strip():
                        continue
                    file, num = split_source(rel)
                    key = _resolved(str(base / file))
                    key = key if num is None else f"{key}#{num}"
                    self._labels[key] = _norm_label(label)
                    brand, origin = (row.get("brand") or "").strip(), (row.get("source") or "")
                    if brand or origin:
                        self._meta[key] = (brand, origin.split("@", 1)[0].strip())
        except OSError as exc:
            raise LabelError(f"{self.path}: {exc.strerror or exc}") from exc

    def __len__(self) -> int:
        return len(self._labels)

    def _key(self, source: str) -> str:
        file, num = split_source(source)
        key = _resolved(file)
        return f"{key}#{num}" if num is not None and f"{key}#{num}" in self._labels else key

    def __call__(self, source: str) -> str | None:
        return self._labels.get(self._key(source))

    def meta(self, source: str) -> tuple[str, str]:
        """(brand, origin) from the optional `brand` and `source` columns ("" when absent);
        the origin is the part before any "@commit"."""
        return self._meta.get(self._key(source), ("", ""))


class FolderLabels:
    """The nearest parent folder whose name is a known label (`.../phish/x.eml` -> "phish")."""

    def __init__(self, known: Iterable[str]) -> None:
        self.known = frozenset(_norm_label(k) for k in known)
        self._for_file = functools.lru_cache(maxsize=4096)(self._lookup)

    def __call__(self, source: str) -> str | None:
        return self._for_file(split_source(source)[0])

    def _lookup(self, file: str) -> str | None:
        for parent in Path(_resolved(file)).parents:
            name = parent.name.lower()
            if name in self.known:
                return name
        return None


# --------------------------------------------------------------------------- the tally


def _rules_of(d: dict[str, Any]) -> list[str]:
    return [str(f.get("rule", "")) for f in d.get("findings") or ()]


def brief(source: str, label: str, d: dict[str, Any]) -> dict[str, Any]:
    """The readable record kept for a false positive, false negative or changed verdict."""
    return {
        "source": source,
        "label": label,
        "verdict": d.get("verdict"),
        "score": d.get("score"),
        "brand": d.get("brand"),
        "summary": d.get("summary"),
        "status": d.get("status", "ok"),
        "rules": _rules_of(d),
    }


@dataclass(slots=True)
class _Capped:
    cap: int
    shown: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0

    def add(self, make: Callable[[], dict[str, Any]]) -> None:
        # `make` is called only while there is room, so most of a large archive costs a count.
        self.total += 1
        if len(self.shown) < self.cap:
            self.shown.append(make())

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "shown": self.shown, "omitted": self.total - len(self.shown)}


class Tally:
    """Everything replay learns about one configuration, in memory bounded by the number of
    labels, distinct scores and rules -- never by the number of messages."""

    def __init__(self, policy: LabelPolicy, list_cap: int = LIST_CAP) -> None:
        self.policy = policy
        self.messages = 0
        self.verdicts: dict[str, list[int]] = {}  # label -> count per VERDICTS index
        self.errors: Counter[str] = Counter()  # label -> scans with status "error"
        self.scores: dict[str, Counter[int]] = {}  # label -> score in hundredths -> count
        self.rule_hits: dict[str, Counter[str]] = {}  # rule -> label -> messages hit
        self.rule_score: defaultdict[str, float] = defaultdict(float)  # rule -> summed score
        self.false_pos = _Capped(list_cap)
        self.false_neg = _Capped(list_cap)
        self.not_mail = _Capped(min(list_cap, 50))  # files that are no mail: not scored
        # brand claimed -> label -> [messages, flagged]
        self.brands: dict[str, dict[str, list[int]]] = {}

    def add(self, source: str, label: str, d: dict[str, Any]) -> None:
        if d.get("status") == NOT_MAIL:
            self.not_mail.add(lambda: {"source": source, "label": label, "why": d.get("summary")})
            return
        self.messages += 1
        verdict = str(d.get("verdict", "pass"))
        vi = _VERDICT_INDEX.get(verdict, 0)
        counts = self.verdicts.get(label)
        if counts is None:
            counts = self.verdicts[label] = [0] * len(VERDICTS)
            self.scores[label] = Counter()
        counts[vi] += 1
        if d.get("status", "ok") != "ok":
            self.errors[label] += 1
        self.scores[label][round(float(d.get("score") or 0.0) * 100)] += 1
        seen: set[str] = set()
        for f in d.get("findings") or ():
            rule = str(f.get("rule", ""))
            self.rule_score[rule] += float(f.get("score") or 0.0)
            if rule not in seen:
                seen.add(rule)
                hits = self.rule_hits.get(rule)
                if hits is None:
                    hits = self.rule_hits[rule] = Counter()
                hits[label] += 1
        per_brand = self.brands.setdefault(str(d.get("brand") or NO_CLAIM), {})
        cell = per_brand.setdefault(label, [0, 0])
        cell[0] += 1
        cell[1] += vi > 0
        kind = self.policy.kind(label)
        if kind == "negative" and vi > 0:
            self.false_pos.add(lambda: brief(source, label, d))
        elif kind == "positive" and vi == 0:
            self.false_neg.add(lambda: brief(source, label, d))

    # ----------------------------------------------------------------- derived figures

    def labels_of(self, kind: str) -> list[str]:
        return sorted(lb for lb in self.verdicts if self.policy.kind(lb) == kind)

    def _total(self, kind: str) -> int:
        return sum(sum(self.verdicts[lb]) for lb in self.labels_of(kind))

    def _flagged(self, kind: str) -> int:
        return sum(sum(self.verdicts[lb][1:]) for lb in self.labels_of(kind))

    def metrics(self) -> dict[str, Any]:
        pos, neg = self._total("positive"), self._total("negative")
        tp, fp = self._flagged("positive"), self._flagged("negative")
        return confusion(tp, fp, pos - tp, neg - fp)

    def per_label(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for label in sorted(self.verdicts, key=lambda lb: (_KIND_ORDER[self.policy.kind(lb)], lb)):
            counts = self.verdicts[label]
            row: dict[str, Any] = {"kind": self.policy.kind(label), "total": sum(counts)}
            row.update(zip(VERDICTS, counts, strict=True))
            row["flagged"] = sum(counts[1:])
            row["errors"] = self.errors.get(label, 0)
            out[label] = row
        return out

    def brand_stats(self, limit: int = 200) -> list[dict[str, Any]]:
        """Per brand claimed: messages and flagged ones per label kind, most mail first."""
        rows = []
        for brand, per_label in self.brands.items():
            row: dict[str, Any] = {"brand": brand}
            for kind in ("positive", "negative", "other"):
                cells = [c for lb, c in per_label.items() if self.policy.kind(lb) == kind]
                row[kind] = sum(c[0] for c in cells)
                row[f"{kind}_flagged"] = sum(c[1] for c in cells)
            row["recall"] = _r(_ratio(row["positive_flagged"], row["positive"]))
            rows.append(row)
        rows.sort(key=lambda r: (-(r["positive"] + r["negative"] + r["other"]), r["brand"]))
        return rows[:limit]

    def kind_scores(self, kind: str) -> Counter[int]:
        acc: Counter[int] = Counter()
        for label in self.labels_of(kind):
            acc.update(self.scores[label])
        return acc

    def rule_stats(self, descriptions: dict[str, str]) -> list[dict[str, Any]]:
        pos_labels, neg_labels = set(self.labels_of("positive")), set(self.labels_of("negative"))
        n_pos, n_neg = self._total("positive"), self._total("negative")
        total_abs = sum(abs(v) for v in self.rule_score.values()) or 1.0
        rows: list[dict[str, Any]] = []
        for rule in sorted(set(descriptions) | set(self.rule_hits)):
            hits = self.rule_hits.get(rule, Counter())
            h_pos = sum(c for lb, c in hits.items() if lb in pos_labels)
            h_neg = sum(c for lb, c in hits.items() if lb in neg_labels)
            p_pos = _pct(h_pos, n_pos)
            p_neg = _pct(h_neg, n_neg)
            so = p_pos / (p_pos + p_neg) if (p_pos + p_neg) > 0 else None
            score = self.rule_score.get(rule, 0.0)
            rows.append(
                {
                    "rule": rule,
                    "description": descriptions.get(rule, "(not a registered rule)"),
                    "hits": sum(hits.values()),
                    "hits_positive": h_pos,
                    "hits_negative": h_neg,
                    "hits_other": sum(hits.values()) - h_pos - h_neg,
                    "pct_positive": _r(p_pos),
                    "pct_negative": _r(p_neg),
                    "so": None if so is None else round(so, 3),
                    "score_sum": round(score, 2),
                    "score_share": round(score / total_abs, 4),
                }
            )
        rows.sort(key=lambda r: (-r["hits"], -abs(r["score_sum"]), r["rule"]))
        return rows


_KIND_ORDER = {"positive": 0, "negative": 1, "other": 2}


def _pct(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else 0.0


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(x, nd)


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (n may be large)."""
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 1.0 if k >= n else 0.0
    lp, lq = math.log(p), math.log1p(-p)
    total = 0.0
    for i in range(k + 1):
        log_term = math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
        total += math.exp(log_term + i * lp + (n - i) * lq)
    return min(1.0, total)


def upper_bound(k: int, n: int, confidence: float = 0.95) -> float | None:
    """One-sided Clopper-Pearson upper bound of a rate seen k times in n: with 0 false
    positives in 711 negatives, the false-positive rate is still only known to be below
    0.42 % (95 %). None without trials."""
    if n <= 0:
        return None
    if k >= n:
        return 1.0
    alpha = 1.0 - confidence
    lo, hi = k / n, 1.0
    for _ in range(60):  # bisection: binom_cdf falls as p rises
        mid = (lo + hi) / 2
        if _binom_cdf(k, n, mid) > alpha:
            lo = mid
        else:
            hi = mid
    return hi


def confusion(tp: int, fp: int, fn: int, tn: int) -> dict[str, Any]:
    """Precision, recall, F1 and false-positive rate; None where a figure is undefined."""
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    f1 = (
        2 * precision * recall / (precision + recall)
        if precision is not None and recall is not None and precision + recall > 0
        else None
    )
    return {
        "positives": tp + fn,
        "negatives": fp + tn,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "precision": _r(precision),
        "recall": _r(recall),
        "f1": _r(f1),
        "fpr": _r(_ratio(fp, fp + tn), 6),
    }


def with_bounds(m: dict[str, Any]) -> dict[str, Any]:
    """Confusion figures plus the 95 % upper bound of the false-positive rate (and the lower
    bound of recall, from the same bound on the miss rate)."""
    fpr_hi = upper_bound(m["fp"], m["fp"] + m["tn"])
    miss_hi = upper_bound(m["fn"], m["tp"] + m["fn"])
    return {
        **m,
        "fpr_upper95": _r(fpr_hi, 6),
        "recall_lower95": None if miss_hi is None else _r(1.0 - miss_hi),
    }


# --------------------------------------------------------------------------- threshold sweep


def sweep(pos: Counter[int], neg: Counter[int]) -> list[dict[str, Any]]:
    """FP and FN for every candidate threshold t (flag when score >= t), t ascending.

    Candidates are the distinct scores seen on scored messages plus one just above the highest
    (flag nothing). Scores are in hundredths (int) to keep the sums exact.
    """
    n_pos, n_neg = sum(pos.values()), sum(neg.values())
    distinct = sorted(set(pos) | set(neg))
    candidates = [*distinct, (distinct[-1] + 1) if distinct else 0]
    points = []
    below_pos = below_neg = 0  # messages with score < t
    prev_idx = 0
    for t in candidates:
        while prev_idx < len(distinct) and distinct[prev_idx] < t:
            below_pos += pos.get(distinct[prev_idx], 0)
            below_neg += neg.get(distinct[prev_idx], 0)
            prev_idx += 1
        tp, fp = n_pos - below_pos, n_neg - below_neg
        point = confusion(tp, fp, below_pos, below_neg)
        points.append({"threshold": t / 100, **point})
    return points


def lowest_meeting(points: list[dict[str, Any]], target_fpr: float) -> dict[str, Any] | None:
    """The lowest threshold whose false-positive rate is within the target, or None."""
    for point in points:
        if point["fpr"] is not None and point["fpr"] <= target_fpr + 1e-12:
            return point
    return None


def at_threshold(points: list[dict[str, Any]], threshold: float) -> dict[str, Any] | None:
    """The sweep point that behaves like `threshold` (the first candidate >= it)."""
    for point in points:
        if point["threshold"] >= threshold - 1e-9:
            return point
    return points[-1] if points else None


def histogram(scores: dict[str, Counter[int]], max_bins: int = 40) -> dict[str, Any]:
    """Per-label counts in bins of whole points (wider when the range is large)."""
    keys = [k for c in scores.values() for k in c]
    if not keys:
        return {"low": 0.0, "width": 1.0, "bins": 0, "counts": {}}
    lo, hi = math.floor(min(keys) / 100), math.floor(max(keys) / 100)
    width = max(1, math.ceil((hi - lo + 1) / max_bins))
    nbins = (hi - lo) // width + 1
    counts = {}
    for label, c in scores.items():
        row = [0] * nbins
        for k, n in c.items():
            row[min(nbins - 1, (math.floor(k / 100) - lo) // width)] += n
        counts[label] = row
    return {"low": float(lo), "width": float(width), "bins": nbins, "counts": counts}


# --------------------------------------------------------------------------- config diff


@dataclass(slots=True)
class Diff:
    list_cap: int = LIST_CAP
    changed: _Capped = field(init=False)
    transitions: Counter[str] = field(default_factory=Counter)
    score_changed: int = 0

    def __post_init__(self) -> None:
        self.changed = _Capped(self.list_cap)

    def add(self, source: str, label: str, a: dict[str, Any], b: dict[str, Any]) -> None:
        if a.get("score") != b.get("score"):
            self.score_changed += 1
        va, vb = a.get("verdict"), b.get("verdict")
        if va == vb:
            return
        self.transitions[f"{va}->{vb}"] += 1
        self.changed.add(
            lambda: {
                "source": source,
                "label": label,
                "before": brief(source, label, a),
                "after": brief(source, label, b),
            }
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.changed.to_dict(),
            "transitions": dict(sorted(self.transitions.items())),
            "score_changed": self.score_changed,
        }


# --------------------------------------------------------------------------- the run


@dataclass(slots=True)
class Options:
    paths: Sequence[str]
    labeller: Labeller
    labels_from: str  # "folders" or the CSV path, for the report
    policy: LabelPolicy
    config: str | None = None
    compare_config: str | None = None
    target_fpr: float = 0.005
    target_fpr_quarantine: float = 0.001
    list_cap: int = LIST_CAP


@dataclass(slots=True)
class Outcome:
    """A finished (or interrupted) replay, ready for `result()`."""

    options: Options
    tally: Tally
    thresholds: dict[str, float]
    rules: dict[str, str]
    other: Tally | None = None
    other_thresholds: dict[str, float] | None = None
    diff: Diff | None = None
    interrupted: bool = False
    seconds: float = 0.0


def run(
    options: Options,
    scan: ScanFn,
    *,
    thresholds: Callable[[str | None], dict[str, float]],
    rules: dict[str, str],
    pair: PairFn | None = None,
    tick: Callable[[int], None] | None = None,
) -> Outcome:
    """Fold every scanned message into the tallies. Ctrl-C ends the loop, keeping what was
    counted, so the caller can still write a (partial) report."""
    tally = Tally(options.policy, options.list_cap)
    out = Outcome(options, tally, thresholds(options.config), rules)
    if options.compare_config is not None:
        out.other = Tally(options.policy, options.list_cap)
        out.other_thresholds = thresholds(options.compare_config)
        out.diff = Diff(options.list_cap)
    started = time.monotonic()
    label_of = options.labeller
    stream: Iterator[Any] = iter(())
    try:
        if out.other is None:
            stream = scan(options.paths, options.config)
            for source, d in stream:
                tally.add(source, label_of(source) or UNLABELLED, d)
                if tick is not None:
                    tick(1)
        else:
            pair = pair or _zip_scan(scan)
            stream = pair(options.paths, options.config, options.compare_config)
            _run_pair(options, stream, out, tick)
    except KeyboardInterrupt:
        out.interrupted = True
    finally:
        _close(stream)
    out.seconds = time.monotonic() - started
    return out


def zip_passes(
    first: Iterator[tuple[str, dict[str, Any]]], second: Iterator[tuple[str, dict[str, Any]]]
) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Two streams over the same archive, consumed in lockstep: nothing needs to be kept from
    one pass for the other, so memory stays flat here too."""
    try:
        for (src_a, a), (src_b, b) in zip(first, second, strict=True):
            if src_a != src_b:
                raise RuntimeError(f"the two passes disagree on message order: {src_a} / {src_b}")
            yield src_a, a, b
    finally:
        _close(first)
        _close(second)


def _close(stream: object) -> None:
    # Stop worker pools now (Ctrl-C or an error), not whenever the generator is collected.
    close = getattr(stream, "close", None)
    if close is not None:
        close()


def _zip_scan(scan: ScanFn) -> PairFn:
    def pair(
        paths: Sequence[str], a: str | None, b: str | None
    ) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
        return zip_passes(scan(paths, a), scan(paths, b))

    return pair


def _run_pair(
    options: Options,
    stream: Iterator[tuple[str, dict[str, Any], dict[str, Any]]],
    out: Outcome,
    tick: Callable[[int], None] | None,
) -> None:
    assert out.other is not None and out.diff is not None
    for source, a, b in stream:
        label = options.labeller(source) or UNLABELLED
        out.tally.add(source, label, a)
        out.other.add(source, label, b)
        out.diff.add(source, label, a, b)
        if tick is not None:
            tick(1)


def _tally_section(tally: Tally, thresholds: dict[str, float], options: Options) -> dict[str, Any]:
    pos, neg = tally.kind_scores("positive"), tally.kind_scores("negative")
    points = sweep(pos, neg)
    tag = lowest_meeting(points, options.target_fpr)
    quarantine = lowest_meeting(points, options.target_fpr_quarantine)
    if tag is not None and quarantine is not None and quarantine["threshold"] < tag["threshold"]:
        quarantine = tag  # quarantine may never sit below tag
    if tag is not None:
        tag = with_bounds(tag)
    if quarantine is not None:
        quarantine = with_bounds(quarantine)
    return {
        "thresholds": thresholds,
        "per_label": tally.per_label(),
        "metrics": with_bounds(tally.metrics()),
        "brands": tally.brand_stats(),
        "not_mail": tally.not_mail.to_dict(),
        "false_positives": tally.false_pos.to_dict(),
        "false_negatives": tally.false_neg.to_dict(),
        "sweep": {
            "note": "flag when score >= threshold; scores as rounded to 0.01 in verdicts",
            "target_fpr": options.target_fpr,
            "target_fpr_quarantine": options.target_fpr_quarantine,
            "recommended_tag": tag,
            "recommended_quarantine": quarantine,
            "configured_tag": at_threshold(points, thresholds.get("tag", 0.0)),
            "configured_quarantine": at_threshold(points, thresholds.get("quarantine", 0.0)),
            "points": points,
        },
        "histogram": histogram(tally.scores),
    }


def result(out: Outcome) -> dict[str, Any]:
    """The JSON-ready record of a replay; the HTML report is drawn from exactly this."""
    opts = out.options
    notes = []
    if out.interrupted:
        notes.append(
            f"Interrupted (Ctrl-C) after {out.tally.messages} messages: figures are partial."
        )
    notes += scope_warnings(opts.policy, out.tally)
    if out.tally.not_mail.total:
        notes.append(
            f"{out.tally.not_mail.total} {plural(out.tally.not_mail.total, 'file')} "
            "were no mail (empty, binary, no mail header) and were not scored."
        )
    note = " ".join(notes) or None
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "paths": list(opts.paths),
        "config": opts.config,
        "labels": {
            "from": opts.labels_from,
            "positive": sorted(opts.policy.positive),
            "negative": sorted(opts.policy.negative),
        },
        "complete": not out.interrupted,
        "note": note,
        "notes": notes,
        "messages": out.tally.messages,
        "seconds": round(out.seconds, 2),
        "rate": round(out.tally.messages / out.seconds, 1) if out.seconds > 0 else None,
        **_tally_section(out.tally, out.thresholds, opts),
        "rules": out.tally.rule_stats(out.rules),
    }
    doc["rules_never_fired"] = [r["rule"] for r in doc["rules"] if r["hits"] == 0]
    if out.other is not None and out.diff is not None:
        other = _tally_section(out.other, out.other_thresholds or {}, opts)
        doc["compare"] = {
            "config": opts.compare_config,
            **other,
            "rules": out.other.rule_stats(out.rules),
            "changed": out.diff.to_dict(),
        }
    return doc


def scope_warnings(policy: LabelPolicy, tally: Tally) -> list[str]:
    """Say so when out-of-scope labels (spam) are counted as positives, with each positive
    label's own recall, since one headline recall hides how far apart they are."""
    out_of_scope = sorted(policy.positive & set(OUT_OF_SCOPE))
    if not out_of_scope:
        return []
    per = tally.per_label()
    recalls = [
        f"{lb} {100 * row['flagged'] / row['total']:.0f} %"
        for lb, row in per.items()
        if row["kind"] == "positive" and row["total"]
    ]
    return [
        f"Counted as positives: {', '.join(out_of_scope)}, which brandgate does not aim to "
        "catch (it catches brand misuse, not spam in general); recall per label: "
        f"{', '.join(recalls) or 'none'}. Leave them out with --positive phish."
    ]


# --------------------------------------------------------------------------- the real engine


class EngineScan:
    """The production ScanFn and PairFn: the same archive reader and parallel scanner as
    `brandgate scan`, so replay judges exactly what the gateway would."""

    def __init__(
        self, *, trusted_authserv: Sequence[str] = (), jobs: int = 1, max_bytes: int | None = None
    ) -> None:
        from gateway.archives.read import ArchiveStats

        self.trusted = tuple(trusted_authserv)
        self.jobs = max(1, jobs)
        self.max_bytes = max_bytes
        self.stats = ArchiveStats()  # of the (first) pass, for the report

    def _items(self, paths: Sequence[str], count: bool) -> Iterator[Any]:
        from gateway.archives.read import ArchiveStats, iter_messages

        stats = self.stats if count else ArchiveStats()
        return iter_messages(list(paths), max_bytes=self.max_bytes, stats=stats)

    def __call__(
        self, paths: Sequence[str], config: str | None, *, _count: bool = True
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        from gateway.archives.parallel import scan_items

        return scan_items(
            self._items(paths, _count),
            config_path=config,
            trusted_authserv=self.trusted,
            jobs=self.jobs,
        )

    def pair(
        self, paths: Sequence[str], config_a: str | None, config_b: str | None
    ) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
        # One read of the archive; each worker holds both engines.
        from gateway.archives.parallel import scan_pairs

        return scan_pairs(
            self._items(paths, True),
            config_a=config_a,
            config_b=config_b,
            trusted_authserv=self.trusted,
            jobs=self.jobs,
        )


def config_thresholds(config: str | None) -> dict[str, float]:
    from config.loader import load_config

    return dict(load_config(config).thresholds)


def registered_rules() -> dict[str, str]:
    from filters.checks import all_rules

    return dict(all_rules())
