"""`brandgate serve` as a real process: signals (SIGHUP reload, SIGTERM drain) and the
quarantine command line against a store filled by the running gateway."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.cli.main import main as cli_main
from tests.test_gateway_support import config_dir, free_port, message, running_gateway, sink

pytestmark = pytest.mark.timeout(60)
REPO = Path(__file__).resolve().parent.parent

# serve with the fake engine: the same command line, another engine factory
_LAUNCH = (
    "import sys; from gateway.cli.main import build_parser; from gateway.cli.serve import run; "
    "from tests.test_gateway_support import fake_factory; import logging; "
    "logging.basicConfig(level=logging.INFO, stream=sys.stderr); "
    "sys.exit(run(build_parser().parse_args(sys.argv[1:]), engine_factory=fake_factory))"
)


@contextlib.contextmanager
def serve_process(
    tmp_path: Path, next_hop: int, *, mode: str, workers: int, stderr: int | None = None
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """`brandgate serve` as a real process (real engine, DKIM off) in front of `next_hop`,
    listening on a free loopback port; terminated afterwards. Yields (port, process)."""
    conf = tmp_path / "conf"
    conf.mkdir(exist_ok=True)
    (conf / "brandgate.toml").write_text("[engine]\nverify_dkim = false\n")
    port = free_port()
    argv = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(conf)]
    argv += ["--listen", f"127.0.0.1:{port}", "--next-hop", f"127.0.0.1:{next_hop}"]
    argv += ["--mode", mode, "--quarantine-dir", str(tmp_path / "q")]
    argv += ["--metrics", "", "--workers", str(workers)]
    proc = subprocess.Popen(argv, cwd=REPO, stderr=subprocess.DEVNULL if stderr is None else stderr)
    try:
        _wait_port(port, proc)
        yield port, proc
    finally:
        proc.terminate()
        proc.wait(30)


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "serve exited early"
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=2) as c:
                c.noop()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("serve did not start listening")


def _send(port: int, data: bytes) -> int:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        c.ehlo("c.test.invalid")
        c.mail("alice@sender.example")
        c.rcpt("bob@rcpt.example")
        return int(c.data(data)[0])


def test_serve_reloads_on_sighup_refuses_bad_config_and_drains_on_sigterm(
    tmp_path: Path,
) -> None:
    cfg = config_dir(tmp_path)
    port = free_port()
    log = tmp_path / "serve.log"
    with sink() as (hop, hop_port), log.open("wb") as logf:
        argv = [
            "serve",
            "--config",
            str(cfg),
            "--listen",
            f"127.0.0.1:{port}",
            "--next-hop",
            f"127.0.0.1:{hop_port}",
            "--quarantine-dir",
            str(tmp_path / "q"),
            "--metrics",
            "",
            "--workers",
            "1",
        ]
        proc = subprocess.Popen(
            [sys.executable, "-c", _LAUNCH, *argv], cwd=REPO, stdout=logf, stderr=logf
        )
        try:
            _wait_port(port, proc)
            assert _send(port, message()) == 250
            (cfg / "brandgate.toml").write_text("[gateway]\nmax_sessions = -3\n")
            proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while b"reload refused" not in log.read_bytes() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert b"gateway.max_sessions" in log.read_bytes()
            assert _send(port, message()) == 250  # still serving with the old config

            # SIGTERM while a slow scan is in flight: that message still gets its answer
            codes: list[int] = []
            slow = threading.Thread(
                target=lambda: codes.append(_send(port, message(extra="X-Test-Sleep: 1.5\r\n")))
            )
            slow.start()
            time.sleep(0.7)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0
            slow.join(10)
            assert codes == [250]
            assert len(hop.messages) == 3
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log.read_text()
    assert text.count("brandgate.message") >= 3 or text.count("verdict=pass") >= 3


def test_serve_with_bad_config_exits_2(tmp_path: Path) -> None:
    cfg = config_dir(tmp_path, gateway='mode = "sideways"')
    res = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(cfg)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2
    assert "gateway.mode" in res.stderr


def test_quarantine_cli_list_show_release_delete_purge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    qdir = tmp_path / "quarantine"
    cfg = tmp_path / "conf"
    with sink() as (hop, hop_port):
        with running_gateway(tmp_path, hop_port) as gw:
            for i in range(2):
                with smtplib.SMTP("127.0.0.1", gw.port, timeout=20) as c:
                    c.ehlo("c.test.invalid")
                    c.mail("alice@sender.example", ["BODY=8BITMIME"])
                    c.rcpt("bob@rcpt.example")
                    c.rcpt("carol@rcpt.example")
                    assert c.data(message(subject=f"q{i}", verdict="quarantine"))[0] == 250
        assert hop.messages == []
        common = ["--config", str(cfg), "--quarantine-dir", str(qdir)]

        assert cli_main(["quarantine", "list", "--json", *common]) == 0
        listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert len(listed) == 2
        first, second = listed[0]["id"], listed[1]["id"]

        assert cli_main(["quarantine", "show", first, *common]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["rcpts"] == ["bob@rcpt.example", "carol@rcpt.example"]

        args = ["quarantine", "release", first, "--by", "alice", "--reason", "false positive"]
        args += ["--next-hop", f"127.0.0.1:{hop_port}", *common]
        assert cli_main(args) == 0
        out = capsys.readouterr().out
        assert "re-scan:" in out and f"released {first}" in out
        assert len(hop.messages) == 1
        got = hop.messages[0]
        assert got.mail_from == "alice@sender.example"
        assert got.rcpts == ["bob@rcpt.example", "carol@rcpt.example"]
        assert "BODY=8BITMIME" in got.options
        assert b"X-Brandgate-Released: " + first.encode() + b" by alice" in got.data
        # a second release is refused: no duplicate delivery by accident
        assert cli_main(args) == 1
        assert len(hop.messages) == 1

    assert cli_main(["quarantine", "show", first, *common]) == 0
    audit = json.loads(capsys.readouterr().out)["audit"]
    assert [(a["action"], a["by"], a["reason"]) for a in audit] == [
        ("release", "alice", "false positive")
    ]
    assert cli_main(["quarantine", "delete", second, "--by", "bob", *common]) == 0
    assert not (qdir / "messages" / f"{second}.eml").exists()
    capsys.readouterr()
    assert cli_main(["quarantine", "list", *common]) == 0
    assert capsys.readouterr().out == "no messages held\n"
    assert cli_main(["quarantine", "purge", "--older-than", "0s", *common]) == 0
    assert "purged 1 message\n" in capsys.readouterr().out  # the released one
    assert not (qdir / "messages" / f"{first}.eml").exists()
    assert os.stat(qdir).st_mode & 0o077 == 0
