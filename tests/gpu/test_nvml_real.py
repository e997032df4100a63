"""The NVML adapter against the real driver (`make gpu-check` on a GPU machine; skipped elsewhere)."""

from __future__ import annotations

from typing import Any

from hypernode_host.core.cuda import version_tuple
from hypernode_host.core.slots import SlotState, plan_slots
from hypernode_host.gpu import nvml
from hypernode_host.gpu.inventory import discover
from hypernode_host.gpu.monitor import SlotMonitor
from hypernode_host.settings import Settings


def test_discovery_matches_what_nvml_counts(real_nvml: Any) -> None:
    gpus = nvml.list_gpus()

    assert len(gpus) == real_nvml.nvmlDeviceGetCount()
    assert len({g.uuid for g in gpus}) == len(gpus)
    for gpu in gpus:
        assert gpu.uuid.startswith(("GPU-", "MIG-")), gpu
        assert gpu.memory_total_mb > 0 and 0 <= gpu.memory_free_mb <= gpu.memory_total_mb
        assert 0 <= gpu.utilization_pct <= 100
        assert gpu.driver_version and gpu.cuda_version, gpu
        assert gpu.healthy, gpu.health
        assert not gpu.simulated


def test_health_of_every_gpu_reads_clean(real_nvml: Any) -> None:
    uuids = [g.uuid for g in nvml.list_gpus()]

    readings = nvml.read_health(uuids)

    assert [r.uuid for r in readings] == uuids
    assert all(r.lost is None for r in readings), readings
    assert nvml.read_health(["GPU-00000000-0000-0000-0000-000000000000"])[0].lost is not None


def test_a_slot_monitor_watches_xids_and_reads_healthy(real_nvml: Any) -> None:
    slot = plan_slots(nvml.list_gpus(), 0)[0]
    monitor = SlotMonitor(flags=None, uuids=slot.gpu_uuids, simulated=False)  # type: ignore[arg-type]
    monitor.open()
    try:
        condition = monitor.check()
        assert condition.healthy, condition  # serving, or busy when something else computes on the GPU now
        assert condition.state is not SlotState.DRAINING, condition
        assert monitor.start_driver is not None and monitor.start_driver.version, monitor.start_driver
    finally:
        monitor.close()


def test_the_driver_and_its_cuda_version_are_read(real_nvml: Any) -> None:
    driver, cuda = nvml.driver_versions()
    assert driver is not None and version_tuple(driver) is not None, driver
    assert cuda is not None and version_tuple(cuda) is not None, cuda
    assert {(g.driver_version, g.cuda_version) for g in nvml.list_gpus()} == {(driver, cuda)}


def test_the_compute_process_list_is_read_for_every_gpu(real_nvml: Any) -> None:
    uuids = [g.uuid for g in nvml.list_gpus()]
    processes = nvml.compute_processes(uuids)
    assert sorted(processes) == sorted(uuids)
    assert all(all(pid > 0 for pid in pids) for pids in processes.values()), processes


def test_discover_uses_nvml_without_simulation(real_nvml: Any) -> None:
    found = discover(Settings.from_env({}))
    assert [g.uuid for g in found] == [g.uuid for g in nvml.list_gpus()]
