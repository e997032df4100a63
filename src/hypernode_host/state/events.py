"""The node's events (keys.EVENTS): a capped stream that whoever sees something happen adds to, and the
notifier (ops/notify.py) reads, each receiver from its own cursor (keys.NOTIFY_CURSORS).

Emitting is a single XADD and never fails its caller: an event is worth less than the job, the
connection or the check that emitted it, so a Redis error is logged and the event dropped. The
stream keeps the newest MAX_EVENTS: a receiver that is down for long loses the oldest, never the
node its memory.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, cast

import redis

from hypernode_host.core.clock import now_ms
from hypernode_host.core.events import Event, Kind
from hypernode_host.state import keys

log = logging.getLogger(__name__)

MAX_EVENTS = 10_000
BATCH = 100


def _event(fields: Mapping[str, str]) -> Event:
    try:
        data = json.loads(fields.get("data") or "{}")
    except ValueError:
        data = {}
    try:
        at = int(fields.get("at") or 0)
    except ValueError:
        at = 0
    return Event(
        kind=fields.get("kind", ""),
        at_ms=at,
        node=fields.get("node", ""),
        node_id=fields.get("node_id") or None,
        fields=data if isinstance(data, dict) else {},
    )


class Events:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def emit(self, kind: Kind | str, fields: Mapping[str, Any], *, node: str = "", at_ms: int | None = None) -> None:
        """Queue an event; a Redis error is logged, never raised (see the module's docstring)."""
        entry = {
            "kind": str(kind),
            "at": at_ms if at_ms is not None else now_ms(),
            "node": node,
            "data": json.dumps(dict(fields), separators=(",", ":"), default=str),
        }
        try:
            pipe = self._client.pipeline()
            pipe.xadd(keys.EVENTS, cast(Any, entry), maxlen=MAX_EVENTS, approximate=True)
            pipe.hincrby(keys.EVENT_COUNTS, str(kind), 1)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("event %s not queued (Redis: %s)", kind, exc)

    def wait(self, entry_id: str, block_ms: int, count: int = BATCH) -> list[tuple[str, Event]]:
        """Block up to ``block_ms`` for events after ``entry_id``."""
        reply = cast(
            list[tuple[str, list[tuple[str, dict[str, str]]]]] | None,
            self._client.xread({keys.EVENTS: entry_id}, count=count, block=block_ms),
        )
        return [(i, _event(f)) for i, f in reply[0][1]] if reply else []

    def recent(self, count: int) -> list[tuple[str, Event]]:
        """The newest ``count`` events, oldest first."""
        rows = cast(list[tuple[str, dict[str, str]]], self._client.xrevrange(keys.EVENTS, "+", "-", count=count))
        return [(i, _event(f)) for i, f in reversed(rows)]

    def cursor(self, receiver: str) -> str | None:
        return cast(str | None, self._client.hget(keys.NOTIFY_CURSORS, receiver))

    def advance(self, receiver: str, entry_id: str, counter: str) -> None:
        """``receiver`` is done with ``entry_id`` (``counter``: delivered or dropped)."""
        pipe = self._client.pipeline()
        pipe.hset(keys.NOTIFY_CURSORS, receiver, entry_id)
        pipe.hincrby(keys.NOTIFY_COUNTS, counter, 1)
        pipe.execute()

    def count(self, counter: str, by: int = 1) -> None:
        self._client.hincrby(keys.NOTIFY_COUNTS, counter, by)

    def counts(self) -> dict[str, int]:
        found = cast(dict[str, str], self._client.hgetall(keys.NOTIFY_COUNTS))
        return {name: int(value) for name, value in found.items() if value.lstrip("-").isdigit()}

    def emitted(self) -> dict[str, int]:
        """Events emitted so far, by kind (the stream keeps only the newest)."""
        found = cast(dict[str, str], self._client.hgetall(keys.EVENT_COUNTS))
        return {kind: int(value) for kind, value in found.items() if value.isdigit()}

    def size(self) -> int:
        return int(self._client.xlen(keys.EVENTS))
