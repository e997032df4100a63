"""A real node for the operator's commands: private Redis, the reference backend, `hypernode-host up`."""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from operator_support import Node, node_environment

from hypernode_host.backend.server import BackendThread
from hypernode_host.redisproc import RedisProcess
from hypernode_host.tasks.containers import DockerRuntime
from support import job_containers


@pytest.fixture(scope="module")
def node(docker_runtime: DockerRuntime) -> Iterator[Node]:
    """`hypernode-host up` with one CPU slot, shared by a module's tests (each waits for its own jobs)."""
    token = f"tok-{secrets.token_hex(8)}"
    with (
        RedisProcess() as redis_server,
        BackendThread("127.0.0.1", 0, [token]) as backend,
        tempfile.TemporaryDirectory() as workdir,
    ):
        env = node_environment(redis_server.url, backend, token, Path(workdir))
        harness = Node(backend, env, redis_server)
        up = harness.start("up")
        try:
            harness.wait_ready(slots=1)
            yield harness
            assert up.stop() == 0, harness.output()[-3000:]
            assert job_containers(env["HN_NODE_NAME"]) == []
        finally:
            harness.close()
