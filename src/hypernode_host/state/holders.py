"""Who holds a GPU lease or a registration, and whether that holder still lives.

A pid means something only inside its own pid namespace. Containers on one host share its host
name under host networking, but each has its own pid namespace, so a host name says nothing about
whether ``os.kill(pid, 0)`` can judge a pid. A worker records the namespace it runs in beside its
pid (registration, GPU lease owner id); a pid is judged only where that namespace is ours, and
elsewhere the record's TTL decides.
"""

from __future__ import annotations

import functools
import hashlib
import os
import secrets
import socket
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


def owner_id(slot: int) -> str:
    """A worker's owner id: host, slot, process and its pid namespace, readable in `hypernode-host workers`."""
    return f"{socket.gethostname()}/slot-{slot}/pid-{os.getpid()}/ns-{current()}/{secrets.token_hex(3)}"


def owner_exited(owner: str) -> bool:
    """True when the owner id names a process of our pid namespace that no longer exists (one of another
    host or container, or an owner id without a namespace, is left to its TTL)."""
    parts = dict(p.split("-", 1) for p in owner.split("/") if p.startswith(("pid-", "ns-")))
    pid = parts.get("pid", "")
    return pid.isdigit() and exited(parts.get("ns", ""), int(pid))
