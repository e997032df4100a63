"""up's decisions: when a child that keeps exiting is a crash loop (worker.crash_loop, once per loop)."""

from __future__ import annotations

from hypernode_host.node.supervisor import CRASH_LOOP_EXITS, CRASH_WINDOW_S, Child, children_for
from hypernode_host.settings import Settings


def test_a_child_that_keeps_exiting_is_one_crash_loop() -> None:
    child = Child("worker slot 0", ["true"])
    loops = []
    for n in range(6):
        child.restart_delay(100.0 + n)
        loops.append(child.crash_loop())
    assert loops == [False] * (CRASH_LOOP_EXITS - 1) + [True] + [False] * (6 - CRASH_LOOP_EXITS)
    child.restart_delay(100.0 + 6 + CRASH_WINDOW_S * 2)  # a quiet minute: the loop is over
    assert child.crash_loop() is False
    for n in range(CRASH_LOOP_EXITS):
        child.restart_delay(300.0 + n)
    assert child.crash_loop() is True  # a new loop is news again


def test_the_notifier_is_a_child_only_with_a_url() -> None:
    plain = Settings.from_env({"HN_CPU_SLOTS": "1", "HN_SIMULATE_GPUS": "0"})
    notified = Settings.from_env({"HN_CPU_SLOTS": "1", "HN_SIMULATE_GPUS": "0", "HN_NOTIFY_URL": "http://h.example/"})
    assert "notifier" not in [c.name for c in children_for(plain)]
    assert [c.argv[-1] for c in children_for(notified)][-1] == "notify"
