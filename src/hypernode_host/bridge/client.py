"""The bridge's asyncio layer: connect, register, heartbeat, intake jobs, send results until acked.

Thin around the Sans-I/O Session. Every Redis, Dramatiq, Docker or NVML call runs in a
thread (``asyncio.to_thread``) so heartbeats stay on time whatever the jobs do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import platform
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import websockets
from dramatiq.brokers.redis import RedisBroker
from websockets.asyncio.client import ClientConnection, connect

from hypernode_host import AGENT_VERSION
from hypernode_host import constants as C
from hypernode_host.admission import admit
from hypernode_host.bridge.backoff import reconnect_delays
from hypernode_host.bridge.session import (
    AuthFailed,
    BackendError,
    BadFrame,
    CancelRequested,
    Event,
    JobReceived,
    JobRefused,
    RegisteredEvent,
    ResultAcked,
    Send,
    Session,
)
from hypernode_host.errors import AuthError, JobRejected
from hypernode_host.gpu.models import GpuInfo, Slot
from hypernode_host.jobs import JobSpec, JobState
from hypernode_host.messages import HeartbeatStats, HostInfo, encode
from hypernode_host.proofs import NodeKey
from hypernode_host.results import error_result
from hypernode_host.settings import Settings
from hypernode_host.store import Store, now_ms
from hypernode_host.tasks.broker import enqueue_job

log = logging.getLogger(__name__)

OUTBOX_BLOCK_MS = 1000


def utc_timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Bridge:
    """One node's connection to the backend, kept up until ``stop`` is set or the token is refused."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        broker: RedisBroker,
        key: NodeKey,
        slots: list[Slot],
        gpus: Callable[[], list[GpuInfo]],
        docker_version: str,
    ) -> None:
        self.settings = settings
        self.store = store
        self.broker = broker
        self.key = key
        self.slots = slots
        self.gpus = gpus
        self.docker_version = docker_version
        self.stop = asyncio.Event()
        self._started = time.monotonic()
        self._entries: dict[str, str] = {}  # job id → outbox entry id of results sent

    async def run(self) -> None:
        """Connect and reconnect (backoff with jitter) until stopped; AuthError when refused."""
        await asyncio.to_thread(self._reconcile)
        delays = reconnect_delays(self.settings.reconnect_delay, self.settings.reconnect_max_delay)
        while not self.stop.is_set():
            healthy = False
            try:
                async with connect(
                    self.settings.endpoint,
                    max_size=C.MAX_FRAME_BYTES,
                    compression=None,  # a deflate bomb could inflate far past max_size
                    open_timeout=10,
                    ping_interval=20,
                    ping_timeout=20,
                ) as ws:
                    log.info("connected to %s", self.settings.endpoint)
                    healthy = await self._serve(ws)
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
                log.warning("connection to %s failed: %s", self.settings.endpoint, exc or type(exc).__name__)
            if healthy:
                delays = reconnect_delays(self.settings.reconnect_delay, self.settings.reconnect_max_delay)
            if self.stop.is_set():
                break
            delay = next(delays)
            log.info("reconnecting in %.1f s", delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), delay)

    async def _serve(self, ws: ClientConnection) -> bool:
        """Run one connection; True if it got as far as registered."""
        node_id = await asyncio.to_thread(self.store.node_id)
        session = Session(self.settings.token(), node_id, self.key.public_key_b58)
        host_info = await asyncio.to_thread(self._host_info)
        capacity = {"slots": len(self.slots), "gpus": sum(len(s.gpus) for s in self.slots)}
        await ws.send(encode(session.register(host_info, capacity)))
        helpers: list[asyncio.Task[None]] = []
        stopper = asyncio.create_task(self._close_on_stop(ws))
        try:
            async for frame in ws:
                for event in session.receive(frame):
                    await self._on_event(event, ws, session, helpers)
        finally:
            for task in [stopper, *helpers]:
                task.cancel()
            await asyncio.gather(stopper, *helpers, return_exceptions=True)
        return bool(helpers)

    async def _close_on_stop(self, ws: ClientConnection) -> None:
        await self.stop.wait()
        await ws.close()

    async def _on_event(
        self, event: Event, ws: ClientConnection, session: Session, helpers: list[asyncio.Task[None]]
    ) -> None:
        match event:
            case Send(message):
                await ws.send(encode(message))
            case RegisteredEvent(node_id):
                log.info("Registered as node: %s", node_id)
                await asyncio.to_thread(self.store.set_node, node_id=node_id, registered_at=now_ms())
                if not helpers:
                    helpers.append(asyncio.create_task(self._heartbeats(ws, session)))
                    helpers.append(asyncio.create_task(self._send_results(ws, session)))
            case JobReceived(job_id, fields):
                resend = await asyncio.to_thread(self._accept, job_id, fields)
                if resend is not None:
                    await ws.send(resend)
            case CancelRequested(job_id):
                log.info("job %s: cancel requested by the backend", job_id)
                await asyncio.to_thread(self.store.request_cancel, job_id)
            case ResultAcked(job_id):
                await asyncio.to_thread(self._acknowledged, job_id)
            case AuthFailed(reason):
                raise AuthError(f"the backend refused this node: {reason}")
            case BackendError(reason):
                log.warning("backend error: %s", reason[:200])
            case BadFrame(reason) | JobRefused(reason):
                log.warning("frame refused: %s", reason[:200])

    # Jobs in ---------------------------------------------------------------------------------

    def _accept(self, job_id: str, fields: dict[str, Any]) -> str | None:
        """Validate, record and enqueue a job; a refusal becomes an error result in the outbox.

        Returns a frame to send now: the stored result of a job id already reported.
        """
        try:
            admission = admit(JobSpec.parse(fields), self.settings, self.slots)
        except JobRejected as exc:
            if self.store.record_job(job_id, fields, queue=""):
                log.warning("job %s refused: %s", job_id, exc)
                result = error_result(
                    job_id=job_id,
                    job=fields,
                    node_id=self.store.node_id(),
                    key=self.key,
                    reason=str(exc),
                    at_ms=now_ms(),
                )
                self.store.finish_job(job_id, result.model_dump(mode="json"))
                return None
            return self._duplicate(job_id)
        if not self.store.record_job(job_id, fields, admission.queue):
            return self._duplicate(job_id)
        enqueue_job(self.broker, admission.queue, job_id)
        self.store.mark_enqueued(job_id)
        log.info("job %s: queued on %s", job_id, admission.queue)
        return None

    def _duplicate(self, job_id: str) -> str | None:
        record = self.store.job(job_id) or {}
        state = record.get("state", "unknown")
        log.info("job %s: already known (%s); not run again", job_id, state)
        if state == JobState.REPORTED and "result" in record:
            return record["result"]  # the backend asks again: it gets the same result again
        return None  # queued or running: its result comes; finished: it is in the outbox

    def _reconcile(self) -> None:
        """Enqueue jobs recorded by a bridge that died before it could enqueue them."""
        for job_id in self.store.unenqueued():
            record = self.store.job(job_id) or {}
            if record.get("queue"):
                log.info("job %s: enqueuing after a bridge restart", job_id)
                enqueue_job(self.broker, record["queue"], job_id)
                self.store.mark_enqueued(job_id)

    # Results out -----------------------------------------------------------------------------

    async def _send_results(self, ws: ClientConnection, session: Session) -> None:
        """Send every result in the outbox, oldest first, then each new one as it lands."""
        last = "0-0"
        while True:
            entries = await asyncio.to_thread(self.store.wait_outbox, last, OUTBOX_BLOCK_MS)
            for entry in entries:
                last = entry.entry_id
                self._entries[entry.job_id] = entry.entry_id
                await ws.send(json.dumps(entry.result, separators=(",", ":"), ensure_ascii=False))
                session.result_sent(entry.job_id)
                log.info("job %s: result sent (%s)", entry.job_id, entry.result.get("status"))

    def _acknowledged(self, job_id: str) -> None:
        entry_id = self._entries.pop(job_id, None)
        if entry_id is None:
            log.info("job %s: ack for a result not in flight; ignored", job_id)
            return
        self.store.acknowledge(entry_id, job_id)
        log.info("job %s: result acknowledged", job_id)

    # Heartbeats ------------------------------------------------------------------------------

    async def _heartbeats(self, ws: ClientConnection, session: Session) -> None:
        interval = self.settings.heartbeat_interval
        next_at = time.monotonic()
        while True:
            stats = await asyncio.to_thread(self._stats)
            beat = session.heartbeat(utc_timestamp(), stats)
            if beat is not None:
                await ws.send(encode(beat))
                await asyncio.to_thread(self.store.set_node, heartbeat_at=now_ms())
            next_at += interval
            await asyncio.sleep(max(next_at - time.monotonic(), 0))

    def _stats(self) -> HeartbeatStats:
        counters = self.store.counters()
        queued, running = self.store.active_counts()
        live = len(self.store.workers())
        return HeartbeatStats(
            jobs_completed=counters.get("completed", 0),
            jobs_failed=counters.get("failed", 0),
            total_uptime=int(time.monotonic() - self._started),
            active_jobs=running,
            gpus=[g.entry() for g in self.gpus()],
            queued_jobs=queued,
            free_slots=max(live - running, 0),
        )

    def _host_info(self) -> HostInfo:
        return HostInfo(
            hostname=self.settings.node_name,
            os=platform.system(),
            os_version=platform.release(),
            arch=platform.machine(),
            gpus=[g.entry() for g in self.gpus()],
            docker_version=self.docker_version,
            agent_version=AGENT_VERSION,
        )


def run_bridge(settings: Settings) -> None:
    """Run the bridge until SIGTERM/SIGINT; AuthError when the backend refuses the token."""
    from hypernode_host.gpu import discover, plan_slots
    from hypernode_host.tasks.broker import build_broker
    from hypernode_host.tasks.containers import DockerRuntime

    settings.token()
    gpus = discover(settings)
    slots = plan_slots(gpus, settings.cpu_slots)
    store = Store.from_url(settings.redis_url)
    key = NodeKey.load_or_create(settings.key_file)

    def current_gpus() -> list[GpuInfo]:
        return discover(settings) if gpus else []

    bridge = Bridge(
        settings, store, build_broker(settings.redis_url), key, slots, current_gpus, DockerRuntime().version()
    )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, bridge.stop.set)
        await bridge.run()

    asyncio.run(main())
