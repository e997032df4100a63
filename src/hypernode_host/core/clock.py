"""Wall-clock time as the wire and the records write it: epoch milliseconds, true UTC."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def utc_timestamp() -> str:
    """ISO 8601 in UTC with milliseconds and a Z (a heartbeat's ``timestamp``)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
