"""The reference backend over a real WebSocket, driven by a plain ``websockets`` client acting as a node.

Every receive is bounded by ``asyncio.wait_for``; every socket and the backend thread are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from hypernode_host.backend.harness import BackendThread
from hypernode_host.backend.server import run_backend
from hypernode_host.backend.submit import build_job, submit_job
from hypernode_host.core import messages, proofs, receipts
from hypernode_host.errors import BackendUnreachable, ConfigError, RequestRefused, SubmitRefused

TIMEOUT = 5.0
TOKENS = ("tok-1", "tok-2", "tok-3")


@pytest.fixture
def backend() -> Iterator[BackendThread]:
    with BackendThread("127.0.0.1", 0, TOKENS) as thread:
        yield thread


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


@contextlib.asynccontextmanager
async def client(backend: BackendThread) -> AsyncIterator[ClientConnection]:
    async with connect(backend.url, open_timeout=TIMEOUT, close_timeout=TIMEOUT) as connection:
        yield connection


async def recv(connection: ClientConnection) -> dict[str, Any]:
    frame = await asyncio.wait_for(connection.recv(), TIMEOUT)
    value: dict[str, Any] = json.loads(frame)
    return value


async def request(connection: ClientConnection, message: dict[str, Any] | str | bytes) -> dict[str, Any]:
    await connection.send(message if isinstance(message, str | bytes) else json.dumps(message))
    return await recv(connection)


async def nothing_more(connection: ClientConnection) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(connection.recv(), 0.3)


def host_info() -> dict[str, Any]:
    gpu = messages.gpu_entry(0, "GPU-00000000-0000-0000-0000-000000000000", "Sim GPU", 24_576, 24_000, 0)
    return {
        "hostname": "rig-1",
        "os": "Linux",
        "os_version": "6.1.0",
        "arch": "x86_64",
        "gpus": [gpu.model_dump(mode="json")],
        "docker_version": "24.0.0",
        "agent_version": "test",
    }


def register(token: Any = "tok-1", **extra: Any) -> dict[str, Any]:
    return {"type": "register", "token": token, "hostInfo": host_info(), **extra}


def heartbeat(node_id: str | None) -> dict[str, Any]:
    stats = {"jobs_completed": 0, "jobs_failed": 0, "total_uptime": 1, "active_jobs": 0, "gpus": []}
    return {"type": "heartbeat", "nodeId": node_id, "timestamp": "2025-01-01T00:00:00Z", "stats": stats}


def signed_result(job_frame: dict[str, Any], node_id: str, key: proofs.NodeKey) -> dict[str, Any]:
    """What an honest node sends for a job it ran, computed from the job frame it received."""
    job = {name: value for name, value in job_frame.items() if name != "type"}
    now = time.time_ns() // 1_000_000
    logs = "working\njob done\n"
    result: dict[str, Any] = {
        "type": "job_result",
        "id": job["id"],
        "nodeId": node_id,
        "status": "completed",
        "success": True,
        "logs": logs,
        "exitCode": 0,
        "startedAt": now - 50,
        "completedAt": now,
        "image": "sha256:" + "cd" * 32,
        "jobDigest": proofs.job_digest(job),
        "logsHash": proofs.logs_hash(logs),
        "fullLogsHash": proofs.logs_hash(logs),
        "logBytes": len(logs),
        "truncated": False,
        "oomKilled": False,
        "durationMs": 50,
        "nodePublicKey": key.public_key_b58,
        "receipt": receipts.receipt(receipts.RunFacts(agent_version="test")),
    }
    result["executionHash"] = proofs.execution_hash({**result, "jobId": result["id"]})
    result["signature"] = key.sign_hex_digest(result["executionHash"])
    return receipts.seal(result, key)


async def registered_node(
    backend: BackendThread, token: str = "tok-1", key: proofs.NodeKey | None = None
) -> tuple[ClientConnection, str]:
    connection = await connect(backend.url, open_timeout=TIMEOUT, close_timeout=TIMEOUT)
    extra = {"nodePublicKey": key.public_key_b58} if key else {}
    reply = await request(connection, register(token, **extra))
    assert reply["type"] == "registered", reply
    return connection, reply["nodeId"]


# registration and heartbeats -------------------------------------------------------------------------


def test_register_refusals_use_upstream_texts_and_keep_the_socket_open(backend: BackendThread) -> None:
    async def scenario() -> None:
        async with client(backend) as node:
            assert await request(node, {"type": "register", "hostInfo": host_info()}) == {
                "type": "error",
                "message": "Token is required",
            }
            assert (await request(node, register("")))["message"] == "Token is required"
            assert (await request(node, register("not-a-token")))["message"] == "Invalid token"
            assert (await request(node, heartbeat(None)))["message"] == "Invalid node ID"

            reply = await request(node, register("tok-1"))

            assert reply["type"] == "registered"
            assert reply["message"] == "Successfully registered"
            assert uuid.UUID(reply["nodeId"]).version == 4

    run(scenario())


def test_heartbeats_are_acked_only_for_the_node_on_this_socket(backend: BackendThread) -> None:
    async def scenario() -> None:
        node, node_id = await registered_node(backend)
        async with node:
            assert await request(node, heartbeat(node_id)) == {"type": "ack"}
            assert (await request(node, heartbeat("someone-else")))["message"] == "Invalid node ID"
            assert await request(node, heartbeat(node_id)) == {"type": "ack"}

        beats = backend.heartbeats(node_id)
        assert len(beats) == 2
        assert beats[0].monotonic <= beats[1].monotonic
        assert beats[0].stats["total_uptime"] == 1
        [summary] = backend.nodes()
        assert (summary["nodeId"], summary["hostname"], summary["heartbeats"]) == (node_id, "rig-1", 2)
        assert summary["lastHeartbeatAt"] == beats[1].wall_ms

    run(scenario())


def test_a_token_is_single_use_except_to_resume_its_own_node(backend: BackendThread) -> None:
    async def scenario() -> None:
        first, node_id = await registered_node(backend)
        async with first, client(backend) as second:
            assert (await request(second, register("tok-1")))["message"] == "Token already used"
            stale = register("tok-1", nodeId=str(uuid.uuid4()))
            assert (await request(second, stale))["message"] == "Token already used"

            reply = await request(second, register("tok-1", nodeId=node_id))

            assert reply == {
                "type": "registered",
                "nodeId": node_id,
                "message": "Successfully registered",
                "capabilities": ["result_ids", "dedupe", "job_status", "errors"],
            }
            await first.close()  # the replaced socket going away must not take the node offline
            await asyncio.sleep(0.2)
            assert await request(second, heartbeat(node_id)) == {"type": "ack"}
            assert [(n["nodeId"], n["connected"]) for n in backend.nodes()] == [(node_id, True)]

    run(scenario())


def test_a_register_with_a_bad_host_info_is_refused_without_using_the_token(backend: BackendThread) -> None:
    async def scenario() -> None:
        async with client(backend) as node:
            reply = await request(node, {"type": "register", "token": "tok-2", "hostInfo": {"hostname": 1}})
            assert reply["type"] == "error"
            assert reply["message"].startswith("bad register message: hostInfo")
            assert (await request(node, register("tok-2")))["type"] == "registered"

    run(scenario())


# malformed frames ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        ("this is not json", "Invalid message format"),
        ("[1, 2]", "Invalid message format"),
        ('{"type": "bogus"}', "Unknown message type"),
        ('{"type": "submit", "job": {}}', "Unknown message type"),  # a node is not a submitter
        ('{"no": "type"}', "message has no 'type'"),
        ('{"type": "ack", "type": "ack"}', "duplicate field 'type'"),
        (b"\x00\x01binary", "binary frames are not accepted; send JSON text"),
    ],
)
def test_a_bad_frame_gets_an_error_and_the_connection_stays_usable(
    backend: BackendThread, frame: str | bytes, error: str
) -> None:
    async def scenario() -> None:
        node, node_id = await registered_node(backend)
        async with node:
            assert await request(node, frame) == {"type": "error", "message": error}
            assert await request(node, heartbeat(node_id)) == {"type": "ack"}

    run(scenario())


def test_a_result_for_a_job_never_sent_is_refused_naming_it(backend: BackendThread) -> None:
    async def scenario() -> None:
        node, _ = await registered_node(backend)
        async with node:
            reply = await request(node, {"type": "job_result", "id": "never-sent"})
            assert reply == {"type": "error", "message": "Job not found", "id": "never-sent"}  # result_ids
        assert backend.refused_results("never-sent") == 1

    run(scenario())


def test_a_heartbeat_with_bad_stats_names_the_field(backend: BackendThread) -> None:
    async def scenario() -> None:
        node, node_id = await registered_node(backend)
        async with node:
            bad = {**heartbeat(node_id), "stats": {"jobs_completed": "many"}}
            reply = await request(node, bad)
            assert reply["type"] == "error"
            assert reply["message"].startswith("bad heartbeat message: stats.")
            assert await request(node, heartbeat(node_id)) == {"type": "ack"}

    run(scenario())


# jobs and results ----------------------------------------------------------------------------------


def test_a_submitted_job_runs_and_the_submitter_gets_a_verified_result(backend: BackendThread) -> None:
    key = proofs.NodeKey.generate()

    async def scenario() -> None:
        node, node_id = await registered_node(backend, key=key)
        async with node, client(backend) as submitter:
            job = {"script": "print('done')", "estimatedTime": 60, "cpuLimit": 1.5}
            submitted = await request(submitter, {"type": "submit", "job": job, "wait": True})
            assert submitted["type"] == "submitted"
            job_id = submitted["id"]

            job_frame = await recv(node)
            assert job_frame == {"type": "job", **job, "id": job_id}

            result = signed_result(job_frame, node_id, key)
            ack = await request(node, result)
            # (ext) with the credit: one for a job's first result
            assert ack == {"type": "ack", "id": job_id, "message": "Job result received", "credit": 1.0}

            delivered = await recv(submitter)
            assert delivered["type"] == "result"
            assert delivered["id"] == job_id
            assert delivered["result"] == result
            assert delivered["verification"]["verified"] is True, delivered["verification"]["reasons"]

            # A replay (the node's outbox after a reconnect) is acked and kept, not delivered again.
            replayed = await request(node, result)
            assert (replayed["id"], replayed["credit"]) == (job_id, 0.0)  # a copy is credited nothing
            assert backend.results(job_id) == [result, result]
            await nothing_more(submitter)

            verification = backend.verification(job_id)
            assert verification is not None and verification.verified
            status = await request(submitter, {"type": "status"})
            assert status["jobs"] == [
                {"id": job_id, "nodeId": node_id, "state": "finished", "status": "completed", "verified": True}
                | {"credits": 1}  # the replay is not credited again: this backend deduplicates
            ]
            assert status["nodes"][0]["nodeId"] == node_id
            assert status["nodes"][0]["connected"] is True

            late = await request(submitter, {"type": "wait", "id": job_id})  # result already there
            assert late["verification"]["verified"] is True

    run(scenario())


def test_a_forged_result_is_acked_but_not_verified(backend: BackendThread) -> None:
    key, forger = proofs.NodeKey.generate(), proofs.NodeKey.generate()

    async def scenario() -> None:
        node, node_id = await registered_node(backend, key=key)
        async with node:
            job_id = backend.send_job({"id": "forged-1", "command": "true"})
            result = signed_result(await recv(node), node_id, forger)

            assert (await request(node, result))["id"] == job_id

        verification = backend.verification(job_id)
        assert verification is not None
        assert verification.failed == ["nodeKeyMatches"]  # self-consistent, but not the key the node registered

    run(scenario())


def test_an_incomplete_result_is_recorded_and_graded(backend: BackendThread) -> None:
    async def scenario() -> None:
        node, node_id = await registered_node(backend)
        async with node:
            job_id = backend.send_job({"id": "upstream-1", "command": "sleep 5"})
            await recv(node)
            upstream_style = {"type": "job_result", "id": job_id, "nodeId": node_id, "status": "error"}

            assert (await request(node, upstream_style))["type"] == "ack"

        verification = backend.verification(job_id)
        assert verification is not None and not verification.verified

    run(scenario())


def test_a_job_waits_for_a_node_and_is_dispatched_when_one_registers(backend: BackendThread) -> None:
    async def scenario() -> None:
        job_id = backend.send_job({"id": "pending-1", "command": "echo hi"})
        assert [(j["id"], j["state"], j["nodeId"]) for j in backend.jobs()] == [(job_id, "pending", None)]

        node, node_id = await registered_node(backend)
        async with node:
            assert await recv(node) == {"type": "job", "id": "pending-1", "command": "echo hi"}
            [job] = backend.jobs()
            assert (job["state"], job["nodeId"]) == ("dispatched", node_id)

    run(scenario())


def test_jobs_go_round_robin_to_connected_nodes(backend: BackendThread) -> None:
    async def scenario() -> None:
        first, _ = await registered_node(backend, "tok-1")
        second, _ = await registered_node(backend, "tok-2")
        async with first, second:
            backend.send_job({"id": "rr-1", "command": "true"})
            backend.send_job({"id": "rr-2", "command": "true"})
            ids = {(await recv(first))["id"], (await recv(second))["id"]}
            assert ids == {"rr-1", "rr-2"}

    run(scenario())


def test_submit_refuses_a_duplicate_id_and_a_missing_job(backend: BackendThread) -> None:
    async def scenario() -> None:
        async with client(backend) as submitter:
            job = {"id": "dup-1", "command": "true"}
            assert await request(submitter, {"type": "submit", "job": job}) == {"type": "submitted", "id": "dup-1"}
            again = await request(submitter, {"type": "submit", "job": job})
            assert again == {"type": "error", "message": "Duplicate job id"}
            assert (await request(submitter, {"type": "submit"}))["type"] == "error"
        with pytest.raises(RequestRefused, match="Duplicate job id"):
            backend.send_job(job)

    run(scenario())


def test_cancel_forwards_job_cancel_to_the_node_holding_the_job(backend: BackendThread) -> None:
    async def scenario() -> None:
        node, _ = await registered_node(backend)
        async with node, client(backend) as submitter:
            submitted = await request(submitter, {"type": "submit", "job": {"command": "sleep 60"}})
            job_id = submitted["id"]
            assert (await recv(node))["id"] == job_id

            reply = await request(submitter, {"type": "cancel", "id": job_id})

            assert reply == {"type": "cancel_sent", "id": job_id}
            assert await recv(node) == {"type": "job_cancel", "jobId": job_id}
            assert [j["state"] for j in backend.jobs()] == ["cancel_sent"]
            missing = await request(submitter, {"type": "cancel", "id": "no-such-job"})
            assert missing == {"type": "error", "message": "Job not found"}

            backend.cancel(job_id)
            assert await recv(node) == {"type": "job_cancel", "jobId": job_id}

    run(scenario())


def test_a_resumed_node_gets_its_unanswered_jobs_again_in_dispatch_order(backend: BackendThread) -> None:
    key = proofs.NodeKey.generate()

    async def scenario() -> None:
        first, node_id = await registered_node(backend, key=key)
        async with first:
            for job_id in ("re-1", "re-2", "re-3"):
                backend.send_job({"id": job_id, "command": "true"})
            frames = [await recv(first) for _ in range(3)]
            await first.send(json.dumps(signed_result(frames[1], node_id, key)))  # re-2 is answered
            assert (await recv(first))["id"] == "re-2"

        async with client(backend) as second:
            reply = await request(second, register("tok-1", nodeId=node_id, nodePublicKey=key.public_key_b58))
            assert reply["type"] == "registered"

            again = [await recv(second), await recv(second)]

            assert [frame["id"] for frame in again] == ["re-1", "re-3"]
            assert again[0] == frames[0]  # the same job, byte for byte: it fixes the jobDigest
            await nothing_more(second)
        dispatches = {job["id"]: job["dispatches"] for job in backend.jobs()}
        assert dispatches == {"re-1": 2, "re-2": 1, "re-3": 2}
        [node] = backend.nodes()
        assert node["registrations"] == 2

    run(scenario())


def test_without_redispatch_a_resumed_node_gets_no_old_jobs() -> None:
    async def scenario(backend: BackendThread) -> None:
        first, node_id = await registered_node(backend)
        async with first:
            backend.send_job({"id": "once-1", "command": "true"})
            await recv(first)
        async with client(backend) as second:
            assert (await request(second, register("tok-1", nodeId=node_id)))["type"] == "registered"
            await nothing_more(second)

    with BackendThread("127.0.0.1", 0, TOKENS, redispatch_on_resume=False) as quiet:
        run(scenario(quiet))


def test_a_job_status_from_the_node_holding_the_job_is_recorded(backend: BackendThread) -> None:
    async def scenario() -> None:
        node, node_id = await registered_node(backend)
        async with node:
            job_id = backend.send_job({"id": "st-1", "command": "sleep 5"})
            await recv(node)
            await node.send(json.dumps({"type": "job_status", "id": job_id, "nodeId": node_id, "state": "running"}))
            other = {"type": "job_status", "id": "no-such-job", "nodeId": node_id, "state": "queued"}
            assert await request(node, other) == {"type": "error", "message": "Job not found"}
            bad = await request(node, {"type": "job_status", "id": job_id, "nodeId": node_id, "state": "asleep"})
            assert bad["message"].startswith("bad job_status message: state")

        assert [job["statuses"] for job in backend.jobs()] == [["running"]]

    run(scenario())


def test_an_error_frame_from_a_node_is_recorded_and_never_answered(backend: BackendThread) -> None:
    async def scenario() -> None:
        node, node_id = await registered_node(backend)
        async with node:
            await node.send(json.dumps({"type": "error", "message": "Unknown message type 'bogus'"}))
            await node.send(json.dumps({"type": "error", "message": 7}))  # not even a valid error
            await nothing_more(node)
            assert await request(node, heartbeat(node_id)) == {"type": "ack"}

        assert backend.nodes()[0]["errors"] == ["Unknown message type 'bogus'"]

    run(scenario())


# helpers for bridge tests ------------------------------------------------------------------------


def test_thread_helpers_push_raw_frames_ping_and_disconnect(backend: BackendThread) -> None:
    async def scenario() -> None:
        node, node_id = await registered_node(backend)
        async with node:
            assert backend.send_raw("{not json") == 1
            assert await asyncio.wait_for(node.recv(), TIMEOUT) == "{not json"
            assert backend.push({"type": "job", "id": "raw"}, node_id) == 1
            assert await recv(node) == {"type": "job", "id": "raw"}

            assert backend.ping() == 1
            assert await recv(node) == {"type": "ping"}
            await node.send(json.dumps({"type": "pong"}))
            await asyncio.to_thread(backend.wait_until, lambda: backend.nodes()[0]["pongs"] == 1, TIMEOUT)

            assert backend.disconnect(node_id) == 1
            await asyncio.wait_for(node.wait_closed(), TIMEOUT)
            await asyncio.to_thread(backend.wait_until, lambda: not backend.nodes()[0]["connected"], TIMEOUT)
            assert backend.push({"type": "ping"}) == 0

    run(scenario())


def test_with_acks_off_a_result_is_recorded_but_not_acked(backend: BackendThread) -> None:
    key = proofs.NodeKey.generate()

    async def scenario() -> None:
        backend.set_ack_results(False)
        node, node_id = await registered_node(backend, key=key)
        async with node:
            job_id = backend.send_job({"id": "unacked-1", "command": "true"})
            await node.send(json.dumps(signed_result(await recv(node), node_id, key)))
            await nothing_more(node)
            assert len(backend.results(job_id)) == 1

    run(scenario())


# --upstream: the published prototype's behaviour ----------------------------------------------------


@pytest.fixture
def upstream() -> Iterator[BackendThread]:
    with BackendThread("127.0.0.1", 0, TOKENS, upstream=True, demo_job_after_s=None) as thread:
        yield thread


def test_upstream_tokens_are_single_use_and_a_node_id_resumes_nothing(upstream: BackendThread) -> None:
    async def scenario() -> None:
        first, node_id = await registered_node(upstream)
        async with first, client(upstream) as second:
            assert await request(second, register("tok-1", nodeId=node_id)) == {
                "type": "error",
                "message": "Token already used",
            }
            reply = await request(second, register("tok-2", nodeId=node_id))
            assert reply["type"] == "registered" and reply["nodeId"] != node_id
            assert reply == {"type": "registered", "nodeId": reply["nodeId"], "message": "Successfully registered"}
        assert upstream.registers_refused() == 1
        assert len(upstream.nodes()) == 2

    run(scenario())


def test_upstream_answers_every_frame_in_order_without_ids(upstream: BackendThread) -> None:
    key = proofs.NodeKey.generate()

    async def scenario() -> None:
        node, node_id = await registered_node(upstream, key=key)
        async with node:
            upstream.send_job({"id": "up-1", "command": "true"})
            result = signed_result(await recv(node), node_id, key)
            frames = [
                heartbeat(node_id),
                {"type": "job_result", "id": "never-sent"},
                result,
                {"type": "pong"},
                {"type": "job_status", "id": "up-1", "nodeId": node_id, "state": "running"},
                {"type": "error", "message": "a frame the node refused"},
                heartbeat("another-node"),
                result,  # again: credited again
            ]
            for frame in frames:
                await node.send(json.dumps(frame))
            replies = [await recv(node) for _ in frames]
            await nothing_more(node)

        unknown = {"type": "error", "message": "Unknown message type"}
        received = {"type": "ack", "message": "Job result received"}
        assert replies == [
            {"type": "ack"},
            {"type": "error", "message": "Job not found"},
            received,
            unknown,
            unknown,
            unknown,
            {"type": "error", "message": "Invalid node ID"},
            received,
        ]
        assert upstream.credits("up-1") == 2 and len(upstream.results("up-1")) == 2  # not idempotent
        assert upstream.refused_results("never-sent") == 1

    run(scenario())


def test_upstream_sends_a_demo_job_after_each_register() -> None:
    async def scenario(backend: BackendThread) -> None:
        node, node_id = await registered_node(backend)
        async with node:
            job = await asyncio.wait_for(node.recv(), TIMEOUT)
            frame = json.loads(job)
            assert set(frame) == {"type", "id", "command"}
            assert (frame["type"], frame["command"]) == ("job", "sleep 5")
            uuid.UUID(frame["id"])
            ack = await request(node, {"type": "job_result", "id": frame["id"], "status": "completed", "logs": ""})
            assert ack == {"type": "ack", "message": "Job result received"}  # a job it knows
        assert backend.credits(frame["id"]) == 1
        assert [j["nodeId"] for j in backend.jobs()] == [node_id]

    with BackendThread("127.0.0.1", 0, TOKENS, upstream=True, demo_job_after_s=0.1) as backend:
        run(scenario(backend))


def test_upstream_sends_no_demo_job_to_a_node_gone_before_it_is_due() -> None:
    async def scenario(backend: BackendThread) -> None:
        node, _ = await registered_node(backend)
        await node.close()
        await asyncio.sleep(0.5)
        assert backend.jobs() == []

    with BackendThread("127.0.0.1", 0, TOKENS, upstream=True, demo_job_after_s=0.2) as backend:
        run(scenario(backend))


def test_dev_backend_upstream_behaves_as_upstream() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = [sys.executable, "-m", "hypernode_host", "dev-backend", "--upstream", "--port", str(port), "--token", "t1"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HN_LOG_LEVEL": "INFO"}
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as process:
        try:
            assert process.stdout is not None
            for line in iter(process.stdout.readline, ""):
                if "(as upstream's published backend)" in line:
                    break

            async def register_twice() -> list[dict[str, Any]]:
                async with connect(f"ws://127.0.0.1:{port}", open_timeout=TIMEOUT) as node:
                    first = await request(node, register("t1"))
                    return [first, await request(node, register("t1", nodeId=first["nodeId"]))]

            registered, again = run(register_twice())
            assert set(registered) == {"type", "nodeId", "message"}  # no capabilities
            assert again == {"type": "error", "message": "Token already used"}
            process.send_signal(signal.SIGTERM)
            assert process.wait(TIMEOUT) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(TIMEOUT)


def test_a_second_backend_on_a_taken_port_fails_to_start(backend: BackendThread) -> None:
    with pytest.raises(OSError), BackendThread("127.0.0.1", backend.port, TOKENS):
        pass


def test_a_stopped_backend_refuses_helper_calls() -> None:
    with BackendThread("127.0.0.1", 0, TOKENS) as stopped:
        pass

    with pytest.raises(RuntimeError, match="not started"):
        stopped.nodes()


def test_an_error_quoting_a_peer_supplied_name_is_bounded(backend: BackendThread) -> None:
    async def scenario() -> None:
        async with client(backend) as node:
            reply = await request(node, register("tok-2", capacity={"k" * 100_000: "not a number"}))
            assert reply["type"] == "error"
            assert reply["message"].startswith("bad register message: capacity.kkk")
            assert len(reply["message"]) <= 300

    run(scenario())


# submit.py -----------------------------------------------------------------------------------------


async def answer_one_job(node: ClientConnection, node_id: str, key: proofs.NodeKey) -> None:
    await node.send(json.dumps(signed_result(await recv(node), node_id, key)))
    await recv(node)  # the ack


def test_submit_job_waits_for_the_verified_result(backend: BackendThread) -> None:
    key = proofs.NodeKey.generate()

    async def scenario() -> None:
        node, node_id = await registered_node(backend, key=key)
        async with node:
            job = build_job(script="print('done')", estimated_time=30, job_id="cli-1")
            answering = asyncio.create_task(answer_one_job(node, node_id, key))

            outcome = await submit_job(backend.url, job, wait=True, wait_timeout=TIMEOUT)

            await asyncio.wait_for(answering, TIMEOUT)
            assert outcome["id"] == "cli-1"
            assert outcome["result"]["status"] == "completed"
            assert outcome["verification"]["verified"] is True

    run(scenario())


def test_submit_job_without_wait_returns_the_id_only(backend: BackendThread) -> None:
    outcome = run(submit_job(backend.url, {"command": "true"}, wait=False, wait_timeout=TIMEOUT))

    assert outcome["result"] is None and outcome["verification"] is None
    assert [j["id"] for j in backend.jobs()] == [outcome["id"]]


def test_submit_job_times_out_when_no_result_comes(backend: BackendThread) -> None:
    with pytest.raises(TimeoutError, match="no result for job"):
        run(submit_job(backend.url, {"command": "true"}, wait=True, wait_timeout=0.2))


def test_submit_job_reports_a_refusal(backend: BackendThread) -> None:
    backend.send_job({"id": "taken", "command": "true"})

    with pytest.raises(SubmitRefused, match="Duplicate job id"):
        run(submit_job(backend.url, {"id": "taken", "command": "true"}, wait=False, wait_timeout=TIMEOUT))


def test_submit_job_to_nothing_raises_a_connection_error() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago, with nobody listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    with pytest.raises(BackendUnreachable, match="cannot connect") as caught:
        run(submit_job(f"ws://127.0.0.1:{port}", {"command": "true"}, wait=False, wait_timeout=1))
    assert isinstance(caught.value, OSError)


def test_build_job_uses_upstream_names_and_omits_what_was_not_given() -> None:
    job = build_job(command="nvidia-smi", image="cuda:12", memory="4g", cpus=2.0, gpu=True, timeout=60)

    assert job == {
        "command": "nvidia-smi",
        "image": "cuda:12",
        "memoryLimit": "4g",
        "cpuLimit": 2.0,
        "gpuRequired": True,
        "timeout": 60,
    }
    with pytest.raises(ValueError, match="exactly one"):
        build_job(script="print(1)", command="true")
    with pytest.raises(ValueError, match="exactly one"):
        build_job()


# the dev-backend entry point -------------------------------------------------------------------------


def test_run_backend_needs_a_token() -> None:
    with pytest.raises(ConfigError):
        run_backend("127.0.0.1", 0, [])


def test_run_backend_logs_its_url_and_stops_on_sigterm() -> None:
    program = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stdout, format='%(message)s')\n"
        "from hypernode_host.backend.server import run_backend\n"
        "run_backend('127.0.0.1', 0, ['secret-token'])\n"
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        [sys.executable, "-c", program], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    ) as process:
        try:
            assert process.stdout is not None
            match = None
            for line in iter(process.stdout.readline, ""):  # websockets logs its own lines too
                match = re.fullmatch(r"reference backend listening on (ws://127\.0\.0\.1:\d+)\n", line)
                if match:
                    break
            assert match

            async def register_once() -> dict[str, Any]:
                async with connect(match.group(1), open_timeout=TIMEOUT) as node:
                    return await request(node, register("secret-token"))

            assert run(register_once())["type"] == "registered"
            process.send_signal(signal.SIGTERM)
            assert process.wait(TIMEOUT) == 0
            assert "secret-token" not in process.stdout.read()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(TIMEOUT)
