"""Settlement over a whole conversation, property-based: the session against a model of each backend.

The model of upstream's published backend answers every frame, in order, with one reply and no id,
and credits every result frame of a job it knows. Hypothesis interleaves results finishing,
heartbeats, pings, frames crossing the network one at a time, and connection cuts; after the node
has sent everything, every known job must be credited exactly once, every unknown one refused
exactly once (kept as rejected, never sent again), and the outbox empty.

A cut that loses a reply the backend already sent would make any node send that result again
(nothing tells it the backend has it); such a cut is the one place a backend that counts every frame
credits twice, so the upstream runs cut only while no reply is on its way. The reference backend
deduplicates: its runs cut anywhere.
"""

from __future__ import annotations

import json
from collections import Counter, deque
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from hypernode_host.bridge.session import ResultAcked, ResultRejected, Session
from hypernode_host.core.messages import Capability, HeartbeatStats, HostInfo

HOST = HostInfo(
    hostname="rig", os="Linux", os_version="6.1", arch="x86_64", gpus=[], docker_version="20.10", agent_version="t"
)
STATS = HeartbeatStats(jobs_completed=0, jobs_failed=0, total_uptime=1, active_jobs=0, gpus=[])


@dataclass
class Backend:
    """A backend as the node sees it; ``upstream``: the published prototype, else the reference backend."""

    upstream: bool
    known: set[str] = field(default_factory=set)
    credits: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)

    def answer(self, frame: str) -> str | None:
        message = json.loads(frame)
        kind = message["type"]
        if kind == "register":
            capabilities = [] if self.upstream else [c.value for c in Capability]
            return json.dumps({"type": "registered", "nodeId": "n-1", "capabilities": capabilities})
        if kind == "heartbeat":
            return '{"type":"ack"}'
        if kind == "job_result":
            return self._result(message["id"])
        return '{"type":"error","message":"Unknown message type"}' if self.upstream else None  # reference: takes pongs

    def _result(self, job_id: str) -> str:
        named = {} if self.upstream else {"id": job_id}
        if job_id not in self.known:
            self.refused[job_id] += 1
            return json.dumps({"type": "error", "message": "Job not found", **named})
        if self.upstream or not self.credits[job_id]:  # the reference backend credits a job once
            self.credits[job_id] += 1
        return json.dumps({"type": "ack", "message": "Job result received", **named})


class Conversation:
    """The node (a session and its outbox) and a backend, with the network between them as two queues."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.session = Session(None, "K")
        self.outbox: dict[str, str] = {}  # entry id → job id, oldest first
        self.rejected: set[str] = set()
        self.to_backend: deque[str] = deque()
        self.to_node: deque[str] = deque()
        self.finished: set[str] = set()
        self.connect()

    def connect(self) -> None:
        self.session.connected("token", HOST, {})
        self.write()

    def write(self) -> None:
        self.to_backend.extend(self.session.frames_to_send())

    def finish(self, known: bool) -> None:
        job_id = f"{'known' if known else 'unknown'}-{len(self.finished)}"
        if known:
            self.backend.known.add(job_id)
        self.outbox[f"e-{len(self.finished)}"] = job_id
        self.finished.add(job_id)

    @property
    def unknown(self) -> set[str]:
        return self.finished - self.backend.known

    def send(self) -> None:
        """The outbox sender: every entry not in flight, while the window has room."""
        for entry_id, job_id in list(self.outbox.items()):
            if self.session.window_full:
                break
            self.session.send_result(job_id, entry_id, {"type": "job_result", "id": job_id})
        self.write()

    def beat(self) -> None:
        self.session.heartbeat("2026-01-01T00:00:00Z", STATS)
        self.write()

    def ping(self) -> None:
        self.to_node.append('{"type":"ping"}')

    def backend_step(self) -> None:
        if self.to_backend:
            reply = self.backend.answer(self.to_backend.popleft())
            if reply is not None:
                self.to_node.append(reply)

    def node_step(self) -> None:
        if not self.to_node:
            return
        for event in self.session.receive(self.to_node.popleft()):
            if isinstance(event, ResultAcked | ResultRejected) and event.entry_id is not None:
                job_id = self.outbox.pop(event.entry_id)
                if isinstance(event, ResultRejected):
                    self.rejected.add(job_id)
        self.write()

    def cut(self, anywhere: bool) -> None:
        if self.to_node and not anywhere:
            return
        self.to_backend.clear()  # frames lost on the way were never seen, so never credited
        self.to_node.clear()
        self.session.connection_lost()
        self.connect()

    def drain(self) -> None:
        for _ in range(10_000):
            if not (self.outbox or self.to_backend or self.to_node):
                return
            self.send()
            while self.to_backend or self.to_node:
                self.backend_step()
                self.node_step()
        raise AssertionError("the outbox did not drain")


STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("finish"), st.booleans()),
        st.sampled_from(["send", "beat", "ping", "backend", "backend", "node", "node", "cut"]).map(
            lambda s: (s, False)
        ),
    ),
    max_size=120,
)


def play(backend: Backend, steps: list[tuple[str, bool]], cut_anywhere: bool) -> Conversation:
    talk = Conversation(backend)
    actions = {
        "send": talk.send,
        "beat": talk.beat,
        "ping": talk.ping,
        "backend": talk.backend_step,
        "node": talk.node_step,
        "cut": lambda: talk.cut(cut_anywhere),
    }
    for name, known in steps:
        if name == "finish":
            talk.finish(known)
        else:
            actions[name]()
    talk.drain()
    return talk


@settings(max_examples=300, deadline=None)
@given(STEPS)
def test_upstream_credits_every_known_job_once_and_refuses_every_unknown_one_once(
    steps: list[tuple[str, bool]],
) -> None:
    backend = Backend(upstream=True)
    talk = play(backend, steps, cut_anywhere=False)

    assert dict(backend.credits) == dict.fromkeys(backend.known, 1)
    assert dict(backend.refused) == dict.fromkeys(talk.unknown, 1)
    assert talk.rejected == talk.unknown
    assert talk.outbox == {}


@settings(max_examples=300, deadline=None)
@given(STEPS)
def test_the_reference_backend_settles_everything_by_id_whatever_the_cuts(steps: list[tuple[str, bool]]) -> None:
    backend = Backend(upstream=False)
    talk = play(backend, steps, cut_anywhere=True)

    assert dict(backend.credits) == dict.fromkeys(backend.known, 1)
    assert set(backend.refused) == talk.rejected == talk.unknown
    assert talk.outbox == {}
