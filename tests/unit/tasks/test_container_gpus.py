"""The GPU side of the container contract (tasks.containers.container_config), unit-tested.

No engine here has the nvidia runtime, so what Docker would be asked for is checked on the
configuration itself: real GPUs by exact UUID in ``device_requests`` (never a count, never
"all"), simulated ones only in the environment and labels, and no GPU at all for CPU jobs.
"""

from __future__ import annotations

from typing import Any

from docker.types import DeviceRequest

from hypernode_host.core.slots import gpus_for, plan_slots
from hypernode_host.gpu.simulated import simulated_gpus
from hypernode_host.tasks.containers import LABEL_GPUS, LABEL_JOB, ContainerSpec, container_config

H100 = ("GPU-5d3a4c0e-1111-2222-3333-444444444444", "GPU-9f2b7e1d-5555-6666-7777-888888888888")


def spec(**fields: Any) -> ContainerSpec:
    uuids = fields.get("gpu_uuids", ())
    base: dict[str, Any] = {
        "name": "hn-job-x",
        "image": "sha256:abc",
        "command": ["python", "/job/script.py"],
        "env": {"JOB_ID": "x"},
        "labels": {LABEL_JOB: "x", LABEL_GPUS: ",".join(uuids)},
        "memory_bytes": 1 << 30,
        "nano_cpus": 1_000_000_000,
    }
    return ContainerSpec(**(base | fields))


def test_real_gpus_are_requested_by_exact_uuid_only() -> None:
    config = container_config(spec(gpu_uuids=H100, real_gpus=True))

    [request] = config["device_requests"]
    assert request == DeviceRequest(driver="nvidia", device_ids=list(H100), capabilities=[["gpu"]])
    assert request["Count"] == 0  # never -1, which means every GPU of the host
    assert config["environment"]["NVIDIA_VISIBLE_DEVICES"] == ",".join(H100)
    assert config["environment"]["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
    assert "runtime" not in config  # the device request picks the nvidia hook; runc stays the runtime


def test_simulated_gpus_show_only_in_env_and_labels() -> None:
    slot = plan_slots(simulated_gpus("4", seed="rig"), 0, gpus_per_worker=2)[1]
    uuids = gpus_for(slot, 2)

    config = container_config(spec(gpu_uuids=uuids, real_gpus=False))

    assert "device_requests" not in config
    assert config["environment"]["NVIDIA_VISIBLE_DEVICES"] == ",".join(slot.gpu_uuids)
    assert config["labels"][LABEL_GPUS] == ",".join(slot.gpu_uuids)


def test_cpu_jobs_see_no_gpu_even_if_the_image_asks_for_all() -> None:
    config = container_config(spec(env={"JOB_ID": "x", "NVIDIA_VISIBLE_DEVICES": "all"}))

    assert "device_requests" not in config
    assert config["environment"]["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert "NVIDIA_DRIVER_CAPABILITIES" not in config["environment"]
