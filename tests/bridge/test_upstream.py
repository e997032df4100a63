"""Issue 13's definition of done, as an operator would see it: `hypernode-host up` against the reference
backend behaving as upstream's published one, with results for jobs it does not know mixed in,
connection cuts and token changes. Every job the node got is credited exactly once, every result for
an unknown job is rejected once and kept, and the node never stops on its own.

Upstream's backend credits every result frame it accepts. A cut that loses a reply the backend has
already sent makes any node send that result again; the cuts here come while no result is in flight
(the outbox is empty while jobs still run), which is the most a node can ask of the network.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bridgekit import Stack
from faultproxy import Proxy

from hypernode_host.backend.harness import BackendThread
from hypernode_host.node.redis_server import RedisProcess
from hypernode_host.tasks.containers import DockerRuntime
from support import NodeProcess, node_env, wait_for

WAIT_S = 120  # each step's wait: generous, CI is a busy 2-core machine
pytestmark = pytest.mark.timeout(600)  # about 35 s alone: three registrations, two demo jobs of 5 s each


@pytest.fixture
def upstream(redis_server: RedisProcess, token: str, tmp_path: Path) -> Iterator[Stack]:
    """The backend as upstream's, demo jobs included (5 s after each register), behind a proxy."""
    with BackendThread("127.0.0.1", 0, [token], upstream=True) as backend, Proxy(backend.port) as proxy:
        env = node_env(redis_server.url, proxy.url, token, tmp_path, HN_CPU_SLOTS="2", HN_RECONNECT_MAX_DELAY="0.5")
        stack = Stack(redis_server, backend, proxy, env, "upstream", tmp_path / "node.token")
        yield stack
        stack.redis.close()


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hypernode_host", *args],
        env={**stack.env, "HN_LOG_LEVEL": "WARNING", "COLUMNS": "400"},  # rich: one line per line
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def connected_node(stack: Stack, other_than: set[str]) -> str:
    """The node id of the connection registered now, once it is not one of ``other_than``."""

    def new_node() -> str | None:
        ids = [str(n["nodeId"]) for n in stack.backend.nodes() if n["connected"]]
        return next((node_id for node_id in ids if node_id not in other_than), None)

    return str(wait_for(new_node, timeout=WAIT_S))


def demo_jobs_of(stack: Stack, submitted: set[str]) -> list[dict[str, Any]]:
    """Upstream's demo jobs, as the backend dispatched them."""
    return [job for job in stack.backend.jobs() if job["id"] not in submitted and job["job"]["command"] == "sleep 5"]


def state_of(stack: Stack, job_id: str) -> str | None:
    return stack.record(job_id).get("state")


def running_with_nothing_in_flight(stack: Stack, job_ids: list[str]) -> bool:
    """The moment for a cut that loses nothing: the jobs run, and the outbox (every unsettled result) is empty."""
    return all(state_of(stack, j) in ("queued", "running") for j in job_ids) and stack.outbox_ids() == []


def assert_refusal_shown(stack: Stack, node: NodeProcess) -> None:
    """`check` and `top` say what happened and what to do; `up` goes on."""
    check = cli(stack, "check", "--bridge")
    assert check.returncode == 1
    assert check.stderr.startswith("bridge: token refused by the backend: Token already used (fix: write a new")
    top = cli(stack, "top", "--once")
    assert "token refused by the backend: Token already used" in top.stdout
    assert f"write a new token from the Hypernode dashboard to {stack.token_file}" in top.stdout
    assert node.proc is not None and node.proc.poll() is None


def test_against_upstream_every_job_is_credited_once_and_the_node_never_stops(
    upstream: Stack, docker_runtime: DockerRuntime
) -> None:
    stack = upstream
    sleepy = "import time\ntime.sleep(3)\nprint('{} done')"
    known = [stack.job(script=sleepy.format(f"known {i}")) for i in range(4)]
    strays = [stack.job(script=f"print('stray {i} done')") for i in range(2)]  # jobs the backend never recorded
    submitted = {job["id"] for job in known + strays}
    with NodeProcess(stack.env) as node:
        # Node A: three jobs, one of them unknown to the backend; the connection is cut while they run.
        a = connected_node(stack, set())
        stack.backend.send_job(known[0])
        stack.backend.push({"type": "job", **strays[0]}, a)
        stack.backend.send_job(known[1])
        first = [known[0]["id"], strays[0]["id"], known[1]["id"]]
        wait_for(lambda: running_with_nothing_in_flight(stack, first), timeout=WAIT_S)
        stack.proxy.set_mode("refuse")
        stack.proxy.drop()
        wait_for(lambda: sorted(stack.outbox_ids()) == sorted(first), timeout=WAIT_S)  # they finish meanwhile
        stack.proxy.set_mode("pass")

        # Upstream refuses the spent token; the node waits, and says so.
        assert stack.wait_refused(WAIT_S) == "Token already used"
        assert_refusal_shown(stack, node)

        # Node B, on a new token: the three results go together, the unknown one among them.
        stack.give_token()
        b = connected_node(stack, {a})
        wait_for(lambda: state_of(stack, strays[0]["id"]) == "rejected" and stack.outbox_ids() == [], timeout=WAIT_S)
        wait_for(lambda: any(j["state"] == "finished" for j in demo_jobs_of(stack, submitted)), timeout=WAIT_S)

        # A second unknown job and a known one that runs through the next cut; SIGHUP gives the new token.
        stack.backend.send_job(known[2])
        stack.backend.push({"type": "job", **strays[1]}, b)
        wait_for(lambda: state_of(stack, strays[1]["id"]) == "rejected", timeout=WAIT_S)
        wait_for(lambda: running_with_nothing_in_flight(stack, [known[2]["id"]]), timeout=WAIT_S)
        stack.proxy.drop()
        assert stack.wait_refused(WAIT_S) == "Token already used"
        stack.give_token()

        # Node C: the job that ran through the cut is credited, a new one runs, its demo job too.
        c = connected_node(stack, {a, b})
        stack.backend.send_job(known[3])
        received = lambda: [j for j in demo_jobs_of(stack, submitted) if stack.record(j["id"])]  # noqa: E731
        wait_for(lambda: len(received()) == 2 and all(j["state"] == "finished" for j in received()), timeout=WAIT_S)
        wait_for(lambda: all(stack.backend.credits(j["id"]) for j in known), timeout=WAIT_S)
        wait_for(lambda: stack.outbox_ids() == [], timeout=WAIT_S)

        assert node.proc is not None and node.proc.poll() is None  # it never stopped on its own
        assert node.stop() == 0, node.output()[-3000:]
        output = node.output()

    assert [n["nodeId"] for n in stack.backend.nodes()] == [a, b, c]  # three tokens, three nodes
    assert stack.backend.registers_refused() == 2  # each spent token tried once, never again
    for job in known + received():
        assert stack.backend.credits(job["id"]) == 1, job["id"]  # exactly once: never lost, never twice
        assert len(stack.backend.results(job["id"])) == 1, job["id"]
        assert stack.record(job["id"])["state"] == "reported"
        assert stack.record(job["id"])["attempt"] == "1"
    assert all(job["credits"] <= 1 for job in stack.backend.jobs())
    for stray in strays:
        assert stack.backend.refused_results(stray["id"]) == 1  # refused once, kept, not sent again
        record = stack.record(stray["id"])
        assert (record["state"], record["rejection"], record["status"]) == ("rejected", "Job not found", "completed")

    rejected = json.loads(cli(stack, "jobs", "--state", "rejected", "--json").stdout)["jobs"]
    assert sorted((j["id"], j["rejection"]) for j in rejected) == sorted((s["id"], "Job not found") for s in strays)
    detail = json.loads(cli(stack, "job", strays[0]["id"], "--json").stdout)
    assert detail["state"] == "rejected" and detail["rejection"] == "Job not found"
    summary = json.loads(cli(stack, "top", "--json").stdout)["node"]
    assert (summary["results_rejected"], summary["refused"], summary["outbox"]) == (2, None, 0)
    assert "Traceback" not in output and "CRITICAL" not in output
