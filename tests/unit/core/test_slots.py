"""Worker slots and queue routing: how a node's GPUs are shared out, where a job goes, which GPUs it gets."""

from __future__ import annotations

import pytest

from hypernode_host.core.slots import Slot, gpus_for, plan_slots, queue_for
from hypernode_host.errors import JobRejected
from hypernode_host.gpu.simulated import simulated_gpus

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
