"""`hypernode-host sim-gpu`: change a simulated GPU's state for the running node, through its Redis.

The workers' checks (every few seconds) and the bridge's heartbeat read what is written here exactly
as they read NVML on a GPU rig (state/gpuflags.py), so every fault the node handles can be driven on
a machine without a GPU: an Xid, a GPU fallen off the bus, a foreign process, a driver upgrade.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypernode_host.core.cuda import parse_driver
from hypernode_host.errors import ConfigError
from hypernode_host.gpu.simulated import simulated_gpus, start_driver
from hypernode_host.settings import Settings
from hypernode_host.state import Store

LOST_REASON = "GPU has fallen off the bus (sim-gpu --lost)"


@dataclass(frozen=True)
class Change:
    """One ``sim-gpu`` action: exactly one of its fields set (driver and cuda go together)."""

    xid: int | None = None
    lost: bool = False
    busy: bool = False
    idle: bool = False
    healthy: bool = False
    driver: str | None = None
    cuda: str | None = None

    def validate(self) -> None:
        actions = [self.xid is not None, self.lost, self.busy, self.idle, self.healthy, self.driver is not None]
        if sum(actions) != 1:
            raise ConfigError("give exactly one of --xid N, --lost, --busy, --idle, --healthy, --driver V --cuda V")
        if (self.driver is None) != (self.cuda is None):
            raise ConfigError("--driver and --cuda go together (for example --driver 555.42 --cuda 12.5)")
        if self.xid is not None and not 0 < self.xid < 1 << 16:
            raise ConfigError(f"--xid {self.xid}: an Xid is a positive number (79: fallen off the bus)")


def simulate(settings: Settings, store: Store, index: int, change: Change) -> str:
    """Apply ``change`` to simulated GPU ``index`` of this node (HN_NODE_NAME); what was done, in one line."""
    change.validate()
    if settings.simulate_gpus is None:
        raise ConfigError(
            "sim-gpu changes simulated GPUs: set HN_SIMULATE_GPUS (and HN_NODE_NAME) as the node has them"
        )
    gpus = simulated_gpus(
        settings.simulate_gpus, seed=settings.node_name, driver=start_driver(settings.simulate_driver)
    )
    # The GPU and, in MIG mode, each of its instances: what befalls a GPU befalls its instances.
    targets = [g.uuid for g in gpus if g.index == index]
    count = len({g.index for g in gpus})
    if not targets:
        raise ConfigError(f"GPU {index}: this node's simulated GPUs are 0..{count - 1}")
    flags = store.gpuflags
    name = f"GPU {index} ({targets[0]}{f' and its {len(targets) - 1} MIG instance(s)' if len(targets) > 1 else ''})"
    if change.xid is not None:
        for uuid in targets:
            flags.add_xid(uuid, change.xid)
        return f"{name}: Xid {change.xid} reported"
    if change.lost:
        for uuid in targets:
            flags.mark_lost(uuid, LOST_REASON)
        return f"{name}: lost (fallen off the bus)"
    if change.busy or change.idle:
        for uuid in targets:
            flags.set_foreign(uuid, 1 if change.busy else 0)
        return f"{name}: {'a' if change.busy else 'no'} compute process the node did not start on it"
    if change.healthy:
        for uuid in targets:
            flags.heal(uuid)
        return f"{name}: healthy (reachable, its Xids cleared as by a reset)"
    assert change.driver is not None and change.cuda is not None
    driver = parse_driver(f"{change.driver}/{change.cuda}")  # ValueError: a usage error
    flags.set_driver(settings.node_name, driver.version or "", driver.cuda or "")
    return f"host {settings.node_name}: driver {driver} for every simulated GPU"
