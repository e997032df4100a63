"""GPU test fixtures: a fake ``pynvml`` (fake_pynvml.py) for the NVML adapter's unit tests, and real NVML.

Tests marked ``nvml`` run against the real library and are skipped, with the reason,
where NVML cannot initialise: the one legitimate skip of the suite (`make gpu-check` runs them
on a GPU machine).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest
from fake_pynvml import FakeGpu, FakeNvml


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "nvml: needs a real NVIDIA driver (NVML); skipped where NVML cannot initialise")


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeNvml]:
    """Two healthy H100s behind a fake pynvml module."""
    fake = FakeNvml([FakeGpu("GPU-11111111-aaaa"), FakeGpu("GPU-22222222-bbbb")])
    monkeypatch.setitem(sys.modules, "pynvml", fake.module())
    yield fake
    assert fake.initialised == 0, "every nvmlInit is matched by an nvmlShutdown"


@pytest.fixture
def real_nvml() -> Iterator[Any]:
    """The real pynvml, initialised; the test is skipped (with the reason) where NVML cannot initialise."""
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        pytest.skip(f"NVML cannot initialise here ({exc}): run `make gpu-check` on a GPU machine")
    try:
        yield pynvml
    finally:
        pynvml.nvmlShutdown()
