"""`hypernode-host check` (the container HEALTHCHECK) against a real node whose parts are separate processes."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator

import pytest
from operator_support import Node, run_cli

from hypernode_host.core.slots import Slot
from hypernode_host.ops.check import check_docker
from hypernode_host.ops.findings import Level
from hypernode_host.state import keys
from hypernode_host.state.records import Registration
from hypernode_host.tasks.containers import DockerRuntime
from support import node_stack, wait_for


@pytest.fixture
def parts(docker_runtime: DockerRuntime) -> Iterator[Node]:
    """Bridge and the slot-0 worker as their own processes, so a test can kill one of them."""
    with node_stack(HN_CPU_SLOTS="1", HN_JOB_TIMEOUT="60") as (redis_server, backend, env):
        node = Node(backend, env, redis_server)
        try:
            node.start("bridge")
            node.start("worker", "--slot", "0")
            node.wait_ready(slots=1)
            yield node
        finally:
            node.close()


def test_check_passes_on_a_working_node(parts: Node) -> None:
    done = parts.cli("check")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("healthy: redis: answers at redis://:***@127.0.0.1:")  # never its password
    report = json.loads(parts.cli("check", "--json").stdout)
    assert report["healthy"] is True
    assert [c["part"] for c in report["checks"]] == ["redis", "bridge", "docker", "worker slot 0 (CPU)", "jobs"]
    assert {c["level"] for c in report["checks"]} == {"ok"}
    assert parts.cli("check", "--bridge").returncode == 0
    assert parts.cli("check", "--slot", "0").returncode == 0


def test_check_fails_when_a_worker_is_killed(parts: Node) -> None:
    worker = parts.parts[1]
    assert worker.proc is not None
    os.kill(worker.proc.pid, signal.SIGKILL)  # no chance to unregister: its registration outlives it
    worker.proc.wait()

    done = parts.cli("check")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"worker slot 0 (CPU): its process {worker.proc.pid} has exited; the registration is stale (fix: restart it)"
    ]
    assert parts.cli("check", "--bridge").returncode == 0  # the bridge's own check is unaffected
    assert parts.cli("check", "--slot", "0").returncode == 1


def test_check_without_a_way_to_docker_trusts_what_the_workers_last_saw(parts: Node) -> None:
    """compose's cli service has no Docker socket; the workers have it and say what the engine answered."""
    no_socket = {**parts.env, "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    wait_for(lambda: all(w.docker for w in parts.redis_workers()), timeout=20)

    done = run_cli("check", "--json", env=no_socket)

    assert done.returncode == 0, done.stdout
    (docker_check,) = [c for c in json.loads(done.stdout)["checks"] if c["part"] == "docker"]
    assert docker_check["level"] == "ok" and docker_check["detail"].endswith("answers the workers (not us)")


class _Unreachable:
    def version(self) -> str:
        return "unknown"


def _worker(slot: int, docker: str) -> Registration:
    return Registration("host", Slot(id=slot), docker=docker)


def test_docker_fails_when_neither_we_nor_every_worker_reach_it() -> None:
    assert check_docker(_Unreachable(), []).level is Level.FAIL  # type: ignore[arg-type]
    finding = check_docker(_Unreachable(), [_worker(0, "20.10.24"), _worker(1, "")])  # type: ignore[arg-type]
    assert finding.level is Level.FAIL
    assert finding.detail == "the Docker engine does not answer; 1 of 2 workers cannot reach it either"
    assert check_docker(_Unreachable(), [_worker(0, "20.10.24")]).level is Level.OK  # type: ignore[arg-type]


def test_a_worker_of_another_pid_namespace_is_judged_by_its_registration_ttl(parts: Node) -> None:
    """Under host networking every container has the host's name but its own pids: a pid that does not
    exist here may be a live worker there, so only the registration's expiry says it is gone."""
    worker = parts.parts[1]
    assert worker.proc is not None
    os.kill(worker.proc.pid, signal.SIGKILL)
    worker.proc.wait()
    key = keys.WORKER.format(host=parts.env["HN_NODE_NAME"], slot=0)
    parts.redis.hset(key, "pidns", "0123456789abcdef")  # as a worker in another container writes it

    done = parts.cli("check", "--slot", "0")
    assert done.returncode == 0, done.stderr
    assert "worker slot 0 (CPU): alive" in done.stdout

    def expired() -> list[str]:
        failed = parts.cli("check", "--slot", "0")
        return failed.stderr.splitlines() if failed.returncode == 1 else []

    assert wait_for(expired, timeout=40, interval=1) == [
        "worker slot 0 (CPU): not registered: not running, or stopped (fix: start it)"
    ]


def test_check_fails_when_redis_is_stopped(parts: Node) -> None:
    parts.redis_server.stop()

    done = parts.cli("check")
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    shown = parts.env["HN_REDIS_URL"].replace(parts.redis_server.password or "", "***")  # never the password
    assert line.startswith(f"redis: no answer from {shown}: ")
    assert line.endswith("(fix: start Redis)")


def test_check_fails_when_the_bridge_stops_heartbeating(parts: Node) -> None:
    assert parts.parts[0].stop() == 0

    def failing() -> list[str]:
        done = parts.cli("check")
        return done.stderr.splitlines() if done.returncode == 1 else []

    (line,) = wait_for(failing, timeout=20, interval=0.5)  # stale after 3 missed 1 s heartbeats
    assert line.startswith("bridge: last heartbeat ")
    assert "the bridge is down or disconnected" in line
