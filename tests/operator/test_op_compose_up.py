"""The compose stack end to end, as the README runs it: build, doctor, up, jobs, check from the cli service,
a worker and Redis restarted, down. Test-only: the shipped host-network override (no bridge networks
here), free ports, the backend on the host, and local images only (the agent image is also the Redis)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from operator_support import ROOT, compose_command, docker, extra_ca_certs, socket_gid

from hypernode_host.backend.harness import BackendThread
from hypernode_host.node.redis_server import free_port
from support import TEST_IMAGE, job_containers, wait_for

pytestmark = pytest.mark.timeout(900)  # the first test here may build the image (agent_image)

NVIDIA_CONFIG = Path("/etc/nvidia-container-runtime")
# What a checkout holds that the stack needs: the compose files, and the build context.
PROJECT_FILES = ["Dockerfile", ".dockerignore", "pyproject.toml", "README.md", ".env.example"]


class Stack:
    """A copy of the project with an operator's .env, and compose run in it under a project name of its own."""

    def __init__(self, directory: Path, backend: BackendThread, token: str) -> None:
        self.dir = directory
        self.backend = backend
        suffix = secrets.token_hex(4)
        self.project = f"hn-test-{suffix}"
        self.image = f"hypernode/host:compose-{suffix}"
        self.node_name = f"test-{suffix}"
        self.password = secrets.token_hex(32)
        self.token = token
        self.compose = compose_command()

    def configure(self) -> None:
        """`cp .env.example .env` and the operator's values; then the test-only ones."""
        for name in PROJECT_FILES:
            shutil.copy(ROOT / name, self.dir / name)
        for path in ROOT.glob("docker-compose*.yml"):
            shutil.copy(path, self.dir / path.name)
        shutil.copytree(ROOT / "src", self.dir / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        values = {
            "HN_NODE_TOKEN": self.token,
            "HN_NODE_NAME": self.node_name,
            "DOCKER_GID": socket_gid(),
            "REDIS_PASSWORD": self.password,
            "COMPOSE_PROFILES": "cpu",
            # test-only: the host's network, local images, free ports, the backend and job image here
            "COMPOSE_FILE": "docker-compose.yml:docker-compose.host.yml",
            "COMPOSE_PROJECT_NAME": self.project,
            "HN_IMAGE": self.image,
            "REDIS_IMAGE": self.image,
            "BASE_IMAGE": TEST_IMAGE,
            "REDIS_PORT": str(free_port()),
            "HN_METRICS_PUBLISH_PORT": str(free_port()),
            "HN_ENDPOINT": self.backend.url,
            "HN_JOB_IMAGE": TEST_IMAGE,
            "HN_HEARTBEAT_INTERVAL": "1",
            "HN_RECONNECT_DELAY": "0.2",
            "HN_RECONNECT_MAX_DELAY": "1",
        }
        lines = []
        for line in (ROOT / ".env.example").read_text().splitlines():
            name = line.partition("=")[0]
            lines.append(f"{name}={values.pop(name)}" if name in values and "=" in line else line)
        lines += [f"{name}={value}" for name, value in values.items()]
        (self.dir / ".env").write_text("\n".join(lines) + "\n")

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """``docker compose ARGS`` in the project directory."""
        return subprocess.run(
            [*self.compose, *args],
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, "EXTRA_CA_CERTS": extra_ca_certs()},  # as the README says, behind a proxy
        )

    def ok(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        done = self.run(*args, timeout=timeout)
        assert done.returncode == 0, f"compose {' '.join(args)}: {done.stdout[-2000:]}{done.stderr[-3000:]}"
        return done

    def job(self, command: str) -> dict[str, Any]:
        job_id = self.backend.send_job({"id": f"s-{uuid.uuid4().hex[:10]}", "command": command, "memoryLimit": "256m"})
        try:
            return self.backend.wait_for_result(job_id, 90)
        except TimeoutError:
            raise AssertionError(f"no result for {job_id}:\n{self.logs()[-5000:]}") from None

    def wait_healthy(self) -> None:
        def healthy() -> bool:
            return self.run("run", "--rm", "cli", "check", timeout=120).returncode == 0

        try:
            wait_for(healthy, timeout=120, interval=1)
        except AssertionError:
            failed = self.run("run", "--rm", "cli", "check", timeout=120)
            raise AssertionError(f"never healthy: {failed.stderr}\n{self.logs()[-5000:]}") from None

    def logs(self) -> str:
        done = self.run("logs", "--no-color", timeout=120)
        return done.stdout + done.stderr

    def down(self) -> None:
        self.run("down", "--volumes", "--remove-orphans", timeout=300)
        docker("rmi", self.image)  # the image this test built (the layers it shares with others stay)


@pytest.fixture
def stack(agent_image: str, tmp_path: Path) -> Iterator[Stack]:
    """After the session's image build: compose's build of the same Dockerfile then reuses its layers."""
    token = f"tok-{secrets.token_hex(8)}"
    with BackendThread("127.0.0.1", 0, [token]) as backend:
        built = Stack(tmp_path, backend, token)
        built.configure()
        try:
            yield built
        finally:
            built.down()


def test_the_compose_stack_builds_once_runs_jobs_and_survives_restarts(stack: Stack) -> None:
    had_nvidia_config = NVIDIA_CONFIG.exists()

    built = stack.ok("build", timeout=900)
    if stack.compose[0] != "docker":  # compose v1 names each service it builds
        building = [line for line in (built.stdout + built.stderr).splitlines() if line.startswith("Building ")]
        assert building == ["Building bridge"], built.stderr[-3000:]

    doctor = stack.run("run", "--rm", "doctor", timeout=300)  # exit 0: no check fails (Docker, Redis AOF, token...)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert NVIDIA_CONFIG.exists() == had_nvidia_config  # the CPU doctor bind-mounts no missing host path

    stack.ok("up", "-d")
    stack.backend.wait_for_node(timeout=120)
    stack.wait_healthy()  # the cli service has no Docker socket: the workers say what the engine answered
    first = stack.job("echo first; echo '✅ done'")
    assert first["status"] == "completed", first["logs"]

    stack.ok("restart", "worker-cpu")
    second = stack.job("echo after the worker restart")
    assert second["status"] == "completed", second["logs"]

    stack.ok("restart", "redis")
    third = stack.job("echo after the redis restart")
    assert third["status"] == "completed", third["logs"]
    stack.wait_healthy()

    listed = json.loads(stack.ok("run", "--rm", "cli", "jobs", "--json").stdout)
    assert {j["id"] for j in listed["jobs"]} == {first["id"], second["id"], third["id"]}  # AOF: nothing lost
    logs = stack.logs()
    assert "CRITICAL" not in logs and "Traceback" not in logs
    assert stack.password not in logs and stack.token not in logs
    assert job_containers(stack.node_name) == []
