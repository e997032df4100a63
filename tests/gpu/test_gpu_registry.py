"""Worker registrations and simulated lost marks in a real Redis (state/registry.py, state/gpuflags.py)."""

from __future__ import annotations

import redis

from hypernode_host.core.slots import plan_slots
from hypernode_host.gpu.inventory import discover
from hypernode_host.gpu.simulated import simulated_gpus
from hypernode_host.node.redis_server import RedisProcess
from hypernode_host.settings import Settings
from hypernode_host.state import Store, keys
from hypernode_host.state.records import Registration
from support import wait_for


def test_hosts_with_the_same_slot_numbers_keep_separate_registrations(store: Store, redis_client: redis.Redis) -> None:
    slot_a = plan_slots(simulated_gpus("1", seed="a"), 0)[0]
    slot_b = plan_slots(simulated_gpus("1", seed="b"), 0)[0]
    store.registry.register(Registration("a", slot_a, pid=1), ttl_s=30, seen_at_ms=5)
    store.registry.register(Registration("b", slot_b, pid=2), ttl_s=1, seen_at_ms=6)

    found = {(r.host, r.slot.id): r for r in store.registry.all()}
    assert sorted(found) == [("a", 0), ("b", 0)]
    assert found[("a", 0)].slot.gpu_uuids == slot_a.gpu_uuids and found[("a", 0)].seen_at == 5
    assert redis_client.hget(keys.WORKER.format(host="a", slot=0), "gpus") == slot_a.gpu_uuids[0]  # as stored

    wait_for(lambda: [r.host for r in store.registry.all()] == ["a"], timeout=10)  # b's TTL ran out
    store.registry.unregister("a", 0)
    assert store.registry.all() == []


def test_lost_marks_make_simulated_gpus_read_unhealthy(redis_server: RedisProcess, store: Store) -> None:
    settings = Settings.from_env({"HN_SIMULATE_GPUS": "3", "HN_REDIS_URL": redis_server.url, "HN_NODE_NAME": "rig"})
    gpus = simulated_gpus("3", seed="rig")
    store.gpuflags.mark_lost(gpus[1].uuid, "Xid 79 (simulated)")

    assert store.gpuflags.lost([g.uuid for g in gpus]) == {gpus[1].uuid: "Xid 79 (simulated)"}
    assert [(g.healthy, g.health) for g in discover(settings)] == [
        (True, "ok"),
        (False, "marked lost: Xid 79 (simulated)"),
        (True, "ok"),
    ]
    assert [g.healthy for g in discover(settings, store)] == [True, False, True]  # the caller's store

    store.gpuflags.clear_lost(gpus[1].uuid)
    assert all(g.healthy for g in discover(settings))
