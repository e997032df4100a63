"""The bridge in-process (with timings a test can shrink) and the stack of real parts around it."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import threading
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import redis
from faultproxy import Proxy

from hypernode_host.backend.harness import BackendThread
from hypernode_host.bridge.client import Bridge, Tuning, build_bridge
from hypernode_host.node.redis_server import RedisProcess
from hypernode_host.settings import Settings
from hypernode_host.state import keys
from support import wait_for

MODES = ("reference", "upstream")  # the reference backend as is, and as upstream's published one

# Small enough that a dead connection is noticed within a second or two.
FAST = Tuning(open_timeout_s=3, ping_interval_s=0.5, ping_timeout_s=0.5, close_timeout_s=0.5, register_timeout_s=5)
# For a test that sends the bridge a flood or a huge frame: reading it takes seconds, and websockets reads no
# pong meanwhile (it stops reading the socket while its queue of unread frames is full, and a pong sent after
# a 50 MB frame arrives after it), so FAST's half-second ping timeout would take that for a dead peer.
PATIENT = dataclasses.replace(FAST, ping_interval_s=20, ping_timeout_s=60)


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

    def call_soon(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the bridge's loop (as a signal handler would)."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(callback)

    def wait_done(self, timeout: float = 30) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the bridge is still running"


def backend_for(mode: str, token: str, **options: Any) -> BackendThread:
    """A reference backend in ``mode``; upstream's demo jobs only where a test asks for them."""
    if mode == "upstream":
        options.setdefault("demo_job_after_s", None)
        return BackendThread("127.0.0.1", 0, [token], upstream=True, **options)
    return BackendThread("127.0.0.1", 0, [token], **options)


class Stack:
    """Redis, a backend behind a proxy, and the environment of a node that talks to the proxy.

    The node reads its token from a file (HN_NODE_TOKEN_FILE), so that a test can give it a new one
    as an operator would, after upstream's backend refused the spent one.
    """

    def __init__(
        self,
        redis_server: RedisProcess,
        backend: BackendThread,
        proxy: Proxy,
        env: dict[str, str],
        mode: str = "reference",
        token_file: Path | None = None,
    ) -> None:
        self.redis_server = redis_server
        self.backend = backend
        self.proxy = proxy
        self.mode = mode
        self.redis = redis.Redis.from_url(redis_server.url, decode_responses=True)
        self.env = dict(env)
        if token_file is not None:
            self.token_file = token_file
            self.write_token(self.env.pop("HN_NODE_TOKEN"))
            self.env["HN_NODE_TOKEN_FILE"] = str(token_file)

    @property
    def upstream(self) -> bool:
        return self.mode == "upstream"

    @property
    def token(self) -> str:
        return self.token_file.read_text().strip() if "HN_NODE_TOKEN_FILE" in self.env else self.env["HN_NODE_TOKEN"]

    def write_token(self, token: str) -> None:
        """Replace the token file at once, as an operator's `mv` would: never half-written."""
        spare = self.token_file.with_suffix(".new")
        spare.write_text(token + "\n")
        os.replace(spare, self.token_file)

    def give_token(self) -> str:
        """A new token: issued by the backend, then written to the node's token file."""
        token = f"tok-{secrets.token_hex(8)}"
        self.backend.add_token(token)
        self.write_token(token)
        return token

    def refusal(self) -> str | None:
        """The backend's text while it refuses the node's token (what `check` shows)."""
        return self.redis.hget(keys.NODE, "refused")

    def wait_refused(self, timeout: float = 30) -> str:
        return str(wait_for(self.refusal, timeout=timeout))

    def after_cut(self) -> None:
        """Upstream's backend refuses the spent token on the next register: give the node a new one."""
        if self.upstream:
            assert self.wait_refused() == "Token already used"
            self.give_token()

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
