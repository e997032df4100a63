"""The bridge's protocol session, Sans-I/O: frames in, events and messages out.

No socket, no Redis, no clock inside: the asyncio layer (bridge/client.py) tells it when a
connection opens and closes, feeds it frames, and carries out what it returns. One Session lives
as long as the bridge, across reconnects, so the node id it registered with is the one the next
``register`` carries (resume) and the results in flight are forgotten with the connection that
carried them (the outbox sends them again on the next one).

    CONNECTING ──connected()──▶ REGISTERING ──registered──▶ REGISTERED
        ▲                           │                           │
        └───── connection_lost() ───┴───────────────────────────┘
    REGISTERING ──auth error──▶ REFUSED (final)
    any state but REFUSED ──close()──▶ CLOSED (final)
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Any

from hypernode_host.core.jobs import JobState, job_id_of
from hypernode_host.core.messages import (
    Ack,
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
    load_object,
    validate_backend,
)
from hypernode_host.errors import HypernodeError, ProtocolError

# Errors after which retrying with the same credentials cannot help (upstream's texts).
AUTH_ERRORS = ("Invalid token", "Token already used", "Token is required")
REDACTED = "***"


class State(enum.Enum):
    CONNECTING = "connecting"  # no connection: about to connect, or waiting to reconnect
    REGISTERING = "registering"  # connected, register sent, no answer yet
    REGISTERED = "registered"
    REFUSED = "refused"  # the backend refused our token: final, reconnecting cannot help
    CLOSED = "closed"  # stopped by us: final


FINAL = frozenset({State.REFUSED, State.CLOSED})


# Events: what happened, for the I/O layer to act on ----------------------------------------


@dataclass(frozen=True)
class Send:
    message: Message


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
    """A job frame that cannot be addressed (no valid id): answered with an error frame."""

    reason: str


@dataclass(frozen=True)
class CancelRequested:
    job_id: str


@dataclass(frozen=True)
class ResultAcked:
    job_id: str
    entry_id: str | None  # the outbox entry to drop; None for a copy of a result already reported


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
    Send
    | RegisteredEvent
    | JobReceived
    | JobRefused
    | CancelRequested
    | ResultAcked
    | AuthFailed
    | BackendError
    | BadFrame
)


@dataclass(frozen=True)
class InFlight:
    """A result sent on this connection and not acknowledged yet."""

    job_id: str
    entry_id: str | None


class Session:
    """The protocol state of one bridge, across its connections."""

    def __init__(self, token: str, node_id: str | None, public_key: str) -> None:
        self._token = token
        self.node_id = node_id
        self._public_key = public_key
        self.state = State.CONNECTING
        self.refusal: str | None = None
        self._in_flight: deque[InFlight] = deque()

    def __repr__(self) -> str:  # the token stays out of every repr
        return f"Session(state={self.state.value}, node_id={self.node_id!r})"

    # connection lifecycle ----------------------------------------------------------------------

    def connected(self, host_info: HostInfo, capacity: dict[str, int]) -> Register:
        """A connection is open: the register to send first (with our previous nodeId, to resume)."""
        if self.state is not State.CONNECTING:
            raise HypernodeError(f"cannot register a session that is {self.state.value}")
        self.state = State.REGISTERING
        return Register(
            token=self._token,
            hostInfo=host_info,
            nodeId=self.node_id,
            nodePublicKey=self._public_key,
            capacity=capacity,
        )

    def connection_lost(self) -> bool:
        """The connection is gone; True if it had registered (a healthy connection resets backoff)."""
        healthy = self.state is State.REGISTERED
        self._in_flight.clear()  # the outbox sends every unacknowledged result again on the next one
        if self.state not in FINAL:
            self.state = State.CONNECTING
        return healthy

    def close(self) -> None:
        if self.state is not State.REFUSED:
            self.state = State.CLOSED

    # messages out ------------------------------------------------------------------------------

    def heartbeat(self, timestamp: str, stats: HeartbeatStats) -> Heartbeat | None:
        """A heartbeat, or None before ``registered`` (upstream's agent sent heartbeats with nodeId null)."""
        if self.state is not State.REGISTERED:
            return None
        return Heartbeat(nodeId=self.node_id, timestamp=timestamp, stats=stats)

    def job_status(self, job_id: str, state: JobState) -> JobStatusReport:
        """(ext) Where a job the backend sent again stands: it is known and is not run twice."""
        return JobStatusReport(id=job_id, nodeId=self.node_id, state=state)

    def result_sent(self, job_id: str, entry_id: str | None) -> None:
        """Call *before* sending the result, so its ack cannot overtake the bookkeeping."""
        self._in_flight.append(InFlight(job_id, entry_id))

    @property
    def in_flight(self) -> tuple[InFlight, ...]:
        return tuple(self._in_flight)

    # frames in ---------------------------------------------------------------------------------

    def receive(self, frame: str | bytes) -> list[Event]:
        """Everything one frame means. A bad frame gets an error reply naming the problem."""
        try:
            value = load_object(frame)
        except ProtocolError as exc:
            return self._refuse(str(exc), reply=True)
        try:
            message = validate_backend(value)
        except ProtocolError as exc:
            # Never answer an error with an error: two peers that each dislike the other's frames
            # would otherwise keep each other busy forever.
            return self._refuse(str(exc), reply=value["type"] != "error")
        return self._handle(message)

    def _refuse(self, reason: str, *, reply: bool) -> list[Event]:
        events: list[Event] = [BadFrame(reason)]
        if reply:
            events.append(Send(ErrorMessage(message=reason)))
        return events

    def _handle(self, message: Message) -> list[Event]:
        if isinstance(message, Registered):
            return self._registered(message)
        if isinstance(message, Ping):
            return [Send(Pong())]
        if isinstance(message, Ack):
            return self._ack(message)
        if isinstance(message, JobCancel):
            return [CancelRequested(message.jobId)]
        if isinstance(message, JobFrame):
            return self._job(message.fields())
        assert isinstance(message, ErrorMessage)
        reason = self._redact(message.message)
        if self.state is State.REGISTERING and reason.startswith(AUTH_ERRORS):
            self.state, self.refusal = State.REFUSED, reason
            return [AuthFailed(reason)]
        return [BackendError(reason)]

    def _registered(self, message: Registered) -> list[Event]:
        asked = self.node_id
        self.state, self.node_id = State.REGISTERED, message.nodeId
        if asked is None or asked == message.nodeId:
            return [RegisteredEvent(message.nodeId, resumed=asked is not None)]
        return [RegisteredEvent(message.nodeId, resumed=False, previous=asked)]

    def _ack(self, ack: Ack) -> list[Event]:
        if ack.id is not None:
            for sent in self._in_flight:
                if sent.job_id == ack.id:
                    self._in_flight.remove(sent)
                    return [ResultAcked(sent.job_id, sent.entry_id)]
            return []  # not sent on this connection: after a reconnect it is sent (and acked) again
        # Upstream's backend acks a result without an id ("Job result received") and a heartbeat with
        # a bare ack. It answers frames in order, so a result ack settles the oldest result in flight.
        if ack.message and "result" in ack.message.lower() and self._in_flight:
            sent = self._in_flight.popleft()
            return [ResultAcked(sent.job_id, sent.entry_id)]
        return []

    def _job(self, fields: dict[str, Any]) -> list[Event]:
        job_id = job_id_of(fields)
        if job_id is None:
            reason = "job refused: 'id' must be 1-64 characters of A-Z a-z 0-9 . _ -"
            return [JobRefused(reason), Send(ErrorMessage(message=reason))]
        return [JobReceived(job_id, fields)]

    def _redact(self, text: str) -> str:
        """A backend that echoes our token in an error text must not get it into our logs."""
        return text.replace(self._token, REDACTED) if self._token else text
