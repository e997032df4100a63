"""Whose pid is it? A pid means something only inside its own pid namespace.

Containers on one host share its host name under host networking, but each has its own pid
namespace, so a host name says nothing about whether ``os.kill(pid, 0)`` can judge a pid. A
worker records the namespace it runs in beside its pid (registration, GPU lease); a pid is
judged only where that namespace is ours, and elsewhere its TTL decides.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
_PID_NS = Path("/proc/self/ns/pid")


@functools.cache
def current() -> str:
    """This process's pid namespace: its inode qualified by the kernel's boot id, so that it is unique
    across hosts and reboots; "" where /proc cannot tell (then no pid is ever judged)."""
    try:
        inode = os.stat(_PID_NS).st_ino
        boot = _BOOT_ID.read_text().strip()
    except OSError:
        return ""
    return hashlib.sha256(f"{boot}/{inode}".encode()).hexdigest()[:16]


def exited(namespace: str, pid: int) -> bool:
    """True only when ``pid`` belongs to our pid namespace and no such process exists."""
    if not namespace or namespace != current() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, as another user's
        return False
    return False
