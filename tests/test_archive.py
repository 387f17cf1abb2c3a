"""gateway.archives.read: which messages come out of files, directories, mbox files and Maildirs."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.archives import read as archive
from gateway.archives.read import ArchiveStats, Item, count_hint, iter_messages, iter_stream


def msg(subject: str, body: str = "Hello.\n") -> bytes:
    return (
        f"From: Alice <alice@example.org>\nTo: bob@example.net\nSubject: {subject}\n\n{body}"
    ).encode()


FROM_LINE = "From alice@example.org Tue Sep  3 15:33:27 2002\n"


def mbox_of(*messages: bytes) -> bytes:
    return b"".join(FROM_LINE.encode() + m + b"\n" for m in messages)


def sources(items: list[Item]) -> list[str]:
    return [i.source for i in items]


def test_eml_file_is_one_message_byte_for_byte(tmp_path: Path) -> None:
    raw = msg("one").replace(b"\n", b"\r\n")
    path = tmp_path / "a.eml"
    path.write_bytes(raw)
    items = list(iter_messages([str(path)]))
    assert items == [Item(str(path), raw)]


def test_directory_recursion_sorted_skipping_dotfiles(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.eml").write_bytes(msg("z"))
    (tmp_path / "b" / "a.eml").write_bytes(msg("a"))
    (tmp_path / "a.eml").write_bytes(msg("top"))
    (tmp_path / ".hidden.eml").write_bytes(msg("hidden"))
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.eml").write_bytes(msg("x"))
    stats = ArchiveStats()
    items = list(iter_messages([str(tmp_path)], stats=stats))
    expected = [tmp_path / "a.eml", tmp_path / "b" / "a.eml", tmp_path / "b" / "z.eml"]
    assert sources(items) == [str(p) for p in expected]
    assert stats.messages == 3 and stats.errors == 0
    assert count_hint([str(tmp_path)]) == 3


def test_mbox_three_messages_with_escaped_from_in_body(tmp_path: Path) -> None:
    second = msg("two", "Dear user,\n\n>From the desk of the manager: hello.\n")
    path = tmp_path / "archive"  # no .mbox suffix: recognised by its From_ lines
    path.write_bytes(mbox_of(msg("one"), second, msg("three")))
    items = list(iter_messages([str(path)]))
    assert sources(items) == [f"{path}#1", f"{path}#2", f"{path}#3"]
    # The From_ separator and the mbox's blank line go; the escaped line stays as found.
    assert items[0].raw == msg("one")
    assert items[1].raw == second
    assert b"\n>From the desk" in items[1].raw
    assert items[2].raw == msg("three")


def test_body_line_starting_with_from_does_not_split(tmp_path: Path) -> None:
    # Not escaped, after a blank line, but no time of day: prose, not a From_ line.
    body = "Hi,\n\nFrom one solid piece of aluminium comes a laptop.\n"
    path = tmp_path / "box.mbox"
    path.write_bytes(mbox_of(msg("one", body), msg("two")))
    items = list(iter_messages([str(path)]))
    assert sources(items) == [f"{path}#1", f"{path}#2"]
    assert items[0].raw == msg("one", body)


def test_single_message_with_from_line_is_kept_whole(tmp_path: Path) -> None:
    # SpamAssassin-corpus style: one message per file, starting with a From_ line.
    raw = FROM_LINE.encode() + msg("solo") + b"\n"
    path = tmp_path / "0001.txt"
    path.write_bytes(raw)
    assert list(iter_messages([str(path)])) == [Item(str(path), raw)]


def test_mbox_suffix_with_one_message_is_numbered(tmp_path: Path) -> None:
    path = tmp_path / "one.mbox"
    path.write_bytes(mbox_of(msg("only")))
    assert list(iter_messages([str(path)])) == [Item(f"{path}#1", msg("only"))]
    assert count_hint([str(path)]) is None


def test_maildir_reads_cur_and_new_not_tmp(tmp_path: Path) -> None:
    md = tmp_path / "Mail"
    for sub in ("cur", "new", "tmp"):
        (md / sub).mkdir(parents=True)
    (md / "cur" / "1700000000.1.host:2,S").write_bytes(msg("seen"))
    (md / "new" / "1700000001.2.host").write_bytes(msg("new"))
    (md / "tmp" / "1700000002.3.host").write_bytes(msg("in delivery"))
    (md / "cur" / "1700000003.4.host:2,S").write_bytes(FROM_LINE.encode() + msg("x"))
    (md / ".Sent" / "cur").mkdir(parents=True)
    (md / ".Sent" / "new").mkdir()
    (md / ".Sent" / "tmp").mkdir()
    (md / ".Sent" / "cur" / "1700000004.5.host:2,S").write_bytes(msg("sent"))
    items = list(iter_messages([str(md)]))
    assert sources(items) == [
        f"{md}/cur/1700000000.1.host:2,S",
        f"{md}/cur/1700000003.4.host:2,S",
        f"{md}/new/1700000001.2.host",
        f"{md}/.Sent/cur/1700000004.5.host:2,S",
    ]
    assert items[0].raw == msg("seen")
    assert items[1].raw.startswith(b"From alice")  # a Maildir file is one message, as found


def test_unreadable_paths_are_counted_not_fatal(tmp_path: Path) -> None:
    good = tmp_path / "ok.eml"
    good.write_bytes(msg("ok"))
    (tmp_path / "dangling.eml").symlink_to(tmp_path / "gone.eml")
    os.mkfifo(tmp_path / "pipe")  # inside a tree: skipped, never opened (it would block)
    stats = ArchiveStats()
    items = list(iter_messages([str(tmp_path / "missing"), str(tmp_path)], stats=stats))
    assert sources(items) == [str(good)]
    assert stats.errors == 2
    assert str(tmp_path / "missing") in stats.error_paths


def test_oversize_messages_are_cut_but_still_yielded(tmp_path: Path) -> None:
    big = msg("big", "x" * 5000 + "\n")
    (tmp_path / "big.eml").write_bytes(big)
    (tmp_path / "box.mbox").write_bytes(mbox_of(big, msg("small")))
    stats = ArchiveStats()
    items = list(iter_messages([str(tmp_path)], max_bytes=1000, stats=stats))
    assert [len(i.raw) for i in items] == [1001, 1001, len(msg("small"))]
    assert stats.oversize == 2


def test_symlink_loop_is_walked_once(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "m.eml").write_bytes(msg("m"))
    os.symlink(tmp_path, tmp_path / "d" / "loop")
    assert sources(list(iter_messages([str(tmp_path)]))) == [str(tmp_path / "d" / "m.eml")]


class CountingReader(io.BytesIO):
    """A stream that remembers how far it has been read."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.high_water = 0

    def readline(self, size: int | None = -1) -> bytes:
        line = super().readline(-1 if size is None else size)
        self.high_water = max(self.high_water, self.tell())
        return line

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.high_water = max(self.high_water, self.tell())
        return data


def test_large_mbox_streams_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive, "_READ_CHUNK", 4096)  # 1 MiB in production; the file is 200 kB
    data = mbox_of(*(msg(f"n{i}", f"body {i}\n") for i in range(2000)))
    reader = CountingReader(data)
    items = iter_stream(reader, "big.mbox")
    first = next(items)
    assert first.source == "big.mbox#1"
    # A block and a message of look-ahead, not the file.
    assert reader.high_water <= 2 * 4096
    rest = list(items)
    assert len(rest) == 1999
    assert rest[-1] == Item("big.mbox#2000", msg("n1999", "body 1999\n"))


def test_very_long_line_is_read_in_pieces() -> None:
    # No newline for 3 MB: still one message, and no From_ false positive mid-line.
    line = b"x" * (3 << 20) + b" From a@b Tue Sep  3 15:33:27 2002"
    data = mbox_of(msg("long", line.decode() + "\n"), msg("next"))
    items = list(iter_stream(io.BytesIO(data), "long"))
    assert sources(items) == ["long#1", "long#2"]
    assert items[0].raw == msg("long", line.decode() + "\n")


def test_count_hint_unknown_for_stdin(tmp_path: Path) -> None:
    (tmp_path / "a.eml").write_bytes(msg("a"))
    assert count_hint(["-"]) is None
    assert count_hint([str(tmp_path / "a.eml"), str(tmp_path)]) == 2


# --------------------------------------------------------------------------- splitter vs reference

SEP = b"From a@b.example Tue Sep  3 15:33:27 2002"
LINES = [SEP + b"\n", SEP + b"\r\n", b"From here on\n", b">From x\n", b"\n", b"\r\n"]
LINES += [b"Subject: x\n", b"text\r\n", b"From a@b.example 10:20\n", b"tail"]


def reference_split(data: bytes, max_bytes: int | None) -> list[tuple[bytes, bytes]]:
    """The mbox rules applied line by line, as a person would read them: (From_ line, body)."""
    lines = data.splitlines(keepends=True) if data else []
    out: list[tuple[bytes, list[bytes]]] = []
    current: tuple[bytes, list[bytes]] = (b"", [])
    prev_blank = True
    for line in lines:
        is_sep = line.startswith(b"From ") and (
            (prev_blank and archive._FROM_TIME.match(line)) or archive._FROM_STRICT.match(line)
        )
        if is_sep:
            if out or current[0] or any(x.strip() for x in current[1]):
                out.append(current)
            current = (line, [])
            prev_blank = False
            continue
        current[1].append(line)
        prev_blank = line in (b"\n", b"\r\n")
    if out or current[0] or any(x.strip() for x in current[1]):
        out.append(current)
    result = []
    for sep, body_lines in out:
        body = b"".join(body_lines)
        if max_bytes is not None and len(body) > max_bytes:
            body = body[: max_bytes + 1]
        elif body_lines and body_lines[-1] in (b"\n", b"\r\n"):
            body = body[: -len(body_lines[-1])]
        result.append((sep, body))
    return result


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(st.sampled_from(LINES), max_size=40),
    chunk=st.integers(min_value=64, max_value=300),
    max_bytes=st.one_of(st.none(), st.integers(min_value=0, max_value=120)),
)
def test_block_splitter_matches_line_by_line_reading(
    lines: list[bytes], chunk: int, max_bytes: int | None
) -> None:
    data = b"".join(lines)
    old = archive._READ_CHUNK
    archive._READ_CHUNK = chunk  # block boundaries fall everywhere, lines stay whole
    try:
        reader = io.BytesIO(data)
        got = [(m.sep, m.body) for m in archive._split_mbox(reader, b"", max_bytes, ArchiveStats())]
    finally:
        archive._READ_CHUNK = old
    assert got == reference_split(data, max_bytes)


def test_count_hint_does_not_read_from_a_fifo(tmp_path: Path) -> None:
    # Peeking at a FIFO would consume bytes the scan needs (and block until a writer comes).
    fifo = tmp_path / "box"
    os.mkfifo(fifo)
    assert count_hint([str(fifo)]) is None
