"""Real parts for the operator tests: a node (private Redis, the reference backend, `hypernode-host up`) and
the agent image built from the Dockerfile."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from operator_support import Node, build_agent_image

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


@pytest.fixture(scope="session")
def agent_image(docker_runtime: DockerRuntime) -> str:
    """The agent image, built from the Dockerfile as the README builds it; its ID. Built once per session.

    The classic builder (Debian's docker.io has no BuildKit), on the local job image (no registry
    here), pip reaching PyPI over the host's network and trusting what pip here trusts. The tag
    stays afterwards: its layers are the cache that makes the next build take seconds.
    """
    return build_agent_image()
