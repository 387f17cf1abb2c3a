"""A real-Postfix lab on loopback for end-to-end tests and benchmarks.

Pieces, each one a separate process so that tests and benchmarks can stop, kill and restart
them independently:

* a Postfix instance with its own config, queue and log directory (``postfix -c DIR``),
  after-queue (``content_filter``) or before-queue (``smtpd_proxy_filter``), with a
  re-injection listener and a sink as its only transport;
* a sink SMTP server (aiosmtpd) that writes a Maildir and stamps each message's arrival time;
* a pass-through relay (aiosmtpd in, aiosmtplib out): the benchmark baseline, and a next hop
  that can be stopped or slowed down in fault tests;
* ``brandgate serve`` run as a subprocess.

Run as a script for the helper servers: ``python postfix.py sink|relay ...``.
Nothing here ever talks to a non-loopback address.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.parser
import email.policy
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"
HARNESS = Path(__file__).resolve()
REPO_ROOT = HARNESS.parents[2]
CORPUS_DEV = (
    Path(os.environ.get("BRANDGATE_CORPUS", REPO_ROOT.parent / "shared" / "corpus")) / "dev"
)
SEQ_HEADER = "X-Test-Seq"
SINK_TIME_HEADER = "X-Sink-Time"
RELAY_HEADER = "X-Relay-Seen"
POSTFIX_SPOOL_QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")


# --------------------------------------------------------------------------- ports / waiting


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (bound together, so the kernel gives distinct ones)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((LOOPBACK, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_open(port: int) -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.settimeout(0.5)
        return s.connect_ex((LOOPBACK, port)) == 0


def reloads_answered(log_text: str) -> int:
    """SIGHUPs answered in a gateway's log: reloads done, and requests that a reload begun
    after them covered (reloads never overlap; those asked for during one become one)."""
    return log_text.count("reloaded configuration") + log_text.count(
        "reload: covered by a reload that began after it was asked for"
    )


def wait_until(pred: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def wait_port(
    port: int, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    def up() -> bool:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode}")
        return port_open(port)

    if not wait_until(up, timeout):
        raise TimeoutError(f"nothing listening on {LOOPBACK}:{port} after {timeout}s")


def wait_port_free(port: int, timeout: float = 15.0) -> bool:
    return wait_until(lambda: not port_open(port), timeout)


def skip_reason() -> str | None:
    """Why the real-Postfix tests cannot run here, or None."""
    if shutil.which("postfix") is None and not Path("/usr/sbin/postfix").exists():
        return "postfix is not installed (scripts/system-deps installs it as root)"
    if os.geteuid() != 0:
        return "real-Postfix tests need root (postfix -c DIR start runs the master as root)"
    return None


def postfix_bin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


# --------------------------------------------------------------------------- Postfix instance

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {d}/spool
data_directory = {d}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.gw.test.invalid
mydomain = gw.test.invalid
myorigin = $myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks_style = host
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = permit_mynetworks, reject
relayhost =
default_transport = smtp:[127.0.0.1]:{sink}
smtp_dns_support_level = disabled
smtp_host_lookup = native
smtpd_peername_lookup = no
biff = no
smtputf8_enable = no
maillog_file = {d}/maillog
maillog_file_prefixes = /var, /dev/stdout, {d}
queue_run_delay = {retry}s
minimal_backoff_time = {retry}s
maximal_backoff_time = {max_backoff}s
smtp_connect_timeout = 5s
smtp_data_done_timeout = 120s
message_size_limit = 40960000
# Scan the bytes the test sent: by default Postfix "fixes" malformed From headers of loopback
# clients (local_header_rewrite_clients = permit_inet_interfaces).
local_header_rewrite_clients =
# As docs/gateway.md tells admins: no message split at Postfix by a bare LF before the dot,
# and no exemption for loopback clients ($mynetworks by default).
smtpd_forbid_bare_newline = normalize
smtpd_forbid_bare_newline_exclusions =
"""

AFTER_QUEUE_FRONT = """\
127.0.0.1:{front} inet n -   n   -   -   smtpd
  -o content_filter=scan:[127.0.0.1]:{filter}
  -o receive_override_options=no_address_mappings
scan      unix  -       -       n       -       {scan_procs}      smtp
  -o smtp_send_xforward_command=yes
  -o disable_mime_output_conversion=yes
  -o smtp_generic_maps=
"""

BEFORE_QUEUE_FRONT = """\
127.0.0.1:{front} inet n -   n   -   {front_procs}  smtpd
  -o smtpd_proxy_filter=127.0.0.1:{filter}
  -o smtpd_proxy_timeout=120s
  -o smtpd_client_connection_count_limit=0
"""

# brandgate as a milter (smtpd_milters) on the front door; the same door without the milter
# (the benchmark's baseline); a door that queues mail and relays it into the front door (so a
# tempfail there leaves the message in Postfix's queue, as for mail from the internet).
MILTER_FRONT = """\
127.0.0.1:{front} inet n -   n   -   {front_procs}  smtpd
  -o smtpd_milters=inet:127.0.0.1:{filter}
  -o milter_protocol=6
  -o milter_default_action=tempfail
  -o milter_connect_timeout=5s
  -o milter_command_timeout=20s
  -o milter_content_timeout=120s
  -o local_header_rewrite_clients=
  -o smtpd_client_connection_count_limit=0
127.0.0.1:{plain} inet n -   n   -   {front_procs}  smtpd
  -o local_header_rewrite_clients=
  -o smtpd_client_connection_count_limit=0
127.0.0.1:{relay} inet n -   n   -   -   smtpd
  -o content_filter=smtp:[127.0.0.1]:{front}
  -o receive_override_options=no_milters
  -o local_header_rewrite_clients=
  -o smtpd_client_connection_count_limit=0
"""
FRONTS = {"after-queue": AFTER_QUEUE_FRONT, "before-queue": BEFORE_QUEUE_FRONT}
FRONTS["milter"] = MILTER_FRONT

REINJECT_AND_SERVICES = """\
127.0.0.1:{reinject} inet n -  n   -   -   smtpd
  -o content_filter=
  -o smtpd_proxy_filter=
  -o receive_override_options=no_unknown_recipient_checks,no_header_body_checks,no_milters
  -o smtpd_client_restrictions=
  -o smtpd_helo_restrictions=
  -o smtpd_sender_restrictions=
  -o smtpd_relay_restrictions=permit_mynetworks,reject
  -o smtpd_recipient_restrictions=permit_mynetworks,reject
  -o smtpd_data_restrictions=
  -o mynetworks=127.0.0.0/8
  -o smtpd_authorized_xforward_hosts=127.0.0.0/8
  -o smtpd_client_connection_count_limit=0
  -o smtpd_client_connection_rate_limit=0
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


@dataclass
class Ports:
    front: int  # Postfix front door (smtpd), where clients send
    filter: int  # brandgate (or the pass-through relay) listens here
    reinject: int  # Postfix re-injection smtpd, the filter's next hop
    sink: int  # the sink, Postfix's only transport
    relay: int = 0  # milter mode: a door that queues and relays to the milter door
    plain: int = 0  # milter mode: the front door without the milter

    @classmethod
    def allocate(cls) -> Ports:
        return cls(*free_ports(6))


@dataclass
class PostfixInstance:
    """One Postfix instance in its own directory; never the system's default instance."""

    base: Path
    ports: Ports
    mode: str = "after-queue"  # or "before-queue"
    retry_seconds: int = 2
    scan_procs: int = 10
    front_procs: int = 120
    running: bool = False

    @property
    def etc(self) -> Path:
        return self.base / "etc"

    @property
    def spool(self) -> Path:
        return self.base / "spool"

    @property
    def maillog(self) -> Path:
        return self.base / "maillog"

    def write_config(self) -> None:
        for sub in ("etc", "spool", "data"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        # Postfix refuses a data dir or log prefix it does not own or cannot reach.
        shutil.chown(self.base / "data", "postfix", "postfix")
        self.base.chmod(0o755)
        (self.etc / "main.cf").write_text(
            MAIN_CF.format(
                d=self.base,
                sink=self.ports.sink,
                retry=self.retry_seconds,
                max_backoff=max(self.retry_seconds * 3, 4),
            )
        )
        master = FRONTS[self.mode].format(
            front=self.ports.front,
            filter=self.ports.filter,
            relay=self.ports.relay,
            plain=self.ports.plain,
            scan_procs=self.scan_procs,
            front_procs=self.front_procs,
        ) + REINJECT_AND_SERVICES.format(reinject=self.ports.reinject)
        (self.etc / "master.cf").write_text(master)

    def _postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [postfix_bin("postfix"), "-c", str(self.etc), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
        )

    def start(self) -> None:
        self.write_config()
        res = self._postfix("start", check=False)
        if res.returncode != 0:
            raise RuntimeError(
                f"postfix start failed ({res.returncode}): {res.stderr}\n{self.log_tail()}"
            )
        self.running = True
        wait_port(self.ports.front, 20)
        wait_port(self.ports.reinject, 20)

    def master_pid(self) -> int | None:
        try:
            return int((self.spool / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """Stop the master and wait until its listeners are gone; never leaves it running."""
        if not self.running:
            return
        pid = self.master_pid()
        self._postfix("stop", check=False)
        gone = wait_until(lambda: pid is None or not _pid_alive(pid), 15)
        if not gone:
            self._postfix("abort", check=False)
            if pid is not None and not wait_until(lambda: not _pid_alive(pid), 5):
                os.kill(pid, signal.SIGKILL)
        wait_port_free(self.ports.front, 10)
        wait_port_free(self.ports.reinject, 10)
        self.running = False

    def cpu_seconds(self) -> float:
        """CPU used so far by this instance: the master, its reaped children (cutime/cstime)
        and its live children (same session). Children that exited unreaped are missed."""
        master = self.master_pid()
        if master is None:
            return 0.0
        ticks = 0
        for pid, f in _proc_stats():
            if pid == master:
                ticks += sum(int(x) for x in f[11:15])  # utime stime cutime cstime
            elif int(f[3]) == master:  # session id: master runs setsid()
                ticks += int(f[11]) + int(f[12])
        return ticks / _TICK

    def flush(self) -> None:
        """Ask the queue manager to retry deferred mail now (postqueue -f)."""
        self._postfix("flush", check=False)

    def queued(self) -> list[str]:
        """Queue ids of every message still in this instance's queue."""
        ids = []
        for q in POSTFIX_SPOOL_QUEUES:
            root = self.spool / q
            if root.is_dir():
                ids += [p.name for p in root.rglob("*") if p.is_file()]
        return ids

    def log_text(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])


def _proc_stats() -> Iterator[tuple[int, list[str]]]:
    """(pid, fields after the command name) of every live process, from /proc/PID/stat."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                text = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            yield int(entry), text.rsplit(")", 1)[1].split()


_TICK = os.sysconf("SC_CLK_TCK")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still answers kill(0); reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    return True


# --------------------------------------------------------------------------- subprocesses


@dataclass
class Proc:
    """A helper server or brandgate, started in its own session so the whole group dies."""

    argv: list[str]
    port: int
    log: Path
    env: dict[str, str] | None = None
    popen: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 40.0) -> Proc:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = self.log.open("ab")
        self.popen = subprocess.Popen(
            self.argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=self.env,
            cwd=REPO_ROOT,
        )
        out.close()
        try:
            wait_port(self.port, timeout, self.popen)
        except Exception:
            self.kill()
            raise RuntimeError(f"{self.argv[:4]} did not start:\n{self.log_tail()}") from None
        return self

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def _signal_group(self, sig: int) -> None:
        assert self.popen is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def kill(self) -> None:
        """SIGKILL the process and everything it started (pool workers included)."""
        if self.popen is None:
            return
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self._signal_group(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        # Whatever is left in the group (workers of a drained server) goes too.
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)
        wait_port_free(self.port, 5)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the live processes of this group."""
        if self.popen is None:
            return 0.0
        pgid = self.popen.pid
        # fields: [0] state, [2] pgrp, [11] utime, [12] stime
        ticks = sum(int(f[11]) + int(f[12]) for _, f in _proc_stats() if int(f[2]) == pgid)
        return ticks / _TICK

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def sink_proc(port: int, maildir: Path, log: Path, delay: float = 0.0, slow_first: int = 0) -> Proc:
    argv = [sys.executable, str(HARNESS), "sink", "--port", str(port), "--maildir", str(maildir)]
    if delay:
        argv += ["--delay", str(delay), "--slow-first", str(slow_first)]
    return Proc(argv, port, log)


def relay_proc(
    port: int,
    next_port: int,
    log: Path,
    delay: float = 0.0,
    slow_first: int = 0,
    mark_dir: Path | None = None,
) -> Proc:
    argv = [
        sys.executable,
        str(HARNESS),
        "relay",
        "--port",
        str(port),
        "--next-port",
        str(next_port),
    ]
    if delay:
        argv += ["--delay", str(delay), "--slow-first", str(slow_first)]
    if mark_dir is not None:
        argv += ["--mark-dir", str(mark_dir)]
    return Proc(argv, port, log)


def brandgate_proc(
    port: int,
    next_port: int,
    mode: str,
    quarantine_dir: Path,
    log: Path,
    config: Path,
    metrics_port: int | None = None,
    extra: Sequence[str] = (),
) -> Proc:
    """`brandgate serve`; the config must come from write_overlay_config (no DNS)."""
    argv = [sys.executable, "-m", "gateway.cli", "serve"]
    argv += ["--listen", f"{LOOPBACK}:{port}", "--next-hop", f"{LOOPBACK}:{next_port}"]
    argv += ["--mode", mode, "--quarantine-dir", str(quarantine_dir)]
    argv += ["--config", str(config)]
    # Metrics off unless asked for: the default port would collide between instances.
    argv += ["--metrics", f"{LOOPBACK}:{metrics_port}" if metrics_port else ""]
    argv += list(extra)
    return Proc(argv, port, log)


def milter_proc(
    port: int, quarantine_dir: Path, log: Path, config: Path, extra: Sequence[str] = ()
) -> Proc:
    """`brandgate milter` on a loopback port; the config must come from write_overlay_config."""
    argv = [sys.executable, "-m", "gateway.cli", "milter", "--listen", f"inet:{LOOPBACK}:{port}"]
    argv += ["--quarantine-dir", str(quarantine_dir), "--config", str(config), "--metrics", ""]
    return Proc([*argv, *extra], port, log)


def held_seqs(postfix: PostfixInstance) -> Counter[str]:
    """X-Test-Seq values of the messages in Postfix's hold queue (read with postcat)."""
    return queue_seqs(postfix, ("hold",))


def queue_seqs(postfix: PostfixInstance, queues: Sequence[str]) -> Counter[str]:
    """X-Test-Seq values of the messages in these Postfix queues (postcat of each queue file;
    a file that moves on while it is read is skipped: it is counted where it lands)."""
    seqs: Counter[str] = Counter()
    for q in queues:
        root = postfix.spool / q
        for path in sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []:
            res = subprocess.run(
                [postfix_bin("postcat"), "-c", str(postfix.etc), "-h", str(path)],
                capture_output=True,
                timeout=30,
            )
            m = _SEQ_RE.search(res.stdout)
            if m:
                seqs[m.group(1).decode(errors="replace")] += 1
    return seqs


def brandgate_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
    )


def brandgate_serve_available() -> str | None:
    """None when `brandgate serve` exists, else why not (the tests skip with it)."""
    res = brandgate_cli("serve", "--help", timeout=30)
    if res.returncode != 0:
        return f"`brandgate serve` is not available yet: {res.stderr.strip()[-300:]}"
    return None


def write_overlay_config(
    path: Path,
    tag: float | None = 0.5,
    quarantine: float | None = 50.0,
    reject: float | None = 100.0,
    extra: str = "",
) -> Path:
    """An admin config dir over the shipped defaults, for every brandgate the lab starts.

    DKIM verification is off: its key lookups would go to the host's resolver, and nothing
    here may leave loopback. Thresholds far from the crafted messages' scores make verdicts
    predictable; None keeps the shipped threshold.
    """
    path.mkdir(parents=True, exist_ok=True)
    lines = ["[engine]", "verify_dkim = false", "", "[thresholds]"]
    for name, value in (("tag", tag), ("quarantine", quarantine), ("reject", reject)):
        if value is not None:
            lines.append(f"{name} = {value}")
    (path / "brandgate.toml").write_text("\n".join(lines) + "\n" + extra)
    return path


# --------------------------------------------------------------------------- Maildir / counting


_HEADER_PARSER = email.parser.BytesHeaderParser(policy=email.policy.compat32)


@dataclass
class Delivered:
    path: Path
    headers: Any  # email.message.Message (headers only)

    def get(self, name: str) -> str | None:
        value = self.headers.get(name)
        return None if value is None else str(value)

    def get_all(self, name: str) -> list[str]:
        return [str(v) for v in (self.headers.get_all(name) or [])]

    @property
    def body(self) -> bytes:
        return self.path.read_bytes()


@dataclass
class Maildir:
    root: Path

    def files(self) -> list[Path]:
        new = self.root / "new"
        return sorted(new.iterdir()) if new.is_dir() else []

    def count(self) -> int:
        new = self.root / "new"
        return len(os.listdir(new)) if new.is_dir() else 0

    def messages(self) -> list[Delivered]:
        out = []
        for p in self.files():
            with p.open("rb") as fh:
                out.append(Delivered(p, _HEADER_PARSER.parse(fh)))
        return out

    def find(self, header: str, value: str) -> list[Delivered]:
        return [m for m in self.messages() if (m.get(header) or "").strip() == value]

    def wait_for(self, header: str, value: str, timeout: float) -> list[Delivered]:
        found: list[Delivered] = []

        def arrived() -> bool:
            nonlocal found
            found = self.find(header, value)
            return bool(found)

        wait_until(arrived, timeout, 0.2)
        return found

    def seq_counts(self) -> Counter[str]:
        # first token only: a message that starts with a folded line extends our header
        return Counter(((m.get(SEQ_HEADER) or "").split() or ["?"])[0] for m in self.messages())


_NOT_MESSAGES = (
    ".db",
    ".sqlite",
    ".sqlite3",
    "-wal",
    "-shm",
    "-journal",
    ".log",
    ".json",
    ".lock",
    ".tmp",
)
_SEQ_RE = re.compile(rb"^" + SEQ_HEADER.encode() + rb":[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)


def quarantine_seqs(qdir: Path) -> Counter[str]:
    """X-Test-Seq values of the raw messages stored in a quarantine directory.

    Independent of the store's layout beyond "raw message files plus an index": every file
    that is not the index or a log is read and its first X-Test-Seq header counted.
    """
    seqs: Counter[str] = Counter()
    if not qdir.is_dir():
        return seqs
    for p in qdir.rglob("*"):
        # dot files are a store's files in the making, not stored messages
        if not p.is_file() or p.name.startswith(".") or p.name.endswith(_NOT_MESSAGES):
            continue
        with p.open("rb") as fh:
            head = fh.read(65536)
        m = _SEQ_RE.search(head.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0])
        if m:
            seqs[m.group(1).decode(errors="replace")] += 1
    return seqs


# --------------------------------------------------------------------------- SMTP client side


def crlf(raw: bytes) -> bytes:
    """Normalise line ends to CRLF, as an MTA client would put them on the wire."""
    return re.sub(rb"\r?\n", b"\r\n", raw.replace(b"\r\r\n", b"\r\n"))


def with_header(raw: bytes, name: str, value: str) -> bytes:
    return f"{name}: {value}\r\n".encode() + crlf(raw)


def make_message(
    subject: str,
    body: str,
    from_header: str = "Alice <alice@sender.test.invalid>",
    to: str = "rcpt@example.test",
    extra_headers: Sequence[tuple[str, str]] = (),
    html: str | None = None,
) -> bytes:
    from email.message import EmailMessage
    from email.utils import make_msgid

    msg = EmailMessage()
    msg["From"] = from_header
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="client.test.invalid")
    for k, v in extra_headers:
        msg[k] = v
    msg.set_content(body)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    return crlf(msg.as_bytes())


@dataclass
class SendResult:
    code: int
    text: str
    started: float = 0.0
    finished: float = 0.0
    refused: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300


def send(
    port: int,
    raw: bytes,
    mail_from: str = "sender@sender.test.invalid",
    rcpts: Sequence[str] = ("rcpt@example.test",),
    client: smtplib.SMTP | None = None,
    timeout: float = 60,
) -> SendResult:
    """One SMTP transaction with smtplib; returns the final reply (DATA's) and never raises
    for a 4xx/5xx answer. BODY=8BITMIME and SIZE are declared when the server offers them."""
    started = time.time()
    smtp = client or smtplib.SMTP(
        LOOPBACK, port, local_hostname="client.test.invalid", timeout=timeout
    )
    try:
        smtp.ehlo_or_helo_if_needed()
        opts = []
        if smtp.has_extn("size"):
            opts.append(f"SIZE={len(raw)}")
        if smtp.has_extn("8bitmime") and any(b > 127 for b in raw):
            opts.append("BODY=8BITMIME")
        code, resp = smtp.mail(mail_from, opts)
        if code != 250:
            smtp.rset()
            return SendResult(code, _text(resp), started, time.time())
        refused = {}
        for rcpt in rcpts:
            rcode, rresp = smtp.rcpt(rcpt)
            if rcode not in (250, 251):
                refused[rcpt] = (rcode, _text(rresp))
        if len(refused) == len(rcpts):
            smtp.rset()
            rcode, rtext = next(iter(refused.values()))
            return SendResult(rcode, rtext, started, time.time(), refused)
        try:
            code, resp = smtp.data(raw)
        except smtplib.SMTPDataError as exc:  # refused at DATA itself (before 354)
            smtp.rset()
            return SendResult(exc.smtp_code, _text(exc.smtp_error), started, time.time())
        return SendResult(code, _text(resp), started, time.time(), refused)
    finally:
        if client is None:
            with contextlib.suppress(Exception):
                smtp.quit()


def queue_id(reply: str) -> str | None:
    """Postfix's queue id from its "250 2.0.0 Ok: queued as 4Xyz..." reply."""
    m = re.search(r"queued as ([0-9A-Za-z]+)", reply)
    return m.group(1) if m else None


def _text(err: bytes | str) -> str:
    return err.decode(errors="replace") if isinstance(err, bytes) else err


def corpus_files(
    n: int, labels: Sequence[str] = ("phish", "spam", "ham", "malformed")
) -> list[Path]:
    """n corpus files mixing the labels round-robin, in a stable order."""
    per_label = [sorted((CORPUS_DEV / lab).glob("*.eml")) for lab in labels]
    out: list[Path] = []
    i = 0
    while len(out) < n and any(i < len(files) for files in per_label):
        out += [files[i] for files in per_label if i < len(files)]
        i += 1
    return out[:n]


def corpus_load(n: int, tag: str) -> list[tuple[str, bytes]]:
    """n corpus messages, each with an X-Test-Seq header "<tag>-<i>" prepended."""
    out = []
    for i, path in enumerate(corpus_files(n)):
        seq = f"{tag}-{i}"
        out.append((seq, with_header(path.read_bytes(), SEQ_HEADER, seq)))
    return out


@dataclass
class LoadResult:
    results: dict[str, SendResult]
    started: float
    finished: float

    @property
    def accepted(self) -> list[str]:
        return [seq for seq, r in self.results.items() if r.ok]

    @property
    def failed(self) -> dict[str, SendResult]:
        return {seq: r for seq, r in self.results.items() if not r.ok}


def run_load(port: int, messages: Sequence[tuple[str, bytes]], sessions: int) -> LoadResult:
    """Send every message over `sessions` concurrent SMTP sessions (smtplib, one per thread).

    Each session sends message after message on one connection, as an MTA would; a failed
    message is recorded (code 0 for a broken connection), never retried.
    """
    import queue
    import threading

    todo: queue.Queue[tuple[str, bytes]] = queue.Queue()
    for item in messages:
        todo.put(item)
    results: dict[str, SendResult] = {}
    lock = threading.Lock()

    def worker() -> None:
        client: smtplib.SMTP | None = None
        while True:
            try:
                seq, raw = todo.get_nowait()
            except queue.Empty:
                break
            try:
                if client is None:
                    client = smtplib.SMTP(
                        LOOPBACK, port, local_hostname="load.test.invalid", timeout=120
                    )
                res = send(port, raw, client=client)
            except (smtplib.SMTPException, OSError) as exc:
                res = SendResult(0, f"{type(exc).__name__}: {exc}", time.time(), time.time())
                with contextlib.suppress(Exception):
                    assert client is not None
                    client.close()
                client = None
            with lock:
                results[seq] = res
        if client is not None:
            with contextlib.suppress(Exception):
                client.quit()

    started = time.time()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return LoadResult(results, started, time.time())


@dataclass
class Arrivals:
    sink: Counter[str]
    quarantine: Counter[str]
    waited: float

    def missing(self, expected: Sequence[str]) -> list[str]:
        return [s for s in expected if self.sink[s] + self.quarantine[s] == 0]

    def duplicates(self) -> dict[str, int]:
        total = self.sink + self.quarantine
        return {s: n for s, n in total.items() if n > 1}


def _file_count(root: Path | None) -> int:
    if root is None or not root.is_dir():
        return 0
    return sum(len(files) for _, _, files in os.walk(root))


def wait_arrivals(
    maildir: Maildir,
    expected: Sequence[str],
    quarantine_dir: Path | None = None,
    timeout: float = 300.0,
    stall: float = 60.0,
) -> Arrivals:
    """Wait until every expected seq is at the sink or in quarantine (or nothing moves).

    Polls only file counts (cheap: a benchmark runs beside this) and parses headers when the
    counts say everything may be there, and once more at the end to catch late duplicates.
    """
    want = set(expected)
    t0 = time.monotonic()

    def parse() -> tuple[Counter[str], Counter[str]]:
        sink = maildir.seq_counts()
        quar = quarantine_seqs(quarantine_dir) if quarantine_dir else Counter()
        return (
            Counter({k: v for k, v in sink.items() if k in want}),
            Counter({k: v for k, v in quar.items() if k in want}),
        )

    last, last_change, checked_at = -1, t0, -1
    while True:
        n = maildir.count() + _file_count(quarantine_dir)
        now = time.monotonic()
        if n != last:
            last, last_change = n, now
        # Files there before this wait (or not ours) only make this parse early, never late.
        if n >= len(want) and n != checked_at:
            checked_at = n
            sink, quar = parse()
            if want <= set(sink) | set(quar):
                break
        if now - t0 > timeout or now - last_change > stall:
            break
        time.sleep(0.2)
    time.sleep(1.0)
    sink, quar = parse()
    return Arrivals(sink, quar, time.monotonic() - t0)


# --------------------------------------------------------------------------- helper servers


class _Handler:
    """Shared parts of the sink and the relay: optional slowness for the first messages."""

    def __init__(self, delay: float, slow_first: int) -> None:
        self.delay = delay
        self.slow_left = slow_first if delay else 0
        self.seen = 0

    async def maybe_slow(self, server: Any) -> bool:
        """Sleep if this message is one of the slow ones; False when the client went away."""
        self.seen += 1
        if self.slow_left > 0:
            self.slow_left -= 1
            await asyncio.sleep(self.delay)
        # Nothing is accepted for a client that is gone: a real MTA would not commit either.
        transport = getattr(server, "transport", None)
        return transport is not None and not transport.is_closing()


class SinkHandler(_Handler):
    def __init__(self, maildir: Path, delay: float, slow_first: int) -> None:
        super().__init__(delay, slow_first)
        self.maildir = maildir
        for sub in ("tmp", "new", "cur"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)
        self.n = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if not await self.maybe_slow(server):
            return "451 4.3.0 client went away"
        self.n += 1
        name = f"{time.time():.6f}.{os.getpid()}_{self.n}.sink"
        head = (
            f"Return-Path: <{envelope.mail_from}>\r\n"
            f"X-Sink-Rcpt: {', '.join(envelope.rcpt_tos)}\r\n"
            f"{SINK_TIME_HEADER}: {time.time():.6f}\r\n"
        ).encode("utf-8", "surrogateescape")  # 8-bit envelopes as they came
        tmp = self.maildir / "tmp" / name
        tmp.write_bytes(head + envelope.original_content)
        tmp.rename(self.maildir / "new" / name)
        return "250 2.0.0 Ok: stored"


class RelayHandler(_Handler):
    """Pass-through: same envelope to the next hop, its answer is our answer."""

    def __init__(
        self, next_port: int, delay: float, slow_first: int, mark_dir: Path | None
    ) -> None:
        super().__init__(delay, slow_first)
        self.next_port = next_port
        self.mark_dir = mark_dir

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        import aiosmtplib

        if self.mark_dir is not None:
            # Lets a test know a transfer is in flight here (e.g. to kill the sender then).
            (self.mark_dir / f"data-{time.time():.6f}").touch()
        if not await self.maybe_slow(server):
            return "451 4.3.0 client went away"
        content = f"{RELAY_HEADER}: yes\r\n".encode() + envelope.original_content
        try:
            _, reply = await aiosmtplib.send(
                content,
                sender=envelope.mail_from,
                recipients=envelope.rcpt_tos,
                hostname=LOOPBACK,
                port=self.next_port,
                local_hostname="relay.test.invalid",
                timeout=60,
                start_tls=False,
            )
        except aiosmtplib.SMTPResponseException as exc:
            return f"{exc.code} {exc.message}"
        except (aiosmtplib.SMTPException, OSError) as exc:
            return f"451 4.4.1 next hop unavailable: {type(exc).__name__}"
        return f"250 2.0.0 relayed: {reply}"


async def _serve(handler: Any, port: int, hostname: str) -> None:
    from aiosmtpd.smtp import SMTP

    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, data_size_limit=None, enable_SMTPUTF8=True, hostname=hostname),
        LOOPBACK,
        port,
        reuse_address=True,
        backlog=256,
    )
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with server:
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="helper servers for the real-Postfix lab")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sink", help="SMTP sink writing a Maildir")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--maildir", type=Path, required=True)
    r = sub.add_parser("relay", help="pass-through relay (benchmark baseline, fault tests)")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--next-port", type=int, required=True)
    r.add_argument("--mark-dir", type=Path)
    for p in (s, r):
        p.add_argument("--delay", type=float, default=0.0, help="seconds before answering DATA")
        p.add_argument("--slow-first", type=int, default=0, help="only the first N are slow")
    lab = sub.add_parser("lab", help="start a whole lab by hand and keep it up until Ctrl-C")
    lab.add_argument("--mode", choices=tuple(FRONTS), default="after-queue")
    lab.add_argument(
        "--filter",
        choices=("brandgate", "relay", "none"),
        default="brandgate",
        help="what listens on the filter port (none: start your own there)",
    )
    lab.add_argument("--dir", type=Path, help="lab directory (default: a new one in /tmp)")
    lab.add_argument("--config", type=Path, help="brandgate config dir (default: DKIM off)")
    args = ap.parse_args(argv)
    if args.cmd == "lab":
        return _run_lab(args)
    handler: Any
    if args.cmd == "sink":
        handler = SinkHandler(args.maildir, args.delay, args.slow_first)
        host = "sink.test.invalid"
    else:
        handler = RelayHandler(args.next_port, args.delay, args.slow_first, args.mark_dir)
        host = "relay.test.invalid"
    asyncio.run(_serve(handler, args.port, host))
    return 0


# --------------------------------------------------------------------------- a whole lab


@dataclass
class Lab:
    """Postfix + sink (+ whatever sits on the filter port, started by the caller)."""

    base: Path
    mode: str = "after-queue"
    retry_seconds: int = 2
    ports: Ports = field(default_factory=Ports.allocate)
    postfix: PostfixInstance = field(init=False)
    sink: Proc = field(init=False)
    maildir: Maildir = field(init=False)
    procs: list[Proc] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        # Postfix's own users must reach its directories; test tmp dirs are 0700, so the
        # instance lives in a world-traversable dir of its own, removed when the lab stops.
        pfx_dir = Path(tempfile.mkdtemp(prefix="brandgate-postfix-"))
        pfx_dir.chmod(0o755)
        self.postfix = PostfixInstance(pfx_dir, self.ports, self.mode, self.retry_seconds)
        self.maildir = Maildir(self.base / "sink-maildir")
        self.sink = sink_proc(self.ports.sink, self.maildir.root, self.base / "logs" / "sink.log")

    def start(self) -> Lab:
        try:
            self.sink.start()
            self.postfix.start()
        except BaseException:
            self.stop()
            raise
        return self

    def free_port(self) -> int:
        return free_ports(1)[0]

    def add(self, proc: Proc) -> Proc:
        """Start a process and stop it with the lab."""
        self.procs.append(proc)
        return proc.start()

    def stop(self) -> None:
        errors = []
        for step in [*(p.stop for p in reversed(self.procs)), self.postfix.stop, self.sink.stop]:
            try:
                step()
            except Exception as exc:  # keep stopping the rest
                errors.append(exc)
        if not self.postfix.running:
            with contextlib.suppress(OSError):
                (self.base / "logs").mkdir(exist_ok=True)
                shutil.copy(self.postfix.maillog, self.base / "logs" / "postfix-maillog")
            shutil.rmtree(self.postfix.base, ignore_errors=True)
        if errors:
            raise errors[0]

    def relay(self, log_name: str = "relay.log") -> Proc:
        return relay_proc(self.ports.filter, self.ports.reinject, self.base / "logs" / log_name)

    def brandgate(
        self,
        quarantine_dir: Path,
        config: Path,
        next_port: int | None = None,
        log_name: str = "brandgate.log",
        **kw: Any,
    ) -> Proc:
        return brandgate_proc(
            self.ports.filter,
            self.ports.reinject if next_port is None else next_port,
            self.mode,
            quarantine_dir,
            self.base / "logs" / log_name,
            config,
            **kw,
        )


def _run_lab(args: argparse.Namespace) -> int:
    if (why := skip_reason()) is not None:
        print(f"postfix-lab: {why}", file=sys.stderr)
        return 2
    base = args.dir or Path(tempfile.mkdtemp(prefix="brandgate-lab-"))
    with running_lab(base, args.mode) as lab:
        if args.filter == "relay":
            lab.add(lab.relay())
        elif args.filter == "brandgate":
            config = args.config or write_overlay_config(
                base / "config", tag=None, quarantine=None, reject=None
            )
            if args.mode == "milter":
                log = base / "logs" / "milter.log"
                lab.add(milter_proc(lab.ports.filter, base / "quarantine", log, config))
            else:
                lab.add(lab.brandgate(base / "quarantine", config))
        p = lab.ports
        print(
            f"lab up in {base} ({args.mode}, filter: {args.filter})\n"
            f"  send to      127.0.0.1:{p.front}   e.g. swaks --server 127.0.0.1:{p.front}"
            " --to rcpt@example.test\n"
            f"  filter port  127.0.0.1:{p.filter}\n"
            f"  re-injection 127.0.0.1:{p.reinject}\n"
            f"  sink         127.0.0.1:{p.sink} -> {lab.maildir.root}/new\n"
            f"  postfix      -c {lab.postfix.etc}, log {lab.postfix.maillog}\n"
            f"  logs         {base / 'logs'}\n"
            "Ctrl-C stops everything.",
            flush=True,
        )
        # Blocked first, so that either signal ends the wait and the cleanup still runs.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    return 0


@contextlib.contextmanager
def running_lab(base: Path, mode: str = "after-queue", retry_seconds: int = 2) -> Iterator[Lab]:
    lab = Lab(base, mode, retry_seconds).start()
    try:
        yield lab
    finally:
        lab.stop()


if __name__ == "__main__":
    sys.exit(main())
