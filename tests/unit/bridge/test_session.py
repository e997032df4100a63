"""The Sans-I/O session and the wire codec: frames in, events and messages out, no sockets."""

from __future__ import annotations

import json

import pytest

from hypernode_host.bridge.session import (
    MAX_UNANSWERED,
    RESULT_WINDOW,
    AuthFailed,
    BackendError,
    BadFrame,
    CancelRequested,
    InFlight,
    JobReceived,
    JobRefused,
    RegisteredEvent,
    Repeat,
    ResultAcked,
    ResultRejected,
    Session,
    State,
)
from hypernode_host.core import messages
from hypernode_host.core.jobs import JobState
from hypernode_host.core.messages import Capability, HeartbeatStats, HostInfo
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
TOKEN = "secret-token"
EVERYTHING = [c.value for c in Capability]  # what the reference backend announces
RESULT_RECEIVED = '{"type":"ack","message":"Job result received"}'
JOB_NOT_FOUND = '{"type":"error","message":"Job not found"}'
HEARTBEAT_ACK = '{"type":"ack"}'
UNKNOWN_TYPE = '{"type":"error","message":"Unknown message type"}'


def connected_session(node_id: str | None = None, token: str = TOKEN) -> Session:
    session = Session(node_id, "PUBKEY")
    session.connected(token, HOST, {"slots": 1})
    session.frames_to_send()
    return session


def registered_session(capabilities: list[str] | None = None) -> Session:
    """Registered with a backend that announced ``capabilities`` (None: nothing, as upstream's)."""
    session = connected_session()
    frame = {"type": "registered", "nodeId": "node-1", "message": "Successfully registered"}
    if capabilities is not None:
        frame["capabilities"] = capabilities
    assert session.receive(json.dumps(frame)) == [RegisteredEvent("node-1", resumed=False)]
    return session


def sent(session: Session) -> list[dict[str, object]]:
    """The frames the session queued since the last look, decoded."""
    return [json.loads(frame) for frame in session.frames_to_send()]


def result(job_id: str) -> dict[str, object]:
    return {"type": "job_result", "id": job_id, "status": "completed", "logs": "done"}


def send_results(session: Session, *job_ids: str) -> None:
    for job_id in job_ids:
        assert session.send_result(job_id, f"e-{job_id}", result(job_id))


def acked(job_id: str) -> ResultAcked:
    return ResultAcked(job_id, f"e-{job_id}")


def rejected(job_id: str, reason: str = "Job not found") -> ResultRejected:
    return ResultRejected(job_id, f"e-{job_id}", reason)


# the state machine ---------------------------------------------------------------------------------


def test_a_session_starts_connecting_and_registers_on_each_connection() -> None:
    session = Session(None, "PUBKEY")
    assert session.state is State.CONNECTING

    session.connected(TOKEN, HOST, {"slots": 2})

    assert session.state is State.REGISTERING
    [frame] = sent(session)
    assert frame["type"] == "register" and frame["token"] == TOKEN
    assert frame["nodeId"] is None and frame["nodePublicKey"] == "PUBKEY"
    assert frame["hostInfo"]["hostname"] == "rig-1" and frame["capacity"] == {"slots": 2}  # type: ignore[index]


def test_the_token_stays_out_of_every_repr() -> None:
    session = connected_session()
    assert TOKEN not in repr(session) and TOKEN not in str(session)


def test_reconnecting_resumes_the_node_id_the_backend_gave() -> None:
    session = registered_session()
    assert session.connection_lost() is True  # it had registered: a healthy connection
    assert session.state is State.CONNECTING

    session.connected(TOKEN, HOST, {})

    [register] = sent(session)
    assert register["nodeId"] == "node-1"
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
        session.connected(TOKEN, HOST, {})


@pytest.mark.parametrize("reason", ["Invalid token", "Token already used", "Token is required"])
def test_an_auth_error_refuses_the_token_until_another_one_is_given(reason: str) -> None:
    session = connected_session()
    assert session.receive(json.dumps({"type": "error", "message": reason})) == [AuthFailed(reason)]
    assert session.state is State.REFUSED and session.refusal == reason

    session.connection_lost()

    assert session.state is State.REFUSED  # not reconnecting: waiting for a token
    assert not session.may_register(TOKEN)  # never sent again
    with pytest.raises(HypernodeError, match="refused"):
        session.connected(TOKEN, HOST, {})
    assert session.may_register("a-new-token")
    session.connected("a-new-token", HOST, {})
    assert session.state is State.REGISTERING and session.refusal is None
    assert sent(session)[0]["token"] == "a-new-token"


def test_a_second_refusal_refuses_the_second_token_too() -> None:
    session = connected_session()
    session.receive('{"type":"error","message":"Token already used"}')
    session.connection_lost()
    session.connected("second", HOST, {})
    assert session.receive('{"type":"error","message":"Invalid token"}') == [AuthFailed("Invalid token")]
    session.connection_lost()
    assert not session.may_register("second") and session.may_register(TOKEN)  # only the last one is known


def test_an_http_refusal_at_the_handshake_refuses_the_token_as_well() -> None:
    session = Session(None, "K")
    session.handshake_refused(TOKEN, "the backend refused the connection: HTTP 403")
    assert session.state is State.REFUSED and not session.may_register(TOKEN)
    assert session.refusal == "the backend refused the connection: HTTP 403"


def test_a_refused_session_registers_nothing_else_and_ignores_a_late_registered() -> None:
    session = connected_session()
    session.receive('{"type":"error","message":"Invalid token"}')
    assert session.receive('{"type":"registered","nodeId":"n-1"}') == []
    assert session.state is State.REFUSED and not session.heartbeat(NOW, STATS)


def test_close_is_final() -> None:
    session = registered_session()
    session.close()
    session.connection_lost()
    assert session.state is State.CLOSED and not session.may_register("any")
    with pytest.raises(HypernodeError, match="closed"):
        session.connected(TOKEN, HOST, {})


def test_an_auth_text_after_registration_is_an_ordinary_backend_error() -> None:
    session = registered_session(EVERYTHING)
    assert session.receive('{"type":"error","message":"Invalid token"}') == [BackendError("Invalid token")]
    assert session.state is State.REGISTERED


def test_a_backend_that_echoes_the_token_does_not_get_it_into_an_event() -> None:
    session = connected_session(token="tok-0123456789abcdef")
    [event] = session.receive('{"type":"error","message":"Invalid token: tok-0123456789abcdef"}')
    assert event == AuthFailed("Invalid token: ***")


def test_a_backend_error_to_the_register_that_is_not_about_the_token_keeps_it() -> None:
    session = connected_session()
    assert session.receive('{"type":"error","message":"Invalid message format"}') == [
        BackendError("Invalid message format")
    ]
    assert session.state is State.REGISTERING and session.may_register(TOKEN)


# heartbeats, jobs, cancels -------------------------------------------------------------------------


def test_no_heartbeat_before_registered() -> None:
    session = connected_session()
    assert not session.heartbeat(NOW, STATS)
    session.receive('{"type":"registered","nodeId":"node-1"}')
    assert session.heartbeat(NOW, STATS)
    [beat] = sent(session)
    assert beat["nodeId"] == "node-1" and beat["stats"] == STATS.model_dump()
    session.connection_lost()
    assert not session.heartbeat(NOW, STATS)  # nor while reconnecting


def test_ping_is_answered_with_pong() -> None:
    session = registered_session()
    assert session.receive('{"type":"ping"}') == []
    assert sent(session) == [{"type": "pong"}]


def test_job_frame_becomes_job_received_with_its_fields() -> None:
    events = registered_session().receive('{"type":"job","id":"j-1","command":"sleep 5","extra":{"a":1}}')
    assert events == [JobReceived("j-1", {"id": "j-1", "command": "sleep 5", "extra": {"a": 1}})]


def test_job_id_alias_jobid_is_accepted() -> None:
    [event] = registered_session().receive('{"type":"job","jobId":"j-2","script":"print(1)"}')
    assert isinstance(event, JobReceived) and event.job_id == "j-2"


@pytest.mark.parametrize("bad_id", ['"../etc"', '""', '"' + "x" * 65 + '"', "7", "null"])
def test_job_without_a_usable_id_is_refused_with_an_error(bad_id: str) -> None:
    session = registered_session(EVERYTHING)
    [event] = session.receive('{"type":"job","id":%s,"script":"x"}' % bad_id)
    assert isinstance(event, JobRefused)
    [error] = sent(session)
    assert error["type"] == "error" and str(error["message"]).startswith("job refused: 'id' must be")


def test_cancel_names_the_job() -> None:
    assert registered_session().receive('{"type":"job_cancel","jobId":"j-1"}') == [CancelRequested("j-1")]


# a job id sent again -------------------------------------------------------------------------------


@pytest.mark.parametrize("state", [JobState.QUEUED, JobState.RUNNING, JobState.REJECTED])
def test_a_known_job_gets_a_job_status_from_a_backend_that_takes_them(state: JobState) -> None:
    session = registered_session([Capability.JOB_STATUS.value])
    assert session.repeat("j-1", state, None) is Repeat.STATUS
    assert sent(session) == [{"type": "job_status", "id": "j-1", "nodeId": "node-1", "state": state.value}]


def test_a_reported_job_gets_its_stored_result_again_from_a_backend_that_deduplicates() -> None:
    session = registered_session(EVERYTHING)
    stored = json.dumps(result("j-1"))
    assert session.repeat("j-1", JobState.REPORTED, stored) is Repeat.RESULT
    assert session.frames_to_send() == [stored]
    assert session.in_flight == (InFlight("j-1", None),)
    assert session.receive('{"type":"ack","id":"j-1"}') == [ResultAcked("j-1", None)]


@pytest.mark.parametrize("state", [JobState.QUEUED, JobState.RUNNING, JobState.REPORTED, JobState.REJECTED])
def test_a_backend_that_announced_nothing_hears_nothing_about_a_known_job(state: JobState) -> None:
    session = registered_session()  # upstream's: it credits every result frame, it knows no job_status
    assert session.repeat("j-1", state, json.dumps(result("j-1"))) is Repeat.NOTHING
    assert sent(session) == [] and session.in_flight == ()


def test_a_result_still_in_the_outbox_is_left_to_the_outbox() -> None:
    session = registered_session(EVERYTHING)
    assert session.repeat("j-1", JobState.FINISHED, json.dumps(result("j-1"))) is Repeat.NOTHING
    assert sent(session) == []


def test_a_rejected_result_is_never_sent_again_even_to_a_backend_that_deduplicates() -> None:
    session = registered_session([Capability.DEDUPE.value])
    assert session.repeat("j-1", JobState.REJECTED, json.dumps(result("j-1"))) is Repeat.NOTHING
    assert sent(session) == []


# extension frames go only to the backends that announced them ---------------------------------------


def test_a_backend_that_announced_nothing_gets_no_error_frame() -> None:
    session = registered_session()
    assert session.receive("not json") == [
        BadFrame("Invalid message format: not JSON (Expecting value: line 1 column 1 (char 0))")
    ]
    assert not session.refuse("job x was not taken in")
    assert sent(session) == []


def test_capabilities_are_those_of_the_connection_and_unknown_names_are_ignored() -> None:
    session = registered_session(["errors", "telepathy"])
    assert session.capabilities == {Capability.ERRORS}
    session.connection_lost()
    assert session.capabilities == frozenset()  # a backend redeployed between connections may announce others


# settlement: a backend with result_ids ------------------------------------------------------------


def test_ack_with_id_settles_that_result_and_names_its_outbox_entry() -> None:
    session = registered_session(EVERYTHING)
    send_results(session, "a", "b")
    assert session.receive('{"type":"ack","id":"b"}') == [acked("b")]
    assert session.in_flight == (InFlight("a", "e-a"),)


def test_an_error_with_id_rejects_that_result_with_the_backends_text() -> None:
    session = registered_session(EVERYTHING)
    send_results(session, "a", "b")
    assert session.receive('{"type":"error","id":"a","message":"Job not found"}') == [rejected("a")]
    assert session.in_flight == (InFlight("b", "e-b"),)


def test_replies_without_an_id_from_a_backend_with_result_ids_settle_nothing() -> None:
    session = registered_session(EVERYTHING)
    send_results(session, "a")
    assert session.heartbeat(NOW, STATS)
    assert session.receive(HEARTBEAT_ACK) == []
    assert session.receive(RESULT_RECEIVED) == []  # names no job: it cannot be told which
    assert session.receive(JOB_NOT_FOUND) == [BackendError("Job not found")]
    assert session.in_flight == (InFlight("a", "e-a"),)


def test_an_ack_for_a_result_not_in_flight_settles_nothing() -> None:
    session = registered_session(EVERYTHING)
    send_results(session, "a")
    assert session.receive('{"type":"ack","id":"zzz"}') == []
    assert session.receive('{"type":"error","id":"zzz","message":"Job not found"}') == [BackendError("Job not found")]
    assert session.in_flight == (InFlight("a", "e-a"),)


# settlement: a backend that answers every frame in order, without ids (upstream's) ---------------------


def test_upstream_replies_settle_what_they_answer_in_the_order_sent() -> None:
    session = registered_session()
    assert session.heartbeat(NOW, STATS)
    send_results(session, "unknown-1", "a")
    assert session.heartbeat(NOW, STATS)
    send_results(session, "b", "unknown-2", "c")
    beat, result_frame = "heartbeat", "job_result"
    assert [f["type"] for f in sent(session)] == [beat, result_frame, result_frame, beat, *[result_frame] * 3]

    beat_ack, unknown, received = HEARTBEAT_ACK, JOB_NOT_FOUND, RESULT_RECEIVED
    replies = [beat_ack, unknown, received, beat_ack, received, unknown, received]
    events = [event for reply in replies for event in session.receive(reply)]

    assert events == [rejected("unknown-1"), acked("a"), acked("b"), rejected("unknown-2"), acked("c")]
    assert session.in_flight == ()


def test_after_one_unknown_result_the_next_ack_is_not_shifted_onto_the_wrong_result() -> None:
    # Credited to the oldest result, the ack of "known" would settle "unknown" and leave "known" in the
    # outbox: sent again on the next connection, and credited twice by a backend that counts every frame.
    session = registered_session()
    send_results(session, "unknown", "known")
    assert session.receive(JOB_NOT_FOUND) == [rejected("unknown")]
    assert session.receive(RESULT_RECEIVED) == [acked("known")]


def test_an_error_answering_a_heartbeat_settles_no_result() -> None:
    session = registered_session()
    assert session.heartbeat(NOW, STATS)
    send_results(session, "a")
    assert session.receive('{"type":"error","message":"Invalid node ID"}') == [BackendError("Invalid node ID")]
    assert session.in_flight == (InFlight("a", "e-a"),)
    assert session.receive(RESULT_RECEIVED) == [acked("a")]


def test_a_pong_awaits_its_reply_like_any_other_frame() -> None:
    session = registered_session()
    session.receive('{"type":"ping"}')  # upstream's published backend never pings; one that does is answered
    send_results(session, "a")
    assert session.receive(UNKNOWN_TYPE) == [BackendError("Unknown message type")]
    assert session.receive(RESULT_RECEIVED) == [acked("a")]


def test_the_register_is_the_first_frame_answered() -> None:
    session = connected_session()
    session.receive('{"type":"registered","nodeId":"node-1"}')
    send_results(session, "a")
    assert session.receive(RESULT_RECEIVED) == [acked("a")]


def test_a_reply_naming_another_job_than_the_oldest_frame_answers_that_frame_and_settles_nothing() -> None:
    session = registered_session()
    send_results(session, "a", "b")
    assert session.receive('{"type":"ack","id":"b"}') == [acked("b")]  # an id is honoured wherever it is
    assert session.receive('{"type":"ack","id":"zzz"}') == []  # answers "a"'s frame, but names another job
    assert session.in_flight == ()


def test_a_reply_with_nothing_awaiting_settles_nothing() -> None:
    session = registered_session()
    assert session.receive(RESULT_RECEIVED) == []
    assert session.receive(JOB_NOT_FOUND) == [BackendError("Job not found")]


def test_a_backend_that_leaves_frames_unanswered_is_found_out_before_memory_grows() -> None:
    session = registered_session()
    for _ in range(MAX_UNANSWERED):
        assert session.heartbeat(NOW, STATS)
    with pytest.raises(ProtocolError, match="unanswered"):
        session.heartbeat(NOW, STATS)


# results in flight ------------------------------------------------------------------------------------


def test_a_result_goes_once_per_connection_and_again_on_the_next() -> None:
    session = registered_session()
    send_results(session, "a")
    assert not session.send_result("a", "e-a", result("a"))  # in flight already
    session.connection_lost()
    assert session.in_flight == ()  # the outbox sends it again on the next connection
    session.connected(TOKEN, HOST, {})
    assert not session.send_result("a", "e-a", result("a"))  # not before registered
    session.receive('{"type":"registered","nodeId":"node-1"}')
    assert session.send_result("a", "e-a", result("a"))


def test_the_result_window_bounds_what_a_cut_can_leave_unsettled() -> None:
    session = registered_session()
    send_results(session, *(f"r{i}" for i in range(RESULT_WINDOW)))
    assert session.window_full
    session.receive(RESULT_RECEIVED)
    assert not session.window_full


def test_a_result_frame_is_sent_exactly_as_stored() -> None:
    session = registered_session()
    stored = {"type": "job_result", "id": "a", "logs": "ünïcode ✅"}
    session.send_result("a", "e-a", stored)
    assert session.frames_to_send() == ['{"type":"job_result","id":"a","logs":"ünïcode ✅"}']


def test_results_in_flight_are_forgotten_with_their_connection() -> None:
    session = registered_session(EVERYTHING)
    send_results(session, "a")
    session.connection_lost()
    assert session.in_flight == () and session.frames_to_send() == []
    session.connected(TOKEN, HOST, {})
    assert session.receive('{"type":"ack","id":"a"}') == []


# bad frames --------------------------------------------------------------------------------------


def test_other_backend_errors_are_reported_not_fatal() -> None:
    session = registered_session(EVERYTHING)
    assert session.receive('{"type":"error","message":"Rate limited"}') == [BackendError("Rate limited")]
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
    session = registered_session(EVERYTHING)
    [event] = session.receive(frame)
    assert isinstance(event, BadFrame) and reason in event.reason
    assert sent(session) == [{"type": "error", "message": event.reason}]
    assert session.state is State.REGISTERED


def test_a_hostile_key_is_quoted_escaped_and_cut() -> None:
    key = json.dumps("\u2028\ud800\n" + "k" * 500)  # escaped in the frame, raw once parsed
    [bad] = registered_session().receive('{"type":"ping",%s:1,%s:2}' % (key, key))
    assert isinstance(bad, BadFrame)
    assert bad.reason.isascii() and "\n" not in bad.reason and len(bad.reason) < 300
    assert bad.reason.startswith("duplicate field '\\u2028\\ud800\\nkkk")


def test_a_bad_error_frame_is_not_answered_with_an_error() -> None:
    session = registered_session(EVERYTHING)
    events = session.receive(json.dumps({"type": "error", "message": "x" * 5000}))
    assert [type(e) for e in events] == [BadFrame]
    assert sent(session) == []


def test_unknown_fields_are_ignored_on_control_messages() -> None:
    session = connected_session()
    events = session.receive('{"type":"registered","nodeId":"n-1","region":"eu","since":1}')
    assert events == [RegisteredEvent("n-1", resumed=False)]
    send_results(session, "a")
    assert session.receive('{"type":"ack","id":"a","receivedAt":123}') == [acked("a")]


def test_oversized_frame_is_refused_before_parsing() -> None:
    with pytest.raises(ProtocolError, match="frame too large"):
        messages.load_object('{"type":"ping","pad":"' + "x" * 100 + '"}', max_bytes=64)


def test_gpu_entry_has_numeric_and_upstream_keys() -> None:
    entry = messages.gpu_entry(0, "GPU-1", "RTX 4090", 24564, 20000, 37).model_dump()
    assert entry["model"] == entry["name"] == "RTX 4090"
    assert (entry["memory_total_mb"], entry["memory_free_mb"], entry["utilization_pct"]) == (24564, 20000, 37)
    assert (entry["vram_total"], entry["vram_free"], entry["utilization"]) == ("24564 MiB", "20000 MiB", "37%")
