"""Learn rule weights and thresholds from labelled mail (`brandgate tune`, `replay --cv`).

1. `collect` scans every message once and keeps, per message, the factors of its findings
   (rule -> factors), never their weights: the evidence does not depend on the weights, so one
   scan serves every fit and every fold.
2. `fit` is a regularised logistic regression over those factors. A score stays a sum of
   weight x factor, so every verdict still explains itself. Weights keep the sign of the
   configured ones (evidence counts for, a guard such as BRAND_AUTHENTICATED against): a rule
   cannot learn to excuse phish from noise. Ham is weighted up, because a false positive costs
   more than a miss. Rules that fire too rarely to be learned keep their configured weight.
3. `choose_thresholds` takes the lowest tag threshold whose false-positive rate on the training
   ham meets the target, and stricter ones for quarantine and reject. Weights and thresholds are
   then rescaled so that tagging starts at 4.0: scores read alike from one tuning to the next.
4. `cross_validate` scores each of K folds with weights and thresholds learned without it. Those
   are the honest figures; the gap to the figures of the fit on everything is the over-fit.

numpy and scipy come with the optional `tune` extra: `serve` and `scan` never import this.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.archives.parallel import map_ordered
from gateway.archives.read import ArchiveStats, Item, iter_messages

if TYPE_CHECKING:
    import numpy as np

    from config.loader import Config

TAG_SCALE = 4.0  # the tag threshold after rescaling
VERDICT_NAMES = ("tag", "quarantine", "reject")


# --------------------------------------------------------------------------- samples


@dataclass(frozen=True, slots=True)
class Sample:
    source: str
    label: str
    origin: str  # where the message came from (labels' source column, else its folder)
    brand: str  # the labelled brand, "" when none
    x: Mapping[str, tuple[float, ...]]  # rule -> factors of its findings (combinations too)
    error: bool = False


# (source) -> label or None; (source) -> (brand, origin)
Labeller = Callable[[str], str | None]
MetaFn = Callable[[str], tuple[str, str]]

_worker: dict[str, Any] = {}


def _init_worker(config_path: str | None, trusted: tuple[str, ...]) -> None:
    from config.loader import load_config, with_trusted_authserv
    from filters.engine import Engine

    _worker["engine"] = Engine(with_trusted_authserv(load_config(config_path), trusted))


def findings_of(item: Item) -> tuple[str, dict[str, tuple[float, ...]], bool]:
    """Worker: one message -> (source, rule -> factors, failed)."""
    from filters.scoring import combine

    engine = _worker["engine"]
    try:
        found = combine(engine.analyse(item.raw).findings, engine.config.combos)
    except Exception:  # a scan failure is reported as such, never stops the run
        return item.source, {}, True
    x: dict[str, list[float]] = defaultdict(list)
    for f in found:
        x[f.rule].append(f.factor)
    return item.source, {k: tuple(v) for k, v in x.items()}, False


def collect(
    paths: Sequence[str],
    labeller: Labeller,
    meta: MetaFn,
    *,
    config_path: str | None,
    trusted_authserv: Sequence[str] = (),
    jobs: int = 1,
    max_bytes: int | None = None,
    tick: Callable[[int], None] | None = None,
    stats: ArchiveStats | None = None,
) -> list[Sample]:
    """Every labelled message, scanned once. Unlabelled messages are skipped."""
    stats = stats if stats is not None else ArchiveStats()
    items = (
        item
        for item in iter_messages(paths, max_bytes=max_bytes, stats=stats)
        if labeller(item.source) is not None
    )
    out: list[Sample] = []
    results = map_ordered(
        findings_of,
        items,
        jobs=jobs,
        initializer=_init_worker,
        initargs=(config_path, tuple(trusted_authserv)),
    )
    for n, (source, x, failed) in enumerate(results, 1):
        label = labeller(source) or ""
        brand, origin = meta(source)
        out.append(Sample(source, label, origin or _folder(source), brand, x, failed))
        if tick is not None:
            tick(n)
    return out


def _folder(source: str) -> str:
    return os.path.basename(os.path.dirname(source.rpartition("#")[0] or source)) or "."


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True, slots=True)
class FitOptions:
    positive: frozenset[str] = frozenset({"phish"})
    negative: frozenset[str] = frozenset({"ham"})
    l2: float = 0.001  # ridge penalty on the weights (in units of the mean log-loss)
    ham_cost: float = 2.0  # one ham counts this many phish in the loss
    brand_ham_cost: float = 3.0  # and legitimate brand mail this much more again
    min_support: int = 8  # labelled messages a rule must fire on to be learned
    # The admin's allow and block lists are policy, not evidence: never learned.
    fixed_groups: frozenset[str] = frozenset({"allow", "block"})
    target_fpr: float = 0.0025  # tag: share of training ham allowed over the threshold
    target_fpr_quarantine: float = 0.0005
    target_fpr_reject: float = 0.0
    # Stricter verdicts sit at least this far above the tag threshold, whatever the training
    # ham allows: a handful of ham is too few to place a reject threshold on alone.
    min_ratio_quarantine: float = 1.5
    min_ratio_reject: float = 2.0


@dataclass(frozen=True, slots=True)
class Model:
    weights: dict[str, float]  # rule -> weight, in final units (tag threshold = TAG_SCALE)
    thresholds: dict[str, float]
    learned: tuple[str, ...]  # rules whose weight was fitted (the rest kept configured)
    intercept: float  # the fit's intercept, in final units (for reference)

    def score(self, sample: Sample) -> float:
        # As filters.scoring does: each finding's share rounded, then the sum.
        total = 0.0
        for rule, factors in sample.x.items():
            w = self.weights.get(rule)
            if w:
                total += sum(round(f * w, 2) for f in factors)
        return round(total, 2)

    def verdict(self, sample: Sample) -> str:
        s = self.score(sample)
        out = "pass"
        for name in VERDICT_NAMES:
            if s >= self.thresholds[name]:
                out = name
        return out


@dataclass(frozen=True, slots=True)
class Prior:
    """What the configuration says before any data: weight (and so the sign) of each rule."""

    weights: dict[str, float]
    groups: dict[str, str]

    @classmethod
    def of(cls, cfg: Config) -> Prior:
        return cls(
            {r: rw.weight for r, rw in cfg.rules.items()},
            {r: rw.group for r, rw in cfg.rules.items()},
        )


def _labelled(samples: Iterable[Sample], opt: FitOptions) -> list[tuple[Sample, int]]:
    out = []
    for s in samples:
        if s.label in opt.positive:
            out.append((s, 1))
        elif s.label in opt.negative:
            out.append((s, -1))
    return out


def fit(samples: Sequence[Sample], prior: Prior, opt: FitOptions) -> Model:
    import numpy as np
    from scipy.optimize import minimize

    rows = _labelled(samples, opt)
    if not any(y > 0 for _, y in rows) or not any(y < 0 for _, y in rows):
        raise ValueError("tuning needs messages of both a positive and a negative label")
    support: dict[str, int] = defaultdict(int)
    for s, _ in rows:
        for rule in s.x:
            support[rule] += 1
    learned = tuple(
        r
        for r in sorted(prior.weights)
        if support[r] >= opt.min_support
        and prior.weights[r]
        and prior.groups.get(r) not in opt.fixed_groups
    )
    col = {r: i for i, r in enumerate(learned)}
    x = np.zeros((len(rows), len(learned)))
    y = np.empty(len(rows))
    c = np.empty(len(rows))
    n_pos = sum(1 for _, t in rows if t > 0)
    n_neg = len(rows) - n_pos
    for i, (s, t) in enumerate(rows):
        for rule, factors in s.x.items():
            j = col.get(rule)
            if j is not None:
                x[i, j] = sum(factors)
        y[i] = t
        if t > 0:
            c[i] = 1.0 / n_pos
        else:
            c[i] = opt.ham_cost / n_neg * (opt.brand_ham_cost if s.brand else 1.0)
    c /= c.sum()
    w, b = _logistic(x, y, c, [prior.weights[r] for r in learned], opt.l2, minimize, np)
    raw = {r: float(w[col[r]]) for r in learned}
    scores = x @ w
    ham = sorted((float(v) for v, t in zip(scores, y, strict=True) if t < 0), reverse=True)
    every = sorted({float(v) for v in scores})
    t_raw = choose_thresholds(ham, every, opt)
    k = TAG_SCALE / t_raw["tag"]
    weights = {r: round(v, 2) for r, v in prior.weights.items()}  # the unlearned keep theirs
    weights.update({r: round(v * k, 2) for r, v in raw.items()})
    return Model(
        weights=weights,
        thresholds={n: round(v * k, 2) for n, v in t_raw.items()},
        learned=learned,
        intercept=round(float(b) * k, 2),
    )


def _logistic(
    x: np.ndarray,
    y: np.ndarray,
    c: np.ndarray,
    signs: Sequence[float],
    l2: float,
    minimize: Any,
    np: Any,
) -> tuple[np.ndarray, float]:
    """Weighted, ridge-penalised logistic regression with sign bounds on the weights."""
    n_feat = x.shape[1]

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:n_feat], theta[n_feat]
        margin = y * (x @ w + b)
        value = float(c @ np.logaddexp(0.0, -margin)) + 0.5 * l2 * float(w @ w)
        g = -c * y * _sigmoid(-margin, np)
        return value, np.concatenate([x.T @ g + l2 * w, [g.sum()]])

    bounds = [(0.0, None) if s > 0 else (None, 0.0) for s in signs] + [(None, None)]
    start = np.zeros(n_feat + 1)
    res = minimize(loss, start, jac=True, method="L-BFGS-B", bounds=bounds)
    return res.x[:n_feat], float(res.x[n_feat])


def _sigmoid(z: np.ndarray, np: Any) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))


def choose_thresholds(
    ham_desc: Sequence[float], every: Sequence[float], opt: FitOptions
) -> dict[str, float]:
    """Lowest thresholds meeting each false-positive target on the training ham.

    The threshold sits halfway between the highest ham score that must pass and the next
    score above it, so that a message scored a hair above a training ham is not decided by
    rounding. Always above zero: a message with no findings passes."""
    out: dict[str, float] = {}
    floor = 0.0
    for name, target in (
        ("tag", opt.target_fpr),
        ("quarantine", opt.target_fpr_quarantine),
        ("reject", opt.target_fpr_reject),
    ):
        allowed = math.floor(target * len(ham_desc) + 1e-9)
        top = ham_desc[allowed] if allowed < len(ham_desc) else 0.0
        top = max(top, floor, 0.0)
        above = [v for v in every if v > top + 1e-9]
        t = (top + above[0]) / 2 if above else top + 1.0
        if name == "tag" and t <= 0:
            t = 1e-3
        if name != "tag":
            ratio = opt.min_ratio_quarantine if name == "quarantine" else opt.min_ratio_reject
            t = max(t, out["tag"] * ratio)
        out[name] = t
        floor = t
    return out


# --------------------------------------------------------------------------- cross-validation


def _digest(source: str) -> bytes:
    return hashlib.sha256(_stable_name(source).encode()).digest()


def _stable_name(source: str) -> str:
    # The file name (and mbox number) only: the same archive from another folder folds alike.
    file, sep, num = source.rpartition("#")
    if sep and num.isdigit():
        return f"{os.path.basename(file)}#{num}"
    return os.path.basename(source)


def folds(samples: Sequence[Sample], k: int) -> list[int]:
    """Fold of each sample, stratified by (label, origin): every fold holds a like share of
    each source and label. Deterministic: the order is the hash of the file name."""
    strata: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        strata[(s.label, s.origin)].append(i)
    out = [0] * len(samples)
    offset = 0
    for key in sorted(strata):
        members = sorted(strata[key], key=lambda i: _digest(samples[i].source))
        for j, i in enumerate(members):
            out[i] = (j + offset) % k
        offset += len(members)
    return out


@dataclass(slots=True)
class Evaluation:
    """Verdicts of every labelled sample under some model (fit or cross-validated)."""

    verdicts: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)


def evaluate(samples: Sequence[Sample], model: Model) -> Evaluation:
    ev = Evaluation()
    for s in samples:
        ev.scores.append(model.score(s))
        ev.verdicts.append(model.verdict(s))
    return ev


def cross_validate(
    samples: Sequence[Sample], prior: Prior, opt: FitOptions, k: int
) -> tuple[Evaluation, list[Model]]:
    if k < 2:
        raise ValueError("cross-validation needs at least 2 folds")
    fold = folds(samples, k)
    ev = Evaluation(["pass"] * len(samples), [0.0] * len(samples))
    models = []
    for f in range(k):
        train = [s for s, g in zip(samples, fold, strict=True) if g != f]
        model = fit(train, prior, opt)
        models.append(model)
        for i, s in enumerate(samples):
            if fold[i] == f:
                ev.scores[i] = model.score(s)
                ev.verdicts[i] = model.verdict(s)
    return ev, models


# --------------------------------------------------------------------------- figures


def wilson(hit: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a rate hit/n (sound at 0 and at n)."""
    if n == 0:
        return 0.0, 1.0
    p = hit / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def _rate(hit: int, n: int) -> dict[str, Any]:
    lo, hi = wilson(hit, n)
    return {
        "flagged": hit,
        "total": n,
        "rate": round(hit / n, 4) if n else None,
        "ci95": [round(lo, 4), round(hi, 4)],
    }


def figures(samples: Sequence[Sample], ev: Evaluation) -> dict[str, Any]:
    """Flag rates per label, per (label, origin) and for brand-named ham, with intervals."""
    by_label: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    by_origin: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    brand_ham = [0, 0]
    for s, v in zip(samples, ev.verdicts, strict=True):
        flagged = int(v != "pass")
        for acc in (by_label[s.label], by_origin[(s.label, s.origin)]):
            acc[0] += flagged
            acc[1] += 1
        if s.label == "ham" and s.brand:
            brand_ham[0] += flagged
            brand_ham[1] += 1
    return {
        "labels": {lb: _rate(*v) for lb, v in sorted(by_label.items())},
        "sources": {f"{lb} {o}": _rate(*v) for (lb, o), v in sorted(by_origin.items())},
        "brand_ham": _rate(*brand_ham),
    }


def gap(fit_fig: dict[str, Any], cv_fig: dict[str, Any]) -> dict[str, float | None]:
    """Fit minus cross-validated rate per label: how much the fit flatters itself."""
    out: dict[str, float | None] = {}
    for label, row in fit_fig["labels"].items():
        cv_rate = cv_fig["labels"].get(label, {}).get("rate")
        out[label] = (
            None if row["rate"] is None or cv_rate is None else round(row["rate"] - cv_rate, 4)
        )
    return out


# --------------------------------------------------------------------------- the overlay


def overlay_toml(model: Model, prior: Prior, header: Sequence[str]) -> str:
    """A brandgate.toml overlay that `--config` takes: thresholds, weights, no caps."""
    lines = [f"# {h}" if h else "#" for h in header]
    lines += ["", "[thresholds]"]
    lines += [f"{n} = {model.thresholds[n]}" for n in VERDICT_NAMES]
    lines += [
        "",
        "[scoring]",
        "# Learned weights already say what a signal is worth without a claim.",
        "unclaimed_factor = 1.0",
        "",
        "[groups]",
        "# Caps off: a cap would bend the learned sum (combinations are rules of their own).",
    ]
    lines += [f"{g} = inf" for g in sorted(set(prior.groups.values()))]
    lines += ["", "[rules]"]
    for rule in sorted(model.weights):
        note = "" if rule in model.learned else "  # kept: too rare to learn"
        lines.append(
            f'{rule} = {{ weight = {model.weights[rule]}, group = "{prior.groups[rule]}" }}{note}'
        )
    return "\n".join(lines) + "\n"


def iter_errors(samples: Iterable[Sample]) -> Iterator[str]:
    return (s.source for s in samples if s.error)
