"""The bridge's events and uptime, against both backend modes: registered, offline for longer than
HN_NOTIFY_OFFLINE_AFTER and back, the token refused, a slot unhealthy and healthy again; and the
registered time it credits (the heartbeat's total_uptime and uptime shares)."""

from __future__ import annotations

from typing import Any

from bridgekit import BridgeThread, Stack

from hypernode_host.core.slots import GpuInfo, Slot
from hypernode_host.state import Store, keys
from hypernode_host.state.records import Registration
from support import wait_for


def events(stack: Stack) -> list[tuple[str, dict[str, Any]]]:
    with Store.from_url(stack.redis_server.url) as store:
        return [(e.kind, dict(e.fields)) for _, e in store.events.recent(100)]


def kinds(stack: Stack) -> list[str]:
    return [kind for kind, _ in events(stack)]


def test_registered_offline_and_back_are_each_one_event(stack: Stack) -> None:
    env = {**stack.env, "HN_NOTIFY_OFFLINE_AFTER": "1"}
    with BridgeThread(env) as bridge:
        node_id = stack.wait_registered()
        wait_for(lambda: "node.registered" in kinds(stack), timeout=15)
        stack.proxy.set_mode("refuse")
        stack.proxy.drop()
        wait_for(lambda: "node.offline" in kinds(stack), timeout=20)
        stack.proxy.set_mode("pass")
        stack.after_cut()  # upstream refuses the spent token: the operator gives a new one
        wait_for(lambda: "node.back" in kinds(stack), timeout=30)

    assert bridge.error is None
    seen = events(stack)
    names = [kind for kind, _ in seen]
    assert names.count("node.registered") == 1 and names.count("node.offline") == 1 and names.count("node.back") == 1
    registered = next(f for k, f in seen if k == "node.registered")
    assert registered["node_id"] == node_id
    offline = next(f for k, f in seen if k == "node.offline")
    assert offline["offline_s"] >= 1 and offline["last_error"]
    back = next(f for k, f in seen if k == "node.back")
    assert back["offline_s"] >= offline["offline_s"]
    if stack.upstream:
        refused = next(f for k, f in seen if k == "token.refused")
        assert refused["reason"] == "Token already used"


def test_a_short_drop_is_no_event(stack: Stack) -> None:
    with BridgeThread(stack.env):  # HN_NOTIFY_OFFLINE_AFTER: its default, two minutes
        stack.wait_registered()
        stack.proxy.drop()
        stack.after_cut()
        wait_for(lambda: any(n["connected"] for n in stack.backend.nodes()), timeout=20)
    assert "node.offline" not in kinds(stack) and "node.back" not in kinds(stack)


def test_a_slot_that_stops_taking_jobs_and_comes_back_is_an_event_each(stack: Stack) -> None:
    gpu = GpuInfo(index=0, uuid="GPU-events-0", name="RTX4090", memory_total_mb=24576, memory_free_mb=24576)
    slot = Slot(id=0, gpus=(gpu,))
    with Store.from_url(stack.redis_server.url) as store, BridgeThread(stack.env):
        stack.wait_registered()
        store.registry.register(Registration("rig", slot, healthy=False, health="GPU-events-0: marked lost"), 60, 1)
        wait_for(lambda: "gpu.unhealthy" in kinds(stack), timeout=15)
        store.registry.register(Registration("rig", slot), 60, 2)
        wait_for(lambda: "gpu.healthy" in kinds(stack), timeout=15)
    unhealthy = next(f for k, f in events(stack) if k == "gpu.unhealthy")
    assert unhealthy == {"host": "rig", "slot": 0, "gpus": ["GPU-events-0"], "health": "GPU-events-0: marked lost"}
    assert kinds(stack).count("gpu.unhealthy") == 1


def test_registered_time_is_credited_and_sent_as_total_uptime(stack: Stack) -> None:
    with BridgeThread(stack.env):
        node_id = stack.wait_registered()
        beats = wait_for(lambda: (b := stack.backend.heartbeats(node_id)) and len(b) >= 3 and b, timeout=20)
        wait_for(lambda: int(stack.redis.hget(keys.UPTIME, "total_ms") or 0) >= 1000, timeout=20)
    last = beats[-1].stats
    assert last["total_uptime"] >= 1
    assert last["uptime_24h"] is not None and 0 < last["uptime_24h"] <= 1
    with Store.from_url(stack.redis_server.url) as store:
        hours, first_seen, total_ms = store.uptime.read()
    assert first_seen is not None and sum(hours.values()) == total_ms >= 1000
