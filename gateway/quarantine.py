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
    deleted REAL,
    envelope TEXT,                  -- JSON {mail_from, rcpts}: the exact envelope (see below)
    claim TEXT,                     -- token of the release in progress, if any
    claim_time REAL
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


# Columns added since the first schema: an existing store gets them on open.
_ADDED_COLUMNS = {"envelope": "TEXT", "claim": "TEXT", "claim_time": "REAL"}
# A release claim older than this is presumed left by a process that died; --force takes it.
STALE_CLAIM = 600.0


class ReleaseRefused(Exception):
    """The message cannot be released now (released already, being released, deleted)."""


def text_column(value: str) -> str:
    """What SQLite can store of an envelope string: aiosmtpd hands 8-bit bytes that are not
    UTF-8 over as surrogate escapes, which SQLite refuses; the exact value is in `envelope`."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


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
                have = {row[1] for row in db.execute("PRAGMA table_info(messages)")}
                for column, kind in _ADDED_COLUMNS.items():
                    if column not in have:
                        db.execute(f"ALTER TABLE messages ADD COLUMN {column} {kind}")
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
                # JSON with ASCII escapes keeps any string exactly (surrogates included).
                db.execute(
                    "INSERT INTO messages (id, time, mail_from, rcpts, mail_options, client,"
                    " verdict, score, brand, rules, summary, findings, size, envelope)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        qid,
                        now,
                        text_column(mail_from),
                        json.dumps(list(rcpts)),
                        json.dumps(list(mail_options)),
                        json.dumps(client),
                        verdict.verdict,
                        verdict.score,
                        record["brand"],
                        rules,
                        text_column(verdict.summary),
                        json.dumps(record),
                        len(raw),
                        json.dumps({"mail_from": mail_from, "rcpts": list(rcpts)}),
                    ),
                )
        except BaseException:
            final.unlink(missing_ok=True)  # no index row: the file must not linger unlisted
            raise
        return qid

    # ----------------------------------------------------------------------- reading

    @staticmethod
    def _entry(row: tuple[Any, ...]) -> Entry:
        envelope = json.loads(row[15]) if row[15] else {"mail_from": row[2]}
        return Entry(
            id=row[0],
            time=row[1],
            mail_from=envelope["mail_from"],
            rcpts=tuple(envelope.get("rcpts") or json.loads(row[3])),
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
        " summary, findings, size, released, deleted, envelope"
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

    def claim_release(self, qid: str, force: bool = False) -> str:
        """Take the message for one release (compare-and-set on its row): returns the token
        that finish_release/abandon_release need. Refused when it is deleted, released
        (unless force), or being released by another process (unless force and that claim
        is stale: its process died). Two concurrent releases: exactly one gets the claim."""
        token = secrets.token_hex(8)
        now = time.time()
        with self._db() as db:
            taken = db.execute(
                "UPDATE messages SET claim = ?, claim_time = ? WHERE id = ? AND deleted IS NULL"
                " AND (released IS NULL OR ?)"
                " AND (claim IS NULL OR (? AND claim_time < ?))",
                (token, now, qid, force, force, now - STALE_CLAIM),
            ).rowcount
        if taken == 1:
            return token
        e = self.get(qid)
        if e.deleted:
            raise ReleaseRefused(f"{qid} was deleted; nothing to release")
        row = self._claim_of(qid)
        if row[0] is not None:
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row[1]))
            hint = " (use --force if that process is gone)" if now - row[1] >= STALE_CLAIM else ""
            raise ReleaseRefused(f"{qid} is being released by another process since {since}{hint}")
        released = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.released))
        raise ReleaseRefused(f"{qid} was already released at {released} (use --force)")

    def _claim_of(self, qid: str) -> tuple[str | None, float]:
        with self._db() as db:
            row = db.execute("SELECT claim, claim_time FROM messages WHERE id = ?", (qid,))
            claim, when = row.fetchone()
        return claim, when or 0.0

    def finish_release(self, qid: str, token: str, by: str, reason: str, detail: str) -> None:
        with self._db() as db:
            db.execute(
                "UPDATE messages SET released = ?, claim = NULL, claim_time = NULL"
                " WHERE id = ? AND claim = ?",
                (time.time(), qid, token),
            )
            self._record(db, qid, "release", by, reason, detail)

    def abandon_release(self, qid: str, token: str) -> None:
        with self._db() as db:
            db.execute(
                "UPDATE messages SET claim = NULL, claim_time = NULL WHERE id = ? AND claim = ?",
                (qid, token),
            )

    def delete(self, qid: str, by: str, reason: str) -> None:
        self.get(qid)
        with self._db() as db:
            gone = db.execute(
                "UPDATE messages SET deleted = ? WHERE id = ? AND claim IS NULL",
                (time.time(), qid),
            ).rowcount
            if gone:
                self._record(db, qid, "delete", by, reason, "")
        if not gone:
            raise ReleaseRefused(f"{qid} is being released; not deleted")
        self.path_of(qid).unlink(missing_ok=True)

    def purge(self, older_than: float, by: str) -> list[str]:
        """Delete messages stored more than older_than seconds ago; returns their ids."""
        cutoff = time.time() - older_than
        with self._db() as db:
            ids = [
                r[0]
                for r in db.execute(
                    "SELECT id FROM messages WHERE time < ? AND deleted IS NULL AND claim IS NULL",
                    (cutoff,),
                ).fetchall()
            ]
        purged = []
        for qid in ids:
            try:
                self.delete(qid, by, f"purge older than {older_than:g} s")
            except ReleaseRefused:
                continue  # taken for a release since: not ours to purge
            purged.append(qid)
        return purged
