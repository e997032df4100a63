"""The ledger file: filled in as a job goes, append-only, and never fatal to what writes it."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from hypernode_host.state.ledger import Ledger, LedgerRow

RESULT = {
    "status": "failed",
    "reason": "exit_nonzero",
    "startedAt": 1_000,
    "completedAt": 4_500,
    "durationMs": 3_500,
    "exitCode": 3,
    "executionHash": "ab" * 32,
}


def test_a_job_is_filled_in_as_it_goes(tmp_path: Path) -> None:
    ledger = Ledger.in_dir(tmp_path / "state")
    ledger.received("j-1", 900)
    ledger.sent("j-1", RESULT, ("GPU-a", "GPU-b"), 4_600)
    ledger.acknowledged("j-1", 4_700, 2.5)
    ledger.received("j-2", 950)
    ledger.sent("j-2", {**RESULT, "status": "completed", "reason": None}, (), 5_000)
    ledger.rejected("j-2", 5_100, "Job not found")

    rows = ledger.rows()
    assert rows[0] == LedgerRow(
        "j-1", 900, 1_000, 4_500, "failed", "exit_nonzero", ("GPU-a", "GPU-b"), 3_500, 3, "ab" * 32, 4_600, 4_700, 2.5
    )
    assert (rows[1].rejected_ms, rejected := rows[1].rejection) == (5_100, "Job not found") and rejected
    assert [r.id for r in ledger.rows(since_ms=920)] == ["j-2"] and ledger.rows(until_ms=920)[0].id == "j-1"
    ledger.close()
    assert [r.id for r in Ledger.in_dir(tmp_path / "state").rows()] == ["j-1", "j-2"]  # kept on disk


def test_what_is_written_stays_written(tmp_path: Path) -> None:
    ledger = Ledger.in_dir(tmp_path)
    ledger.received("j-1", 900)
    ledger.acknowledged("j-1", 1_000, 1.0)
    ledger.received("j-1", 999)  # sent again by the backend: the first receipt stays
    ledger.acknowledged("j-1", 2_000, 7.0)
    assert (ledger.rows()[0].received_ms, ledger.rows()[0].credit) == (900, 1.0)
    db = sqlite3.connect(tmp_path / "ledger.sqlite3")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("DELETE FROM jobs")
    with pytest.raises(sqlite3.IntegrityError, match="never changed"):
        db.execute("UPDATE jobs SET credit = 99 WHERE id = 'j-1'")
    db.close()


def test_a_ledger_that_cannot_be_written_is_logged_once_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    ledger = Ledger.in_dir(blocker / "state")
    caplog.set_level(logging.WARNING)
    ledger.received("j-1", 1)
    ledger.received("j-2", 2)
    assert len([r for r in caplog.records if "not written" in r.getMessage()]) == 1
    assert ledger.rows() == []


def test_uptime_is_kept_per_hour_with_the_first_sighting(tmp_path: Path) -> None:
    ledger = Ledger.in_dir(tmp_path)
    hour = 3_600_000
    ledger.seen(10 * hour)
    ledger.seen(20 * hour)  # the first one stays
    ledger.credit_uptime(10 * hour, 11 * hour + 60_000)
    ledger.credit_uptime(11 * hour + 60_000, 11 * hour + 120_000)
    assert ledger.uptime() == ({10 * hour: hour, 11 * hour: 120_000}, 10 * hour)
