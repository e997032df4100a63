"""Real NVML for the GPU tests of test_nvml_real.py (marked ``nvml`` by tests/conftest.py).

They run against the real library and are skipped, with the reason, where NVML cannot initialise:
the one legitimate skip of the suite (`make gpu-check` runs them on a GPU machine).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


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
