"""`scan` works with the network cut: no suffix-list download, no DNS, no socket at all."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

GOLDEN = Path(__file__).parent / "golden"

SCRIPT = textwrap.dedent(
    """
    import socket, sys

    def refuse(*args, **kwargs):
        raise AssertionError(f"network use during scan: {args[:2]!r}")

    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.socket.sendto = refuse
    socket.getaddrinfo = refuse
    socket.create_connection = refuse

    from gateway.cli.main import main
    sys.exit(main(["scan", "--format", "jsonl", "--no-progress", *sys.argv[1:]]))
    """
)


def test_scan_uses_no_network() -> None:
    res = subprocess.run(
        [sys.executable, "-c", SCRIPT, *(str(p) for p in sorted(GOLDEN.glob("*.eml")))],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert "network use" not in res.stderr
    records = [line for line in res.stdout.splitlines() if line.startswith("{")]
    assert len(records) == len(list(GOLDEN.glob("*.eml")))
    assert '"status": "ok"' in records[0]
