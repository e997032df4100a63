"""Retention on a real node (`up` with a short HN_JOB_RETENTION): a settled job shrinks to a tombstone that
`jobs` and `job` show as compacted, that still stops a second run, and that the backend still hears about."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from operator_support import Node

from hypernode_host.tasks.containers import DockerRuntime
from support import job_containers, node_stack, wait_for


@pytest.fixture(scope="module")
def node(docker_runtime: DockerRuntime) -> Iterator[Node]:
    with node_stack(HN_CPU_SLOTS="1", HN_JOB_RETENTION="2") as (redis_server, backend, env):
        harness = Node(backend, env, redis_server)
        up = harness.start("up")
        try:
            harness.wait_ready(slots=1)
            yield harness
            assert up.stop() == 0, harness.output()[-3000:]
            assert job_containers(env["HN_NODE_NAME"]) == []
        finally:
            harness.close()


def statuses(node: Node, job_id: str) -> list[str]:
    return [s for job in node.backend.jobs() if job["id"] == job_id for s in job["statuses"]]


def test_a_settled_job_is_compacted_after_the_retention_and_says_so(node: Node) -> None:
    ran = node.run(script="print('kept a while')\n")
    wait_for(lambda: node.record(ran["id"]).get("state") == "reported", timeout=30)
    stored = node.record(ran["id"])["result"]

    wait_for(lambda: "compacted_at" in node.record(ran["id"]), timeout=60)  # the reconciler's next passes

    [row] = [r for r in node.cli_json("jobs", "--limit", "100")["jobs"] if r["id"] == ran["id"]]
    assert (row["state"], row["status"]) == ("reported", "completed") and row["compacted_at"]
    assert "reported (compacted)" in node.cli("jobs", "--limit", "100").stdout
    detail = node.cli_json("job", ran["id"])
    assert detail["timeline"]["compacted"] == detail["compacted_at"]
    assert detail["result_sha256"] == hashlib.sha256(stored.encode()).hexdigest()
    assert detail["log_tail"] == [] and detail["proofs"] == {}
    shown = node.cli("job", ran["id"])
    assert shown.returncode == 0 and "retention kept only this tombstone" in shown.stdout

    node.backend.push({"type": "job", "id": ran["id"], "script": "print('again')\n", "memoryLimit": "256m"})
    wait_for(lambda: statuses(node, ran["id"]) == ["reported"], timeout=30)  # a job_status answers it
    assert node.record(ran["id"])["state"] == "reported" and "attempt" not in node.record(ran["id"])
    assert len(node.backend.results(ran["id"])) == 1  # never run again
