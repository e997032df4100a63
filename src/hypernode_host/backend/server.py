"""The reference backend: upstream's WebSocket message set and error texts, plus job submission and an Oracle.

The real Hypernode backend is not public; this one speaks the message set of upstream's published
prototype (``backend/ws-server.js``) and, by default, the node's extensions too: it announces its
capabilities in ``registered`` (result ids, deduplicated results, job_status, error frames), resumes a
node that asks for its node id, and credits a job's result once.

With ``upstream=True`` it behaves as the published prototype does, in every way a node can see:
single-use tokens and no resume (every ``register`` makes a new node; a used token gets "Token already
used"), ``registered`` announcing nothing, replies in order without ids (``ack`` for a heartbeat, ``ack``
"Job result received" or ``error`` "Job not found" for a result), "Unknown message type" for any frame a
node sends beyond register, heartbeat and job_result (our pong, job_status, error), every result it
accepts credited again (``credits``), no pings, and a demo job (``command: "sleep 5"``) 5 s after each
``register``.

One WebSocket endpoint serves both sides: nodes ``register``, ``heartbeat`` and send ``job_result``; any
connection that has not registered may ``submit``, ``wait``, ``cancel`` and ask for ``status`` (in either
mode: upstream takes submissions over HTTP, which this stands in for). State is in memory only.
``BackendThread`` runs one on its own loop for tests; ``run_backend`` is the CLI's entry point.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import signal
import ssl
import time
import uuid
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from hypernode_host.backend import oracle
from hypernode_host.backend.records import HeartbeatRecord, JobPhase, JobRecord, NodeRecord
from hypernode_host.core import messages
from hypernode_host.core.clock import now_ms
from hypernode_host.core.messages import MAX_FRAME_BYTES, Capability
from hypernode_host.errors import ConfigError, ProtocolError, RequestRefused
from hypernode_host.logs import wire_logger

log = logging.getLogger(__name__)


AGENT_TYPES = frozenset({"register", "heartbeat", "job_result", "pong", "job_status", "error"})
UPSTREAM_AGENT_TYPES = frozenset({"register", "heartbeat", "job_result"})  # upstream knows no other
SUBMITTER_TYPES = frozenset({"submit", "wait", "cancel", "status"})
# What this backend announces in `registered` (upstream's announces nothing).
CAPABILITIES = tuple(Capability)
UPSTREAM_DEMO_JOB_AFTER_S = 5.0  # upstream's prototype pushes a demo job this long after each register
MAX_REFUSED_IDS = 10_000  # distinct job ids whose results were refused, counted for tests
MAX_ECHOED_ID = 1024  # an id longer than a node's schema takes back is not echoed in the reply
# A peer that does not answer our close frame (often a test blocked on this very backend) is cut off
# after this long instead of websockets' default 10 s.
CLOSE_TIMEOUT_S = 2.0
MAX_ERROR_TEXT = 300


@dataclass
class _Peer:
    """One WebSocket connection, and the node registered on it (if any)."""

    connection: ServerConnection
    node_id: str | None = None


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


def ws_url(host: str, port: int, secure: bool = False) -> str:
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
        upstream: bool = False,
        demo_job_after_s: float | None = UPSTREAM_DEMO_JOB_AFTER_S,
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
        self.upstream = upstream
        # Upstream mode only: None sends no demo job (tests that count jobs exactly).
        self.demo_job_after_s = demo_job_after_s if upstream else None
        # At-least-once dispatch: a job frame lost with a connection (or with a node killed before it
        # recorded the job) is sent again when the node resumes; the node dedupes by job id.
        self.redispatch_on_resume = redispatch_on_resume
        self.registers_refused = 0  # register frames answered with a token error
        self._refused_results: dict[str, int] = {}  # job id → job_result frames answered "Job not found"

    # lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        # max_size on purpose: the largest legitimate frame is a job with its script (or its result).
        self._server = await serve(
            self._handle,
            self.host,
            self._requested_port,
            max_size=MAX_FRAME_BYTES,
            close_timeout=self.close_timeout,
            ping_interval=None if self.upstream else 20.0,  # upstream's `ws` server sends no pings
            ssl=self.ssl_context,
            logger=wire_logger("websockets.server"),  # no frame lines: a register frame holds a token
        )

    async def stop(self) -> None:
        for task in list(self._background):
            task.cancel()
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
        return ws_url(self.host, self.port, self.ssl_context is not None)

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
            log.info("node %s disconnected", node.node_id)

    async def _on_frame(self, peer: _Peer, frame: str | bytes) -> None:
        try:
            value = messages.load_object(frame)
            await self._route(peer, value)
        except ProtocolError as exc:
            log.info("bad frame from %s: %.300s", peer.node_id or "a client", exc)
            await self._error(peer.connection, _wire_text(exc))
        except RequestRefused as exc:
            log.info("request from %s refused: %s", peer.node_id or "a client", exc)
            await self._error(peer.connection, str(exc))
        except Exception:
            # A bug here must show, but must not cost the peer its connection: a node would reconnect
            # and a bridge test would see a disconnect it did not cause.
            log.exception("reference backend failed on a frame from %s", peer.node_id or "a client")
            await self._error(peer.connection, "Internal error")

    async def _route(self, peer: _Peer, value: dict[str, Any]) -> None:
        kind = value["type"]
        if kind in SUBMITTER_TYPES and peer.node_id is None:
            await self._on_submitter(peer.connection, value)
        elif kind not in (UPSTREAM_AGENT_TYPES if self.upstream else AGENT_TYPES):
            raise RequestRefused("Unknown message type")
        elif kind == "register":
            await self._on_register(peer, value)
        elif kind == "job_result":
            await self._on_job_result(peer, value)
        elif kind == "error":
            self._on_node_error(peer, value)
        else:
            message = messages.decode_agent(value)
            if isinstance(message, messages.Heartbeat):
                await self._on_heartbeat(peer, message)
            elif isinstance(message, messages.JobStatusReport):
                self._on_job_status(peer, message)
            elif isinstance(message, messages.Pong) and peer.node_id in self._nodes:
                self._nodes[peer.node_id].pongs.append(now_ms())

    def _on_node_error(self, peer: _Peer, value: dict[str, Any]) -> None:
        """(ext) A node telling us it refused one of our frames. Never answered: an error about an
        error would let two peers keep each other busy."""
        text = value.get("message")
        if not isinstance(text, str) or peer.node_id not in self._nodes:
            log.info("ignored an error frame from %s", peer.node_id or "a client")
            return
        self._nodes[peer.node_id].errors.append(text[:MAX_ERROR_TEXT])
        log.info("node %s refused a frame: %.300s", peer.node_id, text)

    def _on_job_status(self, peer: _Peer, message: messages.JobStatusReport) -> None:
        record = self._jobs.get(message.id)
        if record is None or peer.node_id is None or record.node_id != peer.node_id:
            raise RequestRefused("Job not found")
        record.statuses.append(message.state.value)
        log.info("job %s is %s on node %s", record.job_id, message.state.value, peer.node_id)

    async def _send(self, connection: ServerConnection, data: str | bytes) -> bool:
        try:
            await connection.send(data)
        except ConnectionClosed:
            log.debug("could not send: connection closed")
            return False
        return True

    async def _error(self, connection: ServerConnection, text: str) -> None:
        await self._send(connection, _dumps({"type": "error", "message": text}))

    # node side -----------------------------------------------------------------------------------

    def _check_token(self, value: Mapping[str, Any]) -> str | None:
        """The nodeId this register resumes (None for a new node); RequestRefused with upstream's texts.

        A token is single-use, as upstream's: spent by the register that made its node. Here it still
        resumes that node; upstream ignores the node id and refuses a spent token whatever it carries.
        """
        token = value.get("token")
        if not isinstance(token, str) or not token:
            raise RequestRefused("Token is required")
        if token not in self._tokens:
            raise RequestRefused("Invalid token")
        owner = self._tokens[token]
        if owner is not None and (self.upstream or value.get("nodeId") != owner):
            raise RequestRefused("Token already used")
        return owner

    async def _on_register(self, peer: _Peer, value: dict[str, Any]) -> None:
        try:
            resumed = self._check_token(value)  # auth before shape: a stranger learns nothing of the schema
        except RequestRefused:
            self.registers_refused += 1
            raise
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
                registered_at_ms=now_ms(),
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
        log.info(
            "node %s %s (hostname %s)",
            node.node_id,
            "resumed" if resumed else "registered",
            node.host_info.get("hostname"),
        )
        reply: dict[str, Any] = {"type": "registered", "nodeId": node.node_id, "message": "Successfully registered"}
        if not self.upstream:
            reply["capabilities"] = [c.value for c in CAPABILITIES]
        await self._send(peer.connection, _dumps(reply))
        if resumed and self.redispatch_on_resume:
            await self._redispatch(node)
        if self.demo_job_after_s is not None:
            self._in_background(self._demo_job(node, peer.connection, self.demo_job_after_s))
        await self._dispatch_pending()

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _demo_job(self, node: NodeRecord, connection: ServerConnection, after_s: float) -> None:
        """Upstream's demo job, pushed to the node ``after_s`` after it registered, if still connected."""
        await asyncio.sleep(after_s)
        if node.connection is not connection:
            return
        job_id = str(uuid.uuid4())
        record = self._jobs[job_id] = JobRecord(job={"id": job_id, "command": "sleep 5"})
        record.node_id, record.dispatched_at_ms, record.state = node.node_id, now_ms(), JobPhase.DISPATCHED
        if await self._send(connection, _dumps({"type": "job", **record.job})):
            record.dispatches += 1
            log.info("demo job %s dispatched to node %s", record.job_id, node.node_id)

    async def _redispatch(self, node: NodeRecord) -> None:
        """Send a resumed node every job it was given and has not answered, in dispatch order."""
        unanswered = [
            record
            for record in self._jobs.values()
            if record.node_id == node.node_id and not record.results and record.state is JobPhase.DISPATCHED
        ]
        unanswered.sort(key=lambda record: record.dispatched_at_ms or 0)
        for record in unanswered:
            if node.connection is None or not await self._send(node.connection, _dumps({"type": "job", **record.job})):
                return
            record.dispatches += 1
            log.info("job %s dispatched again to resumed node %s", record.job_id, node.node_id)

    def _resume(self, node: NodeRecord, message: messages.Register) -> None:
        node.host_info = message.hostInfo.model_dump(mode="json")
        node.capacity = message.capacity or node.capacity
        if message.nodePublicKey and message.nodePublicKey != node.public_key:
            if node.public_key is not None:
                log.warning("node %s resumed with a different public key", node.node_id)
            node.public_key = message.nodePublicKey

    async def _on_heartbeat(self, peer: _Peer, message: messages.Heartbeat) -> None:
        if peer.node_id is None or message.nodeId != peer.node_id:
            raise RequestRefused("Invalid node ID")
        record = HeartbeatRecord(time.monotonic(), now_ms(), message.stats.model_dump(mode="json"))
        self._nodes[peer.node_id].heartbeats.append(record)
        await self._send(peer.connection, _dumps({"type": "ack"}))

    async def _on_job_result(self, peer: _Peer, value: dict[str, Any]) -> None:
        job_id = value.get("id")
        record = self._jobs.get(job_id) if isinstance(job_id, str) else None
        # A job never dispatched cannot have a result: whoever sends one is guessing ids.
        if record is None or record.node_id is None or record.dispatched_at_ms is None:
            self._count_refused(job_id)
            log.info("a result for a job this backend does not know, from %s", peer.node_id or "a client")
            await self._send(peer.connection, _dumps(self._reply_to_result(job_id, "error", "Job not found")))
            return
        try:
            messages.decode_agent(value)
        except ProtocolError as exc:
            # Still recorded and graded: the Oracle says which checks the missing fields fail, which
            # tells a node's developer more than a bare error, and the node's outbox can drain.
            log.warning("job %s result does not fit the schema: %s", record.job_id, exc)
        record.results.append(value)
        first = len(record.results) == 1
        if first or self.upstream:  # upstream records and credits every result frame it accepts
            record.credits += 1
        if first:
            self._grade(record, value)
        if self.ack_results:
            ack = self._reply_to_result(record.job_id, "ack", "Job result received")
            if not self.upstream:  # (ext) what it credits: one for a job's first result, nothing for a copy
                ack["credit"] = 1.0 if first else 0.0
            await self._send(peer.connection, _dumps(ack))
        if first:
            await self._deliver(record)

    def _reply_to_result(self, job_id: object, kind: str, text: str) -> dict[str, Any]:
        """An ack or error answering a job_result: naming the job (result_ids), except upstream's."""
        reply: dict[str, Any] = {"type": kind, "message": text}
        if not self.upstream and isinstance(job_id, str) and len(job_id) <= MAX_ECHOED_ID:
            reply["id"] = job_id
        return reply

    def _count_refused(self, job_id: object) -> None:
        """Count a refused result by id, for tests; bounded, so a peer inventing ids costs no memory."""
        if not isinstance(job_id, str):
            return
        if job_id in self._refused_results or len(self._refused_results) < MAX_REFUSED_IDS:
            self._refused_results[job_id] = self._refused_results.get(job_id, 0) + 1

    def _grade(self, record: JobRecord, result: Mapping[str, Any]) -> None:
        assert record.node_id is not None and record.dispatched_at_ms is not None
        record.received_at_ms = now_ms()
        record.state = JobPhase.FINISHED
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
        log.info(
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
            raise RequestRefused("submit needs a 'job' object")
        record = self._record(job)
        if value.get("wait") is True:
            record.waiters.add(connection)  # before dispatch, so a fast result cannot slip past the waiter
        await self._send(connection, _dumps({"type": "submitted", "id": record.job_id}))
        await self._dispatch(record)

    def _job(self, job_id: Any) -> JobRecord:
        record = self._jobs.get(job_id) if isinstance(job_id, str) else None
        if record is None:
            raise RequestRefused("Job not found")
        return record

    def _record(self, job: Mapping[str, Any]) -> JobRecord:
        fields = {key: value for key, value in job.items() if key != "type"}
        fields.setdefault("id", str(uuid.uuid4()))
        job_id = fields["id"]
        if not isinstance(job_id, str) or not job_id:
            raise RequestRefused("Job id must be a non-empty string")
        if job_id in self._jobs:
            raise RequestRefused("Duplicate job id")
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
            record.state = JobPhase.CANCELLED
            return
        node = self._nodes.get(record.node_id)
        if node is None or node.connection is None:
            raise RequestRefused("Node not connected")
        if record.state is not JobPhase.FINISHED:
            record.state = JobPhase.CANCEL_SENT
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
            record.node_id, record.dispatched_at_ms, record.state = node.node_id, now_ms(), JobPhase.DISPATCHED
            if await self._send(node.connection, _dumps({"type": "job", **record.job})):
                record.dispatches += 1
                log.info("job %s dispatched to node %s", record.job_id, node.node_id)
                return True
            record.node_id, record.dispatched_at_ms, record.state = None, None, JobPhase.PENDING
        log.info("job %s pending: no node connected", record.job_id)
        return False

    async def _dispatch_pending(self) -> None:
        for record in list(self._jobs.values()):
            if record.state is JobPhase.PENDING and not await self._dispatch(record):
                return

    # helpers for tests and tools (on the loop) ---------------------------------------------------

    def _targets(self, node_id: str | None) -> list[ServerConnection]:
        if node_id is not None and node_id not in self._nodes:
            raise RequestRefused("Node not found")
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
                self._in_background(connection.close())
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

    def credits_of(self, job_id: str) -> int:
        """How many times the job's result was credited: once here, once per accepted frame upstream."""
        record = self._jobs.get(job_id)
        return record.credits if record else 0

    def refused_results_of(self, job_id: str) -> int:
        """How many job_result frames for this id were answered "Job not found"."""
        return self._refused_results.get(job_id, 0)

    def heartbeats_of(self, node_id: str) -> list[HeartbeatRecord]:
        node = self._nodes.get(node_id)
        return list(node.heartbeats) if node else []

    def verification_of(self, job_id: str) -> oracle.Verification | None:
        record = self._jobs.get(job_id)
        return record.verification if record else None


def run_backend(host: str, port: int, tokens: Iterable[str], *, upstream: bool = False) -> None:
    """Serve until SIGINT or SIGTERM (the ``dev-backend`` command)."""
    tokens = list(tokens)
    if not tokens:
        raise ConfigError("the reference backend needs at least one --token")
    asyncio.run(_serve_until_signal(ReferenceBackend(host, port, tokens, upstream=upstream)))


async def _serve_until_signal(backend: ReferenceBackend) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        await backend.start()
        mode = " (as upstream's published backend)" if backend.upstream else ""
        log.info("reference backend listening on %s%s", backend.url, mode)
        await stop.wait()
        log.info("reference backend stopping")
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
        await backend.stop()
