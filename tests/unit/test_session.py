"""The Sans-I/O session and the wire codec: frames in, events and messages out, no sockets."""

from __future__ import annotations

import json

import pytest

from hypernode_host import messages
from hypernode_host.bridge.session import (
    AuthFailed,
    BackendError,
    BadFrame,
    CancelRequested,
    JobReceived,
    JobRefused,
    RegisteredEvent,
    ResultAcked,
    Send,
    Session,
    State,
)
from hypernode_host.errors import ProtocolError
from hypernode_host.messages import HeartbeatStats, HostInfo

HOST = HostInfo(
    hostname="rig-1",
    os="Linux",
    os_version="6.1",
    arch="x86_64",
    gpus=[],
    docker_version="20.10",
    agent_version="0.1.0",
)
STATS = HeartbeatStats(jobs_completed=1, jobs_failed=0, total_uptime=5, active_jobs=0, gpus=[])


def registered_session() -> Session:
    session = Session("secret-token", None, "PUBKEY")
    session.receive('{"type":"registered","nodeId":"node-1","message":"Successfully registered"}')
    return session


def test_register_carries_token_key_and_previous_node_id() -> None:
    register = Session("secret-token", "node-0", "PUBKEY").register(HOST, {"slots": 2})
    frame = json.loads(messages.encode(register))
    assert frame["type"] == "register" and frame["token"] == "secret-token"
    assert frame["nodeId"] == "node-0" and frame["nodePublicKey"] == "PUBKEY"
    assert frame["hostInfo"]["hostname"] == "rig-1"
    assert "secret-token" not in repr(register) and "secret-token" not in str(register)


def test_no_heartbeat_before_registered() -> None:
    session = Session("t", None, "K")
    assert session.heartbeat("2026-01-01T00:00:00.000Z", STATS) is None
    events = session.receive('{"type":"registered","nodeId":"node-1"}')
    assert events == [RegisteredEvent("node-1")]
    assert session.state is State.REGISTERED
    beat = session.heartbeat("2026-01-01T00:00:00.000Z", STATS)
    assert beat is not None and beat.nodeId == "node-1"


def test_ping_is_answered_with_pong() -> None:
    assert registered_session().receive('{"type":"ping"}') == [Send(messages.Pong())]


def test_job_frame_becomes_job_received_with_its_fields() -> None:
    events = registered_session().receive('{"type":"job","id":"j-1","command":"sleep 5"}')
    assert events == [JobReceived("j-1", {"id": "j-1", "command": "sleep 5"})]


def test_job_id_alias_jobid_is_accepted() -> None:
    [event] = registered_session().receive('{"type":"job","jobId":"j-2","script":"print(1)"}')
    assert isinstance(event, JobReceived) and event.job_id == "j-2"


@pytest.mark.parametrize("bad_id", ['"../etc"', '""', '"' + "x" * 65 + '"', "7", "null"])
def test_job_without_a_usable_id_is_refused_with_an_error(bad_id: str) -> None:
    events = registered_session().receive('{"type":"job","id":%s,"script":"x"}' % bad_id)
    assert isinstance(events[0], JobRefused)
    assert isinstance(events[1], Send) and events[1].message.type == "error"  # type: ignore[attr-defined]


def test_cancel_names_the_job() -> None:
    assert registered_session().receive('{"type":"job_cancel","jobId":"j-1"}') == [CancelRequested("j-1")]


def test_ack_with_id_settles_that_result() -> None:
    session = registered_session()
    session.result_sent("a")
    session.result_sent("b")
    assert session.receive('{"type":"ack","id":"b"}') == [ResultAcked("b")]
    assert session.in_flight == ("a",)


def test_upstream_ack_without_id_settles_the_oldest_result() -> None:
    session = registered_session()
    session.result_sent("a")
    session.result_sent("b")
    assert session.receive('{"type":"ack","message":"Job result received"}') == [ResultAcked("a")]
    assert session.receive('{"type":"ack"}') == []  # a heartbeat ack settles nothing
    assert session.in_flight == ("b",)


@pytest.mark.parametrize("reason", ["Invalid token", "Token already used", "Token is required"])
def test_auth_errors_while_registering_stop_the_session(reason: str) -> None:
    session = Session("t", None, "K")
    assert session.receive(json.dumps({"type": "error", "message": reason})) == [AuthFailed(reason)]
    assert session.state is State.REFUSED


def test_other_backend_errors_are_reported_not_fatal() -> None:
    session = registered_session()
    assert session.receive('{"type":"error","message":"Job not found"}') == [BackendError("Job not found")]
    assert session.state is State.REGISTERED


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("not json", "Invalid message format: not JSON"),
        ("[1]", "expected a JSON object"),
        ('{"no":"type"}', "message has no 'type'"),
        ('{"type":"bogus"}', "Unknown message type 'bogus'"),
        ('{"type":"ping","type":"ping"}', "duplicate field 'type'"),
        ('{"type":"ack","id":NaN}', "NaN is not allowed"),
        ('{"type":"job_cancel"}', "bad job_cancel message: jobId: Field required"),
        (b"\x00\x01", "binary frames are not accepted"),
        ("[" * 100 + "]" * 100, "expected a JSON object"),
        ('{"type":"job","x":' + "[" * 50 + "]" * 50 + "}", "nested too deeply"),
    ],
)
def test_bad_frames_get_one_error_reply_and_change_nothing(frame: str | bytes, reason: str) -> None:
    session = registered_session()
    events = session.receive(frame)
    assert len(events) == 2
    assert isinstance(events[0], BadFrame) and reason in events[0].reason
    assert isinstance(events[1], Send) and events[1].message.type == "error"  # type: ignore[attr-defined]
    assert session.state is State.REGISTERED


def test_oversized_frame_is_refused_before_parsing() -> None:
    with pytest.raises(ProtocolError, match="frame too large"):
        messages.load_object('{"type":"ping","pad":"' + "x" * 100 + '"}', max_bytes=64)


def test_gpu_entry_has_numeric_and_upstream_keys() -> None:
    entry = messages.gpu_entry(0, "GPU-1", "RTX 4090", 24564, 20000, 37).model_dump()
    assert entry["model"] == entry["name"] == "RTX 4090"
    assert (entry["memory_total_mb"], entry["memory_free_mb"], entry["utilization_pct"]) == (24564, 20000, 37)
    assert (entry["vram_total"], entry["vram_free"], entry["utilization"]) == ("24564 MiB", "20000 MiB", "37%")
