"""The bridge's protocol session, Sans-I/O: frames in, events and messages out.

No socket, no Redis, no clock inside: the asyncio layer (bridge/client.py) feeds it frames
and the time, and carries out what it returns. One Session lives for one connection.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Any

from hypernode_host.errors import ProtocolError
from hypernode_host.jobs import job_id_of
from hypernode_host.messages import (
    Ack,
    ErrorMessage,
    Heartbeat,
    HeartbeatStats,
    HostInfo,
    JobCancel,
    JobFrame,
    Message,
    Ping,
    Pong,
    Register,
    Registered,
    decode_backend,
)

# Errors after which retrying with the same credentials cannot help (upstream's texts).
AUTH_ERRORS = ("Invalid token", "Token already used", "Token is required")


class State(enum.Enum):
    REGISTERING = "registering"
    REGISTERED = "registered"
    REFUSED = "refused"


# Events: what happened, for the I/O layer to act on ----------------------------------------


@dataclass(frozen=True)
class Send:
    message: Message


@dataclass(frozen=True)
class RegisteredEvent:
    node_id: str


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


class Session:
    """One connection's protocol state."""

    def __init__(self, token: str, previous_node_id: str | None, public_key: str) -> None:
        self._token = token
        self.node_id = previous_node_id
        self._public_key = public_key
        self.state = State.REGISTERING
        self._in_flight: deque[str] = deque()  # job ids of results sent and not yet acknowledged

    def register(self, host_info: HostInfo, capacity: dict[str, int]) -> Register:
        """The first message on a new connection (carries our previous nodeId to resume)."""
        return Register(
            token=self._token,
            hostInfo=host_info,
            nodeId=self.node_id,
            nodePublicKey=self._public_key,
            capacity=capacity,
        )

    def heartbeat(self, timestamp: str, stats: HeartbeatStats) -> Heartbeat | None:
        """A heartbeat, or None before ``registered`` (upstream sent nodeId null, bug B5)."""
        if self.state is not State.REGISTERED:
            return None
        return Heartbeat(nodeId=self.node_id, timestamp=timestamp, stats=stats)

    def result_sent(self, job_id: str) -> None:
        self._in_flight.append(job_id)

    @property
    def in_flight(self) -> tuple[str, ...]:
        return tuple(self._in_flight)

    def receive(self, frame: str | bytes) -> list[Event]:
        """Everything one frame means."""
        try:
            message = decode_backend(frame)
        except ProtocolError as exc:
            return [BadFrame(str(exc)), Send(ErrorMessage(message=str(exc)))]
        return self._handle(message)

    def _handle(self, message: Message) -> list[Event]:
        if isinstance(message, Registered):
            self.state = State.REGISTERED
            self.node_id = message.nodeId
            return [RegisteredEvent(message.nodeId)]
        if isinstance(message, Ping):
            return [Send(Pong())]
        if isinstance(message, Ack):
            return self._ack(message)
        if isinstance(message, JobCancel):
            return [CancelRequested(message.jobId)]
        if isinstance(message, JobFrame):
            return self._job(message.fields())
        assert isinstance(message, ErrorMessage)
        if self.state is State.REGISTERING and message.message.startswith(AUTH_ERRORS):
            self.state = State.REFUSED
            return [AuthFailed(message.message)]
        return [BackendError(message.message)]

    def _ack(self, ack: Ack) -> list[Event]:
        if ack.id is not None:
            if ack.id in self._in_flight:
                self._in_flight.remove(ack.id)
            return [ResultAcked(ack.id)]  # even for a result sent on an earlier connection
        # Upstream's backend acks results without an id ("Job result received") and heartbeats
        # with a bare ack: a bare ack with a result message settles the oldest result in flight.
        if ack.message and "result" in ack.message.lower() and self._in_flight:
            return [ResultAcked(self._in_flight.popleft())]
        return []

    def _job(self, fields: dict[str, Any]) -> list[Event]:
        job_id = job_id_of(fields)
        if job_id is None:
            reason = "job refused: 'id' must be 1-64 characters of A-Z a-z 0-9 . _ -"
            return [JobRefused(reason), Send(ErrorMessage(message=reason))]
        return [JobReceived(job_id, fields)]
