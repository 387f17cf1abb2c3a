"""Protocol conformance with a milter client nobody on the team wrote: OpenDKIM's `miltertest`
(Debian package miltertest, installed by scripts/system-deps), driving brandgate's milter
through Lua scripts. Verdicts come from the gateway tests' fake engine (X-Test-Verdict)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.test_milter_server import running_milter

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        shutil.which("miltertest") is None,
        reason="miltertest is not installed (scripts/system-deps installs it as root)",
    ),
]

# One SMTP session, several messages, each checked with miltertest's own eom_check.
SCRIPT = r"""
function check(cond, what)
  if not cond then error("FAILED: " .. what) end
  mt.echo("ok: " .. what)
end

function message(conn, verdict, subject)
  check(mt.macro(conn, SMFIC_MAIL, "i", "4QID" .. verdict, "{auth_authen}", "alice") == nil,
        verdict .. ": MAIL macros")
  check(mt.mailfrom(conn, "<rewards@sender.example>", "BODY=8BITMIME") == nil,
        verdict .. ": MAIL")
  check(mt.rcptto(conn, "<bob@rcpt.example>") == nil, verdict .. ": RCPT")
  mt.header(conn, "From", "Testbrand <rewards@sender.example>")
  mt.header(conn, "Subject", subject)
  mt.header(conn, "X-Brandgate-Verdict", "pass")
  if verdict ~= "pass" then mt.header(conn, "X-Test-Verdict", verdict) end
  mt.header(conn, "Content-Type", "text/plain; charset=utf-8")
  check(mt.eoh(conn) == nil, verdict .. ": EOH")
  check(mt.bodystring(conn, "Claim your reward now.\r\nSecond line.\r\n") == nil,
        verdict .. ": body")
  check(mt.getreply(conn) == SMFIR_CONTINUE, verdict .. ": body answered continue")
  check(mt.eom(conn) == nil, verdict .. ": EOM")
end

conn = mt.connect("inet:" .. port .. "@127.0.0.1", 20, 0.25)
check(conn ~= nil, "connected")
check(mt.negotiate(conn, nil, nil, nil) == nil, "negotiated")
check(mt.test_action(conn, SMFIF_ADDHDRS), "asks to add headers")
check(mt.test_action(conn, SMFIF_CHGBODY), "asks to replace bodies")
check(mt.test_action(conn, SMFIF_QUARANTINE), "asks to quarantine")
check(mt.test_option(conn, SMFIP_NR_HDR), "no reply per header")
check(mt.conninfo(conn, "mx.client.example", "192.0.2.7") == nil, "connection info")
check(mt.helo(conn, "client.example") == nil, "HELO")

message(conn, "pass", "Lunch on Thursday")
check(mt.getreply(conn) == SMFIR_CONTINUE, "pass: continue")
check(mt.eom_check(conn, MT_HDRDELETE, "X-Brandgate-Verdict"), "pass: forged field deleted")
check(mt.eom_check(conn, MT_HDRINSERT, "X-Brandgate-Verdict", " pass"), "pass: our verdict")
check(mt.eom_check(conn, MT_HDRINSERT, "X-Brandgate-Status"), "pass: status field")
check(not mt.eom_check(conn, MT_BODYCHANGE), "pass: body untouched")

message(conn, "tag", "Testbrand")
check(mt.getreply(conn) == SMFIR_CONTINUE, "tag: continue")
check(mt.eom_check(conn, MT_HDRINSERT, "X-Brandgate-Verdict", " tag"), "tag: verdict field")
check(mt.eom_check(conn, MT_HDRINSERT, "X-Brandgate-Brand", " Testbrand"), "tag: brand field")
check(mt.eom_check(conn, MT_BODYCHANGE), "tag: banner")
check(not mt.eom_check(conn, MT_QUARANTINE), "tag: not quarantined")

message(conn, "quarantine", "Testbrand")
check(mt.getreply(conn) == SMFIR_CONTINUE, "quarantine: continue")
check(mt.eom_check(conn, MT_QUARANTINE), "quarantine: hold queue")
check(mt.eom_check(conn, MT_HDRINSERT, "X-Brandgate-Verdict", " quarantine"),
      "quarantine: tagged")

message(conn, "reject", "Testbrand")
check(mt.getreply(conn) == SMFIR_REPLYCODE, "reject: reply code")
check(mt.eom_check(conn, MT_SMTPREPLY, "550", "5.7.1",
      "Message refused: brand impersonation (Testbrand)"), "reject: 550 5.7.1 and reason")

-- an aborted message leaves nothing behind for the next one
mt.mailfrom(conn, "<x@sender.example>")
mt.header(conn, "X-Test-Verdict", "reject")
check(mt.abort(conn) == nil, "abort")
message(conn, "pass", "After the abort")
check(mt.getreply(conn) == SMFIR_CONTINUE, "after abort: continue")

mt.disconnect(conn)
mt.echo("done")
"""


def test_miltertest_drives_the_milter(tmp_path: Path) -> None:
    script = tmp_path / "brandgate.lua"
    script.write_text(SCRIPT)
    with running_milter(tmp_path) as gw:
        res = subprocess.run(
            ["miltertest", "-D", f"port={gw.port}", "-s", str(script)],
            capture_output=True,
            text=True,
            timeout=90,
        )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "done" in res.stdout, out
    assert "FAILED" not in out, out
    assert "ok: reject: 550 5.7.1 and reason" in out, out


def test_miltertest_on_a_unix_socket(tmp_path: Path) -> None:
    sock = tmp_path / "m.sock"
    script = tmp_path / "unix.lua"
    script.write_text(
        'conn = mt.connect("unix:' + str(sock) + '", 20, 0.25)\n'
        'assert(conn ~= nil, "connect")\n'
        'assert(mt.conninfo(conn, "localhost", "127.0.0.1") == nil)\n'
        'mt.mailfrom(conn, "<a@b.example>")\nmt.rcptto(conn, "<c@d.example>")\n'
        'mt.header(conn, "Subject", "hi")\nmt.eoh(conn)\nmt.bodystring(conn, "x\\r\\n")\n'
        "assert(mt.eom(conn) == nil)\n"
        'assert(mt.getreply(conn) == SMFIR_CONTINUE, "continue")\n'
        'assert(not mt.eom_check(conn, MT_HDRINSERT), "no field added")\n'
        'assert(not mt.eom_check(conn, MT_BODYCHANGE), "body untouched")\n'
        'mt.disconnect(conn)\nmt.echo("done")\n'
    )
    # passed mail left byte for byte as it came (pass_headers = false): no edit at all
    with running_milter(tmp_path, listen=f"unix:{sock}", gateway="pass_headers = false"):
        res = subprocess.run(
            ["miltertest", "-s", str(script)], capture_output=True, text=True, timeout=60
        )
    assert res.returncode == 0 and "done" in res.stdout, res.stdout + res.stderr
