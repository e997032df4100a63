"""A TCP proxy on loopback that the tests put between the bridge and the backend, to break the network.

Modes: ``pass`` forwards both ways; ``blackhole`` keeps every socket open but forwards nothing (a
half-open connection: no FIN, no RST, just silence); ``refuse`` accepts new connections and resets them
at once (the backend unreachable). ``drop()`` resets the live connections; ``cut_next_large(n)`` lets
the next client chunk of at least n bytes through only half-way and then resets that connection (a
frame cut in the middle). It runs its own event loop in a daemon thread; every method is thread-safe.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

T = TypeVar("T")
Mode = Literal["pass", "blackhole", "refuse"]
CHUNK = 1 << 16


class _Pair:
    """One client connection and its upstream connection."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            writer.transport.abort()


class Proxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.mode: Mode = "pass"
        self.accepted = 0  # connections accepted in any mode
        self.first_bytes: list[bytes] = []  # the first bytes each client sent (TLS or plain text?)
        self._cut_at: int | None = None
        self._pairs: set[_Pair] = set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="test-proxy", daemon=True)

    # lifecycle -------------------------------------------------------------------------------------

    def __enter__(self) -> Proxy:
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._accept, "127.0.0.1", 0))
        return self

    def __exit__(self, *exc: object) -> None:
        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for pair in list(self._pairs):
                pair.abort()
            await self._server.wait_closed()

        self._call(shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    # faults ----------------------------------------------------------------------------------------

    def set_mode(self, mode: Mode) -> None:
        def assign() -> None:
            self.mode = mode

        self._loop.call_soon_threadsafe(assign)

    def drop(self) -> int:
        """Reset every live connection (both sides see a connection reset); how many."""

        async def drop_all() -> int:
            pairs = list(self._pairs)
            for pair in pairs:
                pair.abort()
            return len(pairs)

        return self._call(drop_all())

    def cut_next_large(self, threshold: int) -> None:
        def arm() -> None:
            self._cut_at = threshold

        self._loop.call_soon_threadsafe(arm)

    def live(self) -> int:
        async def count() -> int:
            return len(self._pairs)

        return self._call(count())

    # forwarding ------------------------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.mode == "refuse":
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        pair = _Pair(writer, up_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(
                self._pump(reader, up_writer, pair, from_client=True),
                self._pump(up_reader, writer, pair, from_client=False),
            )
        finally:
            self._pairs.discard(pair)
            pair.abort()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pair: _Pair, *, from_client: bool
    ) -> None:
        first = from_client
        try:
            while data := await reader.read(CHUNK):
                if first:
                    self.first_bytes.append(data[:16])
                    first = False
                if self.mode == "blackhole":
                    continue  # swallowed: the other side hears nothing, not even a close
                if from_client and self._cut_at is not None and len(data) >= self._cut_at:
                    self._cut_at = None
                    writer.write(data[: len(data) // 2])
                    await writer.drain()
                    pair.abort()
                    return
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if self.mode != "blackhole":
                pair.abort()
