"""Property tests of the wire codec, and of the session that answers whatever it decodes.

Whatever a backend sends, decoding gives a typed message or the one ProtocolError, never any other
exception; every valid message survives encode → decode unchanged.
"""

from __future__ import annotations

import json
import string
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hypernode_host.bridge.session import BadFrame, Session
from hypernode_host.core import messages
from hypernode_host.core.jobs import JobState
from hypernode_host.core.messages import HostInfo
from hypernode_host.errors import ProtocolError

# No deadline: these assert behaviour, and a loaded CI machine must not turn slowness into failures.
PROPERTY = settings(deadline=None, max_examples=300)

BACKEND_TYPES = ["registered", "ack", "job", "job_cancel", "ping", "error"]

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)
# Objects shaped like our messages, so that validation (not only parsing) gets exercised.
message_like = st.fixed_dictionaries(
    {"type": st.sampled_from(BACKEND_TYPES) | st.text(max_size=12)},
    optional={
        "id": json_values,
        "jobId": json_values,
        "nodeId": json_values,
        "message": json_values,
        "script": json_values,
        "command": json_values,
    },
)


def decode_or_protocol_error(frame: str | bytes) -> messages.Message | None:
    try:
        return messages.decode_backend(frame)
    except ProtocolError as exc:
        text = str(exc)
        assert text and text.isascii() and "\n" not in text  # one printable line, fit for a log
        return None


@PROPERTY
@given(st.binary(max_size=200))
def test_any_bytes_are_refused_as_binary(frame: bytes) -> None:
    assert decode_or_protocol_error(frame) is None


@PROPERTY
@given(st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("utf-8", "surrogateescape")))
def test_any_text_decodes_or_raises_the_protocol_error(frame: str) -> None:
    decode_or_protocol_error(frame)


@PROPERTY
@given(json_values | message_like)
def test_any_json_value_decodes_or_raises_the_protocol_error(value: Any) -> None:
    message = decode_or_protocol_error(json.dumps(value))
    if message is not None:
        assert message.type == value["type"]


@PROPERTY
@given(message_like, st.sampled_from(["NaN", "Infinity", "-Infinity", "1" * 5000]))
def test_nan_infinity_and_huge_numbers_anywhere_are_refused(value: dict[str, Any], constant: str) -> None:
    frame = json.dumps({**value, "bad": "__X__"}).replace('"__X__"', constant)
    assert decode_or_protocol_error(frame) is None


@PROPERTY
@given(st.binary(max_size=300).map(lambda b: b.decode("utf-8", "replace")) | st.text(max_size=300))
def test_a_session_answers_any_frame_without_raising(frame: str) -> None:
    session = Session(None, "K")
    host = HostInfo(
        hostname="h", os="Linux", os_version="6", arch="x86_64", gpus=[], docker_version="1", agent_version="t"
    )
    session.connected("tok", host, {})
    session.receive('{"type":"registered","nodeId":"n-1","capabilities":["errors"]}')
    session.frames_to_send()
    events = session.receive(frame)
    if any(isinstance(e, BadFrame) for e in events):
        replies = [json.loads(f)["type"] for f in session.frames_to_send()]
        assert replies == ([] if _an_error_frame(frame) else ["error"])  # each refused frame but an error is answered


def _an_error_frame(frame: str) -> bool:
    try:
        return messages.load_object(frame)["type"] == "error"
    except ProtocolError:
        return False


# round trips -------------------------------------------------------------------------------------------

ids = st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True)
short_text = st.text(max_size=200)
backend_messages = st.one_of(
    st.builds(messages.Registered, nodeId=st.text(min_size=1, max_size=128), message=st.none() | short_text),
    st.builds(messages.Ack, id=st.none() | ids, message=st.none() | short_text),
    st.builds(messages.JobCancel, jobId=ids),
    st.builds(messages.Ping),
    st.builds(messages.ErrorMessage, message=short_text),
    st.builds(
        lambda job_id, fields: messages.JobFrame(id=job_id, **fields),
        ids,
        st.dictionaries(
            st.text(string.ascii_letters, min_size=1, max_size=12).filter(lambda k: k not in ("id", "type")),
            json_values,
            max_size=6,
        ),
    ),
)


@PROPERTY
@given(backend_messages)
def test_every_valid_backend_message_round_trips(message: messages.Message) -> None:
    assert messages.decode_backend(messages.encode(message)) == message


gpu_entries = st.builds(
    messages.gpu_entry,
    st.integers(0, 15),
    st.text(max_size=40),
    st.text(max_size=40),
    st.integers(0, 200_000),
    st.integers(0, 200_000),
    st.integers(0, 100),
)
stats = st.builds(
    messages.HeartbeatStats,
    jobs_completed=st.integers(0),
    jobs_failed=st.integers(0),
    total_uptime=st.integers(0),
    active_jobs=st.integers(0),
    gpus=st.lists(gpu_entries, max_size=3),
    queued_jobs=st.integers(0),
    free_slots=st.integers(0),
)
agent_messages = st.one_of(
    st.builds(messages.Heartbeat, nodeId=st.none() | st.text(max_size=40), timestamp=short_text, stats=stats),
    st.builds(messages.Pong),
    st.builds(messages.JobStatusReport, id=ids, nodeId=st.none() | short_text, state=st.sampled_from(list(JobState))),
    st.builds(messages.ErrorMessage, message=short_text),
)


@PROPERTY
@given(agent_messages)
def test_every_valid_agent_message_round_trips(message: messages.Message) -> None:
    assert messages.decode_agent(messages.load_object(messages.encode(message))) == message


# policies ----------------------------------------------------------------------------------------------
