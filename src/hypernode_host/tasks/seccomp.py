"""The project's own seccomp profile, applied to every job and requirements container.

``seccomp.json`` (package data) is Docker's default profile as it applies to a container with no
capabilities at all, which is what ours are (``cap_drop=ALL``, no-new-privileges): the groups that
Docker grants only with CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_BPF and the like can never apply, so
they are not there; everything else (the allow list, the argument rules on ``socket``,
``personality`` and ``clone``, ``clone3`` answered ENOSYS) is. Docker 20.10's own default allows
``io_uring_*``; Docker 25 no longer does. This module takes from it what a batch job has no
business with, each removal argued below, and hands the result to Docker as
``security_opt=["seccomp=<json>"]``. A syscall the profile does not allow fails with EPERM.

Kept on purpose, though a sandbox might want them gone: the SysV IPC calls (shared memory and
semaphores: multiprocessing, PyTorch's data loaders), ``mlock*`` (CUDA pins host memory),
``sched_setaffinity`` (OpenMP and BLAS thread pinning), ``memfd_create`` (JIT compilers), the
legacy AIO calls (``io_setup``/``io_submit``: libaio users such as some data loaders).
``get_mempolicy``, ``mbind`` and ``set_mempolicy`` stay refused, as in Docker's default without
CAP_SYS_NICE: libnuma then reports no NUMA support, and CUDA does not need them.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any

PROFILE_FILE = "seccomp.json"

REMOVED: dict[str, str] = {
    # io_uring: a second system-call interface that bypasses seccomp for every operation it
    # queues, and the source of a long line of kernel privilege escalations. Nothing a Python
    # or CUDA job runs needs it (asyncio uses epoll); Docker 25 removed it from its default.
    "io_uring_setup": "io_uring",
    "io_uring_enter": "io_uring",
    "io_uring_register": "io_uring",
    # modify_ldt: 16-bit segments for Wine and DOS emulators; its only modern users are exploits
    # (it has had several kernel bugs of its own).
    "modify_ldt": "16-bit segments",
    # Debugging other processes. Docker allows ptrace and process_vm_* on kernels from 4.8 on;
    # a job has exactly one program to run and no business reading another process's memory,
    # even one of its own (its other processes may hold what it was not given).
    "ptrace": "debugging",
    "process_vm_readv": "debugging",
    "process_vm_writev": "debugging",
    # fanotify_mark is useless without fanotify_init, which needs CAP_SYS_ADMIN.
    "fanotify_mark": "needs fanotify_init",
    # remap_file_pages: deprecated since Linux 3.16 (emulated, slowly); nothing current calls it.
    "remap_file_pages": "deprecated",
    # name_to_handle_at: the half of the handle interface that needs no capability; it hands out
    # file handles, whose only use, open_by_handle_at, needs CAP_DAC_READ_SEARCH.
    "name_to_handle_at": "file handles",
}
# Never in the base at all (Docker's default allows them only with a capability a job never has),
# so never allowed here either; listed so a test can check the profile stays that way.
NEVER_ALLOWED = (
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "keyctl",
    "add_key",
    "request_key",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "mount",
    "umount2",
    "unshare",
    "setns",
    "pivot_root",
    "chroot",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "syslog",
    "quotactl",
    "open_by_handle_at",
    "iopl",
    "ioperm",
    "lookup_dcookie",
    "settimeofday",
    "clock_settime",
    "uselib",
    "vhangup",
    "fsopen",
    "fsmount",
    "move_mount",
    "open_tree",
    "get_mempolicy",
    "mbind",
    "set_mempolicy",
)


def base_profile() -> dict[str, Any]:
    """The shipped profile, as it is in the package."""
    text = files("hypernode_host.tasks").joinpath(PROFILE_FILE).read_text()
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"{PROFILE_FILE} is not a seccomp profile")
    return value


@cache
def profile() -> dict[str, Any]:
    """The profile jobs run under: the shipped one without REMOVED."""
    result = base_profile()
    groups = []
    for group in result["syscalls"]:
        names = [name for name in group["names"] if name not in REMOVED]
        if names:
            groups.append({**group, "names": names})
    result["syscalls"] = groups
    return result


def allowed(name: str) -> bool:
    """True when some rule of the profile can allow ``name`` (maybe only with certain arguments)."""
    return any(name in group["names"] and group["action"] == "SCMP_ACT_ALLOW" for group in profile()["syscalls"])


@cache
def security_opt() -> str:
    """The ``security_opt`` entry that applies the profile: Docker takes the JSON itself."""
    return "seccomp=" + json.dumps(profile(), separators=(",", ":"))
