"""Fixtures for the real-Postfix tests: a lab (Postfix + sink) per module, brandgate per test.

Every test here is marked `postfix` and skips, with the reason, when Postfix is missing, the
user is not root, or `brandgate serve` cannot start. Every process a fixture starts is stopped
in its teardown, failed test or not.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .postfix import (
    Lab,
    Proc,
    brandgate_cli,
    brandgate_serve_available,
    running_lab,
    skip_reason,
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).parent == here:
            item.add_marker(pytest.mark.postfix)


@pytest.fixture(scope="session")
def postfix_available() -> None:
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def serve_available(postfix_available: None) -> None:
    reason = brandgate_serve_available()
    if reason is not None:
        pytest.skip(reason)


def _lab(tmp_path_factory: pytest.TempPathFactory, mode: str) -> Iterator[Lab]:
    with running_lab(tmp_path_factory.mktemp(mode), mode) as lab:
        yield lab


@pytest.fixture(scope="module")
def after_queue_lab(
    serve_available: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lab]:
    yield from _lab(tmp_path_factory, "after-queue")


@pytest.fixture(scope="module")
def before_queue_lab(
    serve_available: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lab]:
    yield from _lab(tmp_path_factory, "before-queue")


@pytest.fixture(scope="module")
def milter_lab(postfix_available: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Postfix with smtpd_milters on its front door (brandgate milter goes on the filter
    port, started by the test), a relay door that queues into it, and the sink."""
    res = brandgate_cli("milter", "--help", timeout=30)
    if res.returncode != 0:
        pytest.skip(f"`brandgate milter` is not available: {res.stderr[-300:]}")
    yield from _lab(tmp_path_factory, "milter")


@pytest.fixture
def procs() -> Iterator[Callable[[Proc], Proc]]:
    """start(proc): starts a process that is stopped when the test ends, whatever happens."""
    started: list[Proc] = []

    def start(proc: Proc, **kw: Any) -> Proc:
        started.append(proc)
        return proc.start(**kw)

    yield start
    for proc in reversed(started):
        with contextlib.suppress(Exception):
            proc.stop()
