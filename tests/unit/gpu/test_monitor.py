"""A worker's watch over its slot's GPUs: a critical Xid marks a GPU until restart, a lost GPU or driver shows."""

from __future__ import annotations

from fake_pynvml import ERRORS, FakeNvml

from hypernode_host.gpu.monitor import SlotMonitor


def test_slot_monitor_keeps_a_critical_xid_until_restart(fake_nvml: FakeNvml) -> None:
    monitor = SlotMonitor(flags=None, uuids=["GPU-11111111-aaaa"], simulated=False)  # type: ignore[arg-type]
    monitor.open()
    try:
        assert monitor.check() == (True, "ok")
        fake_nvml.gpus[0].pending_xids.append(31)  # a job's own page fault: the GPU is fine
        assert monitor.check() == (True, "ok")
        fake_nvml.gpus[0].pending_xids.append(48)  # double-bit ECC error
        bad = (False, "GPU-11111111-aaaa: critical Xid 48 reported by the driver")
        assert monitor.check() == bad
        assert monitor.check() == bad  # the GPU needs a reset; polling again does not heal it
    finally:
        monitor.close()


def test_slot_monitor_reports_a_lost_gpu_and_a_lost_driver(fake_nvml: FakeNvml) -> None:
    monitor = SlotMonitor(flags=None, uuids=["GPU-22222222-bbbb"], simulated=False)  # type: ignore[arg-type]
    monitor.open()
    try:
        fake_nvml.gpus[1].lost = True
        assert monitor.check() == (False, "GPU-22222222-bbbb: GPU unreachable through NVML (Gpu Is Lost)")
        fake_nvml.init_error = ERRORS["DRIVER_NOT_LOADED"]
        assert monitor.check() == (False, "NVML unavailable (Driver Not Loaded); this node runs CPU jobs only")
    finally:
        fake_nvml.init_error = None
        monitor.close()
