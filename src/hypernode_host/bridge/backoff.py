"""Reconnect delays: exponential from HN_RECONNECT_DELAY, capped, with full jitter.

Full jitter (each delay uniform in [0, ceiling]) spreads a fleet of nodes that lost the backend at
the same moment over the whole window instead of bunching them at its edges, so a restarted backend
is not met by every node at once (aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter).
"""

from __future__ import annotations

import random
from collections.abc import Iterator

MAX_DOUBLINGS = 30  # past this the ceiling is the cap anyway; keeps 2**n a small int


def reconnect_delays(base: float, cap: float, rng: random.Random | None = None) -> Iterator[float]:
    """Delays for attempts 0, 1, 2...: uniform in [0, min(cap, base * 2**n)].

    A fresh generator starts over at ``base``: the bridge takes a new one after a healthy connection.
    """
    rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
    attempt = 0
    while True:
        yield rng.uniform(0, min(cap, base * 2**attempt))
        attempt = min(attempt + 1, MAX_DOUBLINGS)
