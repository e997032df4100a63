"""Helpers for the operator tests: the CLI as an operator runs it, and a node under test."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Mapping
from typing import Any

import redis

from hypernode_host import constants as C
from hypernode_host.backend.server import BackendThread
from hypernode_host.gpu import registry
from hypernode_host.redisproc import RedisProcess
from support import NodeProcess, wait_for


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
        return self.redis.hgetall(C.JOB_KEY.format(job_id=job_id))

    def redis_workers(self) -> list[dict[str, str]]:
        """This node's live worker registrations, as stored."""
        return [w for w in registry.registrations(self.redis) if w.get("host") == self.env["HN_NODE_NAME"]]

    def output(self) -> str:
        return "\n".join(part.output() for part in self.parts)

    def wait_ready(self, slots: int) -> None:
        """The bridge registered and heartbeating, and ``slots`` workers registered."""
        self.backend.wait_for_node(timeout=30)
        wait_for(lambda: self.redis.hget(C.NODE_KEY, "heartbeat_at"), timeout=30)
        wait_for(lambda: len(self.cli_json("workers")["workers"]) >= slots and self._alive() == slots, timeout=30)

    def _alive(self) -> int:
        return sum(1 for w in self.cli_json("workers")["workers"] if w["alive"])

    def close(self) -> None:
        for part in self.parts:
            part.stop()
            part.log_path.unlink(missing_ok=True)
        self.redis.close()
