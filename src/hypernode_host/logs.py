"""Logging for the CLI (libraries only log): timestamps, levels, job and slot context, text or JSON.

Libraries add context without touching handlers: a worker process calls
``bind_process(slot=...)`` once, and code handling one job wraps it in
``with job_context(job_id):``; every record logged inside (from any module, on that
thread) carries ``job_id`` and ``slot``. Secrets never reach the output: the formatter
redacts the whole rendered line, exception tracebacks included. No value can forge a line or act on
the terminal that shows it: the message is escaped (escapes.py: newline, ESC and every other control
character), and a traceback keeps its line breaks but nothing else.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from hypernode_host.escapes import shown, shown_text

_TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s%(context)s: %(message)s"
MASK = "***"

# Values that are secrets wherever they appear, whatever the secret is: token and password fields
# (JSON, Python reprs, key=value), Authorization headers with or without a scheme, ?token= in URLs,
# and the password of a URL such as redis://:password@host.
_SECRET_PATTERNS = (
    re.compile(
        r"""(?P<keep>["']?(?:[a-z_]*token|authorization|password|secret)["']?\s*[:=]\s*)"""
        r"""(?P<q>["'])(?P<value>.*?)(?P=q)""",
        re.IGNORECASE,
    ),
    re.compile(
        r"(?P<keep>\bauthorization\b\s*[:=]\s*(?:(?:bearer|basic|token)\s+)?)(?P<value>[^\s,;'\"}]+)",
        re.IGNORECASE,
    ),
    re.compile(r"(?P<keep>\b[a-z_]*token\s*[:=]\s*)(?P<value>[^\s&'\",;}]+)", re.IGNORECASE),
    re.compile(r"(?P<keep>[?&](?:token|access_token|auth)=)(?P<value>[^&\s'\"]+)", re.IGNORECASE),
    re.compile(r"(?P<keep>\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<value>[^@\s/]+)(?=@)", re.IGNORECASE),
)


# Secrets a process learns after logging is configured (a token read from HN_NODE_TOKEN_FILE): every
# formatter masks them too. A library adds to it (mask) without touching handlers.
_learned: set[str] = set()
MIN_LEARNED_CHARS = 8  # a shorter one would mask ordinary words everywhere; the patterns still catch fields


def mask(secret: str) -> None:
    """From now on ``secret`` is masked in every line this process logs."""
    if len(secret) >= MIN_LEARNED_CHARS:
        _learned.add(secret)


def redact(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """``text`` with every known secret and every secret-looking field value masked."""
    for secret in sorted({*secrets, *_learned}, key=len, reverse=True):  # longest first: none is left half-masked
        if secret:
            text = text.replace(secret, MASK)
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(_mask, text)
    return text


def _mask(match: re.Match[str]) -> str:
    quote = match.groupdict().get("q") or ""
    return f"{match.group('keep')}{quote}{MASK}{quote}"


# Context ------------------------------------------------------------------------------------

_job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("hn_job_id", default=None)
_slot: contextvars.ContextVar[int | None] = contextvars.ContextVar("hn_slot", default=None)
_process: dict[str, Any] = {}  # context of the whole process (a worker's slot), for every thread


def bind_process(*, slot: int | None = None) -> None:
    """Context for every record of this process, on every thread (a worker's slot)."""
    _process["slot"] = slot


@contextmanager
def job_context(job_id: str, slot: int | None = None) -> Iterator[None]:
    """Records logged inside, on this thread, name the job (and the slot, when given)."""
    job_token = _job_id.set(job_id)
    slot_token = _slot.set(slot) if slot is not None else None
    try:
        yield
    finally:
        _job_id.reset(job_token)
        if slot_token is not None:
            _slot.reset(slot_token)


class ContextFilter(logging.Filter):
    """Puts ``job_id`` and ``slot`` on each record (an ``extra=`` given by the caller wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        job_id = getattr(record, "job_id", None) or _job_id.get()
        slot = getattr(record, "slot", None)
        if slot is None:
            slot = _slot.get()
        if slot is None:
            slot = _process.get("slot")
        parts = ([f"job={shown(job_id, 80)}"] if job_id else []) + ([f"slot={slot}"] if slot is not None else [])
        record.__dict__.update(job_id=job_id, slot=slot, context=f" [{' '.join(parts)}]" if parts else "")
        return True


# Formatters ---------------------------------------------------------------------------------


class RedactingFormatter(logging.Formatter):
    """Text lines: ``time level logger [job=… slot=…]: message``, secrets masked after rendering."""

    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"

    def __init__(self, secrets: list[str]) -> None:
        super().__init__(_TEXT_FORMAT)
        self.converter = time.gmtime  # UTC, like the JSON lines and every timestamp on the wire
        self.secrets = [s for s in secrets if s]

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), self.secrets)

    def formatMessage(self, record: logging.LogRecord) -> str:
        # A job's or a peer's value in the message cannot start a line of its own nor paint the terminal.
        record.message = shown(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        return shown_text(super().formatException(ei))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ISO 8601), level, logger, message, job_id, slot, exc."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(shown_text(record.getMessage()), self.secrets),
        }
        for name in ("job_id", "slot"):
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exc"] = redact(shown_text(self.formatException(record.exc_info)), self.secrets)
        return json.dumps(entry, ensure_ascii=False)


class RedactFilter(logging.Filter):
    """Masks secrets in a record's message itself, for handlers whose formatter we do not control."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message, self.secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class RecoveredFaultFilter(logging.Filter):
    """An expected fault that recovers by itself is a WARNING, whatever level the library gave it.

    Dramatiq's consumer threads log a lost broker connection (every Redis restart, one line per
    queue) as CRITICAL, then reconnect by themselves a second later.
    """

    _DRAMATIQ_RECONNECTS = "Consumer encountered a connection error"

    def filter(self, record: logging.LogRecord) -> bool:
        if (
            record.levelno > logging.WARNING
            and record.name.startswith("dramatiq.")
            and str(record.msg).startswith(self._DRAMATIQ_RECONNECTS)
        ):
            record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        return True


class NoFrameLogs(logging.LoggerAdapter[logging.Logger]):
    """The logger websockets gets, on either end of our connections: its DEBUG lines are never produced.

    websockets logs every frame at DEBUG (``> TEXT '{"type":"register","token":"tok-9e56...'``), cut to
    a length that can leave part of the node token in the line, where no redaction pattern matches it.
    Its INFO and higher lines (connection open, closed, failed) pass as usual.
    """

    def isEnabledFor(self, level: int) -> bool:
        return level > logging.DEBUG and self.logger.isEnabledFor(level)


def wire_logger(name: str) -> NoFrameLogs:
    """A websockets logger under ``name`` ("websockets.client", "websockets.server") without frame lines."""
    return NoFrameLogs(logging.getLogger(name))


def configure(level: str = "INFO", secrets: list[str] | None = None, fmt: str = "text") -> None:
    """Root handler on stderr: text or JSON lines, with context and redaction.

    websockets never below INFO (its DEBUG logs whole frames, job payloads included).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(secrets or []) if fmt == "json" else RedactingFormatter(secrets or []))
    handler.addFilter(RecoveredFaultFilter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("websockets").setLevel(max(logging.INFO, logging.getLevelName(level)))
    logging.getLogger("dramatiq").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    logging.getLogger("docker").setLevel(logging.WARNING)
