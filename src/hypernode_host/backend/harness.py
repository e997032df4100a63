"""A reference backend on a thread of its own, for tests and the demo: every accessor is thread-safe."""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, TypeVar

from hypernode_host.backend import oracle
from hypernode_host.backend.records import HeartbeatRecord
from hypernode_host.backend.server import CLOSE_TIMEOUT_S, UPSTREAM_DEMO_JOB_AFTER_S, ReferenceBackend, ws_url

T = TypeVar("T")


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
        upstream: bool = False,
        demo_job_after_s: float | None = UPSTREAM_DEMO_JOB_AFTER_S,
    ) -> None:
        self.backend = ReferenceBackend(
            host,
            port,
            tokens,
            ack_results=ack_results,
            close_timeout=close_timeout,
            redispatch_on_resume=redispatch_on_resume,
            ssl_context=ssl_context,
            upstream=upstream,
            demo_job_after_s=demo_job_after_s,
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
        return ws_url(self.backend.host, self.port, self.backend.ssl_context is not None)

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

    def credits(self, job_id: str) -> int:
        """How many times the job's result was credited (upstream: once per result frame it accepted)."""
        return self._on_loop(lambda: self.backend.credits_of(job_id))

    def refused_results(self, job_id: str) -> int:
        """How many job_result frames for ``job_id`` got "Job not found"."""
        return self._on_loop(lambda: self.backend.refused_results_of(job_id))

    def registers_refused(self) -> int:
        """How many register frames got a token error ("Invalid token", "Token already used", ...)."""
        return self._on_loop(lambda: self.backend.registers_refused)

    def status(self) -> dict[str, Any]:
        return self._on_loop(self.backend.status)

    # writes

    def add_token(self, token: str) -> None:
        self._on_loop(lambda: self.backend.add_token(token))

    def set_ack_results(self, value: bool) -> None:
        def assign() -> None:
            self.backend.ack_results = value

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
