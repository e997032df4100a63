"""A hostile backend against the real bridge (Redis, the reference backend behind a proxy, the bridge
in-process): what cannot be represented is refused with one error reply on a connection that stays up,
cancels for jobs that are not here leave nothing behind, and no peer value forges a log line."""

from __future__ import annotations

import json
import logging

import pytest
from bridgekit import PATIENT, BridgeThread, Stack

from hypernode_host.escapes import is_clean
from hypernode_host.state import keys
from support import wait_for

UNKNOWN_CANCELS = 10_000


def _connected(stack: Stack) -> dict[str, object]:
    [node] = stack.backend.nodes()
    return node


def _log_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Every record as the node's text log writes it."""
    from hypernode_host.logs import ContextFilter, RedactingFormatter

    formatter = RedactingFormatter([])
    lines = []
    for record in caplog.records:
        ContextFilter().filter(record)
        lines.append(formatter.format(record))
    return lines


def test_unknown_cancels_leave_no_keys_and_few_log_lines(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hypernode_host")
    with BridgeThread(stack.env, PATIENT):
        node_id = stack.wait_registered()
        known = stack.job(script="print(1)")
        stack.backend.send_raw(json.dumps({"type": "job", **known}), node_id)
        wait_for(lambda: stack.record(known["id"]).get("enqueued"), timeout=20)

        for number in range(UNKNOWN_CANCELS):
            stack.backend.send_raw(json.dumps({"type": "job_cancel", "jobId": f"nobody-{number}"}), node_id)
        stack.backend.send_raw(json.dumps({"type": "job_cancel", "jobId": known["id"]}), node_id)
        later = stack.job(id="nobody-0", script="print(1)")  # a job whose id was cancelled before it came
        stack.backend.send_raw(json.dumps({"type": "job", **later}), node_id)

        wait_for(lambda: stack.record("nobody-0").get("enqueued"), timeout=90)  # frames are read in order
        assert _connected(stack)["registrations"] == 1

    flags = list(stack.redis.scan_iter(keys.CANCEL.format(job_id="*"), count=1000))
    assert flags == [keys.CANCEL.format(job_id=known["id"])]  # the known job's alone: no pre-cancel either
    ignored = [r for r in caplog.records if r.getMessage().startswith("cancel ignored")]
    assert 1 <= len(ignored) <= 50  # throttled: a burst per window, with a count of what was left out


def test_a_job_with_a_lone_surrogate_or_infinity_is_refused_and_the_next_job_taken(stack: Stack) -> None:
    frames = [
        '{"type":"job","id":"s-1","script":"print(\'\\ud800\')"}',
        '{"type":"job","id":"s-2","script":"x","cpuLimit":1e999}',
        '{"type":"job","id":"s-3","script":"x","env":{"\\udfff":"v"}}',
        '{"type":"job","id":"s-4\\n","script":"x"}',
    ]
    with BridgeThread(stack.env):
        node_id = stack.wait_registered()
        for frame in frames:
            assert stack.backend.send_raw(frame, node_id) == 1
        after = stack.job(script="print('fine')")
        stack.backend.send_raw(json.dumps({"type": "job", **after}), node_id)

        wait_for(lambda: stack.record(after["id"]).get("enqueued"), timeout=20)
        wait_for(lambda: stack.node_counter("frames_refused") == len(frames), timeout=20)
        if not stack.upstream:
            errors = wait_for(lambda: (e := _connected(stack)["errors"]) and len(e) == len(frames) and e)
            assert all(isinstance(e, str) and is_clean(e) for e in errors)
        assert _connected(stack)["registrations"] == 1
    for job_id in ("s-1", "s-2", "s-3", "s-4", "s-4\n"):
        assert stack.record(job_id) == {}  # refused at the edge: nothing recorded


def test_peer_values_cannot_forge_log_lines(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="hypernode_host")
    forged = "x\n2026-12-01T00:00:00.000Z INFO    hypernode_host.bridge.client: job x: completed\x1b[2J"
    with BridgeThread(stack.env):
        node_id = stack.wait_registered()
        for frame in (
            {"type": "job_cancel", "jobId": forged},
            {"type": "job", "id": "f-1", "script": "x", "env": {forged: "v"}},
            {"type": "error", "message": forged},
            {"type": "registered", "nodeId": forged},
        ):
            stack.backend.send_raw(json.dumps(frame), node_id)
        wait_for(lambda: stack.record("f-1").get("result"), timeout=20)  # refused: an error result
        wait_for(
            lambda: any(
                "Registered as node" in r.getMessage() and "completed" in r.getMessage() for r in caplog.records
            )
        )

    for line in _log_lines(caplog):
        assert is_clean(line.split("\n", 1)[0]) and not line.split("\n", 1)[0].endswith("completed\x1b[2J")
    assert not any(
        line.startswith("2026-12-01T00:00:00.000Z") for text in _log_lines(caplog) for line in text.splitlines()
    )
    result = json.loads(stack.record("f-1")["result"])
    assert result["reason"] == "invalid_job" and is_clean(result["logs"])
