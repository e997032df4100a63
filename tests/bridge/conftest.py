"""Bridge test fixtures: a stack of real parts (Redis, the reference backend behind a fault proxy) for
the bridge that each test runs in-process or as a process. test_faults.py adds a worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from bridgekit import MODES, Stack, backend_for
from faultproxy import Proxy

from hypernode_host.node.redis_server import RedisProcess
from support import node_env


@pytest.fixture(params=MODES)
def backend_mode(request: pytest.FixtureRequest) -> str:
    """Each bridge test runs against the reference backend and against it behaving as upstream's;
    a test about one of them only says so with ``@pytest.mark.parametrize("backend_mode", [...])``."""
    return str(request.param)


@pytest.fixture
def stack(redis_server: RedisProcess, token: str, tmp_path: Path, backend_mode: str) -> Iterator[Stack]:
    with backend_for(backend_mode, token) as backend, Proxy(backend.port) as proxy:
        env = node_env(
            redis_server.url,
            proxy.url,
            token,
            tmp_path,
            HN_RECONNECT_DELAY="0.1",
            HN_RECONNECT_MAX_DELAY="0.5",
            HN_MAX_LOG_SIZE="20000",
        )
        s = Stack(redis_server, backend, proxy, env, backend_mode, tmp_path / "node.token")
        yield s
        s.redis.close()
