"""Bounded capture of a job's output: the head and the tail, a visible cut, a hash of everything.

Memory stays bounded whatever the job prints: the head is kept until it is full, the tail
is a rolling window, and the bytes in between only pass through SHA-256.
"""

from __future__ import annotations

import hashlib

from hypernode_host.core.results import CapturedLogs

CUT_MARKER = "\n[... hypernode: {cut} bytes of output cut here ...]\n"
# UTF-8 needs at most 4 bytes a character: keep enough bytes to fill the character budget.
_BYTES_PER_CHAR = 4


class LogCapture:
    """Feed raw output chunks; ``result()`` gives the head and tail within ``max_chars``."""

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        # The tail gets two thirds: completion markers and tracebacks are printed last.
        self._head_limit = (max_chars // 3) * _BYTES_PER_CHAR
        self._tail_limit = max_chars * _BYTES_PER_CHAR
        self._head = bytearray()
        self._tail = bytearray()
        self._hash = hashlib.sha256()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self.total += len(chunk)
        room = self._head_limit - len(self._head)
        if room > 0:
            self._head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self._tail += chunk
            if len(self._tail) > 2 * self._tail_limit:  # trim in batches, not on every chunk
                del self._tail[: len(self._tail) - self._tail_limit]

    def result(self) -> CapturedLogs:
        whole = (self._head + self._tail).decode("utf-8", errors="replace")
        kept = len(self._head) + len(self._tail)
        if kept == self.total and len(whole) <= self.max_chars:
            return CapturedLogs(whole, self.total, self._hash.hexdigest(), truncated=False)
        head = self._head.decode("utf-8", errors="replace")
        tail = _skip_partial_char(self._tail).decode("utf-8", errors="replace")
        marker = CUT_MARKER.format(cut=max(self.total - len(self._head) - len(self._tail), 0))
        budget = max(self.max_chars - len(marker), 0)
        head_chars = min(len(head), budget // 3)
        tail_chars = budget - head_chars
        head, tail = head[:head_chars], tail[-tail_chars:] if tail_chars else ""
        # Say exactly how many bytes are missing between the kept head and tail.
        kept_bytes = len(head.encode("utf-8", errors="replace")) + len(tail.encode("utf-8", errors="replace"))
        marker = CUT_MARKER.format(cut=max(self.total - kept_bytes, 0))
        text = (head + marker + tail)[: self.max_chars]
        return CapturedLogs(text, self.total, self._hash.hexdigest(), truncated=True)


def _skip_partial_char(data: bytearray) -> bytes:
    """The tail from its first whole character: the window rolls over byte boundaries, not characters."""
    start = 0
    while start < min(len(data), 3) and data[start] & 0xC0 == 0x80:  # UTF-8 continuation bytes
        start += 1
    return bytes(data[start:])
