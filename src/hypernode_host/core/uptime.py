"""Uptime, pure: registered time kept per UTC hour, and its share of the last 24 hours, 7 and 30 days.

The bridge credits the time it is registered and heartbeating, beat by beat (state/uptime.py keeps
it per hour, in Redis and in the ledger); a crash loses at most the time since its last beat.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

HOUR_MS = 3_600_000
WINDOWS_S = {"24h": 86_400, "7d": 7 * 86_400, "30d": 30 * 86_400}
KEEP_HOURS = 31 * 24  # hours kept: the longest window and a day more


def split_by_hour(start_ms: int, end_ms: int) -> dict[int, int]:
    """The milliseconds of [start_ms, end_ms) in each UTC hour, keyed by the hour's start (epoch ms)."""
    parts: dict[int, int] = {}
    at = start_ms
    while at < end_ms:
        hour = at - at % HOUR_MS
        upto = min(hour + HOUR_MS, end_ms)
        parts[hour] = parts.get(hour, 0) + upto - at
        at = upto
    return parts


@dataclass(frozen=True)
class Uptime:
    """Registered time in the window that ends now, and the share of the window it is."""

    window: str  # "24h", "7d" or "30d"
    up_s: float
    observed_s: float  # the window, cut to when the node was first seen: a new node was not down before it ran

    @property
    def ratio(self) -> float | None:
        """None when nothing of the window was observed."""
        return None if self.observed_s <= 0 else min(self.up_s / self.observed_s, 1.0)

    def document(self) -> dict[str, float | str | None]:
        return {
            "window": self.window,
            "up_s": round(self.up_s, 1),
            "observed_s": round(self.observed_s, 1),
            "ratio": None if self.ratio is None else round(self.ratio, 6),
        }


def uptime(hours: Mapping[int, int], first_seen_ms: int | None, now_ms: int, window: str) -> Uptime:
    """Uptime over ``window`` (a WINDOWS_S name) before ``now_ms``, from registered milliseconds per hour.

    The hour that straddles the window's start counts in proportion to the part inside it.
    """
    start = now_ms - WINDOWS_S[window] * 1000
    up_ms = 0.0
    for hour, ms in hours.items():
        inside = min(hour + HOUR_MS, now_ms) - max(hour, start)
        if inside > 0:
            up_ms += ms if hour >= start else ms * inside / HOUR_MS
    if first_seen_ms is None:  # not kept: from the oldest hour credited, or nothing observed at all
        first_seen_ms = min(hours, default=now_ms)
    begin = max(start, first_seen_ms)
    observed_s = max(now_ms - begin, 0) / 1000
    return Uptime(window, min(up_ms / 1000, observed_s), observed_s)


def uptimes(hours: Mapping[int, int], first_seen_ms: int | None, now_ms: int) -> list[Uptime]:
    return [uptime(hours, first_seen_ms, now_ms, name) for name in WINDOWS_S]
