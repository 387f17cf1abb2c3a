"""Quarantine release that is atomic and honest, and a store that keeps any envelope (issue 11).

Concurrent releases deliver exactly once; a re-scan that now says reject (or overruns) needs
--force; a missing message file is an error message, not a traceback; what `list` and `show`
print cannot drive the admin's terminal; envelope bytes that are not UTF-8 are stored and
released exactly.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from filters.types import Verdict
from gateway.quarantine import QuarantineStore, ReleaseRefused
from tests.hostile import phish
from tests.rawsink import raw_sink
from tests.test_gateway_support import config_dir, message, running_gateway
from tests.test_relay_hostile import session

pytestmark = pytest.mark.timeout(180)
REPO = Path(__file__).resolve().parent.parent
HELD = Verdict("quarantine", 9.0, None, (), "held for the test")


def cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "quarantine", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(*args: str) -> subprocess.CompletedProcess[str]:
    proc = cli(*args)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def setup(tmp_path: Path) -> tuple[QuarantineStore, list[str]]:
    cfg = config_dir(tmp_path, engine="verify_dkim = false")  # no DNS from a test
    qdir = tmp_path / "quarantine"
    return QuarantineStore(qdir).open(), ["--config", str(cfg), "--quarantine-dir", str(qdir)]


def store(q: QuarantineStore, raw: bytes, mail_from: str, rcpts: tuple[str, ...]) -> str:
    return q.store(raw, mail_from=mail_from, rcpts=rcpts, mail_options=(), client={}, verdict=HELD)


def release(qid: str, port: int, common: list[str], *extra: str) -> list[str]:
    hop = f"127.0.0.1:{port}"
    return ["release", qid, "--by", "t", "--reason", "r", "--next-hop", hop, *common, *extra]


@pytest.mark.parametrize("force", [False, True])
def test_concurrent_releases_deliver_exactly_once(tmp_path: Path, force: bool) -> None:
    q, common = setup(tmp_path)
    qid = store(q, message(), "slow@sender.example", ("bob@rcpt.example",))
    extra = ("--force",) if force else ()
    with raw_sink(slow=2.0) as hop:
        procs = [cli(*release(qid, hop.port, common, *extra)) for _ in range(4)]
        results = [(p.wait(120), p.communicate()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1, 1, 1], results
    assert len(hop.messages) == 1
    refusals = [err for code, (_out, err) in results if code == 1]
    assert all("being released" in e or "already released" in e for e in refusals), refusals
    assert all("Traceback" not in err for _code, (_out, err) in results)
    e = q.get(qid)
    assert e.released is not None
    assert [a[2] for a in q.audit(qid)] == ["release"]


def test_release_whose_rescan_says_reject_needs_force(tmp_path: Path) -> None:
    q, common = setup(tmp_path)
    qid = store(q, phish("reject"), "a@sender.example", ("bob@rcpt.example",))
    with raw_sink() as hop:
        refused = run(*release(qid, hop.port, common))
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "re-scan: reject" in refused.stdout and "use --force" in refused.stderr
        assert hop.messages == [] and q.get(qid).released is None
        forced = run(*release(qid, hop.port, common, "--force"))
        assert forced.returncode == 0, forced.stderr
    assert len(hop.messages) == 1
    assert b"X-Brandgate-Verdict: reject" in hop.messages[0].data


def test_missing_message_file_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    q, common = setup(tmp_path)
    qid = store(q, message(), "a@sender.example", ("bob@rcpt.example",))
    q.path_of(qid).unlink()
    with raw_sink() as hop:
        res = run(*release(qid, hop.port, common))
    assert res.returncode == 1
    assert "message file missing" in res.stderr and "Traceback" not in res.stderr
    shown = run("show", qid, "--raw", *common)
    assert shown.returncode == 1 and "Traceback" not in shown.stderr
    # the failed release left no claim behind
    assert q.claim_release(qid)


def test_list_and_show_print_no_terminal_controls(tmp_path: Path) -> None:
    q, common = setup(tmp_path)
    evil = "ev\x1b]0;pwned\x07il\x1b[2J\u202e\x9b31m\udcff@sender.example"
    qid = store(q, message(), evil, ("r\x1b[1m@rcpt.example",))
    listed = run("list", *common)
    assert listed.returncode == 0, listed.stderr
    for out in (
        listed.stdout,
        run("list", "--json", *common).stdout,
        run("show", qid, *common).stdout,
    ):
        assert not any(ch in out for ch in "\x1b\x07\u202e\x9b"), repr(out)
    # The listing clips the column; what it shows is the escaped form.
    assert "ev\\x1b]0;pwned\\x07il\\x1b[2J" in listed.stdout
    assert "r\\x1b[1m@rcpt.example" in listed.stdout
    record = json.loads(run("list", "--json", *common).stdout)
    assert record["mail_from"] == evil  # JSON escapes keep the exact value


def test_envelope_that_is_not_utf8_is_stored_and_released_exactly(tmp_path: Path) -> None:
    sender = b"caf\xe9\xff@sender.example"  # latin-1, not UTF-8: SQLite alone refuses it
    rcpt = b"r\xe9@rcpt.example"
    with raw_sink() as hop, running_gateway(tmp_path, hop.port) as gw:
        c = session(gw.port)
        reply = c.transaction(sender, [rcpt], message(verdict="quarantine"))
        c.close()
        assert reply.startswith(b"250 2.0.0 Ok: held in quarantine"), reply
        q = QuarantineStore(tmp_path / "quarantine").open()
        (entry,) = q.entries()
        assert entry.mail_from.encode("utf-8", "surrogateescape") == sender
        common = ["--config", str(tmp_path / "conf"), "--quarantine-dir", str(q.root)]
        (tmp_path / "conf" / "brandgate.toml").write_text("[engine]\nverify_dkim = false\n")
        res = run(*release(entry.id, hop.port, common))
        assert res.returncode == 0, res.stderr
    wire = hop.messages[0]
    assert wire.mail.startswith(b"MAIL FROM:<" + sender + b"> ")
    assert wire.rcpts == [b"RCPT TO:<" + rcpt + b">"]


def test_claims_are_exclusive_and_deletion_waits_for_a_release(tmp_path: Path) -> None:
    q, _common = setup(tmp_path)
    qid = store(q, message(), "a@sender.example", ("b@rcpt.example",))
    token = q.claim_release(qid)
    with pytest.raises(ReleaseRefused, match="being released"):
        q.claim_release(qid, force=True)  # a fresh claim is never taken over
    with pytest.raises(ReleaseRefused, match="being released"):
        q.delete(qid, "t", "r")
    assert q.purge(0, "t") == []
    q.finish_release(qid, token, "t", "r", "{}")
    with pytest.raises(ReleaseRefused, match="already released"):
        q.claim_release(qid)
    again = q.claim_release(qid, force=True)
    q.abandon_release(qid, again)
    q.delete(qid, "t", "r")
    with pytest.raises(ReleaseRefused, match="deleted"):
        q.claim_release(qid, force=True)
