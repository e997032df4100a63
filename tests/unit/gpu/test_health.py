"""What NVML readings mean for taking jobs."""

from __future__ import annotations

import pytest

from hypernode_host.gpu.health import Readings, judge, summarize


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
