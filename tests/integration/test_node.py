"""The walking skeleton end to end: reference backend → bridge → Redis → worker → container → proofs → backend.

One node (`hypernode-host up`, two CPU slots) serves every test of this module; each test
submits real jobs through the reference backend and reads what the backend received.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from hypernode_host.backend.harness import BackendThread
from hypernode_host.state import Store, keys
from hypernode_host.tasks.containers import DockerRuntime
from support import NodeProcess, job_containers, node_stack, wait_for


class Harness:
    def __init__(self, backend: BackendThread, node: NodeProcess, redis_url: str) -> None:
        self.backend = backend
        self.node = node
        self.redis = redis.Redis.from_url(redis_url, decode_responses=True)

    def run(self, wait_s: float = 60, **job: Any) -> dict[str, Any]:
        job.setdefault("id", f"t-{uuid.uuid4().hex[:12]}")
        job.setdefault("memoryLimit", "256m")
        job.setdefault("cpuLimit", 1.0)
        self.backend.send_job(job)
        try:
            return self.backend.wait_for_result(job["id"], wait_s)
        except TimeoutError:
            raise AssertionError(f"no result for {job['id']}; node output:\n{self.node.output()[-3000:]}") from None


@pytest.fixture(scope="module")
def harness(docker_runtime: DockerRuntime) -> Iterator[Harness]:
    with (
        node_stack(HN_CPU_SLOTS="2", HN_JOB_TIMEOUT="30") as (redis_server, backend, env),
        NodeProcess(env) as node,
    ):
        backend.wait_for_node(timeout=30)
        h = Harness(backend, node, redis_server.url)
        yield h
        h.redis.close()
        assert node.stop() == 0, node.output()[-3000:]
        # After everything: no job container of this node is left behind.
        assert job_containers(node.node_name) == []


def test_script_job_completes_and_verifies(harness: Harness) -> None:
    result = harness.run(script="print('hello from the job')\nprint('done')\n", estimatedTime=30)

    assert result["status"] == "completed"
    assert result["exitCode"] == 0 and result["success"] is True
    assert "hello from the job" in result["logs"]
    assert result["image"].startswith("sha256:")
    verification = harness.backend.verification(result["id"])
    assert verification is not None and verification.verified, verification
    assert job_containers(harness.node.node_name) == []


def test_command_job_runs_with_sh(harness: Harness) -> None:
    result = harness.run(command="echo $((6 * 7)); id -u; echo finished")

    assert result["status"] == "completed"
    assert result["logs"].split() == ["42", "65534", "finished"]  # non-root whatever the image says


def test_exit_code_3_is_failed(harness: Harness) -> None:
    result = harness.run(script="import sys\nprint('bad input')\nsys.exit(3)\n")

    assert result["status"] == "failed"
    assert result["exitCode"] == 3 and result["success"] is False
    verification = harness.backend.verification(result["id"])
    assert verification is not None and not verification.verified
    assert verification.checks["exitCodeZero"] is False
    assert verification.checks["signatureValid"] is True  # a failure is still an honest, signed result


def test_job_past_its_timeout_is_stopped_and_removed(harness: Harness) -> None:
    result = harness.run(script="import time\nprint('sleeping', flush=True)\ntime.sleep(300)\n", timeout=2)

    assert result["status"] == "timeout"
    assert "sleeping" in result["logs"]  # output up to the deadline is kept
    assert 2000 <= result["durationMs"] < 15000
    assert job_containers(harness.node.node_name) == []


def test_malformed_frames_get_an_error_and_the_next_job_runs(harness: Harness) -> None:
    node_id = harness.backend.wait_for_node()
    beats = len(harness.backend.heartbeats(node_id))
    for frame in ("not json", '{"type": "no-such-type"}', "[1, 2]", '{"type": "job", "id": "../etc"}', b"\x00"):
        assert harness.backend.send_raw(frame) == 1

    result = harness.run(script="print('still here, done')")

    assert result["status"] == "completed"
    assert harness.backend.nodes()[0]["connected"]
    wait_for(lambda: len(harness.backend.heartbeats(node_id)) > beats, timeout=60)
    assert "frame refused" in harness.node.output()


def test_bad_job_gets_an_error_result_and_is_not_enqueued(harness: Harness) -> None:
    result = harness.run(script="print(1)", memoryLimit="lots")

    assert (result["status"], result["reason"]) == ("error", "invalid_job")
    assert result["exitCode"] == -1
    assert result["logs"].startswith("invalid job: memoryLimit")
    assert "\n" not in result["logs"]
    record = harness.redis.hgetall(keys.JOB.format(job_id=result["id"]))
    assert record["state"] in ("finished", "reported") and "enqueued" not in record


def test_image_not_allowed_is_refused_before_docker(harness: Harness) -> None:
    result = harness.run(script="print(1)", image="evil/miner:latest")

    assert (result["status"], result["reason"]) == ("error", "image_not_allowed")
    assert result["logs"] == "image 'evil/miner:latest' is not allowed on this node"


def test_a_job_id_seen_before_is_never_run_twice(harness: Harness) -> None:
    job = {"id": f"dup-{uuid.uuid4().hex[:8]}", "script": "import time\ntime.sleep(1)\nprint('ran once')"}
    first = harness.run(**job)
    assert first["status"] == "completed"

    harness.backend.push({"type": "job", **job})  # the backend sends the same job again

    wait_for(lambda: len(harness.backend.results(job["id"])) == 2, timeout=60)  # its result again...
    again = harness.backend.results(job["id"])[1]
    assert again == first  # ...identical: not a second run
    assert harness.redis.hget(keys.JOB.format(job_id=job["id"]), "attempt") == "1"


def test_results_are_acknowledged_and_leave_the_outbox(harness: Harness) -> None:
    result = harness.run(script="print('done')")

    key = keys.JOB.format(job_id=result["id"])
    wait_for(lambda: harness.redis.hget(key, "state") == "reported", timeout=60)
    pending = [json.loads(f["result"])["id"] for _, f in harness.redis.xrange(keys.REPLY_STREAM)]
    assert result["id"] not in pending


def test_heartbeats_carry_stats_only_after_registration(harness: Harness) -> None:
    node_id = harness.backend.wait_for_node()
    beats = wait_for(lambda: harness.backend.heartbeats(node_id), timeout=60)
    stats = beats[-1].stats
    assert stats["jobs_completed"] >= 0 and stats["total_uptime"] >= 0
    assert stats["free_slots"] <= 2
    node = harness.backend.nodes()[0]
    assert node["hostname"] == harness.node.node_name


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hypernode_host", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_submit_cli_waits_and_prints_result_and_verification(harness: Harness, tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text("print('42 and done')\n")
    job_id = f"cli-{uuid.uuid4().hex[:8]}"
    done = _cli(
        "submit",
        "--backend",
        harness.backend.url,
        "--script",
        str(script),
        "--memory",
        "256m",
        "--cpus",
        "1",
        "--estimated-time",
        "30",
        "--id",
        job_id,
        "--wait",
        "--wait-timeout",
        "60",
        "--json",
    )

    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["id"] == job_id
    assert outcome["result"]["status"] == "completed" and "42 and done" in outcome["result"]["logs"]
    assert outcome["verification"]["verified"] is True
    assert set(outcome["verification"]["checks"]) >= {"logsHashValid", "executionHashValid", "signatureValid"}


def test_submit_cli_exits_2_when_no_result_in_time(harness: Harness) -> None:
    done = _cli(
        "submit",
        "--backend",
        harness.backend.url,
        "--command",
        "sleep 4",
        "--timeout",
        "10",
        "--memory",
        "64m",
        "--cpus",
        "0.5",
        "--wait",
        "--wait-timeout",
        "1",
        "--json",
    )

    assert done.returncode == 2
    assert json.loads(done.stdout)["result"] is None


def _worker_pids(redis_client: redis.Redis) -> dict[int, int]:
    return {r.slot.id: r.pid for r in Store(redis_client).registry.all()}


def test_up_restarts_a_crashed_worker(harness: Harness) -> None:
    pids = wait_for(lambda: (p := _worker_pids(harness.redis)) and len(p) == 2 and p, timeout=60)
    os.kill(pids[0], signal.SIGKILL)

    wait_for(lambda: _worker_pids(harness.redis).get(0, pids[0]) != pids[0], timeout=30)
    result = harness.run(script="print('after the restart: done')")
    assert result["status"] == "completed"
    assert "worker slot 0 (CPU) exited with code -9; restarting" in harness.node.output()
