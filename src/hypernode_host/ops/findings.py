"""What ``check`` and ``doctor`` report: one finding per part, its level, and the fix when it is wrong."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from hypernode_host.escapes import shown


class Level(enum.StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Finding:
    part: str
    level: Level
    detail: str
    fix: str = ""

    def line(self) -> str:
        """One line for a terminal: a detail may quote a peer's value (a node id), shown escaped."""
        text = shown(f"{self.part}: {self.detail}")
        return f"{text} (fix: {shown(self.fix)})" if self.fix and self.level is not Level.OK else text


def healthy(findings: Sequence[Finding]) -> bool:
    return all(f.level is not Level.FAIL for f in findings)
