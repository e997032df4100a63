"""The ledger's export and summary: times given as dates or ages, jobs per day, success, busy hours, CSV."""

from __future__ import annotations

import csv
import io

import pytest

from hypernode_host.core.uptime import HOUR_MS
from hypernode_host.errors import ConfigError
from hypernode_host.ops.ledger import parse_when, summarize, to_csv
from hypernode_host.state.ledger import LedgerRow

DAY = 86_400_000
T0 = 1_764_547_200_000  # 2025-12-01T00:00:00Z


def test_times_are_dates_times_or_ages() -> None:
    assert parse_when("2025-12-01") == T0
    assert parse_when("2025-12-01T01:00:00Z") == T0 + HOUR_MS
    assert parse_when("2025-12-01T02:00:00+01:00") == T0 + HOUR_MS
    assert parse_when("7d", now=T0) == T0 - 7 * DAY and parse_when("24h", now=T0) == T0 - DAY
    with pytest.raises(ConfigError, match="not a time"):
        parse_when("last tuesday")


ROWS = [
    LedgerRow("a", T0, status="completed", gpus=("GPU-1",), duration_ms=HOUR_MS, acknowledged_ms=T0 + 1, credit=1.5),
    LedgerRow("b", T0 + 10, status="failed", gpus=("GPU-1", "GPU-2"), duration_ms=HOUR_MS // 2, sent_ms=T0 + 2),
    LedgerRow("c", T0 + DAY, status="completed", duration_ms=HOUR_MS // 4, rejected_ms=T0 + DAY, rejection="=cmd"),
    LedgerRow("d", T0 + DAY + 5),  # received, not finished yet
]


def test_the_summary_counts_days_success_busy_hours_and_the_backends_answers() -> None:
    summary = summarize(ROWS, {T0: HOUR_MS}, T0, T0 + 2 * HOUR_MS)

    assert (summary.jobs, summary.finished, summary.completed, summary.success_rate) == (
        4,
        3,
        2,
        pytest.approx(2 / 3, abs=1e-4),
    )
    assert (summary.acknowledged, summary.rejected, summary.unsettled, summary.credit) == (1, 1, 1, 1.5)
    assert summary.busy_hours == {"CPU": 0.25, "GPU-1": 1.5, "GPU-2": 0.5}
    assert [(d.day, d.jobs, d.completed, d.failed, d.credit) for d in summary.per_day] == [
        ("2025-12-01", 2, 1, 1, 1.5),
        ("2025-12-02", 2, 1, 0, 0),
    ]
    assert summary.uptime[0] == {"window": "24h", "up_s": 3600.0, "observed_s": 7200.0, "ratio": 0.5}


def test_the_csv_has_every_column_and_no_formula() -> None:
    rows = list(csv.DictReader(io.StringIO(to_csv(ROWS))))
    assert [r["id"] for r in rows] == ["a", "b", "c", "d"]
    assert rows[1]["gpus"] == "GPU-1 GPU-2" and rows[0]["credit"] == "1.5" and rows[3]["status"] == ""
    assert rows[2]["rejection"] == "'=cmd"  # a spreadsheet would run it
