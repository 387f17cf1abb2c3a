"""Loss check under load: corpus mail through Postfix and brandgate (after-queue).

Every message Postfix accepted must end up exactly once at the sink or in the quarantine
(with the shipped thresholds, so every verdict and action occurs). Messages are matched by an
X-Test-Seq header added on sending; duplicates are counted, not just lost ones.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from .postfix import (
    Lab,
    Proc,
    brandgate_cli,
    corpus_files,
    corpus_load,
    run_load,
    wait_arrivals,
    wait_until,
    write_overlay_config,
)
from .test_postfix_after_queue import diagnostics

N_MESSAGES = 200
SESSIONS = 4


@pytest.mark.corpus
def test_no_message_lost_or_duplicated_under_load(
    after_queue_lab: Lab, procs: Callable[[Proc], Proc], tmp_path: Path
) -> None:
    if len(corpus_files(N_MESSAGES)) < N_MESSAGES:
        pytest.skip("the dev corpus (../shared/corpus/dev) is not here")
    lab = after_queue_lab
    qdir = tmp_path / "quarantine"
    # The shipped thresholds, so that every verdict and action occurs.
    config = write_overlay_config(tmp_path / "config", tag=None, quarantine=None, reject=None)
    gate = procs(lab.brandgate(qdir, config, log_name="load.log"))
    messages = corpus_load(N_MESSAGES, "load")

    load = run_load(lab.ports.front, messages, SESSIONS)
    arrivals = wait_arrivals(lab.maildir, load.accepted, qdir, timeout=180, stall=45)
    listed = brandgate_cli("quarantine", "list", "--json", "--quarantine-dir", str(qdir))

    figures = {
        "sent": len(messages),
        "accepted_by_postfix": len(load.accepted),
        "at_sink": sum(arrivals.sink.values()),
        "in_quarantine": sum(arrivals.quarantine.values()),
        "quarantine_index_rows": len(listed.stdout.splitlines()),
        "lost": len(arrivals.missing(load.accepted)),
        "duplicates": sum(n - 1 for n in arrivals.duplicates().values()),
        "seconds": round(arrivals.waited + load.finished - load.started, 1),
    }
    (lab.base / "logs" / "loss-check.json").write_text(json.dumps(figures, indent=2))
    print(f"loss check: {figures}")

    assert not load.failed, {s: (r.code, r.text) for s, r in load.failed.items()}
    assert figures["lost"] == 0, (figures, diagnostics(lab, gate))
    assert figures["duplicates"] == 0, figures
    assert figures["at_sink"] + figures["in_quarantine"] == N_MESSAGES, figures
    # Every stored message is in the index, and the index holds nothing else.
    assert figures["quarantine_index_rows"] == figures["in_quarantine"], figures
    assert wait_until(lambda: not lab.postfix.queued(), 30), lab.postfix.queued()
