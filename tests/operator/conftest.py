"""A real node for the operator's commands: private Redis, the reference backend, `hypernode-host up`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from operator_support import Node

from hypernode_host.tasks.containers import DockerRuntime
from support import job_containers, node_stack


@pytest.fixture(scope="module")
def node(docker_runtime: DockerRuntime) -> Iterator[Node]:
    """`hypernode-host up` with one CPU slot, shared by a module's tests (each waits for its own jobs)."""
    with node_stack(HN_CPU_SLOTS="1", HN_JOB_TIMEOUT="60") as (redis_server, backend, env):
        harness = Node(backend, env, redis_server)
        up = harness.start("up")
        try:
            harness.wait_ready(slots=1)
            yield harness
            assert up.stop() == 0, harness.output()[-3000:]
            assert job_containers(env["HN_NODE_NAME"]) == []
        finally:
            harness.close()
