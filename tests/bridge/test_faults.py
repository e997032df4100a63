"""The bridge never loses a job or a result: real jobs in real containers while the network, the bridge
process and Redis fail under it.

Every test keeps the same invariants: each accepted job ends with a result, the
backend gets at least one copy and every copy is identical, no job runs twice (attempt 1), and the
outbox is empty once the backend has acknowledged everything. Against the backend behaving as
upstream's (which credits every result frame it gets) each job is also credited exactly once.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from bridgekit import BridgeThread, Stack, backend_for
from faultproxy import Proxy

from hypernode_host.node.redis_server import RedisProcess, free_port
from hypernode_host.state import keys
from support import NodeProcess, job_containers, node_env, wait_for

RESULT_WAIT_S = 90


def vm_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def results_of(stack: Stack, jobs: list[dict[str, Any]], node: NodeProcess | None = None) -> dict[str, dict[str, Any]]:
    """The first result of each job, waiting for all of them."""
    try:
        return {job["id"]: stack.backend.wait_for_result(job["id"], RESULT_WAIT_S) for job in jobs}
    except TimeoutError:
        detail = node.output()[-4000:] if node else ""
        raise AssertionError(f"not every job got a result: {detail}") from None


def assert_ran_once_and_settled(stack: Stack, jobs: list[dict[str, Any]]) -> None:
    """Every copy of a result is identical, no job ran twice, each was credited once, the outbox drained."""
    for job in jobs:
        copies = stack.backend.results(job["id"])
        assert copies and all(copy == copies[0] for copy in copies), job["id"]
        assert stack.record(job["id"])["attempt"] == "1", job["id"]
        assert stack.backend.credits(job["id"]) == 1, job["id"]
    wait_for(lambda: stack.outbox_ids() == [], timeout=30)
    assert {stack.record(job["id"])["state"] for job in jobs} == {"reported"}
    if stack.upstream:  # it credits every result frame it accepts: each went exactly once
        assert all(len(stack.backend.results(job["id"])) == 1 for job in jobs)


class BridgeProcess:
    """`hypernode-host bridge` as a process that a test can SIGKILL and start again."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.runs: list[NodeProcess] = []

    def start(self) -> NodeProcess:
        process = NodeProcess(self.env, ("bridge",)).start()
        self.runs.append(process)
        return process

    @property
    def current(self) -> NodeProcess:
        return self.runs[-1]

    def kill(self) -> None:
        proc = self.current.proc
        assert proc is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def output(self) -> str:
        return "\n".join(run.output() for run in self.runs)

    def close(self) -> None:
        for run in self.runs:
            run.__exit__(None, None, None)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisProcess, dict[str, str], NodeProcess]]:
    """One Redis and one worker (slot 0, CPU) for the whole module: starting and stopping a worker per
    test would cost more than the tests. Each test gets its own backend, proxy and token."""
    workdir = tmp_path_factory.mktemp("faults")
    with RedisProcess() as server:
        env = node_env(
            server.url, "ws://127.0.0.1:9", "tok-set-per-test", workdir, HN_RECONNECT_DELAY="0.1",
            HN_RECONNECT_MAX_DELAY="0.5", HN_MAX_LOG_SIZE="20000",
        )  # fmt: skip
        with NodeProcess(env, ("worker", "--slot", "0")) as process, redis.Redis.from_url(server.url) as client:
            worker_key = keys.WORKER.format(host=env["HN_NODE_NAME"], slot=0)
            wait_for(lambda: client.exists(worker_key), timeout=60)
            yield server, env, process


@pytest.fixture
def stack(
    shared: tuple[RedisProcess, dict[str, str], NodeProcess], token: str, backend_mode: str, tmp_path: Path
) -> Iterator[Stack]:
    server, env, _ = shared
    with backend_for(backend_mode, token) as backend, Proxy(backend.port) as proxy:
        env = {**env, "HN_ENDPOINT": proxy.url, "HN_NODE_TOKEN": token}
        s = Stack(server, backend, proxy, env, backend_mode, tmp_path / "node.token")
        s.redis.delete(keys.NODE)  # a node this test's backend has never seen
        yield s
        assert s.outbox_ids() == []  # nothing left over for the next test
        s.redis.close()


@pytest.fixture
def worker(shared: tuple[RedisProcess, dict[str, str], NodeProcess]) -> NodeProcess:
    return shared[2]


@pytest.fixture
def bridge_process(stack: Stack) -> Iterator[BridgeProcess]:
    bridges = BridgeProcess(stack.env)
    yield bridges
    bridges.close()


# the network -------------------------------------------------------------------------------------------


def test_a_result_cut_mid_frame_arrives_after_the_reconnect_and_the_job_ran_once(
    stack: Stack, worker: NodeProcess
) -> None:
    job = stack.job(script="print('x' * 15000)\nprint('done')")
    with BridgeThread(stack.env):
        stack.wait_registered()
        stack.proxy.cut_next_large(8192)  # heartbeats are far smaller: this is the result frame

        stack.backend.send_job(job)
        stack.after_cut()
        result = results_of(stack, [job], worker)[job["id"]]

        assert_ran_once_and_settled(stack, [job])
    assert result["status"] == "completed" and "x" * 15000 in result["logs"]
    assert len(stack.backend.results(job["id"])) == 1  # the cut copy never arrived whole
    registrations = [node["registrations"] for node in stack.backend.nodes()]
    assert registrations == ([1, 1] if stack.upstream else [2])  # it came over the second connection
    verification = stack.backend.verification(job["id"])
    assert verification is not None
    intact = {name: verification.checks[name] for name in ("logsHashValid", "executionHashValid", "signatureValid")}
    assert all(intact.values()), verification  # the copy that arrived is the one the node signed


def test_results_wait_in_the_outbox_while_the_backend_is_unreachable(
    stack: Stack, worker: NodeProcess, bridge_process: BridgeProcess
) -> None:
    bridge = bridge_process.start()
    stack.wait_registered()
    jobs = [stack.job(script=f"import time\ntime.sleep(0.5)\nprint('job {i} done')") for i in range(2)]
    for job in jobs:
        stack.backend.send_job(job)
    wait_for(lambda: all(stack.record(job["id"]).get("enqueued") for job in jobs), timeout=30)
    assert bridge.proc is not None
    rss_before = vm_rss_kb(bridge.proc.pid)

    stack.proxy.set_mode("refuse")
    stack.proxy.drop()
    wait_for(lambda: sorted(stack.outbox_ids()) == sorted(job["id"] for job in jobs), timeout=RESULT_WAIT_S)
    tries = stack.proxy.accepted
    wait_for(lambda: stack.proxy.accepted >= tries + 10, timeout=30)  # still trying, again and again
    rss_after = vm_rss_kb(bridge.proc.pid)
    assert all(stack.backend.results(job["id"]) == [] for job in jobs)

    stack.proxy.set_mode("pass")
    stack.after_cut()
    results = results_of(stack, jobs, bridge)

    assert {result["status"] for result in results.values()} == {"completed"}
    assert_ran_once_and_settled(stack, jobs)
    assert rss_after - rss_before < 5 * 1024, (rss_before, rss_after)  # flat while it retries


def test_a_flood_of_malformed_frames_leaves_the_connection_up_and_jobs_running(
    stack: Stack, worker: NodeProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    garbage: list[str | bytes] = ["{", '{"type":"nope"}', b"\xff\xfe", '{"type":"ack","id":Infinity}', "[]"]
    job = stack.job(script="import time\ntime.sleep(1)\nprint('done')")
    with BridgeThread(stack.env):
        node_id = stack.wait_registered()
        stack.backend.send_job(job)
        for i in range(500):
            stack.backend.send_raw(garbage[i % len(garbage)], node_id)
        beats = len(stack.backend.heartbeats(node_id))

        result = results_of(stack, [job], worker)[job["id"]]

        answered = 0 if stack.upstream else 500  # each one answered, to a backend that takes error frames
        wait_for(lambda: len(stack.backend.nodes()[0]["errors"]) == answered, timeout=30)
        wait_for(lambda: len(stack.backend.heartbeats(node_id)) > beats, timeout=60)  # and still beating
        wait_for(lambda: stack.node_counter("frames_refused") == 500, timeout=60)  # hn:node is this test's
        assert stack.backend.nodes()[0]["registrations"] == 1  # the same connection all along
    assert result["status"] == "completed"
    assert_ran_once_and_settled(stack, [job])
    lines = [r for r in caplog.records if r.getMessage().startswith("frame refused")]
    assert 1 <= len(lines) <= 10  # rate-limited: a flood of frames is not a flood of log lines
    assert "more frames refused were not logged" in caplog.text


def test_results_for_jobs_the_backend_does_not_know_are_rejected_and_the_others_settle(
    stack: Stack, worker: NodeProcess
) -> None:
    # Upstream answers "Job not found" without an id: matched by the oldest result, every ack after
    # the first unknown one would settle the wrong result, and the one left over be credited twice.
    sleepy = "import time\ntime.sleep(1)\nprint('{} done')"
    known = [stack.job(script=sleepy.format(f"known {i}")) for i in range(3)]
    strays = [stack.job(script=sleepy.format(f"stray {i}")) for i in range(2)]
    jobs = [known[0], strays[0], known[1], strays[1], known[2]]
    with BridgeThread(stack.env):
        node_id = stack.wait_registered()
        for job in jobs:
            if job in strays:
                stack.backend.push({"type": "job", **job}, node_id)  # never recorded by the backend
            else:
                stack.backend.send_job(job)
        wait_for(lambda: all(stack.record(job["id"]).get("enqueued") for job in jobs), timeout=30)
        stack.proxy.set_mode("refuse")  # the results wait in the outbox, then go together, strays among them
        stack.proxy.drop()
        wait_for(lambda: len(stack.outbox_ids()) == len(jobs), timeout=RESULT_WAIT_S)
        stack.proxy.set_mode("pass")
        stack.after_cut()

        results_of(stack, known, worker)
        wait_for(lambda: all(stack.record(s["id"]).get("state") == "rejected" for s in strays), timeout=30)
        assert_ran_once_and_settled(stack, known)
    for stray in strays:
        record = stack.record(stray["id"])
        assert record["rejection"] == "Job not found" and record["status"] == "completed"
        assert stack.backend.refused_results(stray["id"]) == 1  # kept, never sent again
    assert stack.node_counter("results_rejected") == 2


# the bridge process ----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend_mode", ["reference"])  # a silent backend that counts every frame: twice
def test_results_unacked_when_the_bridge_is_sigkilled_are_sent_again_after_restart(
    stack: Stack, worker: NodeProcess, bridge_process: BridgeProcess
) -> None:
    stack.backend.set_ack_results(False)
    bridge_process.start()
    stack.wait_registered()
    jobs = [stack.job(script=f"print('unacked {i} done')") for i in range(2)]
    for job in jobs:
        stack.backend.send_job(job)
    first = results_of(stack, jobs, bridge_process.current)
    assert sorted(stack.outbox_ids()) == sorted(first)  # sent, never acknowledged: still in the outbox

    bridge_process.kill()
    stack.backend.set_ack_results(True)
    bridge_process.start()

    wait_for(lambda: all(len(stack.backend.results(job["id"])) == 2 for job in jobs), timeout=RESULT_WAIT_S)
    assert_ran_once_and_settled(stack, jobs)  # credited once: the reference backend deduplicates
    assert [node["nodeId"] for node in stack.backend.nodes()] == [stack.backend.nodes()[0]["nodeId"]]


@pytest.mark.parametrize("backend_mode", ["reference"])  # resumes its node after every restart
def test_a_bridge_sigkilled_at_random_moments_loses_no_job_and_runs_none_twice(
    stack: Stack, worker: NodeProcess, bridge_process: BridgeProcess
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    jobs = [stack.job(script=f"print('job {i} done')") for i in range(6)]
    bridge_process.start()
    for registrations, round_jobs in enumerate((jobs[0:2], jobs[2:4], jobs[4:6]), start=1):
        wait_for(lambda n=registrations: registered_times(stack) == n, timeout=30)
        for job in round_jobs:
            stack.backend.send_job(job)
        time.sleep(rng.uniform(0, 1.5))  # anywhere: intake, running, result in flight, ack in flight
        bridge_process.kill()
        bridge_process.start()

    results = results_of(stack, jobs, bridge_process.current)

    assert {result["status"] for result in results.values()} == {"completed"}, seed
    for i, job in enumerate(jobs):  # each result comes from a run of its own job
        assert f"job {i} done" in results[job["id"]]["logs"], seed
    assert_ran_once_and_settled(stack, jobs)
    assert len(stack.backend.nodes()) == 1, seed  # every restart resumed the same node


def registered_times(stack: Stack) -> int:
    nodes = stack.backend.nodes()
    return int(nodes[0]["registrations"]) if nodes and nodes[0]["connected"] else 0


# Redis -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend_mode", ["reference"])  # nothing of the backend's behaviour is at stake
def test_redis_restarted_with_aof_while_jobs_are_queued_loses_none(stack: Stack, tmp_path: Path) -> None:
    aof = RedisProcess(port=free_port(), appendonly=True, directory=tmp_path / "redis")
    (tmp_path / "redis").mkdir()
    aof.start()
    env = node_env(aof.url, stack.backend.url, stack.token, tmp_path, HN_RECONNECT_DELAY="0.1")
    jobs = [stack.job(script=f"import time\ntime.sleep(1)\nprint('queued {i} done')") for i in range(3)]
    try:
        with NodeProcess(env) as node:  # `up`: the bridge and one CPU worker
            stack.wait_registered(60)
            for job in jobs:
                stack.backend.send_job(job)
            wait_for(lambda: stack.backend.jobs() and all(j["state"] != "pending" for j in stack.backend.jobs()))
            wait_for(lambda: aof_redis_queued(aof) >= 2, timeout=30)  # one runs, the others wait

            aof.stop()
            aof.start()  # same port, same directory: the AOF brings the queue back

            results = results_of(stack, jobs, node)
            assert {result["status"] for result in results.values()} == {"completed"}, node.output()[-3000:]
            assert [f"queued {i} done" in results[job["id"]]["logs"] for i, job in enumerate(jobs)] == [True] * 3
            wait_for(lambda: job_containers(node.node_name) == [], timeout=30)
            assert "bridge exited" not in node.output()  # it waited for Redis instead of crashing
            assert "CRITICAL" not in node.output()  # an expected fault, recovered: warnings only
    finally:
        aof.stop()
    for job in jobs:
        copies = stack.backend.results(job["id"])
        assert all(copy == copies[0] for copy in copies)


def test_a_job_whose_message_redis_lost_is_requeued_by_the_reconciler_and_runs_once(
    stack: Stack, worker: NodeProcess
) -> None:
    busy = stack.job(script="import time\ntime.sleep(4)\nprint('busy done')")
    lost = stack.job(script="print('lost done')")
    with BridgeThread(stack.env):
        stack.wait_registered()
        stack.backend.send_job(busy)
        wait_for(lambda: stack.record(busy["id"]).get("state") == "running", timeout=60)
        stack.backend.send_job(lost)  # waits behind the running job: the worker prefetches one
        wait_for(lambda: stack.record(lost["id"]).get("enqueued"), timeout=30)
        queue = stack.record(lost["id"])["queue"]
        [redis_id] = stack.redis.lrange(f"{keys.DRAMATIQ_NAMESPACE}:{queue}", 0, -1)
        # What a Redis that lost its last second of writes leaves: the job queued, its message gone.
        stack.redis.lrem(f"{keys.DRAMATIQ_NAMESPACE}:{queue}", 0, redis_id)
        stack.redis.hdel(f"{keys.DRAMATIQ_NAMESPACE}:{queue}.msgs", redis_id)

        results = results_of(stack, [busy, lost], worker)
        assert "lost done" in results[lost["id"]]["logs"]
        assert_ran_once_and_settled(stack, [busy, lost])
    assert int(stack.redis.hget(keys.RECONCILER, "requeued") or 0) >= 1


def test_redis_refusing_writes_refuses_new_jobs_with_an_error_and_loses_none_accepted_before(
    stack: Stack, worker: NodeProcess
) -> None:
    before = stack.job(script="import time\ntime.sleep(3)\nprint('accepted before')")
    during = stack.job(script="print('never runs')")
    after = stack.job(script="print('after')")
    with BridgeThread(stack.env):
        node_id = stack.wait_registered()
        stack.backend.send_job(before)
        wait_for(lambda: stack.record(before["id"]).get("state") == "running", timeout=60)
        stack.redis.config_set("maxmemory-policy", "noeviction")
        stack.redis.config_set("maxmemory", 1)  # every write refused: out of memory
        try:
            stack.backend.send_job(during)
            refused = results_of(stack, [during], worker)[during["id"]]
            assert (refused["status"], refused["reason"]) == ("error", "node_storage_full")
            assert "Redis refuses writes" in refused["logs"] and "OOM" in refused["logs"]
            beats = len(stack.backend.heartbeats(node_id))

            def said_why() -> bool:
                fresh = stack.backend.heartbeats(node_id)[beats:]
                return any("Redis refuses writes" in line for b in fresh for line in b.stats["unhealthy_slots"])

            wait_for(said_why, timeout=60)  # still beating, and saying why
            assert stack.record(before["id"]).get("state") == "running"  # its result waits for room
        finally:
            stack.redis.config_set("maxmemory", 0)

        results = results_of(stack, [before], worker)
        assert "accepted before" in results[before["id"]]["logs"]
        stack.backend.send_job(after)
        assert results_of(stack, [after], worker)[after["id"]]["status"] == "completed"
        assert_ran_once_and_settled(stack, [before, after])
    assert not stack.redis.exists(keys.JOB.format(job_id=during["id"]))  # never taken in: sent again, it runs
    assert len(stack.backend.results(during["id"])) == 1


def aof_redis_queued(server: RedisProcess) -> int:
    with redis.Redis.from_url(server.url, decode_responses=True) as client:
        return int(client.scard(keys.QUEUED))


# jobs the backend sends twice, and what the heartbeats say about jobs -------------------------------------


def test_a_job_sent_again_is_never_run_again(stack: Stack, worker: NodeProcess) -> None:
    job = stack.job(script="import time\ntime.sleep(2)\nprint('done')")
    with BridgeThread(stack.env):
        stack.wait_registered()
        stack.backend.send_job(job)
        wait_for(lambda: stack.record(job["id"]).get("state") == "running", timeout=30)

        stack.backend.push({"type": "job", **job})  # while it runs: the backend hears where it stands
        if not stack.upstream:  # upstream takes no job_status ("Unknown message type"): it hears nothing
            wait_for(lambda: stack.backend.jobs()[0]["statuses"] == ["running"], timeout=60)
        first = results_of(stack, [job], worker)[job["id"]]
        wait_for(lambda: stack.record(job["id"]).get("state") == "reported", timeout=60)

        stack.backend.push({"type": "job", **job})  # once reported: the same result again, if deduplicated
        if stack.upstream:  # a second copy would be credited again: none goes, and the job stays reported
            wait_for(lambda: len(stack.backend.heartbeats(stack.backend.wait_for_node())) >= 2, timeout=60)
        else:
            wait_for(lambda: len(stack.backend.results(job["id"])) == 2, timeout=60)

    assert stack.backend.results(job["id"]) == ([first] if stack.upstream else [first, first])
    assert stack.backend.credits(job["id"]) == 1
    assert stack.backend.jobs()[0]["statuses"] == ([] if stack.upstream else ["running"])
    assert stack.record(job["id"])["attempt"] == "1"


def test_heartbeats_count_active_queued_completed_and_failed_jobs_and_free_slots(
    stack: Stack, worker: NodeProcess
) -> None:
    slow = stack.job(script="import time\ntime.sleep(2)\nprint('done')")
    waiting = stack.job(script="print('done')")
    failing = stack.job(script="raise SystemExit(3)")
    with BridgeThread(stack.env):
        node_id = stack.wait_registered()

        def latest() -> dict[str, Any]:
            beats = stack.backend.heartbeats(node_id)
            return beats[-1].stats if beats else {}

        before = wait_for(lambda: (s := latest()) and s["free_slots"] == 1 and s, timeout=60)  # one idle worker
        stack.backend.send_job(slow)
        stack.backend.send_job(waiting)
        busy = wait_for(lambda: (s := latest()) and s["active_jobs"] == 1 and s["queued_jobs"] == 1 and s, timeout=30)
        assert busy["free_slots"] == 0
        results_of(stack, [slow, waiting], worker)
        stack.backend.send_job(failing)
        results_of(stack, [failing], worker)

        completed, failed = before["jobs_completed"] + 2, before["jobs_failed"] + 1  # the worker served others
        done = wait_for(
            lambda: (s := latest()) and (s["jobs_completed"], s["jobs_failed"]) == (completed, failed) and s, 15
        )
    assert (done["active_jobs"], done["queued_jobs"], done["free_slots"]) == (0, 0, 1)
