"""The bridge in-process (with timings a test can shrink) and the stack of real parts around it."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Mapping
from typing import Any

import redis
from faultproxy import Proxy

from hypernode_host.backend.harness import BackendThread
from hypernode_host.bridge.client import Bridge, Tuning, build_bridge
from hypernode_host.node.redis_server import RedisProcess
from hypernode_host.settings import Settings
from hypernode_host.state import keys

# Small enough that a dead connection is noticed within a second or two.
FAST = Tuning(open_timeout_s=3, ping_interval_s=0.5, ping_timeout_s=0.5, close_timeout_s=0.5, register_timeout_s=5)


class BridgeThread:
    """``Bridge.run()`` on its own event loop in a thread; ``error`` holds what ``run`` raised, if anything."""

    def __init__(self, env: Mapping[str, str], tuning: Tuning = FAST) -> None:
        self.settings = Settings.from_env(env)
        self.bridge: Bridge = build_bridge(self.settings, tuning)
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), name="test-bridge", daemon=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._started.set()
        try:
            await self.bridge.run()
        except BaseException as exc:  # handed to the test
            self.error = exc

    def __enter__(self) -> BridgeThread:
        self._thread.start()
        self._started.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, timeout: float = 30) -> None:
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self.bridge.stop.set)
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the bridge did not stop"
        self.bridge.close()

    def wait_done(self, timeout: float = 30) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the bridge is still running"


class Stack:
    """Redis, a backend behind a proxy, and the environment of a node that talks to the proxy."""

    def __init__(self, redis_server: RedisProcess, backend: BackendThread, proxy: Proxy, env: dict[str, str]) -> None:
        self.redis_server = redis_server
        self.backend = backend
        self.proxy = proxy
        self.env = env
        self.redis = redis.Redis.from_url(redis_server.url, decode_responses=True)

    @property
    def token(self) -> str:
        return self.env["HN_NODE_TOKEN"]

    def job(self, **fields: Any) -> dict[str, Any]:
        """A job with small limits that fit the test machine; ``id`` fresh unless given."""
        return {"id": f"b-{uuid.uuid4().hex[:12]}", "memoryLimit": "128m", "cpuLimit": 0.5, **fields}

    def record(self, job_id: str) -> dict[str, str]:
        return self.redis.hgetall(keys.JOB.format(job_id=job_id))

    def outbox_ids(self) -> list[str]:
        return [fields["job_id"] for _, fields in self.redis.xrange(keys.REPLY_STREAM)]

    def node_counter(self, name: str) -> int:
        return int(self.redis.hget(keys.NODE, name) or 0)

    def wait_registered(self, timeout: float = 30) -> str:
        return self.backend.wait_for_node(timeout)
