"""A fake ``pynvml`` (fake_pynvml.py) for the unit tests of the NVML adapter and the slot monitor."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from fake_pynvml import FakeGpu, FakeNvml


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeNvml]:
    """Two healthy H100s behind a fake pynvml module."""
    fake = FakeNvml([FakeGpu("GPU-11111111-aaaa"), FakeGpu("GPU-22222222-bbbb")])
    monkeypatch.setitem(sys.modules, "pynvml", fake.module())
    yield fake
    assert fake.initialised == 0, "every nvmlInit is matched by an nvmlShutdown"
