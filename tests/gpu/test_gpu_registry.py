"""Worker registrations and simulated lost marks in a real Redis (gpu/registry.py, gpu/health.py)."""

from __future__ import annotations

import redis

from hypernode_host.gpu.health import clear_lost, lost_marks, mark_lost
from hypernode_host.gpu.inventory import discover
from hypernode_host.gpu.registry import Registration, register, registrations, unregister
from hypernode_host.gpu.simulated import simulated_gpus
from hypernode_host.gpu.slots import plan_slots
from hypernode_host.redisproc import RedisProcess
from hypernode_host.settings import Settings
from support import wait_for


def test_hosts_with_the_same_slot_numbers_keep_separate_registrations(redis_client: redis.Redis) -> None:
    slot_a = plan_slots(simulated_gpus("1", seed="a"), 0)[0]
    slot_b = plan_slots(simulated_gpus("1", seed="b"), 0)[0]
    register(redis_client, Registration("a", slot_a, pid=1), ttl_s=30, seen_at_ms=5)
    register(redis_client, Registration("b", slot_b, pid=2), ttl_s=1, seen_at_ms=6)

    found = {(r["host"], r["slot"]): r for r in registrations(redis_client)}
    assert sorted(found) == [("a", "0"), ("b", "0")]
    assert found[("a", "0")]["gpus"] == slot_a.gpu_uuids[0] and found[("a", "0")]["seen_at"] == "5"

    wait_for(lambda: [r["host"] for r in registrations(redis_client)] == ["a"], timeout=10)  # b's TTL ran out
    unregister(redis_client, "a", 0)
    assert registrations(redis_client) == []


def test_lost_marks_make_simulated_gpus_read_unhealthy(redis_server: RedisProcess, redis_client: redis.Redis) -> None:
    settings = Settings.from_env({"HN_SIMULATE_GPUS": "3", "HN_REDIS_URL": redis_server.url, "HN_NODE_NAME": "rig"})
    gpus = simulated_gpus("3", seed="rig")
    mark_lost(redis_client, gpus[1].uuid, "Xid 79 (simulated)")

    assert lost_marks(redis_client, [g.uuid for g in gpus]) == {gpus[1].uuid: "Xid 79 (simulated)"}
    assert [(g.healthy, g.health) for g in discover(settings)] == [
        (True, "ok"),
        (False, "marked lost: Xid 79 (simulated)"),
        (True, "ok"),
    ]
    assert [g.healthy for g in discover(settings, redis_client)] == [True, False, True]  # the caller's client

    clear_lost(redis_client, gpus[1].uuid)
    assert all(g.healthy for g in discover(settings))
