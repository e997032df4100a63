"""Pure GPU logic: slots, queue routing, capacity across hosts, simulated load, health verdicts."""

from __future__ import annotations

import pytest

from hypernode_host.core.slots import Slot, gpus_for, plan_slots, queue_for
from hypernode_host.errors import ConfigError, JobRejected
from hypernode_host.gpu.capacity import busy_gpus, serving_slots, unhealthy_slots
from hypernode_host.gpu.health import Readings, judge, summarize
from hypernode_host.gpu.inventory import plan_node_slots
from hypernode_host.gpu.simulated import Busy, simulated_gpus, with_load, with_lost
from hypernode_host.settings import Settings
from hypernode_host.state.records import Registration

MIXED = simulated_gpus("2xRTX4090:24576,1xA100:81920,1xRTX4090:24576")


def shape(slots: list[Slot]) -> list[tuple[int, list[int], tuple[str, ...]]]:
    return [(s.id, [g.index for g in s.gpus], s.queues) for s in slots]


def test_one_slot_per_gpu_by_default_then_cpu_slots() -> None:
    assert shape(plan_slots(MIXED, 1)) == [
        (0, [0], ("hn-gpu1", "hn-gpu1-24576mib")),
        (1, [1], ("hn-gpu1", "hn-gpu1-24576mib")),
        (2, [3], ("hn-gpu1", "hn-gpu1-24576mib")),
        (3, [2], ("hn-gpu1", "hn-gpu1-81920mib")),
        (4, [], ("hn-cpu",)),
    ]


def test_k_gpu_slots_never_mix_models_and_keep_the_rest_as_a_smaller_slot() -> None:
    assert shape(plan_slots(MIXED, 0, gpus_per_worker=2)) == [
        (0, [0, 1], ("hn-gpu2", "hn-gpu2-24576mib")),
        (1, [3], ("hn-gpu1", "hn-gpu1-24576mib")),
        (2, [2], ("hn-gpu1", "hn-gpu1-81920mib")),
    ]
    four = plan_slots(simulated_gpus("4"), 0, gpus_per_worker=2)
    assert [len(s.gpus) for s in four] == [2, 2]


def test_every_part_plans_the_same_slots_from_settings() -> None:
    settings = Settings.from_env(
        {
            "HN_SIMULATE_GPUS": "4",
            "HN_GPUS_PER_WORKER": "2",
            "HN_CPU_SLOTS": "1",
            "HN_REDIS_URL": "redis://127.0.0.1:1/0",
        }
    )
    slots = plan_node_slots(settings)  # Redis down: the simulated GPUs just read idle
    assert [(s.id, len(s.gpus), s.queue) for s in slots] == [(0, 2, "hn-gpu2"), (1, 2, "hn-gpu2"), (2, 0, "hn-cpu")]


def test_simulated_uuids_are_stable_per_node_and_differ_between_nodes() -> None:
    here = [g.uuid for g in simulated_gpus("2", seed="rig-a")]
    assert here == [g.uuid for g in simulated_gpus("2", seed="rig-a")]
    assert not set(here) & {g.uuid for g in simulated_gpus("2", seed="rig-b")}
    with pytest.raises(ConfigError, match="more than the 64 simulated at most"):
        simulated_gpus("65")


def test_gpu_jobs_go_to_the_shared_queue_of_the_smallest_fitting_slots() -> None:
    two_per_slot = plan_slots(simulated_gpus("4"), 1, gpus_per_worker=2)
    assert queue_for(2, None, two_per_slot) == "hn-gpu2"
    assert queue_for(1, None, two_per_slot) == "hn-gpu2"  # a 1-GPU job may use one GPU of a 2-GPU slot
    both = [*plan_slots(simulated_gpus("1"), 0), *two_per_slot]
    assert queue_for(1, None, both) == "hn-gpu1"
    assert queue_for(0, None, two_per_slot) == "hn-cpu"


def test_memory_routes_only_to_slots_whose_gpus_are_big_enough() -> None:
    slots = plan_slots(MIXED, 0)
    assert queue_for(1, 20000, slots) == "hn-gpu1"  # every 1-GPU slot holds it: shared queue
    assert queue_for(1, 40000, slots) == "hn-gpu1-81920mib"  # only the A100's slot consumes this one
    a100s = plan_slots(simulated_gpus("2xA100:81920"), 0)
    assert queue_for(1, 40000, a100s) == "hn-gpu1"


@pytest.mark.parametrize(
    ("gpus", "memory", "reason"),
    [
        (1, 90000, "job needs 90000 MiB of GPU memory; no GPU here has that much (largest 81920 MiB)"),
        (2, None, "job needs 2 GPU(s); this node's GPU slots hold 1"),
        (0, None, "this node runs no CPU jobs (HN_CPU_SLOTS=0)"),
    ],
)
def test_jobs_no_slot_can_ever_serve_are_refused_in_one_line(gpus: int, memory: int | None, reason: str) -> None:
    with pytest.raises(JobRejected) as caught:
        queue_for(gpus, memory, plan_slots(MIXED, 0))
    assert str(caught.value) == reason


def test_a_job_gets_the_first_gpus_of_its_slot() -> None:
    slot = plan_slots(simulated_gpus("4"), 0, gpus_per_worker=2)[1]
    assert gpus_for(slot, 1) == (slot.gpus[0].uuid,)
    assert gpus_for(slot, 2) == slot.gpu_uuids
    assert gpus_for(slot, 0) == ()


def registration(host: str, slot: Slot, **fields: object) -> Registration:
    """A registration as the registry reads it back: through the strings it stores."""
    stored = Registration(host=host, slot=slot, **fields).fields()  # type: ignore[arg-type]
    parsed = Registration.parse({k: str(v) for k, v in stored.items()})
    assert parsed is not None
    return parsed


def test_registrations_round_trip() -> None:
    slot = plan_slots(MIXED, 0, gpus_per_worker=2)[0]
    stored = Registration("rig-b", slot, owner="o", pid=7, healthy=False, health="bad", job="j1", job_gpus=("u",))

    back = Registration.parse({k: str(v) for k, v in stored.fields().items()})

    assert back is not None
    assert back.slot.gpu_uuids == slot.gpu_uuids and back.slot.queues == slot.queues
    assert back == Registration("rig-b", back.slot, owner="o", pid=7, healthy=False, health="bad", job="j1",
                                job_gpus=("u",))  # fmt: skip
    assert Registration.parse({"host": "x"}) is None  # expired between SMEMBERS and HGETALL, or foreign


def test_admission_counts_other_hosts_live_healthy_slots_and_drops_sick_ones() -> None:
    here = plan_slots(simulated_gpus("2xRTX4090:24576", seed="a"), 1)
    remote = plan_slots(simulated_gpus("2xA100:81920", seed="b"), 0, gpus_per_worker=2)[0]
    remote_sick = plan_slots(simulated_gpus("1xL40S:46068", seed="c"), 0)[0]
    registrations = [
        registration("a", here[1], healthy=False, health="GPU-x: marked lost: fell off the bus"),
        registration("b", remote),
        registration("c", remote_sick, healthy=False, health="GPU-y: critical Xid 79 reported by the driver"),
    ]

    slots = serving_slots(here, registrations, host="a")

    assert [(s.id, s.gpu_uuids) for s in slots] == [
        (0, here[0].gpu_uuids),
        (2, ()),
        (0, remote.gpu_uuids),
    ]
    assert queue_for(2, 80000, slots) == "hn-gpu2"  # only host b can run it, and host a admits it
    assert serving_slots(here, [], host="a") == here  # before any worker registered
    assert unhealthy_slots(registrations) == [
        "a slot 1 (GPU 1 RTX4090): GPU-x: marked lost: fell off the bus",
        "c slot 0 (GPU 0 L40S): GPU-y: critical Xid 79 reported by the driver",
    ]


def test_a_gpu_discovered_unhealthy_takes_its_slot_out_of_admission() -> None:
    gpus = simulated_gpus("2")
    sick = with_lost(gpus, {gpus[0].uuid: "test"})
    assert [s.id for s in serving_slots(plan_slots(sick, 0), [], host="a")] == [1]


def test_simulated_gpus_read_busy_while_a_job_runs_on_them() -> None:
    gpus = simulated_gpus("3xA100:81920")
    slots = plan_slots(gpus, 0)
    registrations = [
        registration("me", slots[0], job="j-1", job_gpus=(gpus[0].uuid,), job_gpu_memory_mb=40000),
        registration("me", slots[1], job="j-2", job_gpus=(gpus[1].uuid,)),
        registration("other-host", slots[2], job="j-3", job_gpus=(gpus[2].uuid,)),  # not this node's GPU
    ]

    busy = busy_gpus(registrations, host="me")
    loaded = with_load(gpus, busy)

    assert busy == {gpus[0].uuid: Busy("j-1", 40000), gpus[1].uuid: Busy("j-2", None)}
    assert [g.memory_free_mb for g in loaded] == [81920 - 40000, 81920 - 81920 // 4, 81920]
    assert all(85 <= g.utilization_pct <= 99 for g in loaded[:2]) and loaded[2].utilization_pct == 0
    assert loaded[0].temperature_c is not None and gpus[0].temperature_c is not None
    assert loaded[0].temperature_c > gpus[0].temperature_c
    assert with_load(gpus, busy) == loaded  # steady while the same job runs


@pytest.mark.parametrize(
    ("readings", "verdict"),
    [
        (Readings("u"), "ok"),
        (Readings("u", ecc_uncorrected=0, retired_pages_pending=False, remap_pending=False, remap_failed=False), "ok"),
        (Readings("u", xids=(13, 31, 43, 45, 68, 109)), "ok"),
        (Readings("u", lost="GPU is lost"), "GPU unreachable through NVML (GPU is lost)"),
        (Readings("u", xids=(13, 79, 79)), "critical Xid 79 reported by the driver"),
        (Readings("u", ecc_uncorrected=3), "3 uncorrectable ECC error(s) since the last reset"),
        (Readings("u", remap_failed=True), "row remapping failed: the GPU memory needs service"),
        (Readings("u", retired_pages_pending=True), "memory pages are waiting to be retired: the GPU needs a reset"),
        (Readings("u", remap_pending=True), "memory pages are waiting to be retired: the GPU needs a reset"),
    ],
)
def test_health_verdicts(readings: Readings, verdict: str) -> None:
    health = judge(readings)
    assert (health.healthy, health.reason) == (verdict == "ok", verdict)


def test_a_slot_is_healthy_only_when_all_its_gpus_are() -> None:
    assert summarize([judge(Readings("a")), judge(Readings("b"))]) == (True, "ok")
    verdict = summarize([judge(Readings("a", ecc_uncorrected=1)), judge(Readings("b", lost="gone"))])
    assert verdict == (
        False,
        "a: 1 uncorrectable ECC error(s) since the last reset; b: GPU unreachable through NVML (gone)",
    )
