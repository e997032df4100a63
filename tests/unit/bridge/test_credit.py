"""(ext) An ack may say what the backend credits for the result it settles: the session hands it on."""

from __future__ import annotations

import json

import pytest

from hypernode_host.bridge.session import ResultAcked, Session
from hypernode_host.core.messages import Capability, HostInfo

HOST = HostInfo(
    hostname="rig", os="Linux", os_version="6.1", arch="x86_64", gpus=[], docker_version="20.10", agent_version="t"
)


def registered(capabilities: list[str]) -> Session:
    session = Session(None, "K")
    session.connected("token", HOST, {})
    session.receive(json.dumps({"type": "registered", "nodeId": "n-1", "capabilities": capabilities}))
    session.frames_to_send()
    return session


@pytest.mark.parametrize("capabilities", [[], [c.value for c in Capability]])
def test_an_acks_credit_reaches_the_bridge_and_none_when_it_says_nothing(capabilities: list[str]) -> None:
    session = registered(capabilities)
    session.send_result("j-1", "1-0", {"type": "job_result", "id": "j-1"})
    session.send_result("j-2", "2-0", {"type": "job_result", "id": "j-2"})
    named = bool(capabilities)
    first = session.receive(json.dumps({"type": "ack", "credit": 2.5, **({"id": "j-1"} if named else {})}))
    second = session.receive(json.dumps({"type": "ack", **({"id": "j-2"} if named else {})}))
    assert first == [ResultAcked("j-1", "1-0", 2.5)]
    assert second == [ResultAcked("j-2", "2-0", None)]


def test_a_credit_that_is_not_a_finite_number_is_refused_at_the_edge() -> None:
    session = registered([])
    session.send_result("j-1", "1-0", {"type": "job_result", "id": "j-1"})
    events = session.receive('{"type": "ack", "credit": "lots"}')
    assert [type(e).__name__ for e in events] == ["BadFrame"]
    assert session.in_flight  # not settled by a bad frame
