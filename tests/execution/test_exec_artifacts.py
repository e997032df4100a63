"""Output artifacts of real runs: /out is a capped tmpfs that outlives the job until the worker has read it."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hypernode_host.backend.oracle import verify_offline
from hypernode_host.core.artifacts import merkle_root
from hypernode_host.core.proofs import NodeKey
from hypernode_host.core.slots import plan_slots
from hypernode_host.node.redis_server import RedisProcess
from hypernode_host.ops.artifacts import write_artifacts
from hypernode_host.settings import Settings
from hypernode_host.state import Store
from hypernode_host.tasks.containers import LABEL_NODE, DockerRuntime
from hypernode_host.tasks.runner import JobRunner
from support import TEST_IMAGE

KEY = NodeKey.generate()
CAP = 256 << 10


@pytest.fixture
def settings() -> Settings:
    return Settings.from_env(
        {
            "HN_JOB_IMAGE": TEST_IMAGE,
            "HN_NODE_NAME": f"test-{secrets.token_hex(4)}",
            "HN_JOB_TIMEOUT": "60",
            "HN_MAX_OUTPUT_BYTES": str(CAP),
        }
    )


@pytest.fixture
def store(redis_server: RedisProcess) -> Iterator[Store]:
    with Store.from_url(redis_server.url) as opened:
        yield opened


def run(settings: Settings, store: Store, runtime: DockerRuntime, command: str) -> dict[str, Any]:
    slots = plan_slots([], 1)
    runner = JobRunner(settings, store, runtime, KEY, slots[0], slots)
    job_id = f"ar-{secrets.token_hex(6)}"
    job = {"id": job_id, "command": command, "memoryLimit": "128m", "cpuLimit": 1}
    assert store.jobs.record(job_id, job, slots[0].queue)
    try:
        runner.run(job_id)
        left = runtime.labelled(LABEL_NODE, settings.node_name)
    finally:
        for container_id, _ in runtime.labelled(LABEL_NODE, settings.node_name):
            runtime.remove(container_id)
    assert left == [], "the job's container and its outputs holder are removed with the job"
    record = store.jobs.get(job_id)
    assert record is not None and record.state == "finished", record
    return {"job": job, "result": record.result()}


def test_files_under_out_are_listed_bound_and_written_out(
    settings: Settings, store: Store, docker_runtime: DockerRuntime, redis_server: RedisProcess, tmp_path: Path
) -> None:
    redis_url = redis_server.url
    ran = run(
        settings,
        store,
        docker_runtime,
        "mkdir -p /out/model && printf 'w%.0s' $(seq 1000) > /out/model/weights.bin"
        " && echo '{\"loss\": 0.5}' > /out/metrics.json && echo all done",
    )
    result, job = ran["result"], ran["job"]

    assert result["status"] == "completed", result["logs"]
    weights = b"w" * 1000
    assert result["artifacts"] == [
        {"path": "metrics.json", "size": 14, "sha256": hashlib.sha256(b'{"loss": 0.5}\n').hexdigest()},
        {"path": "model/weights.bin", "size": 1000, "sha256": hashlib.sha256(weights).hexdigest()},
    ]
    assert result["artifactsRoot"] == result["receipt"]["artifactsRoot"] == merkle_root(result["artifacts"])
    assert verify_offline(result, job=job, node_public_key=KEY.public_key_b58).verified

    written = write_artifacts(store, job["id"], tmp_path / "out")
    assert [w.path for w in written] == ["metrics.json", "model/weights.bin"]
    assert (tmp_path / "out" / "model" / "weights.bin").read_bytes() == weights

    # The command line, as an operator runs it.
    env = {**os.environ, "HN_REDIS_URL": redis_url}
    command = [sys.executable, "-m", "hypernode_host", "artifacts", job["id"], "--out", str(tmp_path / "cli")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False, env=env)
    assert done.returncode == 0, done.stderr
    assert [line.split()[-1] for line in done.stdout.splitlines()] == ["metrics.json", "model/weights.bin"]
    assert (tmp_path / "cli" / "metrics.json").read_bytes() == b'{"loss": 0.5}\n'


def test_a_job_that_writes_nothing_has_an_empty_listing(
    settings: Settings, store: Store, docker_runtime: DockerRuntime
) -> None:
    result = run(settings, store, docker_runtime, "echo all done")["result"]

    assert result["status"] == "completed" and result["artifacts"] == []
    assert result["artifactsRoot"] == hashlib.sha256(b"").hexdigest()


def test_more_than_the_cap_ends_the_job_output_too_large_with_the_files_that_fit(
    settings: Settings, store: Store, docker_runtime: DockerRuntime
) -> None:
    command = f"head -c 1000 /dev/zero > /out/a.small; head -c {CAP * 2} /dev/zero > /out/b.big; echo all done"
    result = run(settings, store, docker_runtime, command)["result"]

    assert result["status"] == "failed" and result["reason"] == "output_too_large", result["logs"]
    assert [a["path"] for a in result["artifacts"]] == ["a.small"]
    assert verify_offline(result).checks["receiptValid"]


def test_replay_reruns_a_job_in_the_same_image_and_compares_logs_and_artifacts(
    settings: Settings, store: Store, docker_runtime: DockerRuntime, redis_server: RedisProcess
) -> None:
    from hypernode_host.ops.replay import replay

    same = run(settings, store, docker_runtime, "echo stable > /out/a; echo all done")["job"]["id"]
    found = replay(settings, store, same, docker_runtime)
    assert found.matches, found.to_json()
    assert found.artifacts_root is not None and found.status == "completed"

    random_run = "head -c 16 /dev/urandom > /out/r; head -c 8 /dev/urandom | od -An -tx1"  # differs each run
    varying = run(settings, store, docker_runtime, random_run)["job"]["id"]
    found = replay(settings, store, varying, docker_runtime)
    assert not found.logs_match and not found.artifacts_match
    assert docker_runtime.labelled(LABEL_NODE, settings.node_name) == []  # the replay leaves nothing behind

    env = {**os.environ, "HN_REDIS_URL": redis_server.url, "HN_MAX_OUTPUT_BYTES": str(CAP)}
    done = subprocess.run(
        [sys.executable, "-m", "hypernode_host", "replay", same, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["matches"] is True


def test_progress_markers_show_while_the_job_runs(
    settings: Settings, store: Store, docker_runtime: DockerRuntime
) -> None:
    import threading
    import time

    from hypernode_host.ops.inspect import job_detail, recent_jobs
    from hypernode_host.ops.views import progress_text

    slots = plan_slots([], 1)
    runner = JobRunner(settings, store, docker_runtime, KEY, slots[0], slots)
    job_id = f"pg-{secrets.token_hex(6)}"
    script = "import time\nprint('HN-PROGRESS 50 half \\x1b[2J way', flush=True)\ntime.sleep(4)\nprint('all done')"
    assert store.jobs.record(job_id, {"id": job_id, "script": script, "memoryLimit": "128m"}, slots[0].queue)
    worker = threading.Thread(target=runner.run, args=(job_id,))
    worker.start()
    try:
        deadline = time.monotonic() + 60
        detail = job_detail(store, job_id)
        while detail.progress is None and time.monotonic() < deadline:
            time.sleep(0.2)
            detail = job_detail(store, job_id)
        assert detail.progress == {"percent": 50.0, "message": "half \x1b[2J way"}
        assert detail.state == "running"
        assert progress_text(detail.progress) == "50% half \\x1b[2J way"  # escaped for the terminal
        assert [row.progress for row in recent_jobs(store, slots) if row.id == job_id] == [detail.progress]
    finally:
        worker.join(60)
    assert job_detail(store, job_id).status == "completed"
