"""Records read back from the strings Redis stores."""

from __future__ import annotations

from hypernode_host.core.slots import plan_slots
from hypernode_host.gpu.simulated import simulated_gpus
from hypernode_host.state.records import Registration


def test_registrations_round_trip() -> None:
    slot = plan_slots(simulated_gpus("2xRTX4090:24576"), 0, gpus_per_worker=2)[0]
    stored = Registration("rig-b", slot, owner="o", pid=7, healthy=False, health="bad", job="j1", job_gpus=("u",))

    back = Registration.parse({k: str(v) for k, v in stored.fields().items()})

    assert back is not None
    assert back.slot.gpu_uuids == slot.gpu_uuids and back.slot.queues == slot.queues
    assert back == Registration("rig-b", back.slot, owner="o", pid=7, healthy=False, health="bad", job="j1",
                                job_gpus=("u",))  # fmt: skip
    assert Registration.parse({"host": "x"}) is None  # expired between SMEMBERS and HGETALL, or foreign
