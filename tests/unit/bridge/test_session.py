"""The Sans-I/O session and the wire codec: frames in, events and messages out, no sockets."""

from __future__ import annotations

import json

import pytest

from hypernode_host.bridge.session import (
    AuthFailed,
    BackendError,
    BadFrame,
    CancelRequested,
    InFlight,
    JobReceived,
    JobRefused,
    RegisteredEvent,
    ResultAcked,
    Send,
    Session,
    State,
)
from hypernode_host.core import messages
from hypernode_host.core.jobs import JobState
from hypernode_host.core.messages import HeartbeatStats, HostInfo
from hypernode_host.errors import HypernodeError, ProtocolError

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
NOW = "2026-01-01T00:00:00.000Z"


def connected_session(node_id: str | None = None, token: str = "secret-token") -> Session:
    session = Session(token, node_id, "PUBKEY")
    session.connected(HOST, {"slots": 1})
    return session


def registered_session() -> Session:
    session = connected_session()
    session.receive('{"type":"registered","nodeId":"node-1","message":"Successfully registered"}')
    return session


def error_frame(events: list[object]) -> str:
    """The text of the one error reply among ``events``."""
    [reply] = [e for e in events if isinstance(e, Send)]
    assert isinstance(reply.message, messages.ErrorMessage)
    return reply.message.message


# the state machine ---------------------------------------------------------------------------------


def test_a_session_starts_connecting_and_registers_on_each_connection() -> None:
    session = Session("secret-token", None, "PUBKEY")
    assert session.state is State.CONNECTING

    register = session.connected(HOST, {"slots": 2})

    assert session.state is State.REGISTERING
    frame = json.loads(messages.encode(register))
    assert frame["type"] == "register" and frame["token"] == "secret-token"
    assert frame["nodeId"] is None and frame["nodePublicKey"] == "PUBKEY"
    assert frame["hostInfo"]["hostname"] == "rig-1" and frame["capacity"] == {"slots": 2}


def test_the_token_stays_out_of_every_repr() -> None:
    session = connected_session()
    register = Session("secret-token", "node-0", "K").connected(HOST, {})
    for text in (repr(register), str(register), repr(session), str(session)):
        assert "secret-token" not in text


def test_reconnecting_resumes_the_node_id_the_backend_gave() -> None:
    session = registered_session()
    assert session.connection_lost() is True  # it had registered: a healthy connection
    assert session.state is State.CONNECTING

    register = session.connected(HOST, {})

    assert register.nodeId == "node-1"
    events = session.receive('{"type":"registered","nodeId":"node-1"}')
    assert events == [RegisteredEvent("node-1", resumed=True)]


def test_a_node_id_from_an_earlier_run_is_asked_for_and_a_new_one_is_reported() -> None:
    session = connected_session(node_id="node-0")
    assert session.receive('{"type":"registered","nodeId":"node-9"}') == [
        RegisteredEvent("node-9", resumed=False, previous="node-0")
    ]
    assert session.node_id == "node-9"


def test_a_connection_lost_before_registered_is_not_healthy() -> None:
    session = connected_session()
    assert session.connection_lost() is False
    assert session.state is State.CONNECTING


def test_connected_twice_without_losing_the_connection_is_a_bug() -> None:
    session = connected_session()
    with pytest.raises(HypernodeError, match="registering"):
        session.connected(HOST, {})


@pytest.mark.parametrize("reason", ["Invalid token", "Token already used", "Token is required"])
def test_auth_errors_while_registering_refuse_the_session_for_good(reason: str) -> None:
    session = connected_session()
    assert session.receive(json.dumps({"type": "error", "message": reason})) == [AuthFailed(reason)]
    assert session.state is State.REFUSED and session.refusal == reason

    session.connection_lost()
    session.close()

    assert session.state is State.REFUSED  # final: no reconnect, and close() does not hide it
    with pytest.raises(HypernodeError, match="refused"):
        session.connected(HOST, {})


def test_close_is_final() -> None:
    session = registered_session()
    session.close()
    session.connection_lost()
    assert session.state is State.CLOSED
    with pytest.raises(HypernodeError, match="closed"):
        session.connected(HOST, {})


def test_an_auth_text_after_registration_is_an_ordinary_backend_error() -> None:
    session = registered_session()
    assert session.receive('{"type":"error","message":"Invalid token"}') == [BackendError("Invalid token")]
    assert session.state is State.REGISTERED


def test_a_backend_that_echoes_the_token_does_not_get_it_into_an_event() -> None:
    session = connected_session(token="tok-0123456789abcdef")
    [event] = session.receive('{"type":"error","message":"Invalid token: tok-0123456789abcdef"}')
    assert event == AuthFailed("Invalid token: ***")


# heartbeats, jobs, cancels -------------------------------------------------------------------------


def test_no_heartbeat_before_registered() -> None:
    session = connected_session()
    assert session.heartbeat(NOW, STATS) is None
    session.receive('{"type":"registered","nodeId":"node-1"}')
    beat = session.heartbeat(NOW, STATS)
    assert beat is not None and beat.nodeId == "node-1" and beat.stats == STATS
    session.connection_lost()
    assert session.heartbeat(NOW, STATS) is None  # nor while reconnecting


def test_ping_is_answered_with_pong() -> None:
    assert registered_session().receive('{"type":"ping"}') == [Send(messages.Pong())]


def test_job_frame_becomes_job_received_with_its_fields() -> None:
    events = registered_session().receive('{"type":"job","id":"j-1","command":"sleep 5","extra":{"a":1}}')
    assert events == [JobReceived("j-1", {"id": "j-1", "command": "sleep 5", "extra": {"a": 1}})]


def test_job_id_alias_jobid_is_accepted() -> None:
    [event] = registered_session().receive('{"type":"job","jobId":"j-2","script":"print(1)"}')
    assert isinstance(event, JobReceived) and event.job_id == "j-2"


@pytest.mark.parametrize("bad_id", ['"../etc"', '""', '"' + "x" * 65 + '"', "7", "null"])
def test_job_without_a_usable_id_is_refused_with_an_error(bad_id: str) -> None:
    events = registered_session().receive('{"type":"job","id":%s,"script":"x"}' % bad_id)
    assert isinstance(events[0], JobRefused)
    assert error_frame(events).startswith("job refused: 'id' must be")


def test_job_status_reports_where_a_known_job_stands() -> None:
    status = registered_session().job_status("j-1", JobState.RUNNING)
    assert json.loads(messages.encode(status)) == {
        "type": "job_status",
        "id": "j-1",
        "nodeId": "node-1",
        "state": "running",
    }


def test_cancel_names_the_job() -> None:
    assert registered_session().receive('{"type":"job_cancel","jobId":"j-1"}') == [CancelRequested("j-1")]


# acks ------------------------------------------------------------------------------------------------


def test_ack_with_id_settles_that_result_and_names_its_outbox_entry() -> None:
    session = registered_session()
    session.result_sent("a", "1-0")
    session.result_sent("b", "2-0")
    assert session.receive('{"type":"ack","id":"b"}') == [ResultAcked("b", "2-0")]
    assert session.in_flight == (InFlight("a", "1-0"),)


def test_upstream_ack_without_id_settles_the_oldest_result() -> None:
    session = registered_session()
    session.result_sent("a", "1-0")
    session.result_sent("b", None)
    assert session.receive('{"type":"ack","message":"Job result received"}') == [ResultAcked("a", "1-0")]
    assert session.receive('{"type":"ack"}') == []  # a heartbeat ack settles nothing
    assert session.receive('{"type":"ack","message":"Job result received"}') == [ResultAcked("b", None)]
    assert session.receive('{"type":"ack","message":"Job result received"}') == []  # nothing left


def test_an_ack_for_a_result_not_in_flight_settles_nothing() -> None:
    session = registered_session()
    session.result_sent("a", "1-0")
    assert session.receive('{"type":"ack","id":"zzz"}') == []
    assert session.in_flight == (InFlight("a", "1-0"),)


def test_results_in_flight_are_forgotten_with_their_connection() -> None:
    session = registered_session()
    session.result_sent("a", "1-0")
    session.connection_lost()
    assert session.in_flight == ()  # the outbox sends them again on the next connection
    session.connected(HOST, {})
    assert session.receive('{"type":"ack","id":"a"}') == []


# bad frames --------------------------------------------------------------------------------------


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
        ('{"type":7}', "message has no 'type'"),
        ('{"type":"bogus"}', "Unknown message type 'bogus'"),
        ('{"type":"ping","type":"ping"}', "duplicate field 'type'"),
        ('{"type":"ack","id":NaN}', "NaN is not allowed"),
        ('{"type":"ack","id":-Infinity}', "-Infinity is not allowed"),
        ('{"type":"job_cancel"}', "bad job_cancel message: jobId: Field required"),
        ('{"type":"registered","nodeId":""}', "bad registered message: nodeId: String should have at least 1"),
        ('{"type":"ack","id":"' + "x" * 1025 + '"}', "bad ack message: id: String should have at most 1024"),
        ('{"type":"job","pad":' + "9" * 5000 + "}", "Invalid message format: not JSON (Exceeds the limit"),
        (b"\x00\x01", "binary frames are not accepted"),
        (b'{"type":"ping"}', "binary frames are not accepted"),
        ("[" * 100 + "]" * 100, "expected a JSON object"),
        ('{"type":"job","x":' + "[" * 50 + "]" * 50 + "}", "nested too deeply"),
        ('{"type":"job","x":[' + ",".join(["0"] * 20_000) + "]}", "too many values"),
    ],
)
def test_bad_frames_get_one_error_reply_naming_the_problem_and_change_nothing(frame: str | bytes, reason: str) -> None:
    session = registered_session()
    events = session.receive(frame)
    assert len(events) == 2
    assert isinstance(events[0], BadFrame) and reason in events[0].reason
    assert error_frame(events) == events[0].reason
    assert session.state is State.REGISTERED


def test_a_hostile_key_is_quoted_escaped_and_cut() -> None:
    key = json.dumps("\u2028\ud800\n" + "k" * 500)  # escaped in the frame, raw once parsed
    [bad, _] = registered_session().receive('{"type":"ping",%s:1,%s:2}' % (key, key))
    assert isinstance(bad, BadFrame)
    assert bad.reason.isascii() and "\n" not in bad.reason and len(bad.reason) < 300
    assert bad.reason.startswith("duplicate field '\\u2028\\ud800\\nkkk")


def test_a_bad_error_frame_is_not_answered_with_an_error() -> None:
    session = registered_session()
    events = session.receive(json.dumps({"type": "error", "message": "x" * 5000}))
    assert [type(e) for e in events] == [BadFrame]


def test_unknown_fields_are_ignored_on_control_messages() -> None:
    session = connected_session()
    events = session.receive('{"type":"registered","nodeId":"n-1","region":"eu","since":1}')
    assert events == [RegisteredEvent("n-1", resumed=False)]
    session.result_sent("a", "1-0")
    assert session.receive('{"type":"ack","id":"a","receivedAt":123}') == [ResultAcked("a", "1-0")]


def test_oversized_frame_is_refused_before_parsing() -> None:
    with pytest.raises(ProtocolError, match="frame too large"):
        messages.load_object('{"type":"ping","pad":"' + "x" * 100 + '"}', max_bytes=64)


def test_gpu_entry_has_numeric_and_upstream_keys() -> None:
    entry = messages.gpu_entry(0, "GPU-1", "RTX 4090", 24564, 20000, 37).model_dump()
    assert entry["model"] == entry["name"] == "RTX 4090"
    assert (entry["memory_total_mb"], entry["memory_free_mb"], entry["utilization_pct"]) == (24564, 20000, 37)
    assert (entry["vram_total"], entry["vram_free"], entry["utilization"]) == ("24564 MiB", "20000 MiB", "37%")
