"""The bridge's protocol session, Sans-I/O: frames in, events out, and every frame to send, in order.

No socket, no Redis, no clock inside: the asyncio layer (bridge/client.py) tells it when a
connection opens and closes, feeds it frames, asks it for heartbeats and results, and writes
``frames_to_send()`` to the socket exactly in the order given. Every frame the node sends is made
here, so the order on the wire is, by construction, the order in which replies are expected.

One Session lives as long as the bridge, across reconnects: the node id it registered with is
the one the next ``register`` carries (resume), and a token the backend refused is never sent again.
What was in flight is forgotten with the connection that carried it (the outbox sends every result
that was not settled again on the next one, once).

How a reply is matched to what it answers (README "Settlement"):

- an ``ack`` or ``error`` with an ``id`` answers that job's oldest result in flight (a backend that
  announced ``result_ids`` names the job in every reply to a result);
- one without an ``id`` answers, from a backend that did not announce ``result_ids`` (upstream's),
  the oldest frame still awaiting a reply: such a backend answers every frame, in order, with exactly
  one ``ack`` or ``error``, so the session keeps the frames it sent in a FIFO. From a backend that
  did announce ``result_ids`` it answers no result (a heartbeat's ack, or an error about something else);
- a reply that answers a result settles it: an ``ack`` as accepted, an ``error`` as rejected, with
  the backend's text. Any other reply settles nothing.

    CONNECTING ──connected(token)──▶ REGISTERING ──registered──▶ REGISTERED
        ▲                               │    │                        │
        └──────── connection_lost() ────┘    └──auth error──▶ REFUSED ┘ (a refused token is never sent again;
                                                                        connected() with a new one starts over)
    any state ──close()──▶ CLOSED (final)
"""

from __future__ import annotations

import enum
import json
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hypernode_host.core.jobs import JobState, job_id_of
from hypernode_host.core.messages import (
    Ack,
    Capability,
    ErrorMessage,
    Heartbeat,
    HeartbeatStats,
    HostInfo,
    JobCancel,
    JobFrame,
    JobStatusReport,
    Message,
    Ping,
    Pong,
    Register,
    Registered,
    encode,
    load_object,
    validate_backend,
)
from hypernode_host.errors import HypernodeError, ProtocolError

# Errors after which retrying with the same credentials cannot help (upstream's texts).
AUTH_ERRORS = ("Invalid token", "Token already used", "Token is required")
REDACTED = "***"
# Results sent ahead of their replies, at most: bounds what a cut connection leaves unsettled (each of
# those is sent again on the next connection, and a backend that counts every frame credits it twice).
RESULT_WINDOW = 32
# Frames a backend without result_ids may leave unanswered before their replies can no longer be
# trusted to line up (it answers every frame, so a healthy connection has a handful at most).
MAX_UNANSWERED = 256


class State(enum.Enum):
    CONNECTING = "connecting"  # no connection: about to connect, or waiting to reconnect
    REGISTERING = "registering"  # connected, register sent, no answer yet
    REGISTERED = "registered"
    REFUSED = "refused"  # the backend refused our token: registering waits for another one
    CLOSED = "closed"  # stopped by us: final


class Repeat(enum.Enum):
    """What a job id the node already has gets, when the backend sends it again."""

    RESULT = "its stored result again (the backend deduplicates results)"
    STATUS = "a job_status"
    NOTHING = "nothing (the backend takes no job_status and credits every result it gets)"


# Events: what happened, for the I/O layer to act on ----------------------------------------


@dataclass(frozen=True)
class RegisteredEvent:
    node_id: str
    resumed: bool  # the backend kept the node id we asked to resume
    previous: str | None = None  # the node id we asked to resume, when it was not kept


@dataclass(frozen=True)
class JobReceived:
    job_id: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class JobRefused:
    """A job frame that cannot be addressed (no valid id)."""

    reason: str


@dataclass(frozen=True)
class CancelRequested:
    job_id: str


@dataclass(frozen=True)
class ResultAcked:
    job_id: str
    entry_id: str | None  # the outbox entry to drop; None for a copy of a result already reported
    credit: float | None = None  # (ext) what the backend said it credits for it


@dataclass(frozen=True)
class ResultRejected:
    """The backend answered a result with an error: the result is kept, marked rejected, not sent again."""

    job_id: str
    entry_id: str | None  # None for a copy of a result already reported
    reason: str


@dataclass(frozen=True)
class AuthFailed:
    reason: str


@dataclass(frozen=True)
class BackendError:
    reason: str


@dataclass(frozen=True)
class BadFrame:
    reason: str


Event = (
    RegisteredEvent
    | JobReceived
    | JobRefused
    | CancelRequested
    | ResultAcked
    | ResultRejected
    | AuthFailed
    | BackendError
    | BadFrame
)


@dataclass(frozen=True)
class InFlight:
    """A result sent on this connection and not settled yet."""

    job_id: str
    entry_id: str | None


@dataclass(frozen=True)
class _Awaiting:
    """A frame sent on this connection whose reply has not come: a result, or another frame type."""

    frame_type: str
    result: InFlight | None = None


class Session:
    """The protocol state of one bridge, across its connections."""

    def __init__(self, node_id: str | None, public_key: str) -> None:
        self.node_id = node_id
        self._public_key = public_key
        self.state = State.CONNECTING
        self.refusal: str | None = None  # the backend's text, while REFUSED
        self.capabilities: frozenset[Capability] = frozenset()  # announced on this connection
        self._token = ""  # the token of the current (or last) registration
        self._refused_token: str | None = None
        self._outgoing: deque[str] = deque()
        self._awaiting: deque[_Awaiting] = deque()

    def __repr__(self) -> str:  # the token stays out of every repr
        return f"Session(state={self.state.value}, node_id={self.node_id!r})"

    # connection lifecycle ----------------------------------------------------------------------

    def may_register(self, token: str) -> bool:
        """False for the token the backend refused: it is never sent again (a new one is)."""
        return self.state is not State.CLOSED and bool(token) and token != self._refused_token

    def connected(self, token: str, host_info: HostInfo, capacity: dict[str, int]) -> None:
        """A connection is open: queue the register (with our previous nodeId, to resume)."""
        if self.state not in (State.CONNECTING, State.REFUSED) or not self.may_register(token):
            raise HypernodeError(f"cannot register a session that is {self.state.value} with this token")
        self.state, self.refusal, self._token = State.REGISTERING, None, token
        register = Register(
            token=token, hostInfo=host_info, nodeId=self.node_id, nodePublicKey=self._public_key, capacity=capacity
        )
        self._queue(register, _Awaiting("register"))

    def handshake_refused(self, token: str, reason: str) -> None:
        """A gateway in front of the backend refused the connection (HTTP 401/403): as a refused token."""
        if self.state is not State.CLOSED:
            self.state, self.refusal, self._refused_token = State.REFUSED, reason, token

    def connection_lost(self) -> bool:
        """The connection is gone; True if it had registered (a healthy connection resets backoff)."""
        healthy = self.state is State.REGISTERED
        self._outgoing.clear()
        self._awaiting.clear()  # the outbox sends every unsettled result again on the next connection
        self.capabilities = frozenset()  # a backend redeployed between connections may announce others
        if self.state in (State.REGISTERING, State.REGISTERED):
            self.state = State.CONNECTING
        return healthy

    def close(self) -> None:
        self.state = State.CLOSED

    # frames out --------------------------------------------------------------------------------

    def frames_to_send(self) -> list[str]:
        """Every frame queued since the last call, in the order they must go on the wire."""
        frames = list(self._outgoing)
        self._outgoing.clear()
        return frames

    def heartbeat(self, timestamp: str, stats: HeartbeatStats) -> bool:
        """Queue a heartbeat; False before ``registered`` (upstream's agent sent heartbeats with nodeId null).

        ProtocolError when a backend without result_ids has left too many frames unanswered: its
        replies can no longer be matched to what they answer, and only a new connection starts clean.
        """
        if self.state is not State.REGISTERED:
            return False
        if self._ordered and len(self._awaiting) >= MAX_UNANSWERED:
            raise ProtocolError(f"the backend left {len(self._awaiting)} frames unanswered; replies cannot be matched")
        self._queue(Heartbeat(nodeId=self.node_id, timestamp=timestamp, stats=stats), _Awaiting("heartbeat"))
        return True

    @property
    def window_full(self) -> bool:
        """As many results are in flight as may be: the next waits for a reply."""
        return len(self.in_flight) >= RESULT_WINDOW

    def send_result(self, job_id: str, entry_id: str, result: Mapping[str, Any]) -> bool:
        """Queue an outbox entry's result; False when it must not go now: not registered, or already in
        flight on this connection (each unsettled result is sent once per connection)."""
        if self.state is not State.REGISTERED or any(sent.entry_id == entry_id for sent in self.in_flight):
            return False
        frame = json.dumps(dict(result), separators=(",", ":"), ensure_ascii=False)  # as stored: UTF-8
        self._queue_result(InFlight(job_id, entry_id), frame)
        return True

    def send_unstored_result(self, job_id: str, result: Mapping[str, Any]) -> bool:
        """Queue the result of a job the node could not take in, which no outbox holds: it goes once, on
        this connection, and its settlement changes nothing here. False when not registered."""
        if self.state is not State.REGISTERED:
            return False
        frame = json.dumps(dict(result), separators=(",", ":"), ensure_ascii=False)
        self._queue_result(InFlight(job_id, None), frame)
        return True

    def repeat(self, job_id: str, state: JobState, stored_result: str | None) -> Repeat:
        """A job id the node already has came again: queue what the backend should hear (never a second run).

        A reported result goes again only to a backend that deduplicates: any other credits every result
        frame it gets. A rejected one never goes again; one still in the outbox is sent by the outbox.
        """
        if self.state is not State.REGISTERED:
            return Repeat.NOTHING
        if state is JobState.REPORTED and stored_result is not None and Capability.DEDUPE in self.capabilities:
            self._queue_result(InFlight(job_id, None), stored_result)
            return Repeat.RESULT
        if Capability.JOB_STATUS in self.capabilities and state is not JobState.FINISHED:
            self._queue(JobStatusReport(id=job_id, nodeId=self.node_id, state=state), _Awaiting("job_status"))
            return Repeat.STATUS
        return Repeat.NOTHING

    def refuse(self, reason: str) -> bool:
        """(ext) Tell the backend we refused one of its frames; only a backend that takes error frames hears it."""
        if Capability.ERRORS not in self.capabilities:
            return False
        self._queue(ErrorMessage(message=reason), _Awaiting("error"))
        return True

    @property
    def in_flight(self) -> tuple[InFlight, ...]:
        return tuple(sent.result for sent in self._awaiting if sent.result is not None)

    @property
    def _ordered(self) -> bool:
        """Replies without an id are matched by order (the backend answers every frame, in order)."""
        return Capability.RESULT_IDS not in self.capabilities

    def _queue(self, message: Message, awaiting: _Awaiting) -> None:
        self._queue_frame(encode(message), awaiting)

    def _queue_result(self, sent: InFlight, frame: str) -> None:
        self._queue_frame(frame, _Awaiting("job_result", sent))

    def _queue_frame(self, frame: str, awaiting: _Awaiting) -> None:
        # A backend with result_ids names what its replies answer: only results need remembering.
        if self._ordered or awaiting.result is not None:
            self._awaiting.append(awaiting)
        self._outgoing.append(frame)

    # frames in ---------------------------------------------------------------------------------

    def receive(self, frame: str | bytes) -> list[Event]:
        """Everything one frame means. A bad frame is refused (with an error frame, to a backend that takes them)."""
        try:
            value = load_object(frame)
        except ProtocolError as exc:
            return self._bad_frame(str(exc), reply=True)
        try:
            message = validate_backend(value)
        except ProtocolError as exc:
            # Never answer an error with an error: two peers that each dislike the other's frames
            # would otherwise keep each other busy forever.
            return self._bad_frame(str(exc), reply=value["type"] != "error")
        return self._handle(message)

    def _bad_frame(self, reason: str, *, reply: bool) -> list[Event]:
        if reply:
            self.refuse(reason)
        return [BadFrame(reason)]

    def _handle(self, message: Message) -> list[Event]:
        if isinstance(message, Registered):
            return self._registered(message)
        if isinstance(message, Ping):
            self._queue(Pong(), _Awaiting("pong"))
            return []
        if isinstance(message, JobCancel):
            return [CancelRequested(message.jobId)]
        if isinstance(message, JobFrame):
            return self._job(message.fields())
        assert isinstance(message, Ack | ErrorMessage)
        if self.state is State.REGISTERING:
            return self._register_answer(message)
        return self._reply(message)

    def _registered(self, message: Registered) -> list[Event]:
        if self.state not in (State.REGISTERING, State.REGISTERED):
            return []  # refused or closing: this connection is being closed
        if self.state is State.REGISTERING:
            self._answered("register")
        asked = self.node_id
        self.state, self.node_id, self.capabilities = State.REGISTERED, message.nodeId, message.announced()
        if not self._ordered:  # from now on only results are remembered
            self._awaiting = deque(sent for sent in self._awaiting if sent.result is not None)
        if asked is None or asked == message.nodeId:
            return [RegisteredEvent(message.nodeId, resumed=asked is not None)]
        return [RegisteredEvent(message.nodeId, resumed=False, previous=asked)]

    def _register_answer(self, reply: Ack | ErrorMessage) -> list[Event]:
        """Only the register is in flight: an error answers it; an auth error refuses this token."""
        if isinstance(reply, Ack):
            return []
        self._answered("register")
        reason = self._redact(reply.message)
        if reason.startswith(AUTH_ERRORS):
            self.state, self.refusal, self._refused_token = State.REFUSED, reason, self._token
            return [AuthFailed(reason)]
        return [BackendError(reason)]

    def _answered(self, frame_type: str) -> None:
        if self._awaiting and self._awaiting[0].frame_type == frame_type:
            self._awaiting.popleft()

    def _reply(self, reply: Ack | ErrorMessage) -> list[Event]:
        """An ack or error once registered: settle the result it answers, if it answers one."""
        sent = self._answering(reply.id)
        if isinstance(reply, Ack):
            return [ResultAcked(sent.job_id, sent.entry_id, reply.credit)] if sent else []
        reason = self._redact(reply.message)
        if sent:
            return [ResultRejected(sent.job_id, sent.entry_id, reason)]
        return [BackendError(reason)]

    def _answering(self, job_id: str | None) -> InFlight | None:
        """Take what a reply answers off the FIFO: the result it names, else (ordered) the oldest frame."""
        if job_id is not None:
            for awaiting in self._awaiting:
                if awaiting.result is not None and awaiting.result.job_id == job_id:
                    self._awaiting.remove(awaiting)
                    return awaiting.result
        if not self._ordered or not self._awaiting:
            return None  # a result not sent on this connection is sent (and settled) on the next one
        oldest = self._awaiting.popleft()
        # A reply naming another job than the oldest frame's answers that frame, but settles nothing.
        return oldest.result if job_id is None else None

    def _job(self, fields: dict[str, Any]) -> list[Event]:
        job_id = job_id_of(fields)
        if job_id is None:
            reason = "job refused: 'id' must be 1-64 characters of A-Z a-z 0-9 . _ -"
            self.refuse(reason)
            return [JobRefused(reason)]
        return [JobReceived(job_id, fields)]

    def _redact(self, text: str) -> str:
        """A backend that echoes our token in an error text must not get it into our logs."""
        for token in (self._token, self._refused_token):
            if token:
                text = text.replace(token, REDACTED)
        return text
