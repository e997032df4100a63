"""`sim-gpu`: one action at a time, on a simulated GPU of this node, and on every MIG instance of it."""

from __future__ import annotations

from typing import Any

import pytest

from hypernode_host.errors import ConfigError
from hypernode_host.gpu.simulated import simulated_gpus
from hypernode_host.ops.simulate import LOST_REASON, Change, simulate
from hypernode_host.settings import Settings

SPEC = "1xRTX4090:24576,1xA100:81920:mig=3g.40gb+3g.40gb"
SETTINGS = Settings.from_env({"HN_SIMULATE_GPUS": SPEC, "HN_NODE_NAME": "rig"})


class Flags:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args: self.calls.append((name, *args))


class FakeStore:
    def __init__(self) -> None:
        self.gpuflags = Flags()


def test_each_action_writes_its_mark_and_a_mig_gpu_marks_its_instances_too() -> None:
    gpus = simulated_gpus(SPEC, seed="rig")
    store = FakeStore()

    assert simulate(SETTINGS, store, 0, Change(xid=79)) == f"GPU 0 ({gpus[0].uuid}): Xid 79 reported"  # type: ignore[arg-type]
    assert store.gpuflags.calls == [("add_xid", gpus[0].uuid, 79)]
    store.gpuflags.calls.clear()
    said = simulate(SETTINGS, store, 1, Change(lost=True))  # type: ignore[arg-type]
    assert said == f"GPU 1 ({gpus[1].uuid} and its 2 MIG instance(s)): lost (fallen off the bus)"
    assert store.gpuflags.calls == [("mark_lost", g.uuid, LOST_REASON) for g in gpus[1:]]
    store.gpuflags.calls.clear()
    simulate(SETTINGS, store, 0, Change(driver="555.42", cuda="12.5"))  # type: ignore[arg-type]
    assert store.gpuflags.calls == [("set_driver", "rig", "555.42", "12.5")]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (Change(), "exactly one of"),
        (Change(busy=True, idle=True), "exactly one of"),
        (Change(driver="555.42"), "go together"),
        (Change(xid=0), "positive number"),
    ],
)
def test_bad_actions_are_usage_errors(change: Change, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        simulate(SETTINGS, FakeStore(), 0, change)  # type: ignore[arg-type]


def test_it_needs_simulated_gpus_and_a_gpu_of_this_node() -> None:
    with pytest.raises(ConfigError, match="set HN_SIMULATE_GPUS"):
        simulate(Settings.from_env({}), FakeStore(), 0, Change(lost=True))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^GPU 2: this node's simulated GPUs are 0\.\.1$"):
        simulate(SETTINGS, FakeStore(), 2, Change(lost=True))  # type: ignore[arg-type]
