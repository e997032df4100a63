"""The logger websockets gets, on either end of our connections.

websockets logs every frame at DEBUG (``> TEXT '{"type":"register","token":"tok-9e56...'``), cut to
a length that can leave part of the node token in the line, where no redaction pattern matches it.
Its DEBUG lines are therefore never produced, whatever level the application sets; its INFO and
higher lines (connection open, closed, failed) pass as usual.
"""

from __future__ import annotations

import logging


class NoFrameLogs(logging.LoggerAdapter[logging.Logger]):
    def isEnabledFor(self, level: int) -> bool:
        return level > logging.DEBUG and self.logger.isEnabledFor(level)


def wire_logger(name: str) -> NoFrameLogs:
    """A websockets logger under ``name`` ("websockets.client", "websockets.server") without frame lines."""
    return NoFrameLogs(logging.getLogger(name))
