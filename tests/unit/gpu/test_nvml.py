"""The NVML adapter (gpu/nvml.py) against a fake pynvml: discovery, health readings, Xid events."""

from __future__ import annotations

import pytest
from fake_pynvml import ERRORS, FakeGpu, FakeNvml

from hypernode_host.core.slots import GpuInfo, SlotState, plan_slots
from hypernode_host.errors import DriverMismatch, GpuError
from hypernode_host.gpu import nvml
from hypernode_host.gpu.health import Readings
from hypernode_host.gpu.inventory import discover
from hypernode_host.gpu.monitor import SlotMonitor
from hypernode_host.settings import Settings


def test_discovery_reads_every_field(fake_nvml: FakeNvml) -> None:
    fake_nvml.gpus[1].mig = 1

    gpus = nvml.list_gpus()

    assert gpus[0] == GpuInfo(
        index=0,
        uuid="GPU-11111111-aaaa",
        name="NVIDIA H100 80GB HBM3",
        memory_total_mb=81559,
        memory_free_mb=80000,
        utilization_pct=37,
        temperature_c=41,
        power_w=71.5,
        driver_version="550.54.15",
        cuda_version="12.4",
        mig_enabled=False,
        healthy=True,
        health="ok",
    )
    assert gpus[1].mig_enabled is True and gpus[1].uuid == "GPU-22222222-bbbb"


def test_unsupported_queries_read_as_unknown_not_as_faults(fake_nvml: FakeNvml) -> None:
    consumer_card = FakeGpu("GPU-33333333-cccc", name="NVIDIA GeForce RTX 4090", mig=None)
    consumer_card.ecc_uncorrected = consumer_card.retired_pending = consumer_card.remapped = None
    fake_nvml.gpus = [consumer_card]

    [gpu] = nvml.list_gpus()

    assert gpu.mig_enabled is None
    assert gpu.healthy and gpu.health == "ok"


def test_no_driver_is_one_clear_line_and_no_gpus(fake_nvml: FakeNvml, caplog: pytest.LogCaptureFixture) -> None:
    fake_nvml.init_error = ERRORS["DRIVER_NOT_LOADED"]

    with pytest.raises(GpuError, match=r"^NVML unavailable \(Driver Not Loaded\); this node runs CPU jobs only$"):
        nvml.list_gpus()
    caplog.set_level("INFO", logger="hypernode_host.gpu.inventory")
    assert discover(Settings.from_env({})) == []
    assert [r.getMessage() for r in caplog.records] == [
        "NVML unavailable (Driver Not Loaded); this node runs CPU jobs only"
    ]


def test_a_gpu_lost_after_discovery_is_listed_unhealthy(fake_nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> None:
    original = fake_nvml.nvmlDeviceGetMemoryInfo

    def lost_on_memory(gpu: FakeGpu) -> object:
        if gpu.uuid == "GPU-22222222-bbbb":
            gpu.lost = True
        return original(gpu)

    monkeypatch.setattr(nvml._import(), "nvmlDeviceGetMemoryInfo", lost_on_memory)

    first, second = nvml.list_gpus()

    assert first.healthy
    assert (second.uuid, second.healthy) == ("GPU-22222222-bbbb", False)
    assert second.health == "GPU unreachable through NVML (Gpu Is Lost)"


def test_a_gpu_whose_uuid_cannot_be_read_gets_no_slot(fake_nvml: FakeNvml, caplog: pytest.LogCaptureFixture) -> None:
    fake_nvml.gpus[0].lost = True

    gpus = nvml.list_gpus()

    assert [g.uuid for g in gpus] == ["GPU-22222222-bbbb"]
    assert "GPU 0 cannot be read (Gpu Is Lost); it gets no slot" in caplog.text


def test_health_readings_by_uuid(fake_nvml: FakeNvml) -> None:
    fake_nvml.gpus[0].ecc_uncorrected = 2
    fake_nvml.gpus[1].remapped = (5, 1, 1, 0)

    readings = nvml.read_health(["GPU-11111111-aaaa", "GPU-22222222-bbbb", "GPU-gone"])

    assert readings == [
        Readings("GPU-11111111-aaaa", ecc_uncorrected=2, retired_pages_pending=False, remap_pending=False,
                 remap_failed=False),
        Readings("GPU-22222222-bbbb", ecc_uncorrected=0, retired_pages_pending=False, remap_pending=True,
                 remap_failed=False),
        Readings("GPU-gone", lost="Unknown"),
    ]  # fmt: skip


def test_xid_watch_reports_events_per_gpu(fake_nvml: FakeNvml) -> None:
    fake_nvml.gpus[1].xid_events = False  # e.g. a card without event support: watched for nothing
    watch = nvml.XidWatch(["GPU-11111111-aaaa", "GPU-22222222-bbbb"])
    watch.open()
    try:
        assert fake_nvml.registered == ["GPU-11111111-aaaa"]
        assert watch.poll() == {}
        fake_nvml.gpus[0].pending_xids += [13, 79]
        assert watch.poll() == {"GPU-11111111-aaaa": (13, 79)}
        assert watch.poll() == {}  # each event is reported once
    finally:
        watch.close()


@pytest.mark.parametrize(("encoded", "text"), [(12040, "12.4"), (11080, "11.8"), (13000, "13.0"), (0, None)])
def test_cuda_versions(encoded: int, text: str | None) -> None:
    assert nvml.cuda_version(encoded) == text


def test_mig_instances_are_listed_by_mig_uuid_and_planned_one_slot_each(fake_nvml: FakeNvml) -> None:
    parent = fake_nvml.gpus[1]
    parent.mig = 1
    parent.instances = [
        FakeGpu("MIG-aaaaaaaa-0001", total_mib=40192, free_mib=40000, slices=3),
        FakeGpu("MIG-aaaaaaaa-0002", total_mib=19968, free_mib=19000, slices=2),
    ]

    gpus = nvml.list_gpus()

    assert [(g.uuid, g.parent_uuid, g.mig_profile, g.memory_total_mb) for g in gpus[1:]] == [
        ("GPU-22222222-bbbb", None, None, 81559),
        ("MIG-aaaaaaaa-0001", "GPU-22222222-bbbb", "3g.39gb", 40192),
        ("MIG-aaaaaaaa-0002", "GPU-22222222-bbbb", "2g.20gb", 19968),
    ]
    assert gpus[2].name == "NVIDIA H100 80GB HBM3 MIG 3g.39gb"
    slots = plan_slots(gpus, 0)  # the GPU in MIG mode itself gets none
    assert [s.gpu_uuids for s in slots] == [("GPU-11111111-aaaa",), ("MIG-aaaaaaaa-0001",), ("MIG-aaaaaaaa-0002",)]


def test_a_mig_instance_slot_watches_its_gpus_xids(fake_nvml: FakeNvml) -> None:
    parent = fake_nvml.gpus[1]
    parent.mig, parent.instances = 1, [FakeGpu("MIG-aaaaaaaa-0001", slices=3)]
    monitor = SlotMonitor(
        flags=None,  # type: ignore[arg-type]
        uuids=["MIG-aaaaaaaa-0001"],
        simulated=False,
        parents={"MIG-aaaaaaaa-0001": "GPU-22222222-bbbb"},
    )
    monitor.open()
    try:
        assert monitor.check().serving
        parent.pending_xids.append(79)
        sick = monitor.check()
        assert sick.state is SlotState.UNHEALTHY
        assert sick.reason == "GPU-22222222-bbbb: critical Xid 79 reported by the driver"
    finally:
        monitor.close()


def test_the_driver_and_the_compute_processes_are_read(fake_nvml: FakeNvml) -> None:
    fake_nvml.gpus[0].processes = [101, 202]

    assert nvml.driver_versions() == ("550.54.15", "12.4")
    assert nvml.compute_processes(["GPU-11111111-aaaa", "GPU-22222222-bbbb"]) == {
        "GPU-11111111-aaaa": (101, 202),
        "GPU-22222222-bbbb": (),
    }
    assert nvml.list_gpus()[0].compute_processes == 2
    fake_nvml.init_error = ERRORS["LIB_RM_VERSION_MISMATCH"]
    with pytest.raises(DriverMismatch, match=r"^Failed to initialize NVML: Driver/library version mismatch"):
        nvml.driver_versions()
    fake_nvml.init_error = None
