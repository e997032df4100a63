"""`hypernode-host ledger`: the node's own record of its jobs (state/ledger.py), exported and summed up.

Rows are the jobs received in [--since, --until) (UTC); the summary gives jobs per day, the success
rate, busy hours per GPU, what the backend acknowledged, rejected and credited, and uptime over the
last 24 hours, 7 and 30 days, from the registered time the ledger keeps.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from hypernode_host.core.clock import now_ms
from hypernode_host.core.uptime import uptimes
from hypernode_host.errors import ConfigError
from hypernode_host.settings import Settings
from hypernode_host.state.ledger import COLUMNS, Ledger, LedgerRow

_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
CPU = "CPU"


def parse_when(text: str, now: int | None = None) -> int:
    """--since/--until: an ISO date or time (UTC unless it says), or an age such as 24h, 7d or 30d; epoch ms."""
    value = text.strip()
    relative = _RELATIVE.match(value)
    if relative:
        return (now if now is not None else now_ms()) - int(relative[1]) * _UNIT_S[relative[2]] * 1000
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"not a time: {value!r} (give 2026-12-01, 2026-12-01T10:00:00Z, 24h or 7d)") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return int(at.timestamp() * 1000)


def day(at_ms: int) -> str:
    return datetime.fromtimestamp(at_ms / 1000, UTC).strftime("%Y-%m-%d")


@dataclass(frozen=True)
class DaySummary:
    day: str
    jobs: int
    completed: int
    failed: int  # every other final status
    credit: float


@dataclass(frozen=True)
class LedgerSummary:
    jobs: int
    finished: int
    completed: int
    success_rate: float | None  # completed / finished
    by_status: dict[str, int]
    acknowledged: int
    rejected: int
    unsettled: int  # sent, neither acknowledged nor rejected
    credit: float
    busy_hours: dict[str, float]  # per GPU UUID ("CPU" for CPU jobs): hours of job containers running
    per_day: list[DaySummary] = field(default_factory=list)
    uptime: list[dict[str, Any]] = field(default_factory=list)


def summarize(rows: list[LedgerRow], hours: dict[int, int], first_seen: int | None, now: int) -> LedgerSummary:
    by_status = Counter(r.status for r in rows if r.status)
    finished = sum(by_status.values())
    completed = by_status.get("completed", 0)
    busy: dict[str, float] = defaultdict(float)
    days: dict[str, list[LedgerRow]] = defaultdict(list)
    for row in rows:
        for gpu in row.gpus or (CPU,):
            busy[gpu] += (row.duration_ms or 0) / 3_600_000
        at = row.received_ms or row.finished_ms or row.sent_ms
        if at:
            days[day(at)].append(row)
    per_day = [
        DaySummary(
            name,
            len(found),
            sum(1 for r in found if r.status == "completed"),
            sum(1 for r in found if r.status and r.status != "completed"),
            round(sum(r.credit or 0 for r in found), 6),
        )
        for name, found in sorted(days.items())
    ]
    return LedgerSummary(
        jobs=len(rows),
        finished=finished,
        completed=completed,
        success_rate=round(completed / finished, 4) if finished else None,
        by_status=dict(sorted(by_status.items())),
        acknowledged=sum(1 for r in rows if r.acknowledged_ms),
        rejected=sum(1 for r in rows if r.rejected_ms),
        unsettled=sum(1 for r in rows if r.sent_ms and not r.acknowledged_ms and not r.rejected_ms),
        credit=round(sum(r.credit or 0 for r in rows), 6),
        busy_hours={gpu: round(h, 4) for gpu, h in sorted(busy.items())},
        per_day=per_day,
        uptime=[u.document() for u in uptimes(hours, first_seen, now)],
    )


@dataclass(frozen=True)
class LedgerExport:
    rows: list[LedgerRow]
    summary: LedgerSummary


def read_ledger(settings: Settings, since: str | None = None, until: str | None = None) -> LedgerExport:
    """The ledger of HN_STATE_DIR: the rows in the range and their summary (uptime: the last 30 days)."""
    now = now_ms()
    since_ms = parse_when(since, now) if since else None
    until_ms = parse_when(until, now) if until else None
    ledger = Ledger.in_dir(settings.state_dir)
    try:
        rows = ledger.rows(since_ms, until_ms)
        hours, first_seen = ledger.uptime()
    finally:
        ledger.close()
    return LedgerExport(rows, summarize(rows, hours, first_seen, now))


def to_csv(rows: list[LedgerRow]) -> str:
    """One line per job, the ledger's columns; GPUs separated by spaces, times in epoch ms."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        values = asdict(row)
        values["gpus"] = " ".join(row.gpus)
        writer.writerow(["" if values[c] is None else _cell(values[c]) for c in COLUMNS])
    return out.getvalue()


def _cell(value: object) -> str:
    """A spreadsheet runs a cell that starts with = + - @ as a formula: such text (a backend's rejection) is
    quoted with a leading apostrophe."""
    text = str(value)
    return "'" + text if isinstance(value, str) and text[:1] in ("=", "+", "-", "@") else text
