"""A simulated GPU inventory for hosts without GPUs (tests, demos, CI).

``HN_SIMULATE_GPUS`` is either a count ("4") or a mixed spec of COUNTxNAME:MiB entries
("2xRTX4090:24576,1xA100:81920"); an entry may put its GPUs in MIG mode with the instances each one
is carved into ("1xA100:81920:mig=3g.40gb+2g.20gb+1g.10gb"): every instance is then a GPU of its
own, with a MIG UUID, the profile's memory and one slot. UUIDs are stable: the same spec on the same node gives the
same UUIDs, and two nodes (``HN_NODE_NAME``) sharing one Redis get different ones, as real
GPUs would. Utilization, free memory, temperature and power follow the jobs the node's
workers run on them (``with_load``); what `hypernode-host sim-gpu` injects through Redis
(state/gpuflags.py: lost, Xids, foreign processes, another driver) shows as NVML would show it
(``with_states``). ``HN_SIMULATE_DRIVER`` (550.54/12.4) is the driver they start with; unset, they
read driver "simulated" with no CUDA version, and no image is refused for its CUDA requirement.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hypernode_host.core.cuda import Driver, parse_driver
from hypernode_host.core.slots import GpuInfo
from hypernode_host.errors import ConfigError
from hypernode_host.gpu.health import simulated_health
from hypernode_host.state.gpuflags import SimulatedState

_ENTRY = re.compile(r"^(\d+)x([A-Za-z0-9_.-]+):(\d+)(?::mig=([0-9]+g\.[0-9]+gb(?:\+[0-9]+g\.[0-9]+gb)*))?$")
_PROFILE = re.compile(r"^([0-9]+)g\.([0-9]+)gb$")
MAX_MIG = 7  # instances of one GPU (an A100 or H100 makes at most seven)
DEFAULT_MODEL = ("Simulated-GPU", 24576)
MAX_SIMULATED = 64
UNSET_DRIVER = Driver("simulated", None)

# What a busy and an idle simulated GPU read like (a data-centre card under a training job).
IDLE_TEMPERATURE_C = 34
IDLE_POWER_W = 28.0
BUSY_TEMPERATURE_C = 71
BUSY_POWER_W = 265.0
BUSY_MEMORY_SHARE = 4  # a job that names no gpuMemoryMb holds a quarter of the card


@dataclass(frozen=True)
class Busy:
    """A job running on a simulated GPU."""

    job_id: str
    memory_mb: int | None = None


def _uuid(index: int, name: str, seed: str) -> str:
    source = f"{index}:{name}" if not seed else f"{seed}/{index}:{name}"
    digest = hashlib.sha256(source.encode()).hexdigest()
    return f"GPU-{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


def parse_spec(spec: str) -> list[tuple[str, int, tuple[str, ...]]]:
    """The (name, MiB, MIG profiles) of each simulated GPU in index order (no profiles: no MIG mode)."""
    spec = spec.strip()
    models: list[tuple[str, int, tuple[str, ...]]] = []
    if spec.isdigit():
        models = [(*DEFAULT_MODEL, ())] * int(spec)
    else:
        for part in spec.split(","):
            match = _ENTRY.match(part.strip())
            if not match:
                raise ConfigError(
                    f"HN_SIMULATE_GPUS: bad entry {part.strip()!r} (use a count like 4 or "
                    "2xRTX4090:24576,1xA100:81920:mig=3g.40gb+3g.40gb)"
                )
            profiles = tuple(match.group(4).split("+")) if match.group(4) else ()
            mib = int(match.group(3))
            if len(profiles) > MAX_MIG or sum(_profile_mib(p) for p in profiles) > mib:
                raise ConfigError(f"HN_SIMULATE_GPUS: {part.strip()!r}: at most {MAX_MIG} instances, within its memory")
            models += [(match.group(2), mib, profiles)] * int(match.group(1))
    if len(models) > MAX_SIMULATED:
        raise ConfigError(f"HN_SIMULATE_GPUS: {len(models)} GPUs is more than the {MAX_SIMULATED} simulated at most")
    return models


def start_driver(simulate_driver: str | None) -> Driver:
    """The driver simulated GPUs start with: HN_SIMULATE_DRIVER's (validated by Settings), else UNSET_DRIVER."""
    return parse_driver(simulate_driver) if simulate_driver else UNSET_DRIVER


def _profile_mib(profile: str) -> int:
    match = _PROFILE.match(profile)
    assert match is not None  # _ENTRY admits only profiles of this form
    return int(match.group(2)) * 1024


def simulated_gpus(spec: str, seed: str = "", driver: Driver = UNSET_DRIVER) -> list[GpuInfo]:
    """Idle simulated GPUs (each MIG instance after its GPU); ``seed`` (the node name) makes the UUIDs
    differ between nodes."""
    gpus: list[GpuInfo] = []
    for i, (name, mib, profiles) in enumerate(parse_spec(spec)):
        gpu = GpuInfo(
            index=i,
            uuid=_uuid(i, name, seed),
            name=name,
            memory_total_mb=mib,
            memory_free_mb=mib,
            temperature_c=IDLE_TEMPERATURE_C,
            power_w=IDLE_POWER_W,
            driver_version=driver.version,
            cuda_version=driver.cuda,
            mig_enabled=bool(profiles),
            simulated=True,
        )
        gpus.append(gpu)
        for n, profile in enumerate(profiles):
            instance = "MIG-" + _uuid(n, f"{gpu.uuid}/{profile}", seed).removeprefix("GPU-")
            memory = _profile_mib(profile)
            gpus.append(
                dataclasses.replace(
                    gpu,
                    uuid=instance,
                    name=f"{name} MIG {profile}",
                    memory_total_mb=memory,
                    memory_free_mb=memory,
                    mig_enabled=None,
                    parent_uuid=gpu.uuid,
                    mig_profile=profile,
                )
            )
    return gpus


def with_load(gpus: Sequence[GpuInfo], busy: Mapping[str, Busy]) -> list[GpuInfo]:
    """The GPUs as they read while ``busy`` (GPU UUID → job) runs on them."""
    return [_loaded(g, busy[g.uuid]) if g.uuid in busy else g for g in gpus]


def _loaded(gpu: GpuInfo, job: Busy) -> GpuInfo:
    used = min(job.memory_mb or gpu.memory_total_mb // BUSY_MEMORY_SHARE, gpu.memory_total_mb)
    return dataclasses.replace(
        gpu,
        utilization_pct=85 + zlib.crc32(job.job_id.encode()) % 15,  # 85..99, steady for one job
        memory_free_mb=gpu.memory_total_mb - used,
        temperature_c=BUSY_TEMPERATURE_C,
        power_w=BUSY_POWER_W,
    )


def with_states(gpus: Sequence[GpuInfo], states: Mapping[str, SimulatedState]) -> list[GpuInfo]:
    """The GPUs as what was injected makes them read: lost or with critical Xids unhealthy, foreign processes."""
    health = simulated_health([g.uuid for g in gpus], states)
    return [
        dataclasses.replace(
            g, healthy=h.healthy, health=h.reason, compute_processes=states.get(g.uuid, SimulatedState()).foreign
        )
        for g, h in zip(gpus, health, strict=True)
    ]


def with_driver(gpus: Sequence[GpuInfo], driver: Driver) -> list[GpuInfo]:
    """The GPUs reading ``driver`` (after `sim-gpu --driver`)."""
    return [dataclasses.replace(g, driver_version=driver.version, cuda_version=driver.cuda) for g in gpus]
