"""The project's seccomp profile: Docker's default for a container without capabilities, minus what it removes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hypernode_host.errors import ConfigError
from hypernode_host.tasks import seccomp
from hypernode_host.tasks.containers import DockerRuntime


def test_the_profile_denies_by_default_and_is_what_docker_is_handed() -> None:
    profile = seccomp.profile()
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"  # EPERM for anything not allowed
    assert seccomp.security_opt() == "seccomp=" + json.dumps(profile, separators=(",", ":"))
    assert {entry["architecture"] for entry in profile["archMap"]} == {"SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"}


@pytest.mark.parametrize("name", sorted(seccomp.REMOVED))
def test_each_removed_syscall_was_in_the_base_and_is_not_in_the_profile(name: str) -> None:
    assert any(name in group["names"] for group in seccomp.base_profile()["syscalls"])
    assert not seccomp.allowed(name)


@pytest.mark.parametrize("name", seccomp.NEVER_ALLOWED)
def test_what_needs_a_capability_is_never_allowed(name: str) -> None:
    assert not any(name in group["names"] for group in seccomp.base_profile()["syscalls"])
    assert not seccomp.allowed(name)


@pytest.mark.parametrize(
    "name",
    [
        "read",
        "write",
        "openat",
        "mmap",
        "futex",
        "epoll_wait",
        "socket",
        "clone",
        "execve",
        "shmget",
        "mlock",
        "sched_setaffinity",
        "memfd_create",
        "io_submit",
        "arch_prctl",
        "prctl",
        "getrandom",
    ],
)
def test_what_python_and_cuda_need_stays_allowed(name: str) -> None:
    assert seccomp.allowed(name)


def test_clone_never_makes_a_namespace_and_clone3_falls_back() -> None:
    groups = seccomp.profile()["syscalls"]
    (clone,) = [g for g in groups if g["names"] == ["clone"]]
    assert clone["args"] == [{"index": 0, "value": 0x7E020000, "op": "SCMP_CMP_MASKED_EQ"}]
    (clone3,) = [g for g in groups if g["names"] == ["clone3"]]
    assert (clone3["action"], clone3["errnoRet"]) == ("SCMP_ACT_ERRNO", 38)  # ENOSYS: glibc then uses clone


class _Engine(DockerRuntime):
    def __init__(self, options: list[str]) -> None:
        super().__init__()
        self.options = options

    def info(self) -> dict[str, Any]:
        return {"SecurityOptions": self.options}


def test_a_worker_refuses_to_start_on_an_engine_without_seccomp() -> None:
    _Engine(["name=seccomp,profile=default", "name=cgroupns"]).check_seccomp()
    with pytest.raises(ConfigError, match=r"no seccomp support .*name=apparmor"):
        _Engine(["name=apparmor"]).check_seccomp()
