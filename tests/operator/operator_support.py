"""Helpers for the operator tests: the CLI as an operator runs it, and a node under test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import redis

from hypernode_host.backend.harness import BackendThread
from hypernode_host.node.redis_server import RedisProcess
from hypernode_host.state import Store, keys
from hypernode_host.state.records import Registration
from support import TEST_IMAGE, NodeProcess, wait_for

ROOT = Path(__file__).resolve().parents[2]
IMAGE_TAG = "hypernode/host:test"
BUILD_TIMEOUT_S = 900  # a cold build downloads every wheel and Debian package
EXTRA_CA_DIR = Path("/usr/local/share/ca-certificates")  # Debian's place for locally added CAs
DOCKER_SOCKET = Path("/var/run/docker.sock")
NO_COMPOSE = (
    "no docker compose here: install Debian's `docker-compose` (apt-get install docker-compose) "
    "or the compose plugin; scripts/services.sh installs it"
)


def docker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)


def socket_gid() -> str:
    return str(DOCKER_SOCKET.stat().st_gid)


def extra_ca_certs() -> str:
    """This machine's own CAs (a TLS-intercepting proxy's, say), so pip in the build trusts what pip here trusts."""
    return "".join(p.read_text() for p in sorted(EXTRA_CA_DIR.glob("*.crt")))


def build_agent_image() -> str:
    """``docker build -t ... .`` as the README says, with what these machines need (the host's network, the
    local base image, this machine's CAs); the ID of exactly the image built. The socket's group is left at
    the image's default, so that the tests prove ``--group-add`` / ``group_add`` give the right one."""
    with tempfile.TemporaryDirectory() as tmp:
        iidfile = Path(tmp) / "iid"
        build = subprocess.run(
            [
                "docker",
                "build",
                "--network",
                "host",
                "--build-arg",
                f"BASE_IMAGE={TEST_IMAGE}",
                "--build-arg",
                f"EXTRA_CA_CERTS={extra_ca_certs()}",
                "--iidfile",
                str(iidfile),
                "-t",
                IMAGE_TAG,
                str(ROOT),
            ],
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
            env={**os.environ, "DOCKER_BUILDKIT": "0"},
        )
        assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
        return iidfile.read_text().strip()


def compose_command() -> list[str]:
    """The compose this machine has (the plugin, else Debian's docker-compose v1); skipped where there is
    none, except in CI (CI=true), where a missing compose fails."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode == 0:
        return ["docker", "compose"]
    binary = shutil.which("docker-compose")
    if binary is not None:
        return [binary]
    if os.environ.get("CI") == "true":
        pytest.fail(NO_COMPOSE)
    pytest.skip(NO_COMPOSE)


def run_cli(*args: str, env: Mapping[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``hypernode-host ARGS`` as an operator runs it, with ``env`` as its whole environment.

    Tables are as wide as a big terminal, so that ids are never wrapped in the output.
    """
    return subprocess.run(
        [sys.executable, "-m", "hypernode_host", *args],
        capture_output=True,
        text=True,
        env={"COLUMNS": "240", **env},
        timeout=timeout,
        check=False,
    )


class Node:
    """One node under test: its environment, processes, Redis and the backend that feeds it."""

    def __init__(self, backend: BackendThread, env: dict[str, str], redis_server: RedisProcess) -> None:
        self.backend = backend
        self.env = env
        self.redis_server = redis_server
        self.redis = redis.Redis.from_url(redis_server.url, decode_responses=True)
        self.store = Store.from_url(redis_server.url)
        self.parts: list[NodeProcess] = []

    def start(self, *args: str) -> NodeProcess:
        part = NodeProcess(self.env, args).start()
        self.parts.append(part)
        return part

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, env=self.env, timeout=timeout)

    def cli_json(self, *args: str) -> Any:
        done = self.cli(*args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def send(self, **job: Any) -> str:
        job.setdefault("id", f"op-{uuid.uuid4().hex[:12]}")
        job.setdefault("memoryLimit", "256m")
        job.setdefault("cpuLimit", 1.0)
        return self.backend.send_job(job) or job["id"]

    def result(self, job_id: str, timeout: float = 60) -> dict[str, Any]:
        try:
            return self.backend.wait_for_result(job_id, timeout)
        except TimeoutError:
            raise AssertionError(f"no result for {job_id}; node output:\n{self.output()[-4000:]}") from None

    def run(self, **job: Any) -> dict[str, Any]:
        return self.result(self.send(**job))

    def record(self, job_id: str) -> dict[str, str]:
        return self.redis.hgetall(keys.JOB.format(job_id=job_id))

    def redis_workers(self) -> list[Registration]:
        """This node's live worker registrations, as stored."""
        return [w for w in self.store.registry.all() if w.host == self.env["HN_NODE_NAME"]]

    def output(self) -> str:
        return "\n".join(part.output() for part in self.parts)

    def wait_ready(self, slots: int) -> None:
        """The bridge registered and heartbeating, and ``slots`` workers registered."""
        self.backend.wait_for_node(timeout=30)
        wait_for(lambda: self.redis.hget(keys.NODE, "heartbeat_at"), timeout=30)
        wait_for(lambda: len(self.cli_json("workers")["workers"]) >= slots and self._alive() == slots, timeout=30)

    def _alive(self) -> int:
        return sum(1 for w in self.cli_json("workers")["workers"] if w["alive"])

    def close(self) -> None:
        for part in self.parts:
            part.stop()
            part.log_path.unlink(missing_ok=True)
        self.redis.close()
        self.store.close()
