"""Read mail archives as a stream of raw messages: .eml files, directories, mbox, Maildir, stdin.

One message is held in memory at a time (plus the line being read), so an mbox of millions of
messages streams in flat memory. Nothing here parses mail: the engine gets the bytes as found.

Sources name where a message came from, stable across runs so that replay can match labels:
  * a file                          -> its path as given/joined ("corpus/dev/ham/x.eml")
  * the N-th message of an mbox     -> "path#N" (1-based)
  * a Maildir message               -> "maildir/cur/filename"
  * stdin                           -> "-" (or "-#N" when stdin is an mbox)
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

log = logging.getLogger(__name__)

MBOX_SUFFIXES = (".mbox", ".mbx")
MAILDIR_SUBDIRS = ("cur", "new", "tmp")
_READ_CHUNK = 1 << 20

# A separator after a blank line needs only a time of day ("From x@y Tue Sep  3 15:33:27 2002",
# "From - Mon ..."); without the blank line it must look like a full ctime From_ line. Body
# lines such as "From one solid piece of aluminium..." then do not split a message.
_FROM_TIME = re.compile(rb"^From \S*.*\d{1,2}:\d{2}")
_FROM_STRICT = re.compile(
    rb"^From \S+ +(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) +"
    rb"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) +\d{1,2} +\d{1,2}:\d{2}"
)


@dataclass(frozen=True, slots=True)
class Item:
    source: str
    raw: bytes


@dataclass(slots=True)
class ArchiveStats:
    """Counters filled while iterating (pass one to iter_messages to read them afterwards)."""

    files: int = 0  # files opened (mbox, eml, Maildir entries)
    messages: int = 0  # items yielded
    errors: int = 0  # files or paths that could not be read
    oversize: int = 0  # messages truncated to max_bytes + 1
    error_paths: list[str] = field(default_factory=list)  # first few, for the summary

    def error(self, path: str, why: object) -> None:
        log.warning("cannot read %s: %s", path, why)
        self.errors += 1
        if len(self.error_paths) < 20:
            self.error_paths.append(path)


# --------------------------------------------------------------------------- entry points


def iter_messages(
    paths: Sequence[str],
    *,
    max_bytes: int | None = None,
    stats: ArchiveStats | None = None,
) -> Iterator[Item]:
    """Every message under `paths`, in a stable order, streaming.

    Directories are walked recursively in sorted order, skipping dotfiles; a Maildir (a dir with
    cur/new/tmp) yields cur then new. A file is an mbox when it is named *.mbox / *.mbx, or when
    it starts with a "From " line and holds more than one message; otherwise it is one message.
    With `max_bytes`, a larger message is cut to max_bytes + 1 bytes (still yielded, so the
    engine records the limit) and the rest is skipped unread into memory.
    Unreadable paths are logged and counted in `stats.errors`; they never stop the iteration.
    """
    st = stats if stats is not None else ArchiveStats()
    for path in paths:
        for item in _iter_path(path, max_bytes, st):
            st.messages += 1
            yield item


def count_hint(paths: Sequence[str]) -> int | None:
    """A cheap total for progress bars: the number of files, or None when it is unknowable
    without reading (stdin, an mbox). May undercount if a plain file turns out to be an mbox."""
    total = 0
    for path in paths:
        if path == "-" or path.lower().endswith(MBOX_SUFFIXES):
            return None
        if os.path.isdir(path):
            for file in _walk_files(path, None):
                if file.lower().endswith(MBOX_SUFFIXES):
                    return None
                total += 1
        elif os.path.exists(path):
            if not os.path.isfile(path):
                return None  # a FIFO or device: peeking would eat the data the scan needs
            if _starts_with_from(path) and _size(path) > _READ_CHUNK:
                return None  # a large explicit file starting with From_ is most likely an mbox
            total += 1
    return total


def estimate_messages(paths: Sequence[str]) -> int | None:
    """For a progress bar over mbox files, which count_hint cannot count: the From_ lines
    after a blank line, counted in large blocks (the file is then in the page cache for the
    scan). An estimate: a body line "From ..." after a blank line counts too. None for stdin,
    FIFOs and anything unreadable."""
    total = 0
    for path in paths:
        if path == "-":
            return None
        files = list(_walk_files(path, None)) if os.path.isdir(path) else [path]
        for file in files:
            if not os.path.isfile(file):
                return None
            if not file.lower().endswith(MBOX_SUFFIXES) and not _starts_with_from(file):
                total += 1
                continue
            try:
                total += _count_from_lines(file)
            except OSError:
                return None
    return total or None


def _count_from_lines(file: str) -> int:
    count, tail = 0, b"\n\n"
    with open(file, "rb") as fh:
        while block := fh.read(_READ_CHUNK * 4):
            data = tail + block
            count += data.count(b"\n\nFrom ") + data.count(b"\n\r\nFrom ")
            tail = data[-7:]
    return count


# --------------------------------------------------------------------------- walking


def _iter_path(path: str, max_bytes: int | None, st: ArchiveStats) -> Iterator[Item]:
    if path == "-":
        st.files += 1
        yield from iter_stream(sys.stdin.buffer, "-", max_bytes=max_bytes, stats=st)
        return
    try:
        is_dir = os.path.isdir(path)
        exists = is_dir or os.path.exists(path)
    except OSError as exc:
        st.error(path, exc)
        return
    if not exists:
        st.error(path, "no such file or directory")
    elif is_dir:
        for file in _walk_files(path, st):
            yield from _iter_file(file, max_bytes, st, single=_in_maildir(file))
    else:
        yield from _iter_file(path, max_bytes, st, single=False)


def _is_maildir(path: str) -> bool:
    return all(os.path.isdir(os.path.join(path, sub)) for sub in MAILDIR_SUBDIRS)


def _in_maildir(file: str) -> bool:
    parent = os.path.dirname(file)
    return os.path.basename(parent) in ("cur", "new") and _is_maildir(os.path.dirname(parent))


def _walk_files(top: str, st: ArchiveStats | None) -> Iterator[str]:
    """Files under `top` in sorted order; each real directory once (symlink loops are cut)."""
    seen: set[tuple[int, int]] = set()

    def walk(folder: str) -> Iterator[str]:
        try:
            info = os.stat(folder)
            key = (info.st_dev, info.st_ino)
            if key in seen:
                return
            seen.add(key)
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            if st is not None:
                st.error(folder, exc)
            return
        if _is_maildir(folder):
            yield from _walk_maildir(folder, entries, walk)
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if _entry_is_dir(entry):
                yield from walk(entry.path)
            elif _entry_is_file(entry) or entry.is_symlink():
                yield entry.path  # a dangling link fails to open and is counted there
            # FIFOs, sockets and devices inside a tree are skipped: opening one could block.

    yield from walk(top)


def _walk_maildir(
    folder: str, entries: list[os.DirEntry[str]], walk: Callable[[str], Iterator[str]]
) -> Iterator[str]:
    # tmp/ holds deliveries in progress: never read. Maildir++ sub-folders (".Sent") are
    # themselves Maildirs and are read after the folder's own mail.
    for sub in ("cur", "new"):
        try:
            with os.scandir(os.path.join(folder, sub)) as it:
                names = sorted(e.name for e in it if not e.name.startswith(".") and e.is_file())
        except OSError:
            continue
        for name in names:
            yield os.path.join(folder, sub, name)
    for entry in entries:
        if entry.name.startswith(".") and _entry_is_dir(entry) and _is_maildir(entry.path):
            yield from walk(entry.path)


def _entry_is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _entry_is_file(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _starts_with_from(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(5) == b"From "
    except OSError:
        return False


# --------------------------------------------------------------------------- reading


def _iter_file(
    path: str, max_bytes: int | None, st: ArchiveStats, *, single: bool
) -> Iterator[Item]:
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed in finally; we yield while it is open
    except OSError as exc:
        st.error(path, exc)
        return
    st.files += 1
    try:
        force_mbox = not single and path.lower().endswith(MBOX_SUFFIXES)
        if single:
            yield Item(path, _read_bounded(fh, max_bytes, st))
        else:
            yield from iter_stream(fh, path, max_bytes=max_bytes, stats=st, force_mbox=force_mbox)
    except OSError as exc:
        st.error(path, exc)
    finally:
        fh.close()


def _read_bounded(fh: BinaryIO, max_bytes: int | None, st: ArchiveStats) -> bytes:
    if max_bytes is None:
        return fh.read()
    data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        st.oversize += 1
    return data


def iter_stream(
    fh: BinaryIO,
    name: str,
    *,
    max_bytes: int | None = None,
    stats: ArchiveStats | None = None,
    force_mbox: bool = False,
) -> Iterator[Item]:
    """The messages of one open binary stream (a file, a pipe): an mbox when it starts with a
    From_ line and holds several messages (or `force_mbox`), else one message named `name`."""
    st = stats if stats is not None else ArchiveStats()
    head = _peek(fh, 5)
    if not force_mbox and head != b"From ":
        # The common case (.eml): one message, read in one call.
        yield Item(name, head + _read_bounded_rest(fh, max_bytes, len(head), st))
        return
    messages = _split_mbox(fh, head, max_bytes, st)
    first = next(messages, None)
    if first is None:
        return
    second = next(messages, None)
    if second is None and not force_mbox:
        # A single message that starts with a From_ line (SpamAssassin corpus style): a plain
        # message file, kept byte for byte as found, From_ line included.
        yield Item(name, first.sep + first.body + first.tail)
        return
    yield Item(f"{name}#1", first.body)
    del first
    if second is None:
        return
    yield Item(f"{name}#2", second.body)
    del second
    for n, msg in enumerate(messages, start=3):
        yield Item(f"{name}#{n}", msg.body)


def _peek(fh: BinaryIO, n: int) -> bytes:
    # Read exactly n bytes (or to EOF) without relying on seek, so pipes work.
    data = b""
    while len(data) < n:
        chunk = fh.read(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _read_bounded_rest(fh: BinaryIO, max_bytes: int | None, have: int, st: ArchiveStats) -> bytes:
    if max_bytes is None:
        return fh.read()
    rest = fh.read(max(0, max_bytes + 1 - have))
    if have + len(rest) > max_bytes:
        st.oversize += 1
        while fh.read(_READ_CHUNK):  # drain what is left of this message unkept
            pass
    return rest


def _line_blocks(fh: BinaryIO, head: bytes) -> Iterator[bytes]:
    """`head` + the stream in blocks of about _READ_CHUNK that end at a line end (except at
    EOF, and for a line longer than a block, which comes in pieces)."""
    pending = head
    while block := fh.read(_READ_CHUNK):
        data = pending + block if pending else block
        end = data.rfind(b"\n") + 1
        if end == 0 and len(data) < _READ_CHUNK:
            pending = data
            continue
        if end == 0:
            end = len(data)  # a piece of a very long line: memory stays bounded
        pending = data[end:]
        yield data[:end]
    if pending:
        yield pending


@dataclass(slots=True)
class _MboxMessage:
    sep: bytes  # the From_ line ("" for text before the first one)
    body: bytes  # the message as yielded
    tail: bytes  # the blank line the mbox writer added before the next From_ line


@dataclass(slots=True)
class _Collector:
    """The bytes of the message being read, cut after max_bytes + 1."""

    max_bytes: int | None
    parts: list[bytes] = field(default_factory=list)
    size: int = 0
    cut: bool = False
    text: bool = False  # anything but whitespace seen (cut or not)

    def add(self, data: bytes) -> None:
        if not self.text and data.strip():
            self.text = True
        if not data or self.cut:
            return
        if self.max_bytes is not None and self.size + len(data) > self.max_bytes:
            data = data[: self.max_bytes + 1 - self.size]
            self.cut = True
        self.parts.append(data)
        self.size += len(data)

    def finish(self, sep: bytes, st: ArchiveStats) -> _MboxMessage:
        body = b"".join(self.parts)
        if self.cut:
            st.oversize += 1
            return _MboxMessage(sep, body, b"")
        # The blank line an mbox writer puts before the next From_ line is not the message's.
        tail = b""
        if body == b"\n" or body.endswith(b"\n\n"):
            tail = b"\n"
        elif body == b"\r\n" or body.endswith(b"\n\r\n"):
            tail = b"\r\n"
        return _MboxMessage(sep, body[: len(body) - len(tail)], tail)


def _split_mbox(
    fh: BinaryIO, head: bytes, max_bytes: int | None, st: ArchiveStats
) -> Iterator[_MboxMessage]:
    """Each message of an mbox, without its From_ line and the mbox's blank line after it.

    Blocks are searched for "\nFrom " in C rather than looked at line by line (about 5x
    faster). ">From " escapes are kept as found: mboxo and mboxrd cannot be told apart, and
    no check depends on it.
    """
    msg = _Collector(max_bytes)
    sep = b""
    started = False
    line_start = True  # the block begins a line
    prev_blank = True  # the last whole line before the block was blank (or there was none)
    for data in _line_blocks(fh, head):
        pos = search = 0
        while (p := _next_from(data, search, line_start)) >= 0:
            eol = data.find(b"\n", p) + 1 or len(data)
            line = data[p:eol]
            if _is_separator(line, _blank_before(data, p, line_start, prev_blank)):
                msg.add(data[pos:p])
                if started or msg.text:
                    # Text before the first separator of a *.mbox is kept as a message too.
                    yield msg.finish(sep, st)
                started, sep, msg, pos = True, line, _Collector(max_bytes), eol
            search = eol
        msg.add(data[pos:])
        if data.endswith(b"\n"):
            prev_blank = _blank_before(data, len(data), line_start, prev_blank)
        line_start = data.endswith(b"\n")
    if started or msg.text:
        yield msg.finish(sep, st)


def _next_from(data: bytes, search: int, line_start: bool) -> int:
    """Index of the next "From " at a line start, at or after `search`, or -1."""
    if search == 0 and line_start and data.startswith(b"From "):
        return 0
    i = data.find(b"\nFrom ", max(search - 1, 0))
    return -1 if i < 0 else i + 1


def _blank_before(data: bytes, p: int, line_start: bool, prev_blank: bool) -> bool:
    """Whether the line that ends just before index p (a line start) is blank."""
    if p == 0:
        return prev_blank
    q = data.rfind(b"\n", 0, p - 1) + 1
    if q == 0 and not line_start:
        return False  # that line began in an earlier block, with text
    return data[q : p - 1] in (b"", b"\r")


def _is_separator(line: bytes, prev_blank: bool) -> bool:
    if prev_blank and _FROM_TIME.match(line):
        return True
    return bool(_FROM_STRICT.match(line))


def iter_sources(items: Iterable[Item]) -> Iterator[str]:
    """Only the sources (for listings and tests)."""
    for item in items:
        yield item.source
