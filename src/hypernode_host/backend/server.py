"""The reference backend: upstream's WebSocket message set and error texts, plus job submission and an Oracle.

The real Hypernode backend is not public (research/upstream.md 1.4 describes the prototype it stands in for).
One WebSocket endpoint serves both sides: nodes ``register``, ``heartbeat`` and send ``job_result``; any
connection that has not registered may ``submit``, ``wait``, ``cancel`` and ask for ``status``. State is in
memory only. ``BackendThread`` runs one on its own loop for tests; ``run_backend`` is the CLI's entry point.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import signal
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from hypernode_host import constants as C
from hypernode_host import messages
from hypernode_host.backend import oracle
from hypernode_host.bridge.wirelog import wire_logger
from hypernode_host.errors import ConfigError, HypernodeError, ProtocolError

logger = logging.getLogger(__name__)

T = TypeVar("T")

AGENT_TYPES = frozenset({"register", "heartbeat", "job_result", "pong", "job_status", "error"})
SUBMITTER_TYPES = frozenset({"submit", "wait", "cancel", "status"})
# A peer that does not answer our close frame (often a test blocked on this very backend) is cut off
# after this long instead of websockets' default 10 s.
CLOSE_TIMEOUT_S = 2.0
MAX_ERROR_TEXT = 300


class Refused(HypernodeError):
    """A request the backend turns down; the message is the error text sent on the wire."""


@dataclass(frozen=True)
class HeartbeatRecord:
    monotonic: float
    wall_ms: int
    stats: dict[str, Any]


@dataclass
class NodeRecord:
    node_id: str
    host_info: dict[str, Any]
    public_key: str | None
    capacity: dict[str, int] | None
    registered_at_ms: int
    connection: ServerConnection | None = None
    heartbeats: list[HeartbeatRecord] = field(default_factory=list)
    pongs: list[int] = field(default_factory=list)
    registrations: int = 0  # 1 for the first register, +1 for every resume
    errors: list[str] = field(default_factory=list)  # (ext) error frames the node sent us

    def summary(self) -> dict[str, Any]:
        return {
            "nodeId": self.node_id,
            "hostname": self.host_info.get("hostname"),
            "connected": self.connection is not None,
            "heartbeats": len(self.heartbeats),
            "lastHeartbeatAt": self.heartbeats[-1].wall_ms if self.heartbeats else None,
            "registrations": self.registrations,
        }


@dataclass
class JobRecord:
    job: dict[str, Any]  # the job fields exactly as sent to the node, without "type"
    state: str = "pending"  # pending → dispatched → finished; cancelled / cancel_sent on request
    node_id: str | None = None
    dispatched_at_ms: int | None = None
    received_at_ms: int | None = None
    results: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)  # (ext) job_status states the node reported
    dispatches: int = 0  # sends of the job frame: 1, plus one per resume while it had no result
    verification: oracle.Verification | None = None
    waiters: set[ServerConnection] = field(default_factory=set)

    @property
    def job_id(self) -> str:
        return str(self.job["id"])

    def summary(self) -> dict[str, Any]:
        first = self.results[0] if self.results else {}
        return {
            "id": self.job_id,
            "nodeId": self.node_id,
            "state": self.state,
            "status": first.get("status"),
            "verified": self.verification.verified if self.verification else None,
        }

    def result_frame(self) -> dict[str, Any]:
        assert self.verification is not None  # only called once the first result is in
        return {
            "type": "result",
            "id": self.job_id,
            "result": self.results[0],
            "verification": self.verification.to_json(),
        }


@dataclass
class _Peer:
    """One WebSocket connection, and the node registered on it (if any)."""

    connection: ServerConnection
    node_id: str | None = None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _dumps(message: Mapping[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def _wire_text(exc: ProtocolError) -> str:
    # Bounded: a validation error can quote a field name, and field names come from the peer.
    text = str(exc)[:MAX_ERROR_TEXT]
    # Upstream's exact texts: upstream clients match on them, and the details are not theirs to parse.
    if text.startswith("Invalid message format"):
        return "Invalid message format"
    if text.startswith("Unknown message type"):
        return "Unknown message type"
    return text


def _ws_url(host: str, port: int, secure: bool = False) -> str:
    scheme = "wss" if secure else "ws"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


class ReferenceBackend:
    """In-memory backend. Every method that touches state runs on the loop that serves it."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        tokens: Iterable[str] = (),
        *,
        ack_results: bool = True,
        close_timeout: float = CLOSE_TIMEOUT_S,
        redispatch_on_resume: bool = True,
        ssl_context: ssl.SSLContext | None = None,
        upstream_acks: bool = False,
    ) -> None:
        self.host = host
        self.ssl_context = ssl_context  # serve wss:// (tests of the bridge's certificate checks)
        self._requested_port = port
        # token → the nodeId it created (None while unused). Tokens are single-use, as upstream's.
        self._tokens: dict[str, str | None] = dict.fromkeys(tokens)
        self._nodes: dict[str, NodeRecord] = {}
        self._jobs: dict[str, JobRecord] = {}
        self._round_robin = 0
        self._server: Server | None = None
        self.close_timeout = close_timeout
        self._background: set[asyncio.Task[None]] = set()
        # Off lets bridge tests see a result stay in the outbox and come back after a reconnect.
        self.ack_results = ack_results
        # Upstream's backend acks a result without naming it; on, this one does the same.
        self.upstream_acks = upstream_acks
        # At-least-once dispatch: a job frame lost with a connection (or with a node killed before it
        # recorded the job) is sent again when the node resumes; the node dedupes by job id.
        self.redispatch_on_resume = redispatch_on_resume

    # lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        # max_size on purpose: the largest legitimate frame is a job with its script (or its result).
        self._server = await serve(
            self._handle,
            self.host,
            self._requested_port,
            max_size=C.MAX_FRAME_BYTES,
            close_timeout=self.close_timeout,
            ssl=self.ssl_context,
            logger=wire_logger("websockets.server"),  # no frame lines: a register frame holds a token
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def serve(self) -> None:
        """Start and serve until ``stop`` is called."""
        await self.start()
        assert self._server is not None
        await self._server.wait_closed()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the backend is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return _ws_url(self.host, self.port, self.ssl_context is not None)

    def add_token(self, token: str) -> None:
        self._tokens.setdefault(token, None)

    # connection handling -------------------------------------------------------------------------

    async def _handle(self, connection: ServerConnection) -> None:
        peer = _Peer(connection)
        try:
            async for frame in connection:
                await self._on_frame(peer, frame)
        except ConnectionClosed:
            pass
        finally:
            self._forget(peer)

    def _forget(self, peer: _Peer) -> None:
        for record in self._jobs.values():
            record.waiters.discard(peer.connection)
        node = self._nodes.get(peer.node_id) if peer.node_id else None
        # A resumed node has a new socket by now; the old one closing must not mark it offline.
        if node is not None and node.connection is peer.connection:
            node.connection = None
            logger.info("node %s disconnected", node.node_id)

    async def _on_frame(self, peer: _Peer, frame: str | bytes) -> None:
        try:
            value = messages.load_object(frame)
            await self._route(peer, value)
        except ProtocolError as exc:
            logger.info("bad frame from %s: %.300s", peer.node_id or "a client", exc)
            await self._error(peer.connection, _wire_text(exc))
        except Refused as exc:
            logger.info("request from %s refused: %s", peer.node_id or "a client", exc)
            await self._error(peer.connection, str(exc))
        except Exception:
            # A bug here must show, but must not cost the peer its connection: a node would reconnect
            # and a bridge test would see a disconnect it did not cause.
            logger.exception("reference backend failed on a frame from %s", peer.node_id or "a client")
            await self._error(peer.connection, "Internal error")

    async def _route(self, peer: _Peer, value: dict[str, Any]) -> None:
        kind = value["type"]
        if kind in SUBMITTER_TYPES and peer.node_id is None:
            await self._on_submitter(peer.connection, value)
        elif kind == "register":
            await self._on_register(peer, value)
        elif kind == "job_result":
            await self._on_job_result(peer, value)
        elif kind == "error":
            self._on_node_error(peer, value)
        elif kind in AGENT_TYPES:
            message = messages.decode_agent(value)
            if isinstance(message, messages.Heartbeat):
                await self._on_heartbeat(peer, message)
            elif isinstance(message, messages.JobStatus):
                self._on_job_status(peer, message)
            elif isinstance(message, messages.Pong) and peer.node_id in self._nodes:
                self._nodes[peer.node_id].pongs.append(_now_ms())
        else:
            raise Refused("Unknown message type")

    def _on_node_error(self, peer: _Peer, value: dict[str, Any]) -> None:
        """(ext) A node telling us it refused one of our frames. Never answered: an error about an
        error would let two peers keep each other busy."""
        text = value.get("message")
        if not isinstance(text, str) or peer.node_id not in self._nodes:
            logger.info("ignored an error frame from %s", peer.node_id or "a client")
            return
        self._nodes[peer.node_id].errors.append(text[:MAX_ERROR_TEXT])
        logger.info("node %s refused a frame: %.300s", peer.node_id, text)

    def _on_job_status(self, peer: _Peer, message: messages.JobStatus) -> None:
        record = self._jobs.get(message.id)
        if record is None or peer.node_id is None or record.node_id != peer.node_id:
            raise Refused("Job not found")
        record.statuses.append(message.state.value)
        logger.info("job %s is %s on node %s", record.job_id, message.state.value, peer.node_id)

    async def _send(self, connection: ServerConnection, data: str | bytes) -> bool:
        try:
            await connection.send(data)
        except ConnectionClosed:
            logger.debug("could not send: connection closed")
            return False
        return True

    async def _error(self, connection: ServerConnection, text: str) -> None:
        await self._send(connection, _dumps({"type": "error", "message": text}))

    # node side -----------------------------------------------------------------------------------

    def _check_token(self, value: Mapping[str, Any]) -> str | None:
        """The nodeId this register resumes (None for a new node); Refused with upstream's texts."""
        token = value.get("token")
        if not isinstance(token, str) or not token:
            raise Refused("Token is required")
        if token not in self._tokens:
            raise Refused("Invalid token")
        owner = self._tokens[token]
        if owner is not None and value.get("nodeId") != owner:
            raise Refused("Token already used")
        return owner

    async def _on_register(self, peer: _Peer, value: dict[str, Any]) -> None:
        resumed = self._check_token(value)  # auth before shape: a stranger learns nothing of the schema
        message = messages.decode_agent(value)
        if not isinstance(message, messages.Register):
            raise ProtocolError("bad register message")
        node = self._nodes.get(resumed) if resumed else None
        if node is None:
            node = NodeRecord(
                node_id=str(uuid.uuid4()),
                host_info=message.hostInfo.model_dump(mode="json"),
                public_key=message.nodePublicKey,
                capacity=message.capacity,
                registered_at_ms=_now_ms(),
            )
            self._nodes[node.node_id] = node
            self._tokens[message.token] = node.node_id
        else:
            self._resume(node, message)
        if peer.node_id is not None and peer.node_id != node.node_id:
            self._forget(peer)  # a socket re-registering as another node leaves the first one offline
        peer.node_id = node.node_id
        node.connection = peer.connection
        node.registrations += 1
        logger.info(
            "node %s %s (hostname %s)",
            node.node_id,
            "resumed" if resumed else "registered",
            node.host_info.get("hostname"),
        )
        reply = {"type": "registered", "nodeId": node.node_id, "message": "Successfully registered"}
        await self._send(peer.connection, _dumps(reply))
        if resumed and self.redispatch_on_resume:
            await self._redispatch(node)
        await self._dispatch_pending()

    async def _redispatch(self, node: NodeRecord) -> None:
        """Send a resumed node every job it was given and has not answered, in dispatch order."""
        unanswered = [
            record
            for record in self._jobs.values()
            if record.node_id == node.node_id and not record.results and record.state == "dispatched"
        ]
        unanswered.sort(key=lambda record: record.dispatched_at_ms or 0)
        for record in unanswered:
            if node.connection is None or not await self._send(node.connection, _dumps({"type": "job", **record.job})):
                return
            record.dispatches += 1
            logger.info("job %s dispatched again to resumed node %s", record.job_id, node.node_id)

    def _resume(self, node: NodeRecord, message: messages.Register) -> None:
        node.host_info = message.hostInfo.model_dump(mode="json")
        node.capacity = message.capacity or node.capacity
        if message.nodePublicKey and message.nodePublicKey != node.public_key:
            if node.public_key is not None:
                logger.warning("node %s resumed with a different public key", node.node_id)
            node.public_key = message.nodePublicKey

    async def _on_heartbeat(self, peer: _Peer, message: messages.Heartbeat) -> None:
        if peer.node_id is None or message.nodeId != peer.node_id:
            raise Refused("Invalid node ID")
        record = HeartbeatRecord(time.monotonic(), _now_ms(), message.stats.model_dump(mode="json"))
        self._nodes[peer.node_id].heartbeats.append(record)
        await self._send(peer.connection, _dumps({"type": "ack"}))

    async def _on_job_result(self, peer: _Peer, value: dict[str, Any]) -> None:
        job_id = value.get("id")
        record = self._jobs.get(job_id) if isinstance(job_id, str) else None
        # A job never dispatched cannot have a result: whoever sends one is guessing ids.
        if record is None or record.node_id is None or record.dispatched_at_ms is None:
            raise Refused("Job not found")
        try:
            messages.decode_agent(value)
        except ProtocolError as exc:
            # Still recorded and graded: the Oracle says which checks the missing fields fail, which
            # tells a node's developer more than a bare error, and the node's outbox can drain.
            logger.warning("job %s result does not fit the schema: %s", record.job_id, exc)
        record.results.append(value)
        first = len(record.results) == 1
        if first:
            self._grade(record, value)
        if self.ack_results:
            reply = {"type": "ack", "message": "Job result received"}
            if not self.upstream_acks:
                reply["id"] = record.job_id
            await self._send(peer.connection, _dumps(reply))
        if first:
            await self._deliver(record)

    def _grade(self, record: JobRecord, result: Mapping[str, Any]) -> None:
        assert record.node_id is not None and record.dispatched_at_ms is not None
        record.received_at_ms = _now_ms()
        record.state = "finished"
        node = self._nodes.get(record.node_id)
        record.verification = oracle.verify(
            record.job,
            result,
            node_id=record.node_id,
            node_public_key=node.public_key if node else None,
            dispatched_at_ms=record.dispatched_at_ms,
            received_at_ms=record.received_at_ms,
        )
        verdict = record.verification
        logger.info(
            "job %s result %s: verified=%s failed=%s",
            record.job_id,
            result.get("status"),
            verdict.verified,
            ",".join(verdict.failed) or "none",
        )

    async def _deliver(self, record: JobRecord) -> None:
        frame = _dumps(record.result_frame())
        for connection in list(record.waiters):
            await self._send(connection, frame)
        record.waiters.clear()

    # submitter side ------------------------------------------------------------------------------

    async def _on_submitter(self, connection: ServerConnection, value: dict[str, Any]) -> None:
        kind = value["type"]
        if kind == "status":
            await self._send(connection, _dumps(self.status()))
            return
        if kind == "submit":
            await self._on_submit(connection, value)
            return
        record = self._job(value.get("id"))
        if kind == "wait":
            await self._add_waiter(record, connection)
        else:
            await self.cancel(record.job_id)
            await self._send(connection, _dumps({"type": "cancel_sent", "id": record.job_id}))

    async def _on_submit(self, connection: ServerConnection, value: Mapping[str, Any]) -> None:
        job = value.get("job")
        if not isinstance(job, dict):
            raise Refused("submit needs a 'job' object")
        record = self._record(job)
        if value.get("wait") is True:
            record.waiters.add(connection)  # before dispatch, so a fast result cannot slip past the waiter
        await self._send(connection, _dumps({"type": "submitted", "id": record.job_id}))
        await self._dispatch(record)

    def _job(self, job_id: Any) -> JobRecord:
        record = self._jobs.get(job_id) if isinstance(job_id, str) else None
        if record is None:
            raise Refused("Job not found")
        return record

    def _record(self, job: Mapping[str, Any]) -> JobRecord:
        fields = {key: value for key, value in job.items() if key != "type"}
        fields.setdefault("id", str(uuid.uuid4()))
        job_id = fields["id"]
        if not isinstance(job_id, str) or not job_id:
            raise Refused("Job id must be a non-empty string")
        if job_id in self._jobs:
            raise Refused("Duplicate job id")
        record = self._jobs[job_id] = JobRecord(job=fields)
        return record

    async def submit(self, job: Mapping[str, Any]) -> str:
        """Record a job and dispatch it (pending until a node registers if none is); its id."""
        record = self._record(job)
        await self._dispatch(record)
        return record.job_id

    async def _add_waiter(self, record: JobRecord, connection: ServerConnection) -> None:
        if record.verification is not None:
            await self._send(connection, _dumps(record.result_frame()))
        else:
            record.waiters.add(connection)

    async def cancel(self, job_id: str) -> None:
        """Forward a cancel to the node holding the job; a pending job is simply never dispatched."""
        record = self._job(job_id)
        if record.node_id is None:
            record.state = "cancelled"
            return
        node = self._nodes.get(record.node_id)
        if node is None or node.connection is None:
            raise Refused("Node not connected")
        if record.state != "finished":
            record.state = "cancel_sent"
        await self._send(node.connection, _dumps({"type": "job_cancel", "jobId": job_id}))

    def status(self) -> dict[str, Any]:
        return {
            "type": "status",
            "nodes": [node.summary() for node in self._nodes.values()],
            "jobs": [record.summary() for record in self._jobs.values()],
        }

    # dispatch ------------------------------------------------------------------------------------

    def _connected_nodes(self) -> list[NodeRecord]:
        return [node for node in self._nodes.values() if node.connection is not None]

    async def _dispatch(self, record: JobRecord) -> bool:
        """Send the job to the next connected node in turn; False (still pending) when none takes it."""
        candidates = self._connected_nodes()
        for _ in candidates:
            node = candidates[self._round_robin % len(candidates)]
            self._round_robin += 1
            if node.connection is None:
                continue
            # Recorded before the send: the node cannot start earlier, so this bounds startedAt honestly.
            record.node_id, record.dispatched_at_ms, record.state = node.node_id, _now_ms(), "dispatched"
            if await self._send(node.connection, _dumps({"type": "job", **record.job})):
                record.dispatches += 1
                logger.info("job %s dispatched to node %s", record.job_id, node.node_id)
                return True
            record.node_id, record.dispatched_at_ms, record.state = None, None, "pending"
        logger.info("job %s pending: no node connected", record.job_id)
        return False

    async def _dispatch_pending(self) -> None:
        for record in list(self._jobs.values()):
            if record.state == "pending" and not await self._dispatch(record):
                return

    # helpers for tests and tools (on the loop) ---------------------------------------------------

    def _targets(self, node_id: str | None) -> list[ServerConnection]:
        if node_id is not None and node_id not in self._nodes:
            raise Refused("Node not found")
        nodes = self._connected_nodes() if node_id is None else [self._nodes[node_id]]
        return [node.connection for node in nodes if node.connection is not None]

    async def send_raw(self, data: str | bytes, node_id: str | None = None) -> int:
        """Send a frame as is to one node or every connected node; how many sends succeeded."""
        sent = [await self._send(connection, data) for connection in self._targets(node_id)]
        return sum(sent)

    async def push(self, message: Mapping[str, Any], node_id: str | None = None) -> int:
        return await self.send_raw(_dumps(message), node_id)

    def disconnect(self, node_id: str | None = None, *, abort: bool = False) -> int:
        """Drop node sockets from the backend's side, to make nodes reconnect; how many.

        Returns at once: the close handshake runs in the background, because the peer that must answer
        it may be waiting on this call. ``abort`` cuts the TCP connection without a close frame instead,
        like a network failure.
        """
        targets = self._targets(node_id)
        for connection in targets:
            if abort:
                connection.transport.abort()
            else:
                task = asyncio.get_running_loop().create_task(connection.close())
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        return len(targets)

    def node_snapshots(self) -> list[dict[str, Any]]:
        return [
            {
                **node.summary(),
                "hostInfo": copy.deepcopy(node.host_info),
                "nodePublicKey": node.public_key,
                "capacity": copy.deepcopy(node.capacity),
                "registeredAt": node.registered_at_ms,
                "pongs": len(node.pongs),
                "errors": list(node.errors),
            }
            for node in self._nodes.values()
        ]

    def job_snapshots(self) -> list[dict[str, Any]]:
        return [
            {
                **record.summary(),
                "job": copy.deepcopy(record.job),
                "dispatchedAt": record.dispatched_at_ms,
                "dispatches": record.dispatches,
                "statuses": list(record.statuses),
            }
            for record in self._jobs.values()
        ]

    def results_of(self, job_id: str) -> list[dict[str, Any]]:
        record = self._jobs.get(job_id)
        return copy.deepcopy(record.results) if record else []

    def heartbeats_of(self, node_id: str) -> list[HeartbeatRecord]:
        node = self._nodes.get(node_id)
        return list(node.heartbeats) if node else []

    def verification_of(self, job_id: str) -> oracle.Verification | None:
        record = self._jobs.get(job_id)
        return record.verification if record else None


class BackendThread:
    """A ReferenceBackend on its own event loop in a daemon thread; every accessor is thread-safe.

    Use as a context manager. Accessors return copies taken on the backend's loop. They block the calling
    thread briefly; from an async test whose own loop holds a peer, the blocking ``wait_*`` helpers and
    ``stop`` belong in ``asyncio.to_thread`` (stop waits for peers to answer the close, up to close_timeout).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        tokens: Iterable[str] = (),
        *,
        ack_results: bool = True,
        start_timeout: float = 10.0,
        close_timeout: float = CLOSE_TIMEOUT_S,
        redispatch_on_resume: bool = True,
        ssl_context: ssl.SSLContext | None = None,
        upstream_acks: bool = False,
    ) -> None:
        self.backend = ReferenceBackend(
            host,
            port,
            tokens,
            ack_results=ack_results,
            close_timeout=close_timeout,
            redispatch_on_resume=redispatch_on_resume,
            ssl_context=ssl_context,
            upstream_acks=upstream_acks,
        )
        self._start_timeout = start_timeout
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self._port: int | None = None

    def __enter__(self) -> BackendThread:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), name="hn-backend", daemon=True)
        self._thread.start()
        if not self._ready.wait(self._start_timeout):
            raise TimeoutError("the reference backend did not start in time")
        if self._failure is not None:
            self._thread.join(self._start_timeout)
            raise self._failure

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        try:
            await self.backend.start()
            self._port = self.backend.port
        except BaseException as exc:  # handed to the starting thread, which raises it
            self._failure = exc
            return
        finally:
            self._ready.set()
        try:
            await self._stop_event.wait()
        finally:
            await self.backend.stop()

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stop_event is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop_event.set)
        # Closing waits up to close_timeout for each peer's answer, in parallel.
        self._thread.join(self._start_timeout + self.backend.close_timeout)
        self._thread = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the backend is not started")
        return self._port

    @property
    def url(self) -> str:
        return _ws_url(self.backend.host, self.port, self.backend.ssl_context is not None)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None or self._thread is None or not self._thread.is_alive():
            coro.close()
            raise RuntimeError("the backend is not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(self._start_timeout)

    def _on_loop(self, read: Callable[[], T]) -> T:
        async def on_loop() -> T:
            return read()

        return self._call(on_loop())

    # reads

    def nodes(self) -> list[dict[str, Any]]:
        return self._on_loop(self.backend.node_snapshots)

    def jobs(self) -> list[dict[str, Any]]:
        return self._on_loop(self.backend.job_snapshots)

    def results(self, job_id: str) -> list[dict[str, Any]]:
        """Every job_result received for the job, in order of receipt (replays included)."""
        return self._on_loop(lambda: self.backend.results_of(job_id))

    def heartbeats(self, node_id: str) -> list[HeartbeatRecord]:
        return self._on_loop(lambda: self.backend.heartbeats_of(node_id))

    def verification(self, job_id: str) -> oracle.Verification | None:
        return self._on_loop(lambda: self.backend.verification_of(job_id))

    def status(self) -> dict[str, Any]:
        return self._on_loop(self.backend.status)

    # writes

    def add_token(self, token: str) -> None:
        self._on_loop(lambda: self.backend.add_token(token))

    def set_ack_results(self, value: bool) -> None:
        def assign() -> None:
            self.backend.ack_results = value

        self._on_loop(assign)

    def set_upstream_acks(self, value: bool) -> None:
        """On: result acks carry no id, as upstream's backend sends them."""

        def assign() -> None:
            self.backend.upstream_acks = value

        self._on_loop(assign)

    def push(self, message: Mapping[str, Any], node_id: str | None = None) -> int:
        """Send a JSON object to one node or all connected nodes; how many got it."""
        return self._call(self.backend.push(message, node_id))

    def send_raw(self, data: str | bytes, node_id: str | None = None) -> int:
        """Send a frame exactly as given (malformed JSON, binary...) to one node or all."""
        return self._call(self.backend.send_raw(data, node_id))

    def send_job(self, job: Mapping[str, Any]) -> str:
        """Submit a job as a submitter would (recorded, its result verified); its id. Refused if known."""
        return self._call(self.backend.submit(job))

    def cancel(self, job_id: str) -> None:
        self._call(self.backend.cancel(job_id))

    def ping(self, node_id: str | None = None) -> int:
        return self.push({"type": "ping"}, node_id)

    def disconnect(self, node_id: str | None = None, *, abort: bool = False) -> int:
        """Drop node sockets (see ReferenceBackend.disconnect); returns without waiting for the close."""
        return self._on_loop(lambda: self.backend.disconnect(node_id, abort=abort))

    # waits (blocking; poll the loop, which is cheap for a test backend)

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout} s")
            time.sleep(interval)

    def wait_for_node(self, timeout: float = 10.0) -> str:
        """The id of a connected node, once one has registered."""
        self.wait_until(lambda: any(node["connected"] for node in self.nodes()), timeout)
        return str(next(node["nodeId"] for node in self.nodes() if node["connected"]))

    def wait_for_result(self, job_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """The first job_result received for the job."""
        self.wait_until(lambda: bool(self.results(job_id)), timeout)
        return self.results(job_id)[0]


def run_backend(host: str, port: int, tokens: Iterable[str]) -> None:
    """Serve until SIGINT or SIGTERM (the ``dev-backend`` command)."""
    tokens = list(tokens)
    if not tokens:
        raise ConfigError("the reference backend needs at least one --token")
    asyncio.run(_serve_until_signal(ReferenceBackend(host, port, tokens)))


async def _serve_until_signal(backend: ReferenceBackend) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        await backend.start()
        logger.info("reference backend listening on %s", backend.url)
        await stop.wait()
        logger.info("reference backend stopping")
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
        await backend.stop()
