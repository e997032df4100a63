"""Reconnect delays: exponential from HN_RECONNECT_DELAY, capped, with jitter so that a fleet
of nodes does not reconnect in step after a backend restart."""

from __future__ import annotations

import random
from collections.abc import Iterator


def reconnect_delays(base: float, cap: float, rng: random.Random | None = None) -> Iterator[float]:
    """Delays for attempts 0, 1, 2...: uniform in [d/2, d] with d = min(cap, base * 2**n)."""
    rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
    attempt = 0
    while True:
        ceiling = min(cap, base * 2**attempt)
        yield rng.uniform(ceiling / 2, ceiling)
        attempt = min(attempt + 1, 30)
