"""One container is a whole node: the README's `docker run` recipe, with the node inside, its own Redis,
job containers as siblings through the mounted socket, and the reference backend on the host."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from operator_support import DOCKER_SOCKET, docker, socket_gid

from hypernode_host import AGENT_VERSION
from hypernode_host.backend.harness import BackendThread
from support import TEST_IMAGE, job_containers, wait_for

pytestmark = pytest.mark.timeout(900)  # the first test here may build the image (agent_image)


class Container:
    """The node container, named and with a state volume of its own, both removed afterwards."""

    def __init__(self, image: str, backend: BackendThread, token: str) -> None:
        self.image = image
        self.backend = backend
        self.token = token
        suffix = secrets.token_hex(4)
        self.name = f"hn-test-node-{suffix}"
        self.volume = f"hn-test-state-{suffix}"
        self.node_name = f"test-{suffix}"

    def run(self) -> None:
        """The README's recipe; test-only: --network host (no bridge networks here), the backend, the job image."""
        started = docker(
            "run", "-d", "--name", self.name, "--restart", "unless-stopped", "--stop-timeout", "30",
            "-v", f"{DOCKER_SOCKET}:{DOCKER_SOCKET}", "--group-add", socket_gid(),
            "-v", f"{self.volume}:/var/lib/hypernode",
            "-e", f"HN_NODE_TOKEN={self.token}", "-e", f"HN_NODE_NAME={self.node_name}",
            "--network", "host", "-e", f"HN_ENDPOINT={self.backend.url}", "-e", f"HN_JOB_IMAGE={TEST_IMAGE}",
            "-e", "HN_HEARTBEAT_INTERVAL=1", "-e", "HN_RECONNECT_DELAY=0.2", "-e", "HN_RECONNECT_MAX_DELAY=1",
            self.image,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr

    def exec(self, *args: str) -> Any:
        return docker("exec", self.name, *args, timeout=60)

    def wait_healthy(self) -> None:
        def healthy() -> bool:
            return bool(self.exec("hypernode-host", "check").returncode == 0)

        try:
            wait_for(healthy, timeout=90, interval=0.5)
        except AssertionError:
            raise AssertionError(
                f"never healthy: {self.exec('hypernode-host', 'check').stderr}\n{self.logs()}"
            ) from None

    def job(self, command: str) -> dict[str, Any]:
        job_id = self.backend.send_job(
            {"id": f"c-{uuid.uuid4().hex[:10]}", "command": command, "memoryLimit": "256m", "estimatedTime": 60}
        )
        try:
            return self.backend.wait_for_result(job_id, 90)
        except TimeoutError:
            raise AssertionError(f"no result for {job_id}:\n{self.logs()}") from None

    def logs(self) -> str:
        done = docker("logs", self.name)
        return str(done.stdout + done.stderr)[-5000:]

    def remove(self) -> None:
        docker("rm", "-f", self.name)
        docker("volume", "rm", self.volume)


@pytest.fixture
def container(agent_image: str) -> Iterator[Container]:
    token = f"tok-{secrets.token_hex(8)}"
    with BackendThread("127.0.0.1", 0, [token]) as backend:
        node = Container(agent_image, backend, token)
        try:
            yield node
        finally:
            node.remove()


def test_one_container_is_a_whole_node_and_a_restart_loses_nothing(container: Container) -> None:
    container.run()
    container.backend.wait_for_node(timeout=90)
    container.wait_healthy()  # `docker exec NAME hypernode-host check` finds the node's own Redis by itself

    first = container.job("echo in a sibling container; id -u; echo '✅ done'")
    assert first["status"] == "completed", first["logs"]
    assert first["logs"].splitlines() == ["in a sibling container", "65534", "✅ done"]
    verification = container.backend.verification(first["id"])
    assert verification is not None and verification.verified, verification
    assert container.exec("hypernode-host", "--version").stdout == f"hypernode-host {AGENT_VERSION}\n"

    url_file = "/var/lib/hypernode/redis.url"
    assert container.exec("stat", "-c", "%a %U", url_file).stdout.split() == ["600", "hypernode"]
    password = container.exec("cat", url_file).stdout.strip().split("@")[0].rpartition(":")[2]
    assert len(password) == 64
    processes = docker("top", container.name, "-eo", "pid,args").stdout
    assert "redis-server" in processes and password not in processes  # never in a process's arguments
    assert password not in container.logs()

    restarted = docker("restart", container.name, timeout=120)  # what --restart and a reboot do
    assert restarted.returncode == 0, restarted.stderr
    container.wait_healthy()
    second = container.job("echo after the restart")
    assert second["status"] == "completed", second["logs"]
    assert second["nodePublicKey"] == first["nodePublicKey"]  # the node key is in the volume

    jobs = json.loads(container.exec("hypernode-host", "jobs", "--json").stdout)["jobs"]
    assert {j["id"]: j["status"] for j in jobs} == {first["id"]: "completed", second["id"]: "completed"}
    assert "CRITICAL" not in container.logs() and "Traceback" not in container.logs()
    assert job_containers(container.node_name) == []
