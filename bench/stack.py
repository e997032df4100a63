"""The real stack for benchmarks: a private Redis, the reference backend and a node (`up`) as processes.

Shared by the benchmark scripts so each measures against the same parts the demo and tests use.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from hypernode_host.backend.harness import BackendThread
from hypernode_host.node.redis_server import RedisProcess
from hypernode_host.node.supervisor import children_for
from hypernode_host.settings import Settings
from hypernode_host.state import keys

IMAGE = os.environ.get("HN_TEST_IMAGE", "hypernode/job-python:3.11")


@dataclass
class Stack:
    backend: BackendThread
    redis_url: str
    node: subprocess.Popen[bytes]
    node_name: str
    log_path: Path

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, decode_responses=True)

    def worker_pids(self) -> dict[str, int]:
        client = self.redis()
        try:
            found = {}
            for key in client.scan_iter(match=keys.PREFIX + ":worker:*"):
                pid = client.hget(key, "pid")
                if pid:
                    found[key.rsplit(":", 1)[-1]] = int(pid)
            return found
        finally:
            client.close()

    def bridge_pid(self) -> int:
        for pid in children(self.node.pid):
            if "bridge" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                return pid
        raise RuntimeError("no bridge process found")


def up_argvs(env: Mapping[str, str]) -> list[list[str]]:
    """The argv of each process `up` starts with these HN_* settings: the bridge, then one worker per slot.

    Benchmarks that start the parts one by one (to measure each) start them exactly as `up` does.
    """
    return [child.argv for child in children_for(Settings.from_env(env))]


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(p) for p in text]
    return found


def rss_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in KiB: current and peak resident memory."""
    status = Path(f"/proc/{pid}/status").read_text()
    values = {k: int(v.split()[0]) for k, v in re.findall(r"^(VmRSS|VmHWM):\s+(.*)$", status, re.M)}
    return values["VmRSS"], values["VmHWM"]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[max(min(int(q), 99), 1) - 1]


@contextmanager
def running_stack(**settings: str) -> Iterator[Stack]:
    """A node with the given HN_* settings, its backend and Redis; all stopped afterwards."""
    token = f"bench-{secrets.token_hex(6)}"
    node_name = f"bench-{secrets.token_hex(3)}"
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hn-bench-")))
        backend = stack.enter_context(BackendThread("127.0.0.1", 0, [token]))
        redis_server = stack.enter_context(RedisProcess())
        env = {k: v for k, v in os.environ.items() if not k.startswith("HN_")}
        env.update(
            HN_NODE_TOKEN=token,
            HN_ENDPOINT=backend.url,
            HN_REDIS_URL=redis_server.url,
            HN_JOB_IMAGE=IMAGE,
            HN_KEY_FILE=str(workdir / "node.key"),
            HN_NODE_NAME=node_name,
            HN_LOG_LEVEL="WARNING",
        )
        env.update(settings)
        log_path = workdir / "node.log"
        with log_path.open("wb") as log:
            node = subprocess.Popen(
                [sys.executable, "-m", "hypernode_host", "up"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            backend.wait_for_node(timeout=60)
            result = Stack(backend, redis_server.url, node, node_name, log_path)
            wait_workers(result, expected=None)
            yield result
        finally:
            node.send_signal(signal.SIGTERM)
            try:
                node.wait(60)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait()


def wait_workers(stack: Stack, expected: int | None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        count = len(stack.worker_pids())
        if count and (expected is None or count >= expected):
            return
        time.sleep(0.1)
    raise RuntimeError(f"workers did not register:\n{stack.log_path.read_text()[-2000:]}")
