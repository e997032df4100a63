"""The notifier against real HTTP receivers and a real Redis: each format as its receivers accept it, and
receivers that are down, slow or failing delay nobody but themselves, with retries and a bound."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from hypernode_host.core.events import Kind
from hypernode_host.node.redis_server import RedisProcess
from hypernode_host.ops.notify import Delivery, run_notifier
from hypernode_host.settings import Settings
from hypernode_host.state import Store
from receivers import Receiver, down_url
from support import wait_for

QUICK = Delivery(timeout_s=1.0, attempts=3, first_backoff_s=0.05, max_backoff_s=0.2, block_ms=200)


@contextmanager
def notifier(redis_server: RedisProcess, urls: list[str], fmt: str = "json", **extra: str) -> Iterator[None]:
    env = {"HN_REDIS_URL": redis_server.url, "HN_NOTIFY_URL": ",".join(urls), "HN_NOTIFY_FORMAT": fmt, **extra}
    settings = Settings.from_env(env)
    stop = threading.Event()
    thread = threading.Thread(target=run_notifier, args=(settings, stop, QUICK), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)
        assert not thread.is_alive()


def emit(store: Store, n: int) -> list[str]:
    ids = [f"job-{i}" for i in range(n)]
    for job_id in ids:
        store.events.emit(
            Kind.JOB_FINISHED, {"job_id": job_id, "status": "failed", "duration_s": 1.5, "gpus": []}, node="rig"
        )
    return ids


def test_events_reach_a_json_receiver_in_order_with_the_node_id(redis_server: RedisProcess, store: Store) -> None:
    store.node.registered("node-7", 1)
    with Receiver() as ok, notifier(redis_server, [ok.url]):
        ids = emit(store, 5)
        wait_for(lambda: len(ok.received) == 5, timeout=20)
    documents = [r.json() for r in ok.received]
    assert [d["job_id"] for d in documents] == ids
    assert {(d["event"], d["node"], d["node_id"], d["severity"]) for d in documents} == {
        ("job.finished", "rig", "node-7", "warning")
    }
    assert store.events.counts()["delivered"] == 5


@pytest.mark.parametrize("fmt", ["ntfy", "discord", "slack"])
def test_each_chat_format_is_what_its_receiver_accepts(redis_server: RedisProcess, store: Store, fmt: str) -> None:
    with Receiver() as ok, notifier(redis_server, [ok.url], fmt):
        store.events.emit(Kind.TOKEN_REFUSED, {"reason": "Token already used @everyone <b>"}, node="rig")
        got = wait_for(lambda: ok.received and ok.received[0], timeout=20)
    if fmt == "ntfy":
        assert got.headers["Title"] == "hypernode rig: token.refused" and got.headers["Priority"] == "urgent"
        assert got.body.decode().startswith("the backend refuses the node token: Token already used")
    elif fmt == "discord":
        assert got.json()["allowed_mentions"] == {"parse": []} and "token.refused" in got.json()["content"]
    else:
        assert "&lt;b&gt;" in got.json()["text"]


def test_a_down_and_a_slow_receiver_delay_nobody_else(redis_server: RedisProcess, store: Store) -> None:
    with Receiver(hold=True) as slow, Receiver() as ok, notifier(redis_server, [down_url(), slow.url, ok.url]):
        ids = emit(store, 4)
        wait_for(lambda: len(ok.received) == 4, timeout=20)
        assert slow.waiting == 1 and slow.received == []  # still holding its first request meanwhile
        # The down receiver gives up on each event after its attempts: bounded, then on to the next.
        wait_for(lambda: store.events.counts().get("dropped", 0) >= 4, timeout=30)
    assert [r.json()["job_id"] for r in ok.received] == ids
    assert store.events.counts()["retries"] >= 4 * (QUICK.attempts - 1)


def test_a_failing_receiver_gets_the_event_after_retries(redis_server: RedisProcess, store: Store) -> None:
    with Receiver(fail_first=2) as flaky, notifier(redis_server, [flaky.url]):
        emit(store, 1)
        wait_for(lambda: len(flaky.received) == 1, timeout=20)
    assert flaky.failed == 2 and store.events.counts()["retries"] == 2


def test_a_restarted_notifier_goes_on_from_its_cursor(redis_server: RedisProcess, store: Store) -> None:
    with Receiver() as ok:
        with notifier(redis_server, [ok.url]):
            emit(store, 2)
            wait_for(lambda: len(ok.received) == 2, timeout=20)
        emit(store, 1)
        with notifier(redis_server, [ok.url]):
            wait_for(lambda: len(ok.received) == 3, timeout=20)
    assert [r.json()["job_id"] for r in ok.received] == ["job-0", "job-1", "job-0"]  # each once


def test_only_the_chosen_events_are_sent(redis_server: RedisProcess, store: Store) -> None:
    with Receiver() as ok, notifier(redis_server, [ok.url], HN_NOTIFY_EVENTS="node.*"):
        emit(store, 2)
        store.events.emit(Kind.NODE_OFFLINE, {"offline_s": 300}, node="rig")
        wait_for(lambda: ok.received, timeout=20)
        wait_for(lambda: store.events.counts().get("skipped", 0) == 2, timeout=20)
    assert ok.events() == ["node.offline"]


def test_notify_test_says_what_each_receiver_answered_without_its_secret(redis_server: RedisProcess) -> None:
    with Receiver() as ok:
        down = down_url()
        env = {k: v for k, v in os.environ.items() if not k.startswith("HN_")}
        env |= {"HN_REDIS_URL": redis_server.url, "HN_NOTIFY_URL": f"{ok.url},{down}", "HN_NODE_NAME": "rig"}
        done = subprocess.run(
            [sys.executable, "-m", "hypernode_host", "notify", "--test"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1  # one receiver failed
    lines = done.stdout.splitlines()
    assert lines[0].startswith("ok http://127.0.0.1:") and lines[0].endswith("/...: HTTP 204")
    assert lines[1].startswith("FAILED http://127.0.0.1:") and "SECRET" not in done.stdout + done.stderr
    assert ok.events() == ["test"]
