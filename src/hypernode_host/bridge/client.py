"""The bridge's asyncio layer: connect, register, heartbeat, take jobs in, send results until settled.

Thin around the Sans-I/O Session, which decides what each frame means and makes every frame sent.
Every Redis, Dramatiq, Docker or NVML call runs in a thread (``asyncio.to_thread``) so heartbeats stay
on time whatever the jobs do. Per connection three tasks share the socket: the reader (frames in,
jobs recorded and enqueued, results settled), the heartbeats and the outbox sender; when the reader
ends the other two end with it. They write through one writer (``_flush``), in the session's order.

Our own reconnect loop rather than ``async for ws in connect(...)``: backoff must restart only after a
*registered* connection (a backend that accepts sockets and drops them would otherwise be hammered),
a refused token must park the loop until a new token comes (HN_NODE_TOKEN_FILE, SIGHUP) while the
workers go on and results wait in the outbox, and a stop request must cut any wait short.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import platform
import signal
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from dramatiq.brokers.redis import RedisBroker
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus, WebSocketException
from websockets.frames import CloseCode

from hypernode_host import AGENT_VERSION, logs
from hypernode_host.bridge.backoff import reconnect_delays
from hypernode_host.bridge.intake import Intake, Known
from hypernode_host.bridge.session import (
    AuthFailed,
    BackendError,
    BadFrame,
    CancelRequested,
    Event,
    JobReceived,
    JobRefused,
    RegisteredEvent,
    Repeat,
    ResultAcked,
    ResultRejected,
    Session,
    State,
)
from hypernode_host.bridge.stats import heartbeat_stats, wire_gpu
from hypernode_host.bridge.throttle import Throttle
from hypernode_host.core.clock import now_ms, utc_timestamp
from hypernode_host.core.events import Kind, SlotHealth, health_changes
from hypernode_host.core.messages import MAX_WIRE_BYTES, HeartbeatStats, HostInfo, plain
from hypernode_host.core.proofs import NodeKey
from hypernode_host.core.slots import GpuInfo, Slot
from hypernode_host.core.uptime import uptimes
from hypernode_host.errors import ConfigError, ProtocolError, Stopping, StorageRefused
from hypernode_host.gpu.capacity import node_driver
from hypernode_host.logs import wire_logger
from hypernode_host.settings import Settings
from hypernode_host.state import RedisDown, RedisError, Store, redis_url, write_refusal
from hypernode_host.state.ledger import Ledger
from hypernode_host.state.records import Registration

log = logging.getLogger(__name__)

T = TypeVar("T")

OUTBOX_BLOCK_MS = 1000
STATS_LEAD_MAX_S = 1.0  # heartbeat stats are read up to this long before the beat is due
REDIS_RETRY_FIRST_S = 0.1
REDIS_RETRY_MAX_S = 2.0
AUTH_STATUSES = (401, 403)  # answers to the handshake that retrying cannot change
MAX_REFUSAL_CHARS = 300  # of the backend's text, kept for `check` and `top`
WIRE_QUEUE_FRAMES = 4


@dataclass(frozen=True)
class Tuning:
    """Connection timings and TLS; the defaults suit production, tests shrink the timings.

    A half-open connection (the peer gone without a FIN) is noticed within ping_interval_s +
    ping_timeout_s: websockets closes the connection when a ping goes unanswered.
    """

    open_timeout_s: float = 10.0
    ping_interval_s: float = 20.0
    ping_timeout_s: float = 20.0
    close_timeout_s: float = 5.0  # also how long a stopping bridge waits for the replies to its results
    register_timeout_s: float = 30.0
    token_poll_s: float = 1.0  # how often a refused bridge looks for a new token in HN_NODE_TOKEN_FILE
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
    unknown_cancels: Throttle = field(default_factory=Throttle)  # cancels for jobs this node does not have
    registered_once: bool = False
    refused: bool = False  # the backend refused the token and we closed the connection (1008)
    writing: asyncio.Lock = field(default_factory=asyncio.Lock)  # one writer: frames go in the session's order
    replied: asyncio.Event = field(default_factory=asyncio.Event)  # set after each frame in: a result may be settled


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


async def _sleep_until(deadline: float) -> None:
    await asyncio.sleep(max(deadline - time.monotonic(), 0))


class Bridge:
    """One node's connection to the backend, kept up until ``stop`` is set (a refused token parks it)."""

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
        ledger: Ledger | None = None,
    ) -> None:
        self.settings = settings
        # The ledger is written on a thread of its own, in the order of the events (one worker).
        self.ledger = ledger or Ledger.in_dir(settings.state_dir)
        self._ledger_pool = ThreadPoolExecutor(1, thread_name_prefix="ledger")
        self._ledger_writes: set[asyncio.Future[None]] = set()
        self.store = store
        self.broker = broker
        self.key = key
        self.slots = slots
        self.intake = Intake(settings, store, broker, key, slots)
        self.gpus = gpus
        self.docker_version = docker_version
        self.tuning = tuning or Tuning()
        self.stop = asyncio.Event()
        self.reload = asyncio.Event()  # SIGHUP: read the token again now
        self.session = Session(None, key.public_key_b58)
        self._token = ""  # the last token read
        self._token_problem = ""  # what was wrong with HN_NODE_TOKEN_FILE at the last read, logged once
        self._unhealthy: list[str] = []  # the slots last seen taking no jobs, to log changes once
        self._stats: HeartbeatStats | None = None
        self._refresh: asyncio.Task[None] | None = None
        self._beat_sent_ms = 0
        self._unsaved_refusals = 0
        self._redis_notes = Throttle(burst=1, window_s=30.0)
        self._writes_refused: str | None = None  # Redis's reason while it refuses writes, said in heartbeats
        # Events and uptime: offline since (epoch ms; a starting bridge is offline until registered), whether
        # node.offline went out for it, the last connection error, the slots' health at the last reading.
        self._offline_since: int | None = now_ms()
        self._offline_announced = False
        self._last_error = ""
        self._registered_ids: set[str] = set()
        self._slot_health: dict[tuple[str, int], SlotHealth] = {}
        self._emits: set[asyncio.Task[None]] = set()
        self._up_mark: int | None = None  # registered since this moment (epoch ms), not yet credited
        self._uptime_total_ms = 0  # registered in all, as last read (the heartbeat's total_uptime)
        self._uptime_ratios: dict[str, float | None] = {}

    # Connection loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect and reconnect (full-jitter backoff) until stopped; a refused token waits for a new one."""
        watcher = asyncio.create_task(self._watch_offline())
        try:
            await self._redis(self.intake.reconcile)
            await self._redis(self.store.uptime.seen, now_ms())
            self._record(self.ledger.seen, now_ms())
            self.session.node_id = await self._redis(self.store.node.node_id)
            await self._redis(self.store.node.clear_refusal)  # this process tries its token again, once
            delays = self._delays()
            while not self.stop.is_set():
                token = await self._registration_token()
                if token is None:
                    break
                if await self._connect_once(token):
                    delays = self._delays()  # a healthy connection: the next failure starts over at base
                if self.stop.is_set():
                    break
                if self.session.state is State.REFUSED:
                    continue  # nothing to wait out: the next try waits for a new token instead
                delay = next(delays)
                log.info("reconnecting in %.1f s", delay)
                if await self._stopped_within(delay):
                    break
                await self._count("reconnects")
        except Stopping:
            log.info("stopped while waiting for Redis")
        finally:
            watcher.cancel()
            self.session.close()
            if self._refresh is not None:
                self._refresh.cancel()
            await self._credit_uptime()
            pending = {*self._emits, *self._ledger_writes}
            if pending:  # the events and ledger writes of the last moments get a moment to finish
                await asyncio.wait(pending, timeout=2.0)

    def _delays(self) -> Iterator[float]:
        return reconnect_delays(self.settings.reconnect_delay, self.settings.reconnect_max_delay)

    # The token -------------------------------------------------------------------------------

    async def _registration_token(self) -> str | None:
        """The token to register with, read now; while it is the one the backend refused, wait for another.

        None when stopped while waiting. A refused token is never sent again: the next registration
        waits for HN_NODE_TOKEN_FILE to hold another token (looked at every token_poll_s, and at once
        on SIGHUP); with HN_NODE_TOKEN alone, for a restart with a new one.
        """
        noted = False
        while True:
            token = await asyncio.to_thread(self._read_token)
            if self.session.may_register(token):
                if noted:
                    log.info("a new node token: registering again")
                return token
            if not noted:
                noted = True
                log.warning("the backend refuses this node token (%s); %s", self.session.refusal, self._token_fix())
            self.reload.clear()
            if await self._reloaded_within(self.tuning.token_poll_s):
                return None

    def _read_token(self) -> str:
        """The token at HN_NODE_TOKEN_FILE (else HN_NODE_TOKEN); the last one read while the file is unusable."""
        try:
            token = self.settings.token()
        except ConfigError as exc:
            if not self._token:
                raise
            if str(exc) != self._token_problem:  # read every second while refused: said once
                self._token_problem = str(exc)
                log.warning("%s; using the token read before", exc)
            return self._token
        self._token_problem = ""
        if token != self._token:
            logs.mask(token)  # the file may give a token the process did not have when logging was set up
            self._token = token
        return token

    def _token_fix(self) -> str:
        if self.settings.node_token_file is not None:
            return f"waiting for a new token in {self.settings.node_token_file} (then SIGHUP, or a second)"
        return "restart the node with a new HN_NODE_TOKEN, or give it HN_NODE_TOKEN_FILE"

    async def _reloaded_within(self, seconds: float) -> bool:
        """Wait for SIGHUP or ``seconds``; True if stopped meanwhile."""
        waits = {asyncio.ensure_future(self.stop.wait()), asyncio.ensure_future(self.reload.wait())}
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()
        return self.stop.is_set()

    def reload_token(self) -> None:
        """SIGHUP: read the token again now (a refused bridge registers at once with a new one)."""
        log.info("SIGHUP: reading the node token again")
        self.reload.set()

    async def _refused(self, reason: str) -> None:
        log.error("the backend refused this node: %s", reason)
        self._last_error = f"token refused: {reason[:MAX_REFUSAL_CHARS]}"
        self._emit(Kind.TOKEN_REFUSED, {"reason": reason[:MAX_REFUSAL_CHARS]})
        await self._redis(self.store.node.refused, reason[:MAX_REFUSAL_CHARS], now_ms())

    # Events ----------------------------------------------------------------------------------

    def _emit(self, kind: Kind, fields: dict[str, Any]) -> None:
        """Queue an event in the background: a slow Redis never holds up the session (emit never raises)."""
        task = asyncio.create_task(
            asyncio.to_thread(self.store.events.emit, kind, fields, node=self.settings.node_name)
        )
        self._emits.add(task)
        task.add_done_callback(self._emits.discard)

    def _went_offline(self) -> None:
        if self._offline_since is None:
            self._offline_since = now_ms()

    async def _watch_offline(self) -> None:
        """node.offline once the bridge has had no registered connection for HN_NOTIFY_OFFLINE_AFTER."""
        after_ms = int(self.settings.notify_offline_after * 1000)
        while True:
            await asyncio.sleep(min(1.0, self.settings.notify_offline_after / 4))
            since = self._offline_since
            if since is None or self._offline_announced or now_ms() - since < after_ms:
                continue
            self._offline_announced = True
            offline_s = round((now_ms() - since) / 1000, 1)
            log.warning("no registered connection for %.0f s", offline_s)
            self._emit(
                Kind.NODE_OFFLINE,
                {"since_ms": since, "offline_s": offline_s, "last_error": self._last_error or None},
            )

    def _back_online(self, node_id: str, resumed: bool) -> None:
        """Registered: node.back after a node.offline, node.registered the first time (or for a new id)."""
        since, self._offline_since = self._offline_since, None
        if self._offline_announced and since is not None:
            self._emit(Kind.NODE_BACK, {"node_id": node_id, "offline_s": round((now_ms() - since) / 1000, 1)})
        elif node_id not in self._registered_ids:
            self._emit(Kind.NODE_REGISTERED, {"node_id": node_id, "resumed": resumed})
        self._offline_announced = False
        self._registered_ids.add(node_id)
        self._last_error = ""

    # The ledger ------------------------------------------------------------------------------

    def _record(self, write: Callable[..., None], *args: Any) -> None:
        """A ledger write, queued on the ledger's thread: never awaited, never on the event loop."""
        future = asyncio.get_running_loop().run_in_executor(self._ledger_pool, write, *args)
        self._ledger_writes.add(future)
        future.add_done_callback(self._ledger_writes.discard)

    def _ledger_sent(self, job_id: str, result: dict[str, Any], at_ms: int) -> None:
        """On the ledger's thread: the result as sent, with the GPUs its record names."""
        try:
            gpus = self.store.jobs.gpus(job_id)
        except RedisDown:
            gpus = ()
        self.ledger.sent(job_id, result, gpus, at_ms)

    # Uptime ----------------------------------------------------------------------------------

    def _uptime_span(self, registered: bool) -> tuple[int, int] | None:
        """The registered time not yet credited, up to now; the next span starts now while ``registered``."""
        now = now_ms()
        span = (self._up_mark, now) if self._up_mark is not None and now > self._up_mark else None
        self._up_mark = now if registered else None
        return span

    async def _credit_uptime(self) -> None:
        """Credit what is left (the connection ended): best effort, a Redis down loses that stretch only."""
        span = self._uptime_span(registered=False)
        if span is None:
            return
        try:
            await asyncio.to_thread(self._credit, *span)
        except RedisDown as exc:
            self._redis_unavailable(exc)

    def _credit(self, start_ms: int, end_ms: int) -> None:
        """In a thread: a registered stretch, credited once: to the ledger, then to Redis (where a Redis
        that is down loses it; the ledger keeps it)."""
        self.ledger.credit_uptime(start_ms, end_ms)
        self.store.uptime.credit(start_ms, end_ms)

    # One connection --------------------------------------------------------------------------

    async def _connect_once(self, token: str) -> bool:
        """One connection, start to end; True if it got as far as registered."""
        endpoint = self.settings.endpoint
        # ssl only when given: websockets refuses ssl=None for wss:// (and builds a verifying context).
        tls: dict[str, Any] = {"ssl": self.tuning.ssl_context} if self.tuning.ssl_context is not None else {}
        try:
            async with connect(
                endpoint,
                # Far above the session's own cap (MAX_FRAME_BYTES): a frame between the two gets one error
                # reply and the connection stays up; websockets would close it (1009) without a word.
                max_size=MAX_WIRE_BYTES,
                # Frames read ahead of the session, at most: with max_size that bounds what a backend can make
                # the bridge hold (4 x 64 MiB) while it works through a burst.
                max_queue=WIRE_QUEUE_FRAMES,
                compression=None,  # a deflate bomb could inflate far past max_size
                open_timeout=self.tuning.open_timeout_s,
                ping_interval=self.tuning.ping_interval_s,
                ping_timeout=self.tuning.ping_timeout_s,
                close_timeout=self.tuning.close_timeout_s,
                logger=wire_logger("websockets.client"),  # no frame lines: the register frame holds the token
                **tls,
            ) as ws:
                log.info("connected to %s", endpoint)
                await self._serve(_Link(ws), token)
        except InvalidStatus as exc:
            if exc.response.status_code in AUTH_STATUSES:  # a gateway in front of the backend said no
                reason = f"the backend refused the connection: HTTP {exc.response.status_code}"
                self.session.handshake_refused(token, reason)
                await self._refused(reason)
            else:
                log.warning("connection to %s failed: %s", endpoint, _describe(exc))
        except (OSError, TimeoutError, WebSocketException) as exc:
            log.warning("connection to %s failed: %s", endpoint, _describe(exc))
            self._last_error = _describe(exc)
        finally:
            healthy = self.session.connection_lost()
            self._went_offline()
            await self._credit_uptime()
        return healthy

    async def _serve(self, link: _Link, token: str) -> None:
        """Register, then read frames until the connection ends; the helper tasks end with it."""
        host_info = await asyncio.to_thread(self._host_info)
        self.session.connected(token, host_info, self._capacity())
        await self._flush(link)
        link.helpers += [
            asyncio.create_task(self._close_on_stop(link)),
            asyncio.create_task(self._register_deadline(link.ws)),
        ]
        try:
            await self._read(link)
            log.info("disconnected from %s (code %s)", self.settings.endpoint, link.ws.close_code)
        except Stopping:
            await link.ws.close()  # a shutdown, not a failure: 1000 rather than websockets' 1011
            raise
        finally:
            for task in link.helpers:
                task.cancel()
            await asyncio.gather(*link.helpers, return_exceptions=True)
            for what, throttle in (
                ("frames refused", link.refusals),
                ("backend errors", link.backend_errors),
                ("cancels for jobs not here", link.unknown_cancels),
            ):
                if left_out := throttle.pending():
                    log.warning("%d more %s were not logged", left_out, what)

    async def _read(self, link: _Link) -> None:
        """Frames in until the connection ends; a close we started (1008 after a refusal) is no failure."""
        try:
            async for frame in link.ws:
                events = self.session.receive(frame)
                await self._flush(link)  # replies first (a pong, an error): the session queued them in order
                for event in events:
                    await self._on_event(event, link)
                link.replied.set()
        except ConnectionClosedError:
            if not link.refused:  # the peer or the network ended it: a failure, logged as one
                raise

    async def _flush(self, link: _Link) -> None:
        """Write every frame the session has queued, in its order, one writer at a time: the order on
        the wire is then the order in which the session matches the replies."""
        async with link.writing:
            while frames := self.session.frames_to_send():
                for frame in frames:
                    await link.ws.send(frame)

    async def _close_on_stop(self, link: _Link) -> None:
        """On stop, wait (up to close_timeout_s) for the replies to the results in flight, then close with 1000:
        a result sent but not settled is sent again on the next connection, which a backend that counts
        every frame would credit twice."""
        await self.stop.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settled(link), self.tuning.close_timeout_s)
        await link.ws.close()

    async def _settled(self, link: _Link) -> None:
        while self.session.in_flight:
            link.replied.clear()
            await link.replied.wait()

    async def _register_deadline(self, ws: ClientConnection) -> None:
        await asyncio.sleep(self.tuning.register_timeout_s)
        if self.session.state is State.REGISTERING:
            log.warning("no answer to register in %.0f s; reconnecting", self.tuning.register_timeout_s)
            await ws.close()

    async def _guarded(self, link: _Link, work: Callable[[_Link], Awaitable[None]]) -> None:
        """Run a helper task; if it fails, drop the connection so that the next one starts clean."""
        try:
            await work(link)
        except (ConnectionClosed, Stopping):
            pass  # the reader sees the same end and finishes the connection
        except ProtocolError as exc:  # the backend broke the protocol: a new connection starts clean
            log.error("%s; reconnecting", exc)
            await link.ws.close(code=CloseCode.PROTOCOL_ERROR)
        except Exception:
            log.exception("bridge task failed; reconnecting")
            await link.ws.close(code=CloseCode.INTERNAL_ERROR)

    # Frames in -------------------------------------------------------------------------------

    async def _on_event(self, event: Event, link: _Link) -> None:
        match event:
            case RegisteredEvent():
                await self._on_registered(event, link)
            case JobReceived(job_id, fields):
                await self._on_job(job_id, fields, link)
            case CancelRequested(job_id):
                if await self._redis(self.store.cancels.request, job_id):
                    log.info("job %s: cancel requested by the backend", job_id)
                else:  # nothing is kept for it, and a flood of them is logged as sparingly as bad frames
                    self._note(link.unknown_cancels, "cancel ignored", f"job {job_id} is not here or has finished")
            case ResultAcked(job_id, entry_id, credit):
                await self._redis(self._acknowledged, job_id, entry_id)
                if entry_id is not None:
                    self._record(self.ledger.acknowledged, job_id, now_ms(), credit)
            case ResultRejected(job_id, entry_id, reason):
                await self._redis(self._rejected, job_id, entry_id, plain(reason, MAX_REFUSAL_CHARS))
                if entry_id is not None:
                    self._record(self.ledger.rejected, job_id, now_ms(), plain(reason, MAX_REFUSAL_CHARS))
            case AuthFailed(reason):
                link.refused = True
                await self._refused(plain(reason, MAX_REFUSAL_CHARS))
                # 1008 (policy): the backend said no; not 1011, which says that we failed.
                await link.ws.close(code=CloseCode.POLICY_VIOLATION, reason="node token refused")
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
        announced = ", ".join(sorted(self.session.capabilities)) or "none (replies are matched by their order)"
        log.info("the backend's capabilities: %s", announced)
        await self._redis(self.store.node.registered, event.node_id, now_ms())
        self._back_online(event.node_id, event.resumed)
        if self._up_mark is None:
            self._up_mark = now_ms()
        if not link.registered_once:  # a second `registered` on the same connection starts nothing new
            link.registered_once = True
            link.helpers.append(asyncio.create_task(self._guarded(link, self._heartbeats)))
            link.helpers.append(asyncio.create_task(self._guarded(link, self._send_results)))

    async def _on_job(self, job_id: str, fields: dict[str, Any], link: _Link) -> None:
        try:
            known = await self._redis(self.intake.accept, job_id, fields)
        except Stopping:
            raise
        except StorageRefused as refused:  # not recorded, so not accepted: the backend hears so at once
            self._writes_refused = str(refused).partition("(")[2].rstrip(")") or str(refused)
            result = await self._redis(self.intake.refusal_result, job_id, fields, refused)
            if self.session.send_unstored_result(job_id, result):
                await self._flush(link)
            log.warning("job %s refused: %s", job_id, refused)
            return
        except Exception:
            # A bug met by one job must not cost the other jobs their connection, nor the bridge its
            # life: the backend hears that this one was not taken in (a recorded job whose intake was
            # cut short is completed when the job comes again, or at the next start).
            log.exception("job %s: intake failed", job_id)
            self.session.refuse(f"job {job_id} was not taken in (node error); send it again")
            await self._flush(link)
            return
        if known is None:
            self._record(self.ledger.received, job_id, now_ms())
        if isinstance(known, Known):
            answer = self.session.repeat(job_id, known.state, known.result)
            log.info("job %s: sent again while %s, not run again; it gets %s", job_id, known.state, answer.value)
            if answer is not Repeat.NOTHING:
                await self._flush(link)

    # Results out -----------------------------------------------------------------------------

    async def _send_results(self, link: _Link) -> None:
        """Send every result in the outbox, oldest first, then each new one as it lands, a window at a time."""
        last = "0-0"  # from the start on every connection: whatever is still here was never settled
        while True:
            entries = await self._redis(self.store.outbox.wait, last, OUTBOX_BLOCK_MS)
            for entry in entries:
                while self.session.window_full:  # the replies of the results in flight come first
                    link.replied.clear()
                    await link.replied.wait()
                if self.stop.is_set():
                    return  # stopping: nothing new goes out, the replies in flight are awaited
                last = entry.entry_id
                if self.session.send_result(entry.job_id, entry.entry_id, entry.result):
                    await self._flush(link)
                    self._record(self._ledger_sent, entry.job_id, entry.result, now_ms())
                    log.info("job %s: result sent (%s)", entry.job_id, entry.result.get("status"))

    def _acknowledged(self, job_id: str, entry_id: str | None) -> None:
        if entry_id is None:
            log.debug("job %s: a copy of its result acknowledged", job_id)
            return
        self.store.outbox.acknowledge(entry_id, job_id)
        log.info("job %s: result acknowledged", job_id)

    def _rejected(self, job_id: str, entry_id: str | None, reason: str) -> None:
        if entry_id is None:
            log.warning("job %s: the backend refused a copy of its reported result: %s", job_id, reason)
            return
        self.store.outbox.reject(entry_id, job_id, reason, now_ms())
        log.warning("job %s: the backend refused its result: %s; kept as rejected, not sent again", job_id, reason)

    # Heartbeats ------------------------------------------------------------------------------

    async def _heartbeats(self, link: _Link) -> None:
        """A beat every interval, on time: stats are read ahead and a slow read sends the last ones."""
        interval = self.settings.heartbeat_interval
        lead = min(interval / 4, STATS_LEAD_MAX_S)
        next_at = time.monotonic() + lead
        while True:
            await _sleep_until(next_at - lead)
            refresh = self._refresh_stats()
            await asyncio.wait({refresh}, timeout=max(next_at - time.monotonic(), 0))
            await _sleep_until(next_at)
            if self.session.heartbeat(utc_timestamp(), self._current_stats()):
                await self._flush(link)
                self._beat_sent_ms = now_ms()
            next_at = max(next_at + interval, time.monotonic())  # a stalled loop skips beats, never bursts

    def _refresh_stats(self) -> asyncio.Task[None]:
        """The stats read in progress, or a new one: one at a time, however slow Redis is."""
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.create_task(self._read_stats_async())
        return self._refresh

    async def _read_stats_async(self) -> None:
        refused, self._unsaved_refusals = self._unsaved_refusals, 0
        span = self._uptime_span(registered=self.session.state is State.REGISTERED)
        if span is not None:  # counted now: a beat sent before the read below returns keeps it
            self._uptime_total_ms += span[1] - span[0]
        try:
            self._stats = await asyncio.to_thread(self._read_stats, refused, self._beat_sent_ms, span)
        except RedisDown as exc:
            self._unsaved_refusals += refused
            self._redis_unavailable(exc)
        except Exception:  # a background task: nobody else would ever see this
            log.exception("reading the heartbeat stats failed; sending the last ones")

    def _read_stats(self, refused: int, beat_sent_ms: int, span: tuple[int, int] | None = None) -> HeartbeatStats:
        try:
            if refused:
                self.store.node.count("frames_refused", refused)
            if beat_sent_ms:
                self.store.node.heartbeat(beat_sent_ms)  # also how a write refusal is seen to end
            if span is not None:
                self._credit(*span)
        except RedisError as exc:
            if (why := write_refusal(exc)) is None:
                raise
            if self._writes_refused is None:
                log.warning("Redis refuses writes (%s): new jobs get an error result until it takes them", why)
            self._writes_refused = why
        else:
            if self._writes_refused is not None:
                log.warning("Redis takes writes again; taking jobs")
            self._writes_refused = None
        hours, first_seen, self._uptime_total_ms = self.store.uptime.read()
        self._uptime_ratios = {u.window: u.ratio for u in uptimes(hours, first_seen, now_ms())}
        queued, running = self.store.jobs.active_counts()
        registrations = self.store.registry.all()
        stats = heartbeat_stats(self.store.stats.counters(), queued, running, registrations, self.gpus())
        if stats.unhealthy_slots != self._unhealthy:
            for line in sorted(set(stats.unhealthy_slots) - set(self._unhealthy)):
                log.warning("slot takes no jobs: %s", line)
            self._unhealthy = stats.unhealthy_slots
        self._health_events(registrations)
        return stats

    def _health_events(self, registrations: list[Registration]) -> None:
        """gpu.unhealthy, gpu.busy and gpu.healthy for the slots whose health changed since the last read."""
        now = [SlotHealth(r.host, r.slot.id, r.slot.gpu_uuids, r.healthy, r.health) for r in registrations]
        for kind, fields in health_changes(self._slot_health, now):
            self.store.events.emit(kind, fields, node=self.settings.node_name)  # in a thread already
        self._slot_health = {(h.host, h.slot): h for h in now}

    def _current_stats(self) -> HeartbeatStats:
        """The stats last read, with total_uptime: the seconds this node has been registered, in all (its
        Redis keeps the sum), and the part of this connection not yet credited."""
        stats = self._stats or HeartbeatStats(jobs_completed=0, jobs_failed=0, total_uptime=0, active_jobs=0, gpus=[])
        pending = now_ms() - self._up_mark if self._up_mark is not None else 0
        ratios = {f"uptime_{window}": ratio for window, ratio in self._uptime_ratios.items()}
        update: dict[str, Any] = {"total_uptime": (self._uptime_total_ms + max(pending, 0)) // 1000, **ratios}
        if self._writes_refused is not None:  # no slot can take a job the node cannot record
            line = f"node: Redis refuses writes ({self._writes_refused}); new jobs are refused"
            update |= {"free_slots": 0, "unhealthy_slots": [*stats.unhealthy_slots, line]}
        return stats.model_copy(update=update)

    # Redis, patiently ------------------------------------------------------------------------

    async def _redis(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a Redis-using call in a thread; while Redis is down, wait and try again.

        Nothing is lost by waiting: a job frame not yet recorded was not accepted, a result not yet
        acknowledged stays in the outbox. Every call passed here is safe to repeat. A Redis that
        refuses writes (out of memory, a full disk) is waited for the same way; only a new job does
        not wait for it (Intake.accept refuses it with an error result instead).
        """
        delay = REDIS_RETRY_FIRST_S
        while True:
            try:
                return await asyncio.to_thread(call, *args, **kwargs)
            except RedisDown as exc:
                self._redis_unavailable(exc)
            except RedisError as exc:  # refusing writes lasts until room is freed: the same wait
                if write_refusal(exc) is None:
                    raise
                self._writes_refused = write_refusal(exc)
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
        gpus = self.gpus()
        driver = node_driver(gpus)
        return HostInfo(
            hostname=self.settings.node_name,
            os=platform.system(),
            os_version=platform.release(),
            arch=platform.machine(),
            gpus=[wire_gpu(g) for g in gpus],
            docker_version=self.docker_version,
            agent_version=AGENT_VERSION,
            driver_version=driver.version,
            cuda_version=driver.cuda,
        )

    def close(self) -> None:
        """Close the Redis connections (the broker's and the store's) and the ledger, once its writes are done."""
        self._ledger_pool.shutdown(wait=True)
        self.ledger.close()
        self.broker.close()
        self.store.close()


def build_bridge(settings: Settings, tuning: Tuning | None = None) -> Bridge:
    """A Bridge from settings: GPUs, slots, Redis, the Dramatiq broker, the node key, Docker's version."""
    from hypernode_host.gpu.inventory import discover, plan_node_slots
    from hypernode_host.tasks.broker import build_broker
    from hypernode_host.tasks.engine import docker_version

    settings.token()  # a missing token (or token file) is a setting to fix: one line now, not a wait
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
    """Run the bridge until SIGTERM/SIGINT; SIGHUP reads the node token again. A refused token does not end it."""
    bridge = build_bridge(settings)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, bridge.stop.set)
        loop.add_signal_handler(signal.SIGHUP, bridge.reload_token)
        await bridge.run()

    try:
        asyncio.run(main())
    finally:
        bridge.close()
