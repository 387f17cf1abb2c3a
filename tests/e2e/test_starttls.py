"""STARTTLS on brandgate's listener, end to end: `swaks --tls` (a real client) against
`brandgate serve` configured with a test certificate, the message relayed on to Postfix's
re-injection listener and delivered to the sink with brandgate's headers."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from .postfix import LOOPBACK, Lab, Proc, write_overlay_config

pytestmark = pytest.mark.skipif(
    shutil.which("swaks") is None or shutil.which("openssl") is None,
    reason="swaks and openssl are needed (scripts/system-deps installs them as root)",
)


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for the listener's name, made for this test."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=brandgate.test.invalid", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def swaks(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["swaks", "--server", f"{LOOPBACK}:{port}", "--helo", "client.test.invalid",
         "--from", "sender@sender.test.invalid", "--to", "rcpt@example.test", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_swaks_tls_against_the_listener(
    after_queue_lab: Lab, procs: Callable[[Proc], Proc], tmp_path: Path
) -> None:
    lab = after_queue_lab
    cert, key = make_certificate(tmp_path)
    extra = f'\n[gateway]\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
    config = write_overlay_config(tmp_path / "config", extra=extra)
    procs(lab.brandgate(tmp_path / "quarantine", config=config, log_name="tls.log"))
    test_id = uuid.uuid4().hex[:12]

    res = swaks(
        lab.ports.filter, "--tls", "--header", f"X-Test-Id: {test_id}",
        "--header", "Subject: over TLS", "--body", "Hello over an encrypted session.",
    )  # fmt: skip
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "STARTTLS" in out and "TLS started" in out, out
    assert "250 2.0.0" in out  # the next hop's answer, after the message was relayed
    got = lab.maildir.wait_for("X-Test-Id", test_id, 30)
    assert len(got) == 1, lab.postfix.log_tail(20)
    assert (got[0].get("X-Brandgate-Status") or "").startswith("pass ")

    # The listener still serves clients that do not ask for TLS (Postfix without
    # smtp_tls_security_level), as an MTA offering STARTTLS does.
    res = swaks(lab.ports.filter, "--header", "Subject: plain", "--body", "plain text")
    assert res.returncode == 0 and "250 2.0.0" in res.stdout, res.stdout
