"""A budget for repetitive log lines, so a flood of bad frames cannot flood the logs too.

Pure: the caller passes the time in. Up to ``burst`` lines per window are logged; the rest are
only counted, and the next line that is logged says how many were left out.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Throttle:
    burst: int = 5
    window_s: float = 10.0
    _window_start: float | None = None
    _logged: int = 0
    _suppressed: int = 0

    def admit(self, now: float) -> int | None:
        """None: leave this line out. Otherwise log it, adding how many lines were left out before it."""
        if self._window_start is None or now - self._window_start >= self.window_s:
            self._window_start, self._logged = now, 0
        if self._logged >= self.burst:
            self._suppressed += 1
            return None
        self._logged += 1
        suppressed, self._suppressed = self._suppressed, 0
        return suppressed

    def pending(self) -> int:
        """Lines left out since the last one logged; reading it clears it (for a closing summary)."""
        suppressed, self._suppressed = self._suppressed, 0
        return suppressed
