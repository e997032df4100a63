"""Test support: real parts started on demand (a private Redis, the node as processes, the job image)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hypernode_host.backend.harness import BackendThread
from hypernode_host.node.redis_server import RedisProcess
from hypernode_host.tasks.containers import LABEL_JOB, LABEL_NODE, DockerRuntime

TEST_IMAGE = os.environ.get("HN_TEST_IMAGE", "hypernode/job-python:3.11")


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Poll until ``predicate()`` is truthy; its value. AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def node_env(redis_url: str, endpoint: str, token: str, workdir: Path, **extra: str) -> dict[str, str]:
    """The environment of a node under test: every HN_* setting explicit, nothing inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HN_")}
    env.update(
        HN_NODE_TOKEN=token,
        HN_ENDPOINT=endpoint,
        HN_REDIS_URL=redis_url,
        HN_JOB_IMAGE=TEST_IMAGE,
        HN_KEY_FILE=str(workdir / "node.key"),
        HN_STATE_DIR=str(workdir / "state"),  # the ledger's file: never the user's own state directory
        HN_NODE_NAME=f"test-{secrets.token_hex(4)}",
        HN_RECONNECT_DELAY="0.2",
        HN_RECONNECT_MAX_DELAY="1",
        HN_HEARTBEAT_INTERVAL="1",
        HN_LOG_LEVEL="DEBUG",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@contextmanager
def node_stack(**settings: str) -> Iterator[tuple[RedisProcess, BackendThread, dict[str, str]]]:
    """A private Redis, a reference backend with a fresh token, and a node environment for them."""
    token = f"tok-{secrets.token_hex(8)}"
    with (
        RedisProcess() as redis_server,
        BackendThread("127.0.0.1", 0, [token]) as backend,
        tempfile.TemporaryDirectory() as workdir,
    ):
        yield redis_server, backend, node_env(redis_server.url, backend.url, token, Path(workdir), **settings)


class NodeProcess:
    """``hypernode-host <command>`` as a child process with its output in a file."""

    def __init__(self, env: Mapping[str, str], args: tuple[str, ...] = ("up",)) -> None:
        self.env = dict(env)
        self.args = args
        self.log_path = Path(tempfile.mkstemp(prefix="hn-node-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def node_name(self) -> str:
        return self.env["HN_NODE_NAME"]

    def start(self) -> NodeProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hypernode_host", *self.args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def stop(self, timeout: float = 40) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> NodeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.log_path.unlink(missing_ok=True)


def job_containers(node_name: str) -> list[str]:
    """Ids of job containers (running or not) that belong to ``node_name``."""
    return [cid for cid, labels in DockerRuntime().labelled(LABEL_NODE, node_name) if LABEL_JOB in labels]
