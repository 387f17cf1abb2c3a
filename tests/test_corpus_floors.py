"""The detection floors of the scanning issue, measured on the shared dev corpus.

Nothing here names an individual message: the floors are rates over whole labels, and the
engine is also measured on real mail outside this folder.
"""

from __future__ import annotations

from collections import Counter

import pytest

from filters.engine import Engine
from filters.types import Verdict
from tests import corpus

pytestmark = [
    pytest.mark.corpus,
    pytest.mark.skipif(not corpus.available(), reason=corpus.SKIP_REASON),
]


@pytest.fixture(scope="module")
def results() -> list[tuple[str, str, Verdict]]:
    engine = Engine.from_path(None)
    return [
        (label, brand, engine.scan(path.read_bytes())) for path, label, brand in corpus.labelled()
    ]


def _flagged(
    results: list[tuple[str, str, Verdict]], label: str, brand_only: bool = False
) -> tuple[int, int]:
    rows = [v for lab, brand, v in results if lab == label and (brand or not brand_only)]
    return sum(v.verdict != "pass" for v in rows), len(rows)


def test_phish_detection_at_least_90_percent(results: list[tuple[str, str, Verdict]]) -> None:
    hit, total = _flagged(results, "phish")
    assert total > 0
    assert hit / total >= 0.90, f"phish flagged {hit}/{total}"


def test_ham_false_positives_at_most_half_a_percent(
    results: list[tuple[str, str, Verdict]],
) -> None:
    hit, total = _flagged(results, "ham")
    assert hit <= int(total * 0.005), f"ham flagged {hit}/{total}"


def test_no_brand_named_ham_flagged(results: list[tuple[str, str, Verdict]]) -> None:
    hit, total = _flagged(results, "ham", brand_only=True)
    assert total > 0
    assert hit == 0, f"brand-named ham flagged {hit}/{total}"


def test_malformed_all_get_a_verdict_without_error(results: list[tuple[str, str, Verdict]]) -> None:
    rows = [v for lab, _, v in results if lab == "malformed"]
    assert rows
    errors = [v.error for v in rows if v.status != "ok"]
    assert errors == []


def test_report_spam_rate(
    results: list[tuple[str, str, Verdict]], capsys: pytest.CaptureFixture[str]
) -> None:
    by_label = Counter((lab, v.verdict) for lab, _, v in results)
    hit, total = _flagged(results, "spam")
    with capsys.disabled():
        print(f"\ncorpus verdicts: {dict(sorted(by_label.items()))}; spam flagged {hit}/{total}")
    assert total > 0
