"""Issue 11 against a real Redis: cancels for jobs that are not here leave no key, each job has a boundary
in intake, reconcile and dead-letter purges, `check` sees a running job nobody holds, and the CLI shows
a hostile job's values escaped and takes ids that begin with '-'."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from hypernode_host.bridge.intake import Intake
from hypernode_host.core.jobs import JobState
from hypernode_host.core.proofs import NodeKey
from hypernode_host.core.slots import CPU_QUEUE, plan_slots
from hypernode_host.escapes import is_clean
from hypernode_host.node.redis_server import RedisProcess
from hypernode_host.ops.check import check_jobs
from hypernode_host.settings import Settings
from hypernode_host.state import Store, keys
from hypernode_host.state.records import Registration
from hypernode_host.tasks.broker import build_broker

PAINT = "failed\x1b[1A\x1b[2Kcompleted\x1b]52;c;ZXZpbA==\x07\x1b]0;owned\x07\x9b2J"


@pytest.fixture
def intake(redis_server: RedisProcess) -> Iterator[Intake]:
    settings = Settings.from_env({"HN_NODE_TOKEN": "t", "HN_REDIS_URL": redis_server.url, "HN_JOB_IMAGE": "img"})
    broker = build_broker(redis_server.url)
    with Store.from_url(redis_server.url) as store:
        yield Intake(settings, store, broker, NodeKey.generate(), plan_slots([], 1))
    broker.close()


def job(job_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": job_id, "script": "print(1)", "memoryLimit": "128m", "cpuLimit": 0.5, **fields}


def test_ten_thousand_cancels_for_unknown_ids_leave_no_key(store: Store, redis_client: redis.Redis) -> None:
    assert not any(store.cancels.request(f"ghost-{n}") for n in range(10_000))
    assert list(redis_client.scan_iter("hn:cancel:*", count=1000)) == []

    store.jobs.record("real", job("real"), CPU_QUEUE)
    assert store.cancels.request("real") and store.cancels.requested("real")
    store.jobs.record("ghost-1", job("ghost-1"), CPU_QUEUE)  # arrives after its cancel: not pre-cancelled
    assert not store.cancels.requested("ghost-1")


def test_an_admission_fault_ends_that_job_with_an_internal_error_and_the_next_is_taken(
    intake: Intake, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("a bug\nwith a second line")

    monkeypatch.setattr("hypernode_host.bridge.intake.admit", broken)
    assert intake.accept("bug-1", job("bug-1")) is None
    monkeypatch.undo()
    assert intake.accept("ok-1", job("ok-1")) is None

    [entry] = intake.store.outbox.entries()
    assert (entry.job_id, entry.result["status"], entry.result["reason"]) == ("bug-1", "error", "internal")
    assert entry.result["logs"] == "node error while admitting it: RuntimeError: a bug\\nwith a second line"
    record = intake.store.jobs.get("ok-1")
    assert record is not None and record.enqueued


def test_an_enqueue_fault_ends_that_job_instead_of_leaving_it_queued(
    intake: Intake, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object) -> None:
        raise ValueError("broker confused")

    monkeypatch.setattr("hypernode_host.bridge.intake.enqueue_job", broken)
    assert intake.accept("enq-1", job("enq-1")) is None

    record = intake.store.jobs.get("enq-1")
    assert record is not None and record.state is JobState.FINISHED
    assert record.result()["reason"] == "internal" and "broker confused" in record.result()["logs"]


def test_reconcile_ends_a_record_it_cannot_complete_and_the_bridge_starts(
    intake: Intake, redis_client: redis.Redis
) -> None:
    intake.store.jobs.record("bad-1", job("bad-1"), CPU_QUEUE)
    redis_client.hset(keys.JOB.format(job_id="bad-1"), "job", "{damaged")  # not JSON any more
    intake.store.jobs.record("old-1", {"id": "old-1", "script": "print('\ud800')"}, "")  # an older version's

    intake.reconcile()

    for job_id in ("bad-1", "old-1"):
        record = intake.store.jobs.get(job_id)
        assert record is not None and (record.enqueued or record.done), record
    old = intake.store.jobs.get("old-1")
    assert old is not None and old.result()["status"] == "error" and len(old.result()["jobDigest"]) == 64


def _register(store: Store, host: str, slot: int) -> None:
    [planned] = plan_slots([], 1)
    registration = Registration(host=host, slot=planned, owner="o", pid=os.getpid(), pidns="")
    store.registry.register(registration, 30, 1)
    assert planned.id == slot


def test_check_reports_a_running_job_no_live_worker_holds(store: Store) -> None:
    store.jobs.record("held", job("held"), CPU_QUEUE)
    store.jobs.claim("held", "rig-a", 0, "hn-job-held")
    _register(store, "rig-a", 0)
    assert check_jobs(store).level == "ok"

    store.jobs.record("orphan", job("orphan"), CPU_QUEUE)
    store.jobs.claim("orphan", "rig-b", 0, "hn-job-orphan")  # its worker never registered, or its TTL ran out

    finding = check_jobs(store)
    assert finding.level == "fail" and "orphan (rig-b slot 0)" in finding.detail and "held" not in finding.detail


def _cli(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HN_")}
    env.update(HN_REDIS_URL=redis_url, COLUMNS="240", HN_NODE_NAME="rig")
    return subprocess.run(
        [sys.executable, "-m", "hypernode_host", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_the_cli_shows_a_hostile_job_escaped_and_takes_ids_beginning_with_a_dash(
    redis_server: RedisProcess, store: Store, tmp_path: Path
) -> None:
    key = NodeKey.generate()
    hostile = job("-x1", script=f"print('{PAINT}')\n# \ud800", command=None, image=PAINT, env={"A": PAINT})
    hostile.pop("command")
    store.jobs.record("-x1", hostile, CPU_QUEUE)
    from hypernode_host.core.jobs import Status
    from hypernode_host.core.results import CapturedLogs, make_result

    logs = f"step\t1\n{PAINT}\n\ud800done".encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    result = make_result(
        job_id="-x1",
        job=hostile,
        node_id=PAINT,
        key=key,
        status=Status.FAILED,
        exit_code=1,
        logs=CapturedLogs(logs, len(logs), "0" * 64, False),
        started_at=1,
        completed_at=2,
        image=PAINT,
    )
    store.jobs.finish("-x1", result.model_dump(mode="json"))
    store.node.registered(PAINT, 1)

    for args in (("job", "-x1"), ("job", "--", "-x1"), ("jobs",), ("top", "--once")):
        done = _cli(redis_server.url, *args)
        assert done.returncode == 0, (args, done.stderr)
        assert is_clean(done.stdout, multiline=True) and is_clean(done.stderr, multiline=True), args
        assert "-x1" in done.stdout
    shown = _cli(redis_server.url, "job", "-x1").stdout
    assert "\\x1b[1A" in shown and "\\x1b]52;c;" in shown  # the operator sees what was sent, escaped
    for args in (("job", "-x1", "--json"), ("top", "--json")):
        done = _cli(redis_server.url, *args)
        assert done.returncode == 0 and done.stdout.isascii() and is_clean(done.stdout, multiline=True)
        json.loads(done.stdout)
    cancel = _cli(redis_server.url, "cancel", "-x1")
    assert cancel.returncode == 1 and "already finished" in cancel.stderr


def test_dead_letters_with_damaged_messages_are_listed_and_purged(redis_server: RedisProcess, store: Store) -> None:
    from hypernode_host.ops.deadletters import dead_letters, purge_dead
    from hypernode_host.tasks.dramatiq_redis import Queues, queue_key

    client = redis.Redis.from_url(redis_server.url)
    store.jobs.record("stuck", job("stuck"), CPU_QUEUE)
    store.jobs.claim("stuck", "rig", 0, "hn-job-stuck")
    bodies = {"m1": {"args": {"not": "a list"}}, "m2": {"args": "stuck"}, "m3": "[]", "m4": {"args": ["stuck"]}}
    for number, (redis_id, body) in enumerate(bodies.items()):
        client.zadd(queue_key(CPU_QUEUE, ".XQ"), {redis_id: number + 1})
        client.hset(queue_key(CPU_QUEUE, ".XQ.msgs"), redis_id, body if isinstance(body, str) else json.dumps(body))
    queues = Queues(client)

    listed = dead_letters(store, queues, [CPU_QUEUE])
    assert sorted((bytes(d.redis_id), d.job_id) for d in listed) == [  # Dramatiq's ids, read as bytes
        (b"m1", None),
        (b"m2", None),
        (b"m3", None),
        (b"m4", "stuck"),
    ]
    assert len(purge_dead(store, queues, [CPU_QUEUE], NodeKey.generate())) == 4
    assert dead_letters(store, queues, [CPU_QUEUE]) == []
    record = store.jobs.get("stuck")
    assert record is not None and record.result()["reason"] == "operator_dropped"
    client.close()
