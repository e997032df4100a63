"""Live worker registrations in Redis, one hash per host and slot.

Workers of several hosts share one Redis (a second host joins by pointing ``HN_REDIS_URL`` at
the first host's), and every host numbers its slots from 0, so a registration is keyed by host
*and* slot: ``hn:worker:<host>:<slot>``, listed in the set ``hn:worker-slots`` as
``<host>:<slot>``. Each hash lives ``ttl_s`` after its last write: a dead worker's disappears.

A registration says what the slot is (its GPUs, queues), whether it takes jobs (``healthy``
and the one-line ``health``) and which job it runs (``job``, ``job_gpus``), so that the
bridge's admission, heartbeat and ``check``, and the simulated GPUs' load, all read one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import redis

from hypernode_host import constants as C
from hypernode_host.gpu.models import GpuInfo, Slot

REGISTRATION_KEY = C.WORKER_KEY
REGISTRATIONS = C.WORKERS_SET


@dataclass(frozen=True)
class Registration:
    host: str
    slot: Slot
    owner: str = ""
    pid: int = 0
    pidns: str = ""  # the pid namespace ``pid`` belongs to (pidns.current())
    healthy: bool = True
    health: str = "ok"
    job: str = ""  # the job running on the slot now ("" when idle)
    job_gpus: tuple[str, ...] = ()  # the UUIDs that job was given
    job_gpu_memory_mb: int | None = None
    docker: str = ""  # the version of the Docker engine the worker reached at its last check; "": none answered

    def fields(self) -> dict[str, str | int]:
        """The hash as stored (flat strings, readable with redis-cli)."""
        gpus = self.slot.gpus
        return {
            "host": self.host,
            "slot": self.slot.id,
            "owner": self.owner,
            "pid": self.pid,
            "pidns": self.pidns,
            "queue": self.slot.queue,
            "queues": ",".join(self.slot.queues),
            "gpus": ",".join(g.uuid for g in gpus),
            "gpu_indexes": ",".join(str(g.index) for g in gpus),
            "gpu_names": ",".join(g.name for g in gpus),
            "gpu_memory_mb": ",".join(str(g.memory_total_mb) for g in gpus),
            "healthy": int(self.healthy),
            "health": self.health,
            "job": self.job,
            "job_gpus": ",".join(self.job_gpus),
            "job_gpu_memory_mb": "" if self.job_gpu_memory_mb is None else self.job_gpu_memory_mb,
            "docker": self.docker,
        }

    @classmethod
    def parse(cls, fields: Mapping[str, str]) -> Registration | None:
        """A registration read back; None for a hash that is not one (expired mid-read, foreign)."""
        try:
            uuids, names = _split(fields["gpus"]), _split(fields["gpu_names"])
            memory, indexes = _split(fields["gpu_memory_mb"]), _split(fields["gpu_indexes"])
            gpus = tuple(
                GpuInfo(index=int(i), uuid=u, name=n, memory_total_mb=int(m), memory_free_mb=int(m))
                for u, n, m, i in zip(uuids, names, memory, indexes, strict=True)
            )
            job_memory = fields.get("job_gpu_memory_mb", "")
            return cls(
                host=fields["host"],
                slot=Slot(id=int(fields["slot"]), gpus=gpus),
                owner=fields.get("owner", ""),
                pid=int(fields.get("pid") or 0),
                pidns=fields.get("pidns", ""),
                healthy=fields.get("healthy", "1") == "1",
                health=fields.get("health", "ok"),
                job=fields.get("job", ""),
                job_gpus=tuple(_split(fields.get("job_gpus", ""))),
                job_gpu_memory_mb=int(job_memory) if job_memory else None,
                docker=fields.get("docker", ""),
            )
        except (KeyError, ValueError):
            return None


def _split(value: str) -> list[str]:
    return [part for part in value.split(",") if part]


def _key(host: str, slot: int) -> str:
    return REGISTRATION_KEY.format(host=host, slot=slot)


def register(client: redis.Redis, registration: Registration, ttl_s: int, seen_at_ms: int) -> None:
    """Write (or refresh) a worker's registration; it expires ``ttl_s`` after this write."""
    key = _key(registration.host, registration.slot.id)
    fields: dict[Any, Any] = {**registration.fields(), "seen_at": seen_at_ms}
    pipe = client.pipeline()
    pipe.hset(key, mapping=fields)
    pipe.expire(key, ttl_s)
    pipe.sadd(REGISTRATIONS, f"{registration.host}:{registration.slot.id}")
    pipe.execute()


def unregister(client: redis.Redis, host: str, slot: int) -> None:
    pipe = client.pipeline()
    pipe.delete(_key(host, slot))
    pipe.srem(REGISTRATIONS, f"{host}:{slot}")
    pipe.execute()


def registrations(client: redis.Redis) -> list[dict[str, str]]:
    """Every live registration's hash, of every host (expired ones are gone)."""
    members = sorted(_text(m) for m in client.smembers(REGISTRATIONS))
    pipe = client.pipeline()
    for member in members:
        host, _, slot = member.rpartition(":")
        pipe.hgetall(REGISTRATION_KEY.format(host=host, slot=slot))
    found = cast(list[dict[str | bytes, str | bytes]], pipe.execute())
    return [{_text(k): _text(v) for k, v in fields.items()} for fields in found if fields]


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
