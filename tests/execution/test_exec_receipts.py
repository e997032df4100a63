"""Receipts of real runs: what the engine applied, read back from it, verifies offline with the Oracle's checks."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hypernode_host import AGENT_VERSION
from hypernode_host.backend.oracle import verify_offline
from hypernode_host.core.proofs import NodeKey
from hypernode_host.core.slots import plan_slots
from hypernode_host.gpu.simulated import simulated_gpus
from hypernode_host.node.redis_server import RedisProcess
from hypernode_host.settings import Settings
from hypernode_host.state import Store
from hypernode_host.tasks.containers import LABEL_NODE, DockerRuntime
from hypernode_host.tasks.runner import JobRunner
from support import TEST_IMAGE

KEY = NodeKey.generate()


@pytest.fixture
def settings() -> Settings:
    return Settings.from_env(
        {"HN_JOB_IMAGE": TEST_IMAGE, "HN_NODE_NAME": f"test-{secrets.token_hex(4)}", "HN_JOB_TIMEOUT": "60"}
    )


@pytest.fixture
def store(redis_server: RedisProcess) -> Iterator[Store]:
    with Store.from_url(redis_server.url) as opened:
        yield opened


def run(settings: Settings, store: Store, runtime: DockerRuntime, gpus: str | None, **fields: Any) -> dict[str, Any]:
    slots = plan_slots(simulated_gpus(gpus) if gpus else [], 0 if gpus else 1)
    runner = JobRunner(settings, store, runtime, KEY, slots[0], slots)
    job_id = f"rc-{secrets.token_hex(6)}"
    job = {"id": job_id, "command": "echo all done", "memoryLimit": "128m", "cpuLimit": 0.5, **fields}
    assert store.jobs.record(job_id, job, slots[0].queue)
    try:
        runner.run(job_id)
    finally:
        for container_id, _ in runtime.labelled(LABEL_NODE, settings.node_name):
            runtime.remove(container_id)
    record = store.jobs.get(job_id)
    assert record is not None and record.state == "finished", record
    return {"job": job, "result": record.result()}


def test_the_receipt_says_what_the_engine_applied_and_verifies_offline(
    settings: Settings, store: Store, docker_runtime: DockerRuntime, tmp_path: Path
) -> None:
    ran = run(settings, store, docker_runtime, None)
    result, job = ran["result"], ran["job"]
    receipt = result["receipt"]

    assert result["status"] == "completed", result["logs"]
    assert receipt["agentVersion"] == AGENT_VERSION
    assert receipt["engine"] == {"version": docker_runtime.version(), "runtime": "runc"}
    assert receipt["gpus"] == []
    assert receipt["sandbox"] == {
        "memoryBytes": 128 << 20,
        "nanoCpus": 500_000_000,
        "pidsLimit": 1024,
        "network": "none",
        "readOnlyRoot": True,
        "capDrop": ["ALL"],
        "noNewPrivileges": True,
        "user": "65534:65534",
        "seccompProfile": receipt["sandbox"]["seccompProfile"],
    }
    assert receipt["sandbox"]["seccompProfile"] == "docker-default" or receipt["sandbox"]["seccompProfile"].startswith(
        "sha256:"
    )
    assert receipt["requirementsDigest"] is None
    verification = verify_offline(result, job=job, node_public_key=KEY.public_key_b58)
    assert verification.verified, verification.reasons

    # The command line, as an operator runs it, on the result as stored and on one edited afterwards.
    (tmp_path / "result.json").write_text(json.dumps(result))
    (tmp_path / "job.json").write_text(json.dumps(job))
    command = [sys.executable, "-m", "hypernode_host", "verify", str(tmp_path / "result.json")]
    command += ["--job", str(tmp_path / "job.json"), "--node-key", KEY.public_key_b58]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "verified: 11 passed, 0 failed, 2 skipped"

    (tmp_path / "result.json").write_text(json.dumps({**result, "durationMs": result["durationMs"] + 1}))
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert any(line.startswith("FAIL    receiptHashValid") for line in done.stdout.splitlines())


def test_a_gpu_job_names_each_assigned_gpu(settings: Settings, store: Store, docker_runtime: DockerRuntime) -> None:
    ran = run(settings, store, docker_runtime, "2xRTX4090:24576", gpuCount=1)
    result, job = ran["result"], ran["job"]
    gpus = result["receipt"]["gpus"]

    assert result["status"] == "completed", result["logs"]
    assert len(gpus) == 1 and gpus[0]["model"] == "RTX4090" and gpus[0]["uuid"].startswith("GPU-")
    assert verify_offline(result, job=job).verified
