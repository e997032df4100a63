"""`hypernode-host doctor`: each pre-flight line against the real Docker engine and real Redis servers."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
import redis
from operator_support import run_cli

from hypernode_host.node.redis_server import RedisProcess
from hypernode_host.ops.doctor import ENVVAR_SWITCH, check_toolkit, docker_findings, judge_toolkit_version
from hypernode_host.ops.findings import Level
from hypernode_host.tasks.containers import DockerRuntime
from support import TEST_IMAGE


def doctor(tmp_path: Path, redis_url: str, *extra: str, **env: str) -> tuple[int, dict[str, Any]]:
    environment = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "HN_REDIS_URL": redis_url,
        "HN_NODE_TOKEN": "t-doctor",
        "HN_JOB_IMAGE": TEST_IMAGE,
        "HN_KEY_FILE": str(tmp_path / "node.key"),
        **env,
    }
    done = run_cli("doctor", "--toolkit-config", str(tmp_path / "config.toml"), "--json", *extra, env=environment)
    report = json.loads(done.stdout)
    return done.returncode, {c["part"]: c for c in report["checks"]}


def test_doctor_passes_a_durable_redis_and_a_working_engine(tmp_path: Path, docker_runtime: DockerRuntime) -> None:
    with RedisProcess(appendonly=True) as server:
        code, checks = doctor(tmp_path, server.url)

    assert code == 0, checks
    assert checks["docker"]["level"] == "ok" and checks["docker"]["detail"].startswith("engine 2")
    assert checks["redis-aof"]["level"] == "ok"
    assert checks["redis-eviction"]["level"] == "ok"
    assert checks["image"] == {"part": "image", "level": "ok", "detail": f"{TEST_IMAGE} present", "fix": ""}
    assert checks["default-runtime"]["level"] == "ok"
    assert checks["nvidia-toolkit"]["detail"] == "not installed: no GPUs"
    assert checks["token"]["level"] == "ok" and checks["node-key"]["level"] == "ok"
    assert checks["live-restore"]["level"] in ("ok", "warn")


def test_doctor_fails_redis_that_can_lose_jobs(tmp_path: Path, docker_runtime: DockerRuntime) -> None:
    with RedisProcess(appendonly=False) as server:
        client = redis.Redis.from_url(server.url)
        client.config_set("maxmemory-policy", "allkeys-lru")
        client.close()
        code, checks = doctor(tmp_path, server.url)

    assert code == 1
    assert checks["redis-aof"]["level"] == "fail" and "--appendonly yes" in checks["redis-aof"]["fix"]
    assert checks["redis-eviction"]["level"] == "fail"
    assert checks["redis-eviction"]["detail"].startswith("maxmemory-policy allkeys-lru")


def test_doctor_reads_the_toolkit_switch_and_the_key_mode(tmp_path: Path, docker_runtime: DockerRuntime) -> None:
    (tmp_path / "config.toml").write_text(
        f'{ENVVAR_SWITCH} = true\n[nvidia-container-cli]\nldconfig = "@/sbin/ldconfig"\n'
    )
    key = tmp_path / "node.key"
    key.write_bytes(b"\0" * 32)
    key.chmod(0o644)
    with RedisProcess(appendonly=True) as server:
        code, checks = doctor(tmp_path, server.url)
        (tmp_path / "config.toml").write_text(f"{ENVVAR_SWITCH} = false\n")
        _, fixed = doctor(tmp_path, server.url)

    assert code == 1
    assert checks["nvidia-toolkit"]["level"] == "warn" and ENVVAR_SWITCH in checks["nvidia-toolkit"]["fix"]
    assert checks["node-key"] == {
        "part": "node-key",
        "level": "fail",
        "detail": f"{key} is readable by others (mode 644)",
        "fix": f"chmod 600 {key}",
    }
    assert fixed["nvidia-toolkit"]["level"] == "ok"


def test_doctor_prints_one_line_per_check_for_people(tmp_path: Path, docker_runtime: DockerRuntime) -> None:
    with RedisProcess(appendonly=False) as server:
        done = run_cli(
            "doctor",
            "--toolkit-config",
            str(tmp_path / "missing.toml"),
            env={
                "PATH": "/usr/bin:/bin",
                "HN_REDIS_URL": server.url,
                "HN_KEY_FILE": str(tmp_path / "k"),
                "COLUMNS": "200",
            },
        )

    assert done.returncode == 1
    lines = {line.split()[1]: line.split()[0] for line in done.stdout.splitlines() if line.strip()}
    assert lines["docker"] == "ok" and lines["redis-aof"] == "fail" and lines["token"] == "fail"
    assert "copy it from the Hypernode dashboard" in done.stdout


# The daemon and toolkit settings a GPU rig can have, which this machine (no GPU) cannot show.


def test_nvidia_as_default_runtime_fails() -> None:
    info = {"ServerVersion": "27.1.1", "Runtimes": {"nvidia": {}, "runc": {}}, "DefaultRuntime": "nvidia"}
    by_part = {f.part: f for f in docker_findings(info, real_gpus=True)}
    assert by_part["default-runtime"].level is Level.FAIL
    assert "default-runtime" in by_part["default-runtime"].fix
    assert by_part["nvidia-runtime"].level is Level.OK
    assert by_part["live-restore"].level is Level.WARN


def test_missing_nvidia_runtime_fails_only_with_gpus() -> None:
    info = {"ServerVersion": "24.0.7", "Runtimes": {"runc": {}}, "DefaultRuntime": "runc", "LiveRestoreEnabled": True}
    with_gpus = {f.part: f for f in docker_findings(info, real_gpus=True)}
    without = {f.part: f for f in docker_findings(info, real_gpus=False)}
    assert (
        with_gpus["nvidia-runtime"].level is Level.FAIL
        and "nvidia-ctk runtime configure" in with_gpus["nvidia-runtime"].fix
    )
    assert without["nvidia-runtime"].level is Level.OK
    assert with_gpus["live-restore"].level is Level.OK
    old = {f.part: f for f in docker_findings({**info, "ServerVersion": "19.03.5"}, real_gpus=False)}
    assert old["docker"].level is Level.WARN


def test_envvar_switch_with_nvidia_default_runtime_fails(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("disable-require = false\n")  # the switch's default is on
    assert [f.level for f in check_toolkit(config, real_gpus=True, nvidia_default=True)] == [Level.FAIL]
    assert [f.level for f in check_toolkit(config, real_gpus=True, nvidia_default=False)] == [Level.WARN]
    missing = check_toolkit(tmp_path / "absent.toml", real_gpus=True, nvidia_default=False)
    assert missing[0].level is Level.WARN and "mount it read-only" in missing[0].detail


@pytest.mark.parametrize(
    ("output", "level"),
    [
        ("NVIDIA Container Toolkit CLI version 1.16.1\ncommit: a470818", Level.FAIL),
        ("NVIDIA Container Toolkit CLI version 1.17.7", Level.FAIL),
        ("NVIDIA Container Toolkit CLI version 1.17.8\ncommit: f202b80", Level.OK),
        ("NVIDIA Container Toolkit CLI version 1.18.0", Level.OK),
        ("something else", Level.WARN),
    ],
)
def test_toolkit_versions_with_container_escapes_fail(output: str, level: Level) -> None:
    assert judge_toolkit_version(output).level is level


def test_doctor_fails_a_redis_anyone_on_the_network_can_use_and_warns_on_loopback(
    tmp_path: Path, docker_runtime: DockerRuntime
) -> None:
    with RedisProcess(appendonly=True) as protected, RedisProcess(appendonly=True, password="") as open_redis:
        _, with_password = doctor(tmp_path, protected.url)
        _, loopback = doctor(tmp_path, open_redis.url)
        address = _host_address()
        client = redis.Redis.from_url(open_redis.url)
        client.config_set("protected-mode", "no")  # what an operator who "fixed" the DENIED error has
        client.config_set("bind", f"127.0.0.1 {address}")
        client.close()
        code, network = doctor(tmp_path, f"redis://{address}:{open_redis.port}/0")

    assert with_password["redis-auth"]["level"] == "ok"
    assert loopback["redis-auth"]["level"] == "warn" and "REDIS_PASSWORD" in loopback["redis-auth"]["fix"]
    assert code == 1
    assert network["redis-auth"]["level"] == "fail"
    assert network["redis-auth"]["detail"].startswith(f"{address}:{open_redis.port} lets in clients without a password")


def _host_address() -> str:
    """This host's address on its outgoing interface (no packet is sent); the tests need one besides loopback."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))
        address = str(probe.getsockname()[0])
    finally:
        probe.close()
    assert not address.startswith("127."), "this test needs an address besides loopback"
    return address
