"""What the node as a whole can serve (this host's slots and those of other hosts' live workers), and which
GPUs its jobs hold."""

from __future__ import annotations

from hypernode_host.core.slots import Slot, plan_slots, queue_for
from hypernode_host.gpu.capacity import busy_gpus, serving_slots, unhealthy_slots
from hypernode_host.gpu.simulated import Busy, simulated_gpus, with_load, with_states
from hypernode_host.state.gpuflags import SimulatedState
from hypernode_host.state.records import Registration


def registration(host: str, slot: Slot, **fields: object) -> Registration:
    """A registration as the registry reads it back: through the strings it stores."""
    stored = Registration(host=host, slot=slot, **fields).fields()  # type: ignore[arg-type]
    parsed = Registration.parse({k: str(v) for k, v in stored.items()})
    assert parsed is not None
    return parsed


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
    sick = with_states(gpus, {gpus[0].uuid: SimulatedState(lost="test")})
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
