"""The embedded quarantine: one raw file per message plus a SQLite index and audit log.

A message counts as stored only when its file is written, fsynced and renamed into place, the
directory is fsynced, and its index row is committed; only then does the gateway answer 250.
The directory is 0700 and every file 0600: quarantined mail is other people's mail.
Calls are blocking; the gateway runs them in a thread.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filters.types import Verdict

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    time REAL NOT NULL,
    mail_from TEXT NOT NULL,
    rcpts TEXT NOT NULL,            -- JSON list
    mail_options TEXT NOT NULL,     -- JSON list of ESMTP MAIL parameters as received
    client TEXT NOT NULL,           -- JSON: addr, helo, xforward attributes, session
    verdict TEXT NOT NULL,
    score REAL NOT NULL,
    brand TEXT,
    rules TEXT NOT NULL,            -- "RULE=score, ..."
    summary TEXT NOT NULL,
    findings TEXT NOT NULL,         -- Verdict.to_dict() as JSON
    size INTEGER NOT NULL,
    released REAL,
    deleted REAL
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    id TEXT NOT NULL,
    action TEXT NOT NULL,
    by TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Entry:
    id: str
    time: float
    mail_from: str
    rcpts: tuple[str, ...]
    mail_options: tuple[str, ...]
    client: dict[str, Any]
    verdict: str
    score: float
    brand: str | None
    rules: str
    summary: str
    findings: dict[str, Any]
    size: int
    released: float | None
    deleted: float | None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _new_id(now: float) -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + "-" + secrets.token_hex(5)


class QuarantineStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.msgdir = self.root / "messages"
        self.db_path = self.root / "index.sqlite"

    def open(self) -> QuarantineStore:
        """Create the directories and schema (idempotent); tighten permissions."""
        old = os.umask(0o077)
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.msgdir.mkdir(mode=0o700, exist_ok=True)
            os.chmod(self.root, 0o700)
            os.chmod(self.msgdir, 0o700)
            with self._db() as db:
                db.executescript(_SCHEMA)
            os.chmod(self.db_path, 0o600)
        finally:
            os.umask(old)
        return self

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        # One short connection per call: safe from any thread, and nothing stays locked.
        with closing(sqlite3.connect(self.db_path, timeout=30.0)) as db:
            db.execute("PRAGMA synchronous=FULL")
            with db:
                yield db

    def path_of(self, qid: str) -> Path:
        if not qid.replace("-", "").replace("T", "").isalnum():
            raise KeyError(qid)
        return self.msgdir / f"{qid}.eml"

    def store(
        self,
        raw: bytes,
        *,
        mail_from: str,
        rcpts: tuple[str, ...],
        mail_options: tuple[str, ...],
        client: dict[str, Any],
        verdict: Verdict,
    ) -> str:
        """Store durably and return the id; raises OSError/sqlite3.Error when it could not."""
        now = time.time()
        qid = _new_id(now)
        final = self.path_of(qid)
        tmp = self.msgdir / f".{qid}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(raw)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
            _fsync_dir(self.msgdir)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        record = verdict.to_dict()
        rules = ", ".join(f"{f['rule']}={f['score']}" for f in record["findings"])
        try:
            with self._db() as db:
                db.execute(
                    "INSERT INTO messages (id, time, mail_from, rcpts, mail_options, client,"
                    " verdict, score, brand, rules, summary, findings, size)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        qid,
                        now,
                        mail_from,
                        json.dumps(list(rcpts)),
                        json.dumps(list(mail_options)),
                        json.dumps(client),
                        verdict.verdict,
                        verdict.score,
                        record["brand"],
                        rules,
                        verdict.summary,
                        json.dumps(record),
                        len(raw),
                    ),
                )
        except BaseException:
            final.unlink(missing_ok=True)  # no index row: the file must not linger unlisted
            raise
        return qid

    # ----------------------------------------------------------------------- reading

    @staticmethod
    def _entry(row: tuple[Any, ...]) -> Entry:
        return Entry(
            id=row[0],
            time=row[1],
            mail_from=row[2],
            rcpts=tuple(json.loads(row[3])),
            mail_options=tuple(json.loads(row[4])),
            client=json.loads(row[5]),
            verdict=row[6],
            score=row[7],
            brand=row[8],
            rules=row[9],
            summary=row[10],
            findings=json.loads(row[11]),
            size=row[12],
            released=row[13],
            deleted=row[14],
        )

    _COLUMNS = (
        "id, time, mail_from, rcpts, mail_options, client, verdict, score, brand, rules,"
        " summary, findings, size, released, deleted"
    )

    def entries(self, include_gone: bool = False) -> list[Entry]:
        where = "" if include_gone else " WHERE released IS NULL AND deleted IS NULL"
        with self._db() as db:
            rows = db.execute(f"SELECT {self._COLUMNS} FROM messages{where} ORDER BY time")
            return [self._entry(r) for r in rows.fetchall()]

    def count(self) -> int:
        with self._db() as db:
            row = db.execute(
                "SELECT COUNT(*) FROM messages WHERE released IS NULL AND deleted IS NULL"
            ).fetchone()
            return int(row[0])

    def get(self, qid: str) -> Entry:
        with self._db() as db:
            row = db.execute(
                f"SELECT {self._COLUMNS} FROM messages WHERE id = ?", (qid,)
            ).fetchone()
        if row is None:
            raise KeyError(qid)
        return self._entry(row)

    def raw(self, qid: str) -> bytes:
        return self.path_of(qid).read_bytes()

    def audit(self, qid: str | None = None) -> list[tuple[Any, ...]]:
        with self._db() as db:
            sql = "SELECT time, id, action, by, reason, detail FROM audit"
            rows = (
                db.execute(sql + " WHERE id = ? ORDER BY seq", (qid,))
                if qid
                else db.execute(sql + " ORDER BY seq")
            )
            return [tuple(r) for r in rows.fetchall()]

    # ----------------------------------------------------------------------- changing

    def _record(
        self, db: sqlite3.Connection, qid: str, action: str, by: str, reason: str, detail: str
    ) -> None:
        db.execute(
            "INSERT INTO audit (time, id, action, by, reason, detail) VALUES (?,?,?,?,?,?)",
            (time.time(), qid, action, by, reason, detail),
        )

    def mark_released(self, qid: str, by: str, reason: str, detail: str) -> None:
        with self._db() as db:
            db.execute("UPDATE messages SET released = ? WHERE id = ?", (time.time(), qid))
            self._record(db, qid, "release", by, reason, detail)

    def delete(self, qid: str, by: str, reason: str) -> None:
        self.get(qid)
        with self._db() as db:
            db.execute("UPDATE messages SET deleted = ? WHERE id = ?", (time.time(), qid))
            self._record(db, qid, "delete", by, reason, "")
        self.path_of(qid).unlink(missing_ok=True)

    def purge(self, older_than: float, by: str) -> list[str]:
        """Delete messages stored more than older_than seconds ago; returns their ids."""
        cutoff = time.time() - older_than
        with self._db() as db:
            ids = [
                r[0]
                for r in db.execute(
                    "SELECT id FROM messages WHERE time < ? AND deleted IS NULL", (cutoff,)
                ).fetchall()
            ]
        for qid in ids:
            self.delete(qid, by, f"purge older than {older_than:g} s")
        return ids
