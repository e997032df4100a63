"""Progress a job reports on stdout: a line ``HN-PROGRESS <percent> [message]``.

Pure: ``ProgressScanner`` reads the job's output as it streams (bytes, in any chunks) and keeps the
latest marker. Bounded: a line longer than MAX_LINE_BYTES is not a marker and is skipped to its end;
the message is cut to MAX_MESSAGE_CHARS. Whatever the job writes, the scanner never raises.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

MARKER = b"HN-PROGRESS"
MAX_LINE_BYTES = 512
MAX_MESSAGE_CHARS = 200
_LINE = re.compile(r"^HN-PROGRESS[ \t]+([0-9]+(?:\.[0-9]+)?)%?(?:[ \t]+(.*))?$")


@dataclass(frozen=True)
class Progress:
    percent: float  # 0 to 100
    message: str

    def to_json(self) -> dict[str, object]:
        return {"percent": self.percent, "message": self.message}


def parse_line(line: str) -> Progress | None:
    """The progress a line reports, or None when it is no marker (a percent above 100 is not one)."""
    match = _LINE.match(line.rstrip("\r"))
    if match is None:
        return None
    percent = float(match.group(1))
    if not math.isfinite(percent) or percent > 100:
        return None
    return Progress(percent, (match.group(2) or "").strip()[:MAX_MESSAGE_CHARS])


class ProgressScanner:
    def __init__(self) -> None:
        self.latest: Progress | None = None
        self._line = bytearray()
        self._skipping = False  # inside a line too long to be a marker

    def feed(self, chunk: bytes) -> None:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            if not self._skipping:
                self._line += piece
                if len(self._line) > MAX_LINE_BYTES:
                    self._line.clear()
                    self._skipping = True
            if end < 0:
                return
            if not self._skipping and self._line.startswith(MARKER):
                found = parse_line(self._line.decode("utf-8", errors="replace"))
                if found is not None:
                    self.latest = found
            self._line.clear()
            self._skipping = False
            start = end + 1
