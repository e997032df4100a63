"""A worker's watch over its slot's GPUs: a critical Xid marks a GPU until restart, a lost GPU or driver
shows; a driver changed under the node drains the slot, foreign compute processes make it busy."""

from __future__ import annotations

from collections.abc import Sequence

from fake_pynvml import ERRORS, FakeNvml

from hypernode_host.core.cuda import Driver
from hypernode_host.core.slots import SlotCondition, SlotState
from hypernode_host.gpu.health import DRIVER_FIX
from hypernode_host.gpu.monitor import SlotMonitor
from hypernode_host.state.gpuflags import SimulatedState

SERVING = SlotCondition()


def test_slot_monitor_keeps_a_critical_xid_until_restart(fake_nvml: FakeNvml) -> None:
    monitor = SlotMonitor(flags=None, uuids=["GPU-11111111-aaaa"], simulated=False)  # type: ignore[arg-type]
    monitor.open()
    try:
        assert monitor.check() == SERVING
        fake_nvml.gpus[0].pending_xids.append(31)  # a job's own page fault: the GPU is fine
        assert monitor.check() == SERVING
        fake_nvml.gpus[0].pending_xids.append(48)  # double-bit ECC error
        bad = SlotCondition(SlotState.UNHEALTHY, "GPU-11111111-aaaa: critical Xid 48 reported by the driver")
        assert monitor.check() == bad
        assert monitor.check() == bad  # the GPU needs a reset; polling again does not heal it
    finally:
        monitor.close()


def test_slot_monitor_reports_a_lost_gpu_and_a_lost_driver(fake_nvml: FakeNvml) -> None:
    monitor = SlotMonitor(flags=None, uuids=["GPU-22222222-bbbb"], simulated=False)  # type: ignore[arg-type]
    monitor.open()
    try:
        fake_nvml.gpus[1].lost = True
        lost = monitor.check()
        assert lost == SlotCondition(
            SlotState.UNHEALTHY, "GPU-22222222-bbbb: GPU unreachable through NVML (Gpu Is Lost)"
        )
        fake_nvml.init_error = ERRORS["DRIVER_NOT_LOADED"]
        gone = SlotCondition(SlotState.UNHEALTHY, "NVML unavailable (Driver Not Loaded); this node runs CPU jobs only")
        assert monitor.check() == gone
    finally:
        fake_nvml.init_error = None
        monitor.close()


def test_a_driver_library_mismatch_drains_the_slot_with_the_fix_and_recovers(fake_nvml: FakeNvml) -> None:
    monitor = SlotMonitor(flags=None, uuids=["GPU-11111111-aaaa"], simulated=False)  # type: ignore[arg-type]
    monitor.open()
    try:
        assert monitor.start_driver == Driver("550.54.15", "12.4")
        fake_nvml.init_error = ERRORS["LIB_RM_VERSION_MISMATCH"]  # an unattended upgrade, no reboot
        draining = monitor.check()
        assert draining.state is SlotState.DRAINING and draining.healthy and not draining.serving
        assert "Failed to initialize NVML: Driver/library version mismatch" in draining.reason
        assert draining.reason.endswith(DRIVER_FIX) and "apt-mark hold" in DRIVER_FIX and "reboot" in DRIVER_FIX
        fake_nvml.init_error = None
        assert monitor.check() == SERVING
    finally:
        fake_nvml.init_error = None
        monitor.close()


def test_a_driver_version_other_than_the_start_one_drains_until_it_is_back(fake_nvml: FakeNvml) -> None:
    monitor = SlotMonitor(flags=None, uuids=["GPU-11111111-aaaa"], simulated=False)  # type: ignore[arg-type]
    monitor.open()
    try:
        fake_nvml.driver, fake_nvml.cuda = "555.42.02", 12050
        draining = monitor.check()
        assert draining.state is SlotState.DRAINING
        assert "changed from 550.54.15 (CUDA 12.4) to 555.42.02 (CUDA 12.5)" in draining.reason
        assert monitor.driver == Driver("555.42.02", "12.5")
        fake_nvml.driver, fake_nvml.cuda = "550.54.15", 12040
        assert monitor.check() == SERVING
    finally:
        monitor.close()


def test_foreign_compute_processes_make_an_idle_slot_busy_not_unhealthy(fake_nvml: FakeNvml) -> None:
    monitor = SlotMonitor(flags=None, uuids=["GPU-11111111-aaaa"], simulated=False)  # type: ignore[arg-type]
    monitor.open()
    try:
        fake_nvml.gpus[0].processes = [4242]
        busy = monitor.check()
        assert busy == SlotCondition(
            SlotState.BUSY, "GPU-11111111-aaaa: 1 compute process(es) the node did not start (pid 4242)"
        )
        assert busy.healthy
        assert monitor.check(running=True) == SERVING  # while its own job runs, the processes are the job's
        fake_nvml.gpus[0].processes = []
        assert monitor.check() == SERVING
    finally:
        monitor.close()


class FakeFlags:
    """The simulated GPUs' Redis marks (state/gpuflags.py), in memory."""

    def __init__(self) -> None:
        self.injected: dict[str, SimulatedState] = {}
        self.drivers: dict[str, tuple[str, str]] = {}

    def states(self, uuids: Sequence[str]) -> dict[str, SimulatedState]:
        return {u: self.injected.get(u, SimulatedState()) for u in uuids}

    def driver(self, host: str) -> tuple[str, str] | None:
        return self.drivers.get(host)


def test_simulated_gpus_drive_every_condition() -> None:
    flags = FakeFlags()
    uuid = "GPU-sim-0"
    start = Driver("550.54", "12.4")
    monitor = SlotMonitor(flags, [uuid], simulated=True, host="rig", simulated_driver=start)  # type: ignore[arg-type]
    monitor.open()
    assert (monitor.check(), monitor.start_driver) == (SERVING, start)

    flags.injected[uuid] = SimulatedState(xids=(13,))  # an application Xid: the job's fault, not the GPU's
    assert monitor.check() == SERVING
    flags.injected[uuid] = SimulatedState(xids=(13, 79))
    assert monitor.check() == SlotCondition(SlotState.UNHEALTHY, f"{uuid}: critical Xid 79 reported by the driver")
    flags.injected[uuid] = SimulatedState(lost="fell off the bus")
    assert monitor.check() == SlotCondition(SlotState.UNHEALTHY, f"{uuid}: marked lost: fell off the bus")
    flags.injected[uuid] = SimulatedState(foreign=2)
    assert monitor.check().state is SlotState.BUSY
    flags.injected.clear()
    flags.drivers["rig"] = ("555.42", "12.5")
    assert monitor.check().state is SlotState.DRAINING
    assert monitor.driver == Driver("555.42", "12.5")
    flags.drivers["rig"] = ("550.54", "12.4")
    assert monitor.check() == SERVING
