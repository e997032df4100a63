"""Reconnect delays: full jitter under an exponential ceiling, starting over after a healthy connection."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hypernode_host.bridge.backoff import reconnect_delays

# No deadline: these assert behaviour, and a loaded CI machine must not turn slowness into failures.
PROPERTY = settings(deadline=None, max_examples=300)


@PROPERTY
@given(st.floats(0.01, 10), st.floats(0.01, 120), st.integers(0, 2**32))
def test_reconnect_delays_are_full_jitter_under_an_exponential_ceiling(base: float, cap: float, seed: int) -> None:
    delays = reconnect_delays(base, cap, random.Random(seed))
    for attempt in range(40):
        assert 0 <= next(delays) <= min(cap, base * 2**attempt)


def test_reconnect_delays_spread_over_the_whole_window_and_restart_at_base() -> None:
    rng = random.Random(3)
    tenth = [list(_take(reconnect_delays(5, 60, rng), 10))[-1] for _ in range(500)]
    assert min(tenth) < 6 and max(tenth) > 54  # full jitter: all of [0, cap], not only its top half
    first = [next(reconnect_delays(5, 60, rng)) for _ in range(500)]
    assert max(first) <= 5  # a fresh generator (after a healthy connection) starts over at base


def _take(delays: Any, n: int) -> Any:
    for _ in range(n):
        yield next(delays)
