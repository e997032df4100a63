"""Logging set-up for the CLI (libraries only log). Secrets never reach a handler."""

from __future__ import annotations

import logging
import re
import sys

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_TOKEN_FIELD = re.compile(r'("token"\s*:\s*")[^"]*(")|(Authorization:\s*)\S+', re.IGNORECASE)


class RedactFilter(logging.Filter):
    """Removes the node token (and token fields, Authorization values) from every record."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = _TOKEN_FIELD.sub(lambda m: (m.group(1) or m.group(3) or "") + "***" + (m.group(2) or ""), message)
        for secret in self.secrets:
            cleaned = cleaned.replace(secret, "***")
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def configure(level: str = "INFO", secrets: list[str] | None = None) -> None:
    """Root handler on stderr with redaction; websockets never below INFO (its DEBUG logs frames)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler.addFilter(RedactFilter(secrets or []))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("websockets").setLevel(max(logging.INFO, logging.getLevelName(level)))
    logging.getLogger("dramatiq").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    logging.getLogger("docker").setLevel(logging.WARNING)
