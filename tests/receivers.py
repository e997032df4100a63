"""HTTP receivers for the notifier's tests, on real sockets: one that answers, one that answers only
when the test lets it (slow), one that fails a few times first, and a port where nothing listens (down)."""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """``with Receiver() as r: r.url``; ``hold`` makes every request wait until ``release``; ``fail_first``
    answers that many requests with 503 first."""

    def __init__(self, *, hold: bool = False, fail_first: int = 0) -> None:
        self.received: list[Received] = []
        self.waiting = 0  # requests being held now
        self.failed = 0
        self._released = threading.Event()
        if not hold:
            self._released.set()
        self._fail_first = fail_first
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer._lock:
                    outer.waiting += 1
                outer._released.wait(60)
                with outer._lock:
                    outer.waiting -= 1
                    failing = outer.failed < outer._fail_first
                    if failing:
                        outer.failed += 1
                    else:
                        outer.received.append(Received(self.path, dict(self.headers.items()), body))
                try:
                    self.send_response(503 if failing else 204)
                    self.end_headers()
                except OSError:
                    pass  # the notifier gave up on this request already

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook/SECRET-{id(self)}"

    def release(self) -> None:
        self._released.set()

    def events(self) -> list[str]:
        return [r.json()["event"] for r in list(self.received) if r.headers.get("Content-Type") == "application/json"]

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()


def down_url() -> str:
    """A loopback port nothing listens on: connections are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/down"
