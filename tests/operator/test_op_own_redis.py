"""`up` without HN_REDIS_URL runs the node's own Redis: durable, password-protected, on a Unix socket only,
found by every command, restarted if it dies, and its data kept across restarts of the node."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import stat
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from operator_support import run_cli

from hypernode_host.backend.harness import BackendThread
from hypernode_host.state.connect import URL_FILE, own_redis_url
from hypernode_host.tasks.containers import DockerRuntime
from support import NodeProcess, job_containers, node_env, wait_for


class OwnRedisNode:
    """`hypernode-host up` with a state directory and no HN_REDIS_URL, fed by a reference backend."""

    def __init__(self, backend: BackendThread, state: Path, token: str) -> None:
        self.backend = backend
        self.state = state
        self.env = node_env("unused", backend.url, token, state, HN_STATE_DIR=str(state), HN_CPU_SLOTS="1")
        del self.env["HN_REDIS_URL"]
        self.up: NodeProcess | None = None

    def start(self) -> NodeProcess:
        if self.up is not None:  # the previous run's
            self.up.stop()
            self.up.log_path.unlink(missing_ok=True)
        self.up = NodeProcess(self.env, ("up",)).start()
        self.backend.wait_for_node(timeout=60)
        wait_for(lambda: self.cli("check").returncode == 0, timeout=60, interval=0.5)
        return self.up

    def cli(self, *args: str) -> Any:
        return run_cli(*args, env=self.env)

    def run(self, command: str) -> dict[str, Any]:
        job_id = self.backend.send_job(
            {"id": f"own-{uuid.uuid4().hex[:10]}", "command": command, "memoryLimit": "256m"}
        )
        try:
            return self.backend.wait_for_result(job_id, 60)
        except TimeoutError:
            output = self.up.output()[-4000:] if self.up else ""
            raise AssertionError(f"no result for {job_id}; node output:\n{output}") from None

    def client(self) -> redis.Redis:
        url = own_redis_url(self.state)
        assert url is not None
        return redis.Redis.from_url(url, decode_responses=True)


@pytest.fixture
def own(docker_runtime: DockerRuntime) -> Iterator[OwnRedisNode]:
    token = f"tok-{secrets.token_hex(8)}"
    state = Path(tempfile.mkdtemp(prefix="hn-st-"))  # short: the socket's path must fit in sun_path
    with BackendThread("127.0.0.1", 0, [token]) as backend:
        node = OwnRedisNode(backend, state, token)
        try:
            yield node
        finally:
            if node.up is not None:
                node.up.stop()
                node.up.log_path.unlink(missing_ok=True)
            shutil.rmtree(state, ignore_errors=True)


def _cmdlines() -> list[str]:
    lines = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                lines.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                continue  # it exited meanwhile
    return lines


def test_up_runs_jobs_on_its_own_durable_private_redis_and_every_command_finds_it(own: OwnRedisNode) -> None:
    up = own.start()

    assert own.run("echo one")["status"] == "completed"
    url_file = own.state / URL_FILE
    assert stat.S_IMODE(url_file.stat().st_mode) == 0o600
    url = url_file.read_text().strip()
    assert url.startswith("unix://:")
    password = url.split("@")[0].removeprefix("unix://:")
    assert len(password) == 64
    assert not any(password in line for line in _cmdlines())  # never in a process's arguments
    with own.client() as client:
        assert client.config_get("port")["port"] == "0"  # no TCP at all: nothing to collide with
        assert client.config_get("appendonly")["appendonly"] == "yes"
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(unix_socket_path=str(own.state / "redis" / "redis.sock")).ping()
    assert stat.S_IMODE((own.state / "redis").stat().st_mode) == 0o700

    check = json.loads(own.cli("check", "--json").stdout)  # each command reads the URL `up` wrote
    assert check["healthy"] is True and check["checks"][0]["detail"].startswith("answers at unix://:***@")
    doctor = {c["part"]: c["level"] for c in json.loads(own.cli("doctor", "--json").stdout)["checks"]}
    assert doctor["redis-aof"] == "ok" and doctor["redis-eviction"] == "ok"
    assert [j["status"] for j in json.loads(own.cli("jobs", "--json").stdout)["jobs"]] == ["completed"]
    assert password not in up.output()

    with own.client() as client:  # Redis dies: `up` starts it again, on the same data
        os.kill(int(client.info("server")["process_id"]), signal.SIGKILL)
    wait_for(lambda: "the node's own Redis exited" in up.output(), timeout=30)
    assert own.run("echo two")["status"] == "completed"
    assert "CRITICAL" not in up.output()

    assert up.stop() == 0, up.output()[-3000:]  # the node restarts: nothing is lost
    own.start()
    assert own.run("echo three")["status"] == "completed"
    listed = json.loads(own.cli("jobs", "--json").stdout)["jobs"]
    assert len(listed) == 3 and {j["status"] for j in listed} == {"completed"}
    assert own_redis_url(own.state) != url  # a fresh password at every start
    assert job_containers(own.env["HN_NODE_NAME"]) == []


def test_a_second_up_on_the_same_state_directory_is_refused(own: OwnRedisNode) -> None:
    own.start()

    second = run_cli("up", env=own.env)

    assert second.returncode == 2
    assert second.stderr.strip().splitlines()[-1] == (
        f"error: another `hypernode-host up` runs the Redis in {own.state / 'redis'}: stop it, or give this one "
        "its own HN_STATE_DIR"
    )
    assert own.cli("check").returncode == 0  # the first is untouched


def test_a_redis_left_running_by_a_killed_up_keeps_its_data_from_a_second_server(own: OwnRedisNode) -> None:
    """Two servers on one AOF would corrupt it: the orphan holds the lock until it is stopped."""
    up = own.start()
    assert up.proc is not None
    with own.client() as client:
        redis_pid = int(client.info("server")["process_id"])
    try:
        os.killpg(up.proc.pid, signal.SIGKILL)  # `up`, its bridge and worker; Redis has a session of its own
        up.proc.wait()

        second = run_cli("up", env=own.env)
        assert second.returncode == 2 and "another `hypernode-host up` runs the Redis in" in second.stderr
    finally:
        os.kill(redis_pid, signal.SIGTERM)
    down = wait_for(lambda: (done := run_cli("check", env=own.env)).returncode == 1 and done.stderr, timeout=30)
    assert down.strip().endswith("(fix: the node's own Redis runs while `hypernode-host up` does: start it)")
    own.start()  # once that Redis is gone, the node starts again on the same data
