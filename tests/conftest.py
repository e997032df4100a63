"""Fixtures for real parts (Docker engine, private Redis instances, the reference backend), and the tiers.

The real parts are required, never skipped: `make test` starts the engine and builds the job
image first, and a test that cannot reach them fails with the reason.

Tiers, by path: tests/unit/ is ``unit`` (pure: no Docker, no Redis, no peer; `make test-unit` runs it
with neither reachable), everything else ``integration``, and tests/gpu/test_nvml_real.py also ``nvml``
(the real driver: `make gpu-check`).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from hypernode_host.backend.harness import BackendThread
from hypernode_host.errors import ContainerError
from hypernode_host.node.redis_server import RedisProcess
from hypernode_host.state import Store
from hypernode_host.tasks.containers import DockerRuntime
from support import TEST_IMAGE

TESTS = Path(__file__).parent
UNIT = TESTS / "unit"
NVML = TESTS / "gpu" / "test_nvml_real.py"
REAL_PARTS = frozenset({"docker_runtime", "redis_server", "redis_client", "store", "backend"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(item.path)
        if UNIT not in path.parents:
            item.add_marker(pytest.mark.integration)
            if path == NVML:
                item.add_marker(pytest.mark.nvml)
            continue
        item.add_marker(pytest.mark.unit)
        if parts := REAL_PARTS.intersection(getattr(item, "fixturenames", ())):
            raise pytest.UsageError(f"{item.nodeid} is a unit test but uses real parts: {', '.join(sorted(parts))}")


@pytest.fixture(scope="session")
def docker_runtime() -> DockerRuntime:
    runtime = DockerRuntime()
    try:
        if not runtime.has_image(TEST_IMAGE):
            pytest.fail(f"job image {TEST_IMAGE} is missing: run `make services`")
    except ContainerError as exc:
        pytest.fail(f"Docker engine unreachable ({exc}): run `make services`")
    return runtime


@pytest.fixture
def redis_server() -> Iterator[RedisProcess]:
    with RedisProcess() as server:
        yield server


@pytest.fixture
def redis_client(redis_server: RedisProcess) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def store(redis_server: RedisProcess) -> Iterator[Store]:
    with Store.from_url(redis_server.url) as store:
        yield store


@pytest.fixture
def token() -> str:
    return f"tok-{secrets.token_hex(8)}"


@pytest.fixture
def backend(token: str) -> Iterator[BackendThread]:
    with BackendThread("127.0.0.1", 0, [token]) as thread:
        yield thread


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
