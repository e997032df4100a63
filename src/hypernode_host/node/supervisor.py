"""`hypernode-host up`: the bridge and one worker per slot as child processes, kept running.

Without HN_REDIS_URL it first starts the node's own Redis (node/redis_server.py) and gives the
children its URL; that Redis is restarted if it dies, and stopped after the children.
A crashed child is restarted (with a growing pause if it keeps crashing; one that keeps crashing is
a worker.crash_loop event). With HN_NOTIFY_URL set, the notifier is a child too. Nothing stops the node
on its own: a bridge whose token the backend refused keeps running (and waits for a new token)
while the workers finish their jobs and results wait in the outbox. SIGHUP is passed on to the
bridge, which reads the node token again. SIGTERM or SIGINT stops every child: SIGTERM first,
SIGKILL after a grace period.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field

from hypernode_host.exitcodes import EXIT_OK
from hypernode_host.gpu.inventory import plan_node_slots
from hypernode_host.node.redis_server import RedisProcess, embedded
from hypernode_host.node.signals import on_hangup, stop_on_signals
from hypernode_host.settings import Settings

log = logging.getLogger(__name__)

STOP_GRACE_S = 20.0
BRIDGE = "bridge"
NOTIFIER = "notifier"
# A child that exits this many times within CRASH_WINDOW_S restarts in a loop: worker.crash_loop.
CRASH_LOOP_EXITS = 3
CRASH_WINDOW_S = 60.0
_POLL_S = 0.2


@dataclass
class Child:
    name: str
    argv: list[str]
    env: Mapping[str, str] | None = None  # None: ours
    proc: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)
    not_before: float = 0.0
    looping: bool = False  # worker.crash_loop was emitted for the exits in the window now

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, env=self.env)
        log.info("started %s (pid %d)", self.name, self.proc.pid)

    def restart_delay(self, now: float) -> float:
        """0 for an occasional crash; up to 30 s when it crashes again and again."""
        self.restarts = [t for t in self.restarts if now - t < CRASH_WINDOW_S] + [now]
        return min(30.0, 0.5 * 2 ** (len(self.restarts) - 1)) if len(self.restarts) > 1 else 0.0

    def crash_loop(self) -> bool:
        """True once per loop: the exit that makes CRASH_LOOP_EXITS within the window (again after a quiet one)."""
        if len(self.restarts) < CRASH_LOOP_EXITS:
            self.looping = False
            return False
        if self.looping:
            return False
        self.looping = True
        return True


def children_for(settings: Settings, env: Mapping[str, str] | None = None) -> list[Child]:
    base = [sys.executable, "-m", "hypernode_host.node.child"]
    slots = plan_node_slots(settings)
    children = [Child(BRIDGE, [*base, "bridge"], env)]
    children += [Child(f"worker {s.describe()}", [*base, "worker", "--slot", str(s.id)], env) for s in slots]
    if settings.notify_url:  # its own process: a receiver that is down or slow delays nothing else
        children.append(Child(NOTIFIER, [*base, "notify"], env))
    return children


def run_up(settings: Settings, stop: threading.Event | None = None) -> int:
    """Supervise the node until SIGTERM/SIGINT (or ``stop``); the exit code for the CLI."""
    settings.token()  # fail now, with one line, rather than in a restart loop
    stop = stop or threading.Event()
    stop_on_signals(stop)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")  # children's output reaches their log at once
    with embedded(settings.state_dir) if settings.own_redis else nullcontext() as server:
        # The password reaches the children in their environment, never in their arguments.
        env = {**os.environ, "HN_REDIS_URL": server.url} if server else None
        children = children_for(settings, env)
        on_hangup(lambda: _hang_up(children))
        for child in children:
            child.start()
        try:
            return _supervise(children, stop, server, settings)
        finally:
            _stop_all(children)  # before the Redis they write to


def _supervise(
    children: list[Child], stop: threading.Event, server: RedisProcess | None, settings: Settings | None = None
) -> int:
    while not stop.wait(_POLL_S):
        now = time.monotonic()
        if server is not None and server.exited():
            assert server.proc is not None
            log.warning("the node's own Redis exited with code %s; restarting it", server.proc.returncode)
            server.start()
        for child in children:
            if child.proc is None:
                if now >= child.not_before:
                    child.start()
                continue
            code = child.proc.poll()
            if code is None:
                continue
            delay = child.restart_delay(now)
            log.warning("%s exited with code %s; restarting in %.1f s", child.name, code, delay)
            child.proc, child.not_before = None, now + delay
            if settings is not None and child.crash_loop():
                _crash_loop_event(settings, server, child, code)
    return EXIT_OK


def _crash_loop_event(settings: Settings, server: RedisProcess | None, child: Child, code: int) -> None:
    """worker.crash_loop, in a thread of its own: a Redis that does not answer never holds up supervision."""
    from hypernode_host.core.events import Kind
    from hypernode_host.state import RedisError, Store

    fields = {"worker": child.name, "restarts": len(child.restarts), "window_s": CRASH_WINDOW_S, "exit_code": code}
    log.error("%s is restarting in a loop (%d exits in %.0f s)", child.name, len(child.restarts), CRASH_WINDOW_S)

    def emit() -> None:
        try:
            store = Store.from_url(server.url, timeout_s=5) if server else Store.open(settings, timeout_s=5)
        except RedisError as exc:  # pragma: no cover: from_url connects lazily
            log.warning("worker.crash_loop not queued: %s", exc)
            return
        with store:
            store.events.emit(Kind.WORKER_CRASH_LOOP, fields, node=settings.node_name)

    threading.Thread(target=emit, name="crash-loop-event", daemon=True).start()


def _hang_up(children: list[Child]) -> None:
    """SIGHUP to the bridge: it reads the node token again (HN_NODE_TOKEN_FILE)."""
    for child in children:
        if child.name == BRIDGE and child.proc is not None and child.proc.poll() is None:
            child.proc.send_signal(signal.SIGHUP)


def _stop_all(children: list[Child]) -> None:
    running = [c for c in children if c.proc is not None and c.proc.poll() is None]
    for child in running:
        assert child.proc is not None
        child.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for child in running:
        assert child.proc is not None
        try:
            child.proc.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0f s; killing it", child.name, STOP_GRACE_S)
            child.proc.kill()
            child.proc.wait()
    log.info("node stopped")
