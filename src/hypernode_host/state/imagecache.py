"""What the image cache remembers (keys.IMAGE_USE, VOLUME_USE, PULL): when each pulled image and each
requirements volume was last used, per host (each host has its own Docker engine), and the image pull
each job is in, with its bytes, so that `jobs`, `job` and `top` show the pull as a phase.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import redis

from hypernode_host.state import keys
from hypernode_host.state.connect import unless_refused

PULL_TTL_S = 3600  # a pull phase left by a worker that died mid-pull disappears by itself


@dataclass(frozen=True)
class PullPhase:
    image: str
    done_bytes: int
    total_bytes: int
    attempt: int

    @property
    def percent(self) -> int | None:
        return min(100, self.done_bytes * 100 // self.total_bytes) if self.total_bytes else None

    def describe(self) -> str:
        """``pulling python:3.12 (attempt 2): 40% (120 of 300 MiB)``."""
        again = f" (attempt {self.attempt})" if self.attempt > 1 else ""
        size = f"{self.done_bytes >> 20} of {self.total_bytes >> 20} MiB" if self.total_bytes else "starting"
        share = f"{self.percent}% ({size})" if self.percent is not None else size
        return f"pulling {self.image}{again}: {share}"


class ImageUse:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def touch_image(self, host: str, image: str, at_ms: int) -> None:
        with unless_refused():  # an image whose use is not recorded only looks older to the collector
            self._client.zadd(keys.IMAGE_USE.format(host=host), {image: at_ms})

    def touch_volume(self, host: str, volume: str, at_ms: int) -> None:
        with unless_refused():
            self._client.zadd(keys.VOLUME_USE.format(host=host), {volume: at_ms})

    def images(self, host: str) -> list[tuple[str, int]]:
        """(image, last use ms) of the images jobs used on ``host``, least recently used first."""
        found = cast(
            list[tuple[str, float]], self._client.zrange(keys.IMAGE_USE.format(host=host), 0, -1, withscores=True)
        )
        return [(name, int(at)) for name, at in found]

    def volumes(self, host: str) -> list[tuple[str, int]]:
        """(volume, last use ms) of the requirements volumes used on ``host``, least recently used first."""
        found = cast(
            list[tuple[str, float]], self._client.zrange(keys.VOLUME_USE.format(host=host), 0, -1, withscores=True)
        )
        return [(name, int(at)) for name, at in found]

    def forget_image(self, host: str, image: str) -> None:
        self._client.zrem(keys.IMAGE_USE.format(host=host), image)

    def forget_volume(self, host: str, volume: str) -> None:
        self._client.zrem(keys.VOLUME_USE.format(host=host), volume)

    def set_pull(self, job_id: str, phase: PullPhase) -> None:
        key = keys.PULL.format(job_id=job_id)
        fields: dict[Any, Any] = {
            "image": phase.image,
            "done": phase.done_bytes,
            "total": phase.total_bytes,
            "attempt": phase.attempt,
        }
        pipe = self._client.pipeline()
        pipe.hset(key, mapping=fields)
        pipe.expire(key, PULL_TTL_S)
        with unless_refused():  # the pull goes on unseen
            pipe.execute()

    def pull(self, job_id: str) -> PullPhase | None:
        fields = cast(dict[str, str], self._client.hgetall(keys.PULL.format(job_id=job_id)))
        if not fields.get("image"):
            return None
        try:
            return PullPhase(fields["image"], int(fields["done"]), int(fields["total"]), int(fields["attempt"]))
        except (KeyError, ValueError):
            return None

    def end_pull(self, job_id: str) -> None:
        with unless_refused():
            self._client.delete(keys.PULL.format(job_id=job_id))
