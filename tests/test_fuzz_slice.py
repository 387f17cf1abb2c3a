"""The CI slice of the fuzz campaign (`scripts/fuzz`, tests/fuzzing.py): 2,000 cases, mutated
corpus messages and every generator class, through the engine and the tagging code in
budgeted workers. No case may raise or hang. (Per-case costs and the growth table are the
script's business: nothing here is timed.)"""

from __future__ import annotations

import random

import pytest

from tests import fuzzing
from tests.hostile import GENERATORS

pytestmark = pytest.mark.timeout(900)
SLICE = 2_000


def test_fuzz_slice_has_no_exception_and_no_hang() -> None:
    report = fuzzing.campaign(SLICE, seed=20_261_101, jobs=2)
    doc = report.to_dict()
    print(
        f"fuzz slice: {doc['tried']} cases, {doc['exceptions']} exceptions, {doc['hangs']} "
        f"hangs, peak worker memory {doc['peak_worker_rss_mb']} MiB, {doc['seconds']} s"
    )
    assert doc["tried"] == SLICE
    assert doc["exceptions"] == 0, doc["crashes"][:3]
    assert doc["hangs"] == 0, doc["hangs_list"][:3]


def test_every_generator_class_is_in_the_slice() -> None:
    names = {c.name.split(":")[1] for c in fuzzing.plan(SLICE, 20_261_101, fuzzing.seeds())}
    assert {g.name for g in GENERATORS} <= names


def test_cases_rebuild_from_their_names() -> None:
    cases = list(fuzzing.plan(50, 3, fuzzing.seeds()))
    assert [fuzzing.build(c) for c in cases] == [fuzzing.build(c) for c in cases]
    one = GENERATORS[0]
    assert one.make(one.sizes[0], random.Random(1)) == one.make(one.sizes[0], random.Random(1))


def test_peer_suites_parse_without_error() -> None:
    """Other projects' parser test messages: those the interpreter ships (CPython's email
    tests) and any that `scripts/fuzz --peers --fetch-peers` cached; skipped without any."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "fuzz_script", Path(fuzzing.ROOT) / "scripts" / "fuzz.py"
    )
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    found, _skipped = script.peer_files()
    if not found:
        pytest.skip("no peer suite cached and no CPython email test data here")
    summary = fuzzing.scan_files({n: list(map(str, fs)) for n, fs in found.items()})
    assert all(row["errors"] == 0 for row in summary.values()), summary
