"""A simulated GPU inventory for hosts without GPUs (tests, demos, CI).

``HN_SIMULATE_GPUS`` is either a count ("4") or a mixed spec of COUNTxNAME:MiB entries
("2xRTX4090:24576,1xA100:81920"). UUIDs are stable: the same spec gives the same UUIDs.
"""

from __future__ import annotations

import hashlib
import re

from hypernode_host.errors import ConfigError
from hypernode_host.gpu.models import GpuInfo

_ENTRY = re.compile(r"^(\d+)x([A-Za-z0-9_.-]+):(\d+)$")
DEFAULT_MODEL = ("Simulated-GPU", 24576)


def _uuid(index: int, name: str) -> str:
    digest = hashlib.sha256(f"{index}:{name}".encode()).hexdigest()
    return f"GPU-{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


def parse_spec(spec: str) -> list[tuple[str, int]]:
    """The (name, MiB) of each simulated GPU in index order."""
    spec = spec.strip()
    if spec.isdigit():
        return [DEFAULT_MODEL] * int(spec)
    models: list[tuple[str, int]] = []
    for part in spec.split(","):
        match = _ENTRY.match(part.strip())
        if not match:
            raise ConfigError(
                f"HN_SIMULATE_GPUS: bad entry {part.strip()!r} (use a count like 4 or 2xRTX4090:24576,1xA100:81920)"
            )
        models += [(match.group(2), int(match.group(3)))] * int(match.group(1))
    return models


def simulated_gpus(spec: str) -> list[GpuInfo]:
    return [
        GpuInfo(index=i, uuid=_uuid(i, name), name=name, memory_total_mb=mib, memory_free_mb=mib, simulated=True)
        for i, (name, mib) in enumerate(parse_spec(spec))
    ]
