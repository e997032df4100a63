"""doctor's word on the sandbox: allow-list patterns a stranger can publish a matching image under, seccomp."""

from __future__ import annotations

from hypernode_host.ops.doctor import check_image_patterns, docker_findings
from hypernode_host.ops.findings import Level
from hypernode_host.settings import Settings


def test_doctor_warns_about_patterns_anyone_can_publish_under_and_names_them() -> None:
    settings = Settings.from_env(
        {"HN_JOB_IMAGE": "python:3.11-slim", "HN_ALLOWED_IMAGES": "ghcr.io/acme/*,docker.io/*,someuser/*"}
    )

    finding = check_image_patterns(settings)

    assert finding.level is Level.WARN
    assert finding.detail == "anyone may publish an image that matches docker.io/*, someuser/*"
    assert "name@sha256:" in finding.fix


def test_exact_names_private_namespaces_and_pinned_digests_pass() -> None:
    pinned = "someuser/train@sha256:" + "ab" * 32
    settings = Settings.from_env({"HN_JOB_IMAGE": "python:3.11-slim", "HN_ALLOWED_IMAGES": f"ghcr.io/acme/*,{pinned}"})

    assert check_image_patterns(settings).level is Level.OK


def test_doctor_fails_an_engine_without_seccomp() -> None:
    info = {"ServerVersion": "20.10.24", "Runtimes": {"runc": {}}, "DefaultRuntime": "runc"}
    with_seccomp = {
        f.part: f for f in docker_findings({**info, "SecurityOptions": ["name=seccomp,profile=default"]}, False)
    }
    without = {f.part: f for f in docker_findings({**info, "SecurityOptions": ["name=apparmor"]}, False)}

    assert with_seccomp["seccomp"].level is Level.OK
    assert without["seccomp"].level is Level.FAIL and "workers refuse to start" in without["seccomp"].detail
