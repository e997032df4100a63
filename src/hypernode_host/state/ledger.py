"""The ledger: every job the node took, in a local SQLite file that outlives Redis and its retention.

``<HN_STATE_DIR>/ledger.sqlite3`` (stdlib sqlite3, WAL): one row per job, filled in as the job goes
(received; then its result as sent: status, reason, times, GPUs, exit code, executionHash; then what
the backend said: acknowledged with the credit it reported, or rejected with its text), and the
registered time per UTC hour (what uptime is computed from). Append-only: no row is ever deleted
(a trigger refuses it), and a value once written is never changed (each write fills only what is
still empty), so the ledger is what the node saw, to reconcile with the network's payouts.

The bridge writes it, on a thread of its own (never the event loop's); the CLI reads it. A ledger
that cannot be written (a full disk, a read-only volume) is logged, never fatal: the jobs matter more.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypernode_host.core.uptime import split_by_hour

log = logging.getLogger(__name__)

LEDGER_FILE = "ledger.sqlite3"
COLUMNS = (
    "id",
    "received_ms",
    "started_ms",
    "finished_ms",
    "status",
    "reason",
    "gpus",
    "duration_ms",
    "exit_code",
    "result_digest",
    "sent_ms",
    "acknowledged_ms",
    "credit",
    "rejected_ms",
    "rejection",
)
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, received_ms INTEGER, started_ms INTEGER, finished_ms INTEGER, status TEXT, reason TEXT,
    gpus TEXT, duration_ms INTEGER, exit_code INTEGER, result_digest TEXT, sent_ms INTEGER,
    acknowledged_ms INTEGER, credit REAL, rejected_ms INTEGER, rejection TEXT
);
CREATE INDEX IF NOT EXISTS jobs_received ON jobs (received_ms);
CREATE TABLE IF NOT EXISTS uptime (hour_ms INTEGER PRIMARY KEY, up_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS jobs_kept BEFORE DELETE ON jobs
    BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS uptime_kept BEFORE DELETE ON uptime
    BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS jobs_unchanged BEFORE UPDATE ON jobs WHEN {
    " OR ".join(f"(OLD.{c} IS NOT NULL AND NEW.{c} IS NOT OLD.{c})" for c in COLUMNS)
}
    BEGIN SELECT RAISE(ABORT, 'a ledger value once written is never changed'); END;
"""


@dataclass(frozen=True)
class LedgerRow:
    id: str
    received_ms: int | None = None
    started_ms: int | None = None
    finished_ms: int | None = None
    status: str | None = None
    reason: str | None = None
    gpus: tuple[str, ...] = ()
    duration_ms: int | None = None
    exit_code: int | None = None
    result_digest: str | None = None
    sent_ms: int | None = None
    acknowledged_ms: int | None = None
    credit: float | None = None
    rejected_ms: int | None = None
    rejection: str | None = None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class Ledger:
    """The ledger file at ``path``, opened at the first use; every write is total (see the module)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._broken = ""  # the last error, logged once until a write works again

    @classmethod
    def in_dir(cls, state_dir: Path) -> Ledger:
        return cls(state_dir / LEDGER_FILE)

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=10, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL: a power cut loses at most the last writes, never the file
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    @contextmanager
    def _writing(self, what: str) -> Iterator[sqlite3.Connection | None]:
        """One transaction, or None (logged) when the file cannot be written."""
        with self._lock:
            try:
                db = self._connect()
                db.execute("BEGIN IMMEDIATE")
            except (sqlite3.Error, OSError) as exc:
                self._failed(what, exc)
                yield None
                return
            try:
                yield db
                db.execute("COMMIT")
                self._broken = ""
            except (sqlite3.Error, OSError) as exc:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                self._failed(what, exc)
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise

    def _failed(self, what: str, exc: Exception) -> None:
        if str(exc) != self._broken:  # said once until a write works again
            self._broken = str(exc)
            log.warning("ledger %s: %s not written: %s", self.path, what, exc)

    def _fill(self, db: sqlite3.Connection, job_id: str, values: Mapping[str, Any]) -> None:
        """Write what is still empty of the job's row (a value once written stays)."""
        db.execute("INSERT OR IGNORE INTO jobs (id) VALUES (?)", (job_id,))
        present = {k: v for k, v in values.items() if v is not None}
        if present:
            sets = ", ".join(f"{k} = COALESCE({k}, ?)" for k in present)
            db.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (*present.values(), job_id))  # noqa: S608 (our names)

    # Writes (the bridge) -----------------------------------------------------------------------

    def received(self, job_id: str, at_ms: int) -> None:
        with self._writing(f"job {job_id}") as db:
            if db is not None:
                self._fill(db, job_id, {"received_ms": at_ms})

    def sent(self, job_id: str, result: Mapping[str, Any], gpus: Sequence[str], at_ms: int) -> None:
        """The job's result, as the bridge sent it to the backend."""
        values = {
            "started_ms": _int(result.get("startedAt")),
            "finished_ms": _int(result.get("completedAt")),
            "status": result.get("status") if isinstance(result.get("status"), str) else None,
            "reason": result.get("reason") if isinstance(result.get("reason"), str) else None,
            "gpus": ",".join(gpus) if gpus else None,
            "duration_ms": _int(result.get("durationMs")),
            "exit_code": _int(result.get("exitCode")),
            "result_digest": result.get("executionHash") if isinstance(result.get("executionHash"), str) else None,
            "sent_ms": at_ms,
        }
        with self._writing(f"job {job_id}") as db:
            if db is not None:
                self._fill(db, job_id, values)

    def acknowledged(self, job_id: str, at_ms: int, credit: float | None) -> None:
        with self._writing(f"job {job_id}") as db:
            if db is not None:
                self._fill(db, job_id, {"acknowledged_ms": at_ms, "credit": credit})

    def rejected(self, job_id: str, at_ms: int, reason: str) -> None:
        with self._writing(f"job {job_id}") as db:
            if db is not None:
                self._fill(db, job_id, {"rejected_ms": at_ms, "rejection": reason})

    def seen(self, at_ms: int) -> None:
        with self._writing("first seen") as db:
            if db is not None:
                db.execute("INSERT OR IGNORE INTO meta (name, value) VALUES ('first_seen', ?)", (str(at_ms),))

    def credit_uptime(self, start_ms: int, end_ms: int) -> None:
        with self._writing("uptime") as db:
            if db is not None:
                for hour, ms in split_by_hour(start_ms, end_ms).items():
                    db.execute(
                        "INSERT INTO uptime (hour_ms, up_ms) VALUES (?, ?) "
                        "ON CONFLICT (hour_ms) DO UPDATE SET up_ms = up_ms + excluded.up_ms",
                        (hour, ms),
                    )

    # Reads (the CLI) ---------------------------------------------------------------------------

    def rows(self, since_ms: int | None = None, until_ms: int | None = None) -> list[LedgerRow]:
        """The jobs received in [since_ms, until_ms), oldest first (a job whose receipt was not seen: by
        its finish)."""
        if not self.path.exists():
            return []
        when = "COALESCE(received_ms, finished_ms, sent_ms, 0)"
        query = f"SELECT {', '.join(COLUMNS)} FROM jobs WHERE {when} >= ? AND {when} < ? ORDER BY {when}, id"  # noqa: S608
        with self._lock:
            found = self._connect().execute(query, (since_ms or 0, until_ms or 2**62)).fetchall()
        return [
            LedgerRow(
                **{**dict(zip(COLUMNS, row, strict=True)), "gpus": tuple(g for g in (row[6] or "").split(",") if g)}
            )
            for row in found
        ]

    def uptime(self) -> tuple[dict[int, int], int | None]:
        """(registered ms per hour, first seen (epoch ms)) as the ledger keeps them."""
        if not self.path.exists():
            return {}, None
        with self._lock:
            db = self._connect()
            hours = dict(db.execute("SELECT hour_ms, up_ms FROM uptime").fetchall())
            first = db.execute("SELECT value FROM meta WHERE name = 'first_seen'").fetchone()
        return hours, int(first[0]) if first and str(first[0]).isdigit() else None

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
