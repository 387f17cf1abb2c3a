"""The detection floors, measured on the shared dev corpus: cross-validated, and with the
shipped weights.

Cross-validated figures are the honest ones: each of five folds is scored by weights and
thresholds learned without it, exactly as `scripts/tune` (`brandgate tune --cv 5`) does. The
shipped weights (config/weights.toml, learned on the whole corpus) must land close to them;
a large gap would mean the shipped weights flatter themselves.

Nothing here names an individual message: the floors are rates over whole labels, and the
engine is also measured on real mail outside this folder.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from config.loader import load_config
from filters.engine import Engine
from filters.types import Verdict
from tests import corpus

pytestmark = [
    pytest.mark.corpus,
    pytest.mark.skipif(not corpus.available(), reason=corpus.SKIP_REASON),
]

# The floors reached (issue 7 asks for 95 % / 0.3 % / 1 of 101; see the closing note). Never
# lower them to land other work.
CV_PHISH_MIN = 0.945  # CV reaches 95.4 %: about 16 messages of margin
CV_HAM_MAX = 0.003
CV_BRAND_HAM_MAX = 2
SHIPPED_PHISH_MIN = 0.955  # the shipped weights reach 96.3 %
SHIPPED_HAM_MAX = 0.003
SHIPPED_BRAND_HAM_MAX = 2
MAX_GAP = 0.02  # shipped minus cross-validated phish rate


@pytest.fixture(scope="module")
def samples() -> list[Any]:
    from gateway.archives import replay, tune

    labels = replay.CsvLabels(corpus.CORPUS / "labels.csv")
    return tune.collect([str(corpus.CORPUS / "dev")], labels, labels.meta, config_path=None, jobs=2)


@pytest.fixture(scope="module")
def cv(samples: list[Any]) -> dict[str, Any]:
    from gateway.archives import tune

    prior = tune.Prior.of(load_config(None, learned=False))
    ev, _ = tune.cross_validate(samples, prior, tune.FitOptions(), 5)
    return tune.figures(samples, ev)


@pytest.fixture(scope="module")
def shipped() -> list[tuple[str, str, Verdict]]:
    engine = Engine.from_path(None)
    return [
        (label, brand, engine.scan(path.read_bytes())) for path, label, brand in corpus.labelled()
    ]


def _flagged(
    results: list[tuple[str, str, Verdict]], label: str, brand_only: bool = False
) -> tuple[int, int]:
    rows = [v for lab, brand, v in results if lab == label and (brand or not brand_only)]
    return sum(v.verdict != "pass" for v in rows), len(rows)


def test_cross_validated_phish_floor(cv: dict[str, Any]) -> None:
    row = cv["labels"]["phish"]
    assert row["total"] > 1000
    assert row["rate"] >= CV_PHISH_MIN, row


def test_cross_validated_ham_ceiling(cv: dict[str, Any]) -> None:
    row = cv["labels"]["ham"]
    assert row["flagged"] <= int(row["total"] * CV_HAM_MAX), row


def test_cross_validated_brand_ham_ceiling(cv: dict[str, Any]) -> None:
    assert cv["brand_ham"]["total"] > 50
    assert cv["brand_ham"]["flagged"] <= CV_BRAND_HAM_MAX, cv["brand_ham"]


def test_shipped_weights_floors(shipped: list[tuple[str, str, Verdict]]) -> None:
    hit, total = _flagged(shipped, "phish")
    assert hit / total >= SHIPPED_PHISH_MIN, f"phish flagged {hit}/{total}"
    hit, total = _flagged(shipped, "ham")
    assert hit <= int(total * SHIPPED_HAM_MAX), f"ham flagged {hit}/{total}"
    hit, total = _flagged(shipped, "ham", brand_only=True)
    assert hit <= SHIPPED_BRAND_HAM_MAX, f"brand-named ham flagged {hit}/{total}"


def test_shipped_weights_land_near_the_cross_validated_figures(
    shipped: list[tuple[str, str, Verdict]], cv: dict[str, Any]
) -> None:
    hit, total = _flagged(shipped, "phish")
    assert abs(hit / total - cv["labels"]["phish"]["rate"]) <= MAX_GAP


def test_malformed_all_get_a_verdict_without_error(
    shipped: list[tuple[str, str, Verdict]],
) -> None:
    rows = [v for lab, _, v in shipped if lab == "malformed"]
    assert rows
    assert [v.error for v in rows if v.status != "ok"] == []


def test_report_figures(
    shipped: list[tuple[str, str, Verdict]],
    cv: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    by_label = Counter((lab, v.verdict) for lab, _, v in shipped)
    with capsys.disabled():
        print(f"\nshipped weights, verdicts: {dict(sorted(by_label.items()))}")
        for label, row in cv["labels"].items():
            print(f"5-fold CV {label}: {row['flagged']}/{row['total']} ({row['rate']})")
        print(f"5-fold CV brand-named ham: {cv['brand_ham']['flagged']}/{cv['brand_ham']['total']}")
    assert cv["labels"]["spam"]["total"] > 0
