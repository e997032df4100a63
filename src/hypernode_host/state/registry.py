"""Live worker registrations, one hash per host and slot (keys.WORKER), listed in keys.WORKERS.

Workers of several hosts share one Redis (a second host joins by pointing ``HN_REDIS_URL`` at
the first host's), and every host numbers its slots from 0, so a registration is keyed by host
*and* slot. Each hash lives ``ttl_s`` after its last write: a dead worker's disappears.
"""

from __future__ import annotations

from typing import Any, cast

import redis

from hypernode_host.state import keys
from hypernode_host.state.records import Registration


def _key(host: str, slot: int | str) -> str:
    return keys.WORKER.format(host=host, slot=slot)


class Registry:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def register(self, registration: Registration, ttl_s: int, seen_at_ms: int) -> None:
        """Write (or refresh) a worker's registration; it expires ``ttl_s`` after this write."""
        key = _key(registration.host, registration.slot.id)
        fields: dict[Any, Any] = {**registration.fields(), "seen_at": seen_at_ms}
        pipe = self._client.pipeline()
        pipe.hset(key, mapping=fields)
        pipe.expire(key, ttl_s)
        pipe.sadd(keys.WORKERS, f"{registration.host}:{registration.slot.id}")
        pipe.execute()

    def unregister(self, host: str, slot: int) -> None:
        pipe = self._client.pipeline()
        pipe.delete(_key(host, slot))
        pipe.srem(keys.WORKERS, f"{host}:{slot}")
        pipe.execute()

    def members(self) -> list[tuple[str, int]]:
        """(host, slot) of every worker that registered and did not unregister: a live one, or one whose
        registration expired without a clean stop (a killed worker, a lost host)."""
        found = []
        for member in cast(set[str], self._client.smembers(keys.WORKERS)):
            host, _, slot = member.rpartition(":")
            if slot.isdigit():
                found.append((host, int(slot)))
        return sorted(found)

    def all(self) -> list[Registration]:
        """Every live registration, of every host, by host and slot (expired ones are gone)."""
        members = sorted(cast(set[str], self._client.smembers(keys.WORKERS)))
        pipe = self._client.pipeline(transaction=False)  # reads: no MULTI, which Redis refuses when out of memory
        for member in members:
            host, _, slot = member.rpartition(":")
            pipe.hgetall(_key(host, slot))
        found = (Registration.parse(fields) for fields in cast(list[dict[str, str]], pipe.execute()) if fields)
        return sorted((r for r in found if r is not None), key=lambda r: (r.host, r.slot.id))
