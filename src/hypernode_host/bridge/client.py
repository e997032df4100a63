"""The bridge's asyncio layer: connect, register, heartbeat, take jobs in, send results until acked.

Thin around the Sans-I/O Session, which decides what each frame means. Every Redis, Dramatiq,
Docker or NVML call runs in a thread (``asyncio.to_thread``) so heartbeats stay on time whatever
the jobs do. Per connection three tasks share the socket: the reader (frames in, jobs recorded
and enqueued), the heartbeats and the outbox sender; when the reader ends the other two end with it.

Our own reconnect loop rather than ``async for ws in connect(...)``: backoff must restart only after a
*registered* connection (a backend that accepts sockets and drops them would otherwise be hammered),
a refused token must end the loop, and a stop request must cut a backoff wait short.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import platform
import signal
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from dramatiq.brokers.redis import RedisBroker
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from hypernode_host import AGENT_VERSION
from hypernode_host.bridge.backoff import reconnect_delays
from hypernode_host.bridge.intake import Intake, Pending, Reported
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
    State,
)
from hypernode_host.bridge.stats import heartbeat_stats, wire_gpu
from hypernode_host.bridge.throttle import Throttle
from hypernode_host.core.clock import now_ms, utc_timestamp
from hypernode_host.core.messages import MAX_FRAME_BYTES, ErrorMessage, HeartbeatStats, HostInfo, encode, plain
from hypernode_host.core.proofs import NodeKey
from hypernode_host.core.slots import GpuInfo, Slot
from hypernode_host.errors import AuthError, Stopping
from hypernode_host.logs import wire_logger
from hypernode_host.settings import Settings
from hypernode_host.state import RedisDown, Store, redis_url

log = logging.getLogger(__name__)

T = TypeVar("T")

OUTBOX_BLOCK_MS = 1000
STATS_LEAD_MAX_S = 1.0  # heartbeat stats are read up to this long before the beat is due
REDIS_RETRY_FIRST_S = 0.1
REDIS_RETRY_MAX_S = 2.0
AUTH_STATUSES = (401, 403)  # answers to the handshake that retrying cannot change


@dataclass(frozen=True)
class Tuning:
    """Connection timings and TLS; the defaults suit production, tests shrink the timings.

    A half-open connection (the peer gone without a FIN) is noticed within ping_interval_s +
    ping_timeout_s: websockets closes the connection when a ping goes unanswered.
    """

    open_timeout_s: float = 10.0
    ping_interval_s: float = 20.0
    ping_timeout_s: float = 20.0
    close_timeout_s: float = 5.0
    register_timeout_s: float = 30.0
    # None: for wss:// websockets uses ssl.create_default_context(), which verifies the certificate
    # and the host name. A context given here must verify too (tests pass one that trusts their CA).
    ssl_context: ssl.SSLContext | None = None


@dataclass
class _Link:
    """One connection and what lives only as long as it does."""

    ws: ClientConnection
    helpers: list[asyncio.Task[None]] = field(default_factory=list)
    refusals: Throttle = field(default_factory=Throttle)
    backend_errors: Throttle = field(default_factory=Throttle)
    registered_once: bool = False


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


async def _sleep_until(deadline: float) -> None:
    await asyncio.sleep(max(deadline - time.monotonic(), 0))


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
        tuning: Tuning | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.broker = broker
        self.key = key
        self.slots = slots
        self.intake = Intake(settings, store, broker, key, slots)
        self.gpus = gpus
        self.docker_version = docker_version
        self.tuning = tuning or Tuning()
        self.stop = asyncio.Event()
        self.session = Session(settings.token(), None, key.public_key_b58)
        self._started = time.monotonic()
        self._unhealthy: list[str] = []  # the slots last seen taking no jobs, to log changes once
        self._stats: HeartbeatStats | None = None
        self._refresh: asyncio.Task[None] | None = None
        self._beat_sent_ms = 0
        self._unsaved_refusals = 0
        self._redis_notes = Throttle(burst=1, window_s=30.0)

    # Connection loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect and reconnect (full-jitter backoff) until stopped; AuthError when refused."""
        try:
            await self._redis(self.intake.reconcile)
            self.session.node_id = await self._redis(self.store.node.node_id)
            delays = self._delays()
            while not self.stop.is_set():
                if await self._connect_once():
                    delays = self._delays()  # a healthy connection: the next failure starts over at base
                if self.stop.is_set():
                    break
                delay = next(delays)
                log.info("reconnecting in %.1f s", delay)
                if await self._stopped_within(delay):
                    break
                await self._count("reconnects")
        except Stopping:
            log.info("stopped while waiting for Redis")
        finally:
            self.session.close()
            if self._refresh is not None:
                self._refresh.cancel()

    def _delays(self) -> Iterator[float]:
        return reconnect_delays(self.settings.reconnect_delay, self.settings.reconnect_max_delay)

    async def _connect_once(self) -> bool:
        """One connection, start to end; True if it got as far as registered."""
        endpoint = self.settings.endpoint
        # ssl only when given: websockets refuses ssl=None for wss:// (and builds a verifying context).
        tls: dict[str, Any] = {"ssl": self.tuning.ssl_context} if self.tuning.ssl_context is not None else {}
        try:
            async with connect(
                endpoint,
                max_size=MAX_FRAME_BYTES,  # on purpose: the largest legitimate frame is a job with its script
                compression=None,  # a deflate bomb could inflate far past max_size
                open_timeout=self.tuning.open_timeout_s,
                ping_interval=self.tuning.ping_interval_s,
                ping_timeout=self.tuning.ping_timeout_s,
                close_timeout=self.tuning.close_timeout_s,
                logger=wire_logger("websockets.client"),  # no frame lines: the register frame holds the token
                **tls,
            ) as ws:
                log.info("connected to %s", endpoint)
                await self._serve(_Link(ws))
        except InvalidStatus as exc:
            if exc.response.status_code in AUTH_STATUSES:  # a gateway in front of the backend said no
                raise AuthError(f"the backend refused the connection: HTTP {exc.response.status_code}") from None
            log.warning("connection to %s failed: %s", endpoint, _describe(exc))
        except (OSError, TimeoutError, WebSocketException) as exc:
            log.warning("connection to %s failed: %s", endpoint, _describe(exc))
        finally:
            healthy = self.session.connection_lost()
        return healthy

    async def _serve(self, link: _Link) -> None:
        """Register, then read frames until the connection ends; the helper tasks end with it."""
        host_info = await asyncio.to_thread(self._host_info)
        await link.ws.send(encode(self.session.connected(host_info, self._capacity())))
        link.helpers += [
            asyncio.create_task(self._close_on_stop(link.ws)),
            asyncio.create_task(self._register_deadline(link.ws)),
        ]
        try:
            async for frame in link.ws:
                for event in self.session.receive(frame):
                    await self._on_event(event, link)
            log.info("disconnected from %s (code %s)", self.settings.endpoint, link.ws.close_code)
        finally:
            for task in link.helpers:
                task.cancel()
            await asyncio.gather(*link.helpers, return_exceptions=True)
            for what, throttle in (("frames refused", link.refusals), ("backend errors", link.backend_errors)):
                if left_out := throttle.pending():
                    log.warning("%d more %s were not logged", left_out, what)

    async def _close_on_stop(self, ws: ClientConnection) -> None:
        await self.stop.wait()
        await ws.close()

    async def _register_deadline(self, ws: ClientConnection) -> None:
        await asyncio.sleep(self.tuning.register_timeout_s)
        if self.session.state is State.REGISTERING:
            log.warning("no answer to register in %.0f s; reconnecting", self.tuning.register_timeout_s)
            await ws.close()

    async def _guarded(self, ws: ClientConnection, work: Callable[[ClientConnection], Awaitable[None]]) -> None:
        """Run a helper task; if it fails, drop the connection so that the next one starts clean."""
        try:
            await work(ws)
        except (ConnectionClosed, Stopping):
            pass  # the reader sees the same end and finishes the connection
        except Exception:
            log.exception("bridge task failed; reconnecting")
            await ws.close(code=1011)

    # Frames in -------------------------------------------------------------------------------

    async def _on_event(self, event: Event, link: _Link) -> None:
        match event:
            case Send(message):
                await link.ws.send(encode(message))
            case RegisteredEvent():
                await self._on_registered(event, link)
            case JobReceived(job_id, fields):
                await self._on_job(job_id, fields, link.ws)
            case CancelRequested(job_id):
                log.info("job %s: cancel requested by the backend", job_id)
                await self._redis(self.store.cancels.request, job_id)
            case ResultAcked(job_id, entry_id):
                await self._redis(self._acknowledged, job_id, entry_id)
            case AuthFailed(reason):
                raise AuthError(f"the backend refused this node: {reason}")
            case BackendError(reason):  # the backend's own text: escaped, it cannot forge log lines
                self._note(link.backend_errors, "backend error", plain(reason, 300))
            case BadFrame(reason) | JobRefused(reason):
                self._unsaved_refusals += 1
                self._note(link.refusals, "frame refused", reason)

    def _note(self, throttle: Throttle, what: str, reason: str) -> None:
        """A warning about a frame, rate-limited: a flood of bad frames must not flood the logs too."""
        left_out = throttle.admit(time.monotonic())
        if left_out is None:
            return
        log.warning("%s: %s%s", what, reason[:300], f" ({left_out} more not logged)" if left_out else "")

    async def _on_registered(self, event: RegisteredEvent, link: _Link) -> None:
        if event.previous is not None:
            log.warning("the backend did not resume node %s; it gave a new node id", event.previous)
        elif event.resumed:
            log.info("resumed node %s", event.node_id)
        log.info("Registered as node: %s", event.node_id)  # upstream's start.sh reads the id from this line
        await self._redis(self.store.node.registered, event.node_id, now_ms())
        if not link.registered_once:  # a second `registered` on the same connection starts nothing new
            link.registered_once = True
            link.helpers.append(asyncio.create_task(self._guarded(link.ws, self._heartbeats)))
            link.helpers.append(asyncio.create_task(self._guarded(link.ws, self._send_results)))

    async def _on_job(self, job_id: str, fields: dict[str, Any], ws: ClientConnection) -> None:
        try:
            known = await self._redis(self.intake.accept, job_id, fields)
        except Stopping:
            raise
        except Exception:
            # A bug met by one job must not cost the other jobs their connection, nor the bridge its
            # life: the backend hears that this one was not taken in (a recorded job whose intake was
            # cut short is completed when the job comes again, or at the next start).
            log.exception("job %s: intake failed", job_id)
            await ws.send(encode(ErrorMessage(message=f"job {job_id} was not taken in (node error); send it again")))
            return
        if isinstance(known, Pending):
            await ws.send(encode(self.session.job_status(job_id, known.state)))
        elif isinstance(known, Reported):
            self.session.result_sent(job_id, None)  # tracked too: an upstream ack has no id to tell copies apart
            await ws.send(known.frame)

    # Results out -----------------------------------------------------------------------------

    async def _send_results(self, ws: ClientConnection) -> None:
        """Send every result in the outbox, oldest first, then each new one as it lands."""
        last = "0-0"  # from the start on every connection: whatever is still here was never acked
        while True:
            entries = await self._redis(self.store.outbox.wait, last, OUTBOX_BLOCK_MS)
            for entry in entries:
                last = entry.entry_id
                self.session.result_sent(entry.job_id, entry.entry_id)
                await ws.send(json.dumps(entry.result, separators=(",", ":"), ensure_ascii=False))
                log.info("job %s: result sent (%s)", entry.job_id, entry.result.get("status"))

    def _acknowledged(self, job_id: str, entry_id: str | None) -> None:
        if entry_id is None:
            log.debug("job %s: a copy of its result acknowledged", job_id)
            return
        self.store.outbox.acknowledge(entry_id, job_id)
        log.info("job %s: result acknowledged", job_id)

    # Heartbeats ------------------------------------------------------------------------------

    async def _heartbeats(self, ws: ClientConnection) -> None:
        """A beat every interval, on time: stats are read ahead and a slow read sends the last ones."""
        interval = self.settings.heartbeat_interval
        lead = min(interval / 4, STATS_LEAD_MAX_S)
        next_at = time.monotonic() + lead
        while True:
            await _sleep_until(next_at - lead)
            refresh = self._refresh_stats()
            await asyncio.wait({refresh}, timeout=max(next_at - time.monotonic(), 0))
            await _sleep_until(next_at)
            beat = self.session.heartbeat(utc_timestamp(), self._current_stats())
            if beat is not None:
                await ws.send(encode(beat))
                self._beat_sent_ms = now_ms()
            next_at = max(next_at + interval, time.monotonic())  # a stalled loop skips beats, never bursts

    def _refresh_stats(self) -> asyncio.Task[None]:
        """The stats read in progress, or a new one: one at a time, however slow Redis is."""
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.create_task(self._read_stats_async())
        return self._refresh

    async def _read_stats_async(self) -> None:
        refused, self._unsaved_refusals = self._unsaved_refusals, 0
        try:
            self._stats = await asyncio.to_thread(self._read_stats, refused, self._beat_sent_ms)
        except RedisDown as exc:
            self._unsaved_refusals += refused
            self._redis_unavailable(exc)
        except Exception:  # a background task: nobody else would ever see this
            log.exception("reading the heartbeat stats failed; sending the last ones")

    def _read_stats(self, refused: int, beat_sent_ms: int) -> HeartbeatStats:
        if refused:
            self.store.node.count("frames_refused", refused)
        if beat_sent_ms:
            self.store.node.heartbeat(beat_sent_ms)
        queued, running = self.store.jobs.active_counts()
        stats = heartbeat_stats(self.store.stats.counters(), queued, running, self.store.registry.all(), self.gpus())
        if stats.unhealthy_slots != self._unhealthy:
            for line in sorted(set(stats.unhealthy_slots) - set(self._unhealthy)):
                log.warning("slot takes no jobs: %s", line)
            self._unhealthy = stats.unhealthy_slots
        return stats

    def _current_stats(self) -> HeartbeatStats:
        stats = self._stats or HeartbeatStats(jobs_completed=0, jobs_failed=0, total_uptime=0, active_jobs=0, gpus=[])
        return stats.model_copy(update={"total_uptime": int(time.monotonic() - self._started)})

    # Redis, patiently ------------------------------------------------------------------------

    async def _redis(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a Redis-using call in a thread; while Redis is down, wait and try again.

        Nothing is lost by waiting: a job frame not yet recorded was not accepted, a result not yet
        acknowledged stays in the outbox. Every call passed here is safe to repeat.
        """
        delay = REDIS_RETRY_FIRST_S
        while True:
            try:
                return await asyncio.to_thread(call, *args, **kwargs)
            except RedisDown as exc:
                self._redis_unavailable(exc)
            if await self._stopped_within(delay):
                raise Stopping
            delay = min(delay * 2, REDIS_RETRY_MAX_S)

    async def _count(self, name: str) -> None:
        """Bump a node counter; a counter is not worth waiting for Redis."""
        try:
            await asyncio.to_thread(self.store.node.count, name)
        except RedisDown as exc:
            self._redis_unavailable(exc)

    def _redis_unavailable(self, exc: Exception) -> None:
        left_out = self._redis_notes.admit(time.monotonic())
        if left_out is not None:
            log.warning("Redis unavailable (%s); retrying", _describe(exc))

    async def _stopped_within(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)
        return self.stop.is_set()

    # Node description ------------------------------------------------------------------------

    def _capacity(self) -> dict[str, int]:
        return {"slots": len(self.slots), "gpus": sum(len(s.gpus) for s in self.slots)}

    def _host_info(self) -> HostInfo:
        return HostInfo(
            hostname=self.settings.node_name,
            os=platform.system(),
            os_version=platform.release(),
            arch=platform.machine(),
            gpus=[wire_gpu(g) for g in self.gpus()],
            docker_version=self.docker_version,
            agent_version=AGENT_VERSION,
        )

    def close(self) -> None:
        """Close the Redis connections (the broker's and the store's)."""
        self.broker.close()
        self.store.close()


def build_bridge(settings: Settings, tuning: Tuning | None = None) -> Bridge:
    """A Bridge from settings: GPUs, slots, Redis, the Dramatiq broker, the node key, Docker's version."""
    from hypernode_host.gpu.inventory import discover, plan_node_slots
    from hypernode_host.tasks.broker import build_broker
    from hypernode_host.tasks.engine import docker_version

    settings.token()
    slots = plan_node_slots(settings)  # the slots the workers plan too: admission must agree with them
    has_gpus = any(slot.gpus for slot in slots)
    key = NodeKey.load_or_create(settings.key_file)
    store = Store.open(settings)

    def current_gpus() -> list[GpuInfo]:
        # With Redis, simulated GPUs show the load of the jobs the workers run on them.
        return discover(settings, store) if has_gpus else []

    return Bridge(
        settings,
        store,
        build_broker(redis_url(settings)),
        key,
        slots,
        current_gpus,
        docker_version(),
        tuning,
    )


def run_bridge(settings: Settings) -> None:
    """Run the bridge until SIGTERM/SIGINT; AuthError when the backend refuses the token."""
    bridge = build_bridge(settings)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, bridge.stop.set)
        await bridge.run()

    try:
        asyncio.run(main())
    finally:
        bridge.close()
