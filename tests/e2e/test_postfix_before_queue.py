"""brandgate as Postfix's before-queue proxy filter (smtpd_proxy_filter), end to end.

The sending client talks to Postfix, Postfix proxies the session to brandgate, and brandgate's
answer to DATA is what the client sees: 550 5.7.1 for a reject verdict, nothing queued.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .postfix import Lab, Proc, send, wait_until, write_overlay_config
from .test_postfix_after_queue import brandgate_tags, clean, diagnostics, phish, unique


def test_reject_is_550_in_session_and_clean_mail_arrives(
    before_queue_lab: Lab, procs: Callable[[Proc], Proc], tmp_path: Path
) -> None:
    lab = before_queue_lab
    config = write_overlay_config(tmp_path / "config", tag=0.5, quarantine=4.5, reject=5.0)
    qdir = tmp_path / "quarantine"
    gate = procs(lab.brandgate(qdir, config=config, log_name="before.log"))
    ids = {"clean": unique(), "phish": unique()}

    rejected = send(lab.ports.front, phish(ids["phish"]))
    assert rejected.code == 550, rejected
    assert rejected.text.startswith("5.7.1"), rejected

    passed = send(lab.ports.front, clean(ids["clean"]))
    assert passed.code == 250, passed
    arrived = lab.maildir.wait_for("X-Test-Id", ids["clean"], 30)
    assert len(arrived) == 1, diagnostics(lab, gate)
    tags = brandgate_tags(arrived[0].headers.items())  # a pass, said in headers only
    assert tags.get("X-Brandgate-Verdict") == "pass", tags

    # The rejected one is nowhere: not delivered, not queued, not quarantined.
    assert wait_until(lambda: not lab.postfix.queued(), 15)
    assert lab.maildir.find("X-Test-Id", ids["phish"]) == []
    assert not list(qdir.rglob("*.eml"))


def test_very_long_line_is_not_a_permanent_failure(
    before_queue_lab: Lab, procs: Callable[[Proc], Proc], tmp_path: Path
) -> None:
    """Postfix alone accepts any line length (it splits them); a proxy in front of it must
    not turn real mail with one huge line (such exist in the corpus) into a 5xx bounce."""
    lab = before_queue_lab
    config = write_overlay_config(tmp_path / "config")
    gate = procs(lab.brandgate(tmp_path / "q", config, log_name="long-line.log"))
    test_id = unique()
    raw = clean(test_id).replace(b"usual place?", b"usual place? " + b"x" * 70_000)

    reply = send(lab.ports.front, raw)
    assert reply.code == 250, reply
    assert len(lab.maildir.wait_for("X-Test-Id", test_id, 30)) == 1, diagnostics(lab, gate)
