"""up's supervision of a child that keeps exiting: restarted each time, and one worker.crash_loop event queued
in the node's Redis (a real one), without holding up the supervision."""

from __future__ import annotations

import sys
import threading

from hypernode_host.node.redis_server import RedisProcess
from hypernode_host.node.supervisor import CRASH_LOOP_EXITS, Child, _supervise
from hypernode_host.settings import Settings
from hypernode_host.state import Store
from support import wait_for


def test_a_worker_restarting_in_a_loop_is_one_event(redis_server: RedisProcess, store: Store) -> None:
    settings = Settings.from_env({"HN_REDIS_URL": redis_server.url, "HN_NODE_NAME": "rig-7"})
    child = Child("worker slot 3 (CPU)", [sys.executable, "-c", "raise SystemExit(5)"])
    stop = threading.Event()
    supervising = threading.Thread(target=_supervise, args=([child], stop, None, settings), daemon=True)
    supervising.start()
    try:
        loops = wait_for(lambda: [e for _, e in store.events.recent(10) if e.kind == "worker.crash_loop"], timeout=30)
    finally:
        stop.set()
        supervising.join(10)
        if child.proc is not None:
            child.proc.wait(10)
    (event,) = loops
    assert event.node == "rig-7"
    assert event.fields["worker"] == "worker slot 3 (CPU)" and event.fields["exit_code"] == 5
    assert event.fields["restarts"] >= CRASH_LOOP_EXITS
