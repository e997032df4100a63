"""docker-compose.yml validates with the compose this machine has, and says what the operator needs it to say."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
MISSING = (
    "no docker compose here: install Debian's `docker-compose` (apt-get install docker-compose) "
    "or the compose plugin; scripts/services.sh should install it"
)


def compose_config(project: Path, *args: str) -> dict[str, Any]:
    """The resolved configuration as JSON: the compose plugin prints it; compose v1 prints YAML, read with
    the YAML library of the interpreter that compose v1 itself runs on."""
    plugin = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, check=False)
    if plugin.returncode == 0:
        done = _run(["docker", "compose", *args, "config", "--format", "json"], project)
        return dict(json.loads(done.stdout))
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail(MISSING)
    done = _run([binary, *args, "config"], project)
    interpreter = Path(binary).read_text().splitlines()[0].removeprefix("#!").split()
    to_json = "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))"
    converted = subprocess.run(
        [*interpreter, "-c", to_json], input=done.stdout, capture_output=True, text=True, check=True
    )
    return dict(json.loads(converted.stdout))


def _run(argv: list[str], project: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, cwd=project, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """What an operator has after `cp .env.example .env`."""
    shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    shutil.copy(ROOT / "Dockerfile", tmp_path / "Dockerfile")
    return tmp_path


PROFILES = ["cpu", "cpu-slot", "tools", *(f"gpu{n}" for n in range(1, 9))]
EVERY_PROFILE = [arg for profile in PROFILES for arg in ("--profile", profile)]  # the plugin shows active ones only


def test_compose_config_validates_with_every_profile(project: Path) -> None:
    services = compose_config(project, *EVERY_PROFILE)["services"]

    assert set(services) == {"redis", "bridge", "bridge-gpu", "worker-cpu", "cli", "doctor", "doctor-gpu"} | {
        f"worker-gpu{n}" for n in range(8)
    }
    every_part = [s for name, s in services.items() if name != "redis"]
    assert all(s["environment"]["HN_REDIS_URL"] == "redis://redis:6379/0" for s in every_part)
    assert all(s["cap_drop"] == ["ALL"] and s["read_only"] is True for s in every_part)


def test_redis_is_durable_and_private(project: Path) -> None:
    redis = compose_config(project)["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command and "--maxmemory-policy noeviction" in command
    assert "ports" not in redis  # only the node's own services reach it


def _mounts(service: dict[str, Any]) -> list[str]:
    return [v if isinstance(v, str) else f"{v['source']}:{v['target']}" for v in service.get("volumes", [])]


def test_only_the_workers_get_the_docker_socket(project: Path) -> None:
    services = compose_config(project, "--profile", "cpu", "--profile", "gpu2")["services"]
    bridge, cpu, gpu1 = services["bridge"], services["worker-cpu"], services["worker-gpu1"]

    for either in (bridge, services["bridge-gpu"]):
        assert not any("docker.sock" in m for m in _mounts(either))
        assert either["command"] == ["bridge"]
        assert either["healthcheck"]["test"] == ["CMD", "hypernode-host", "check", "--bridge"]
    assert "deploy" not in bridge  # a host without the nvidia runtime can run it
    assert (
        all(p["host_ip"] == "127.0.0.1" for p in bridge["ports"])
        if isinstance(bridge["ports"][0], dict)
        else all(p.startswith("127.0.0.1:") for p in bridge["ports"])
    )
    for worker in (cpu, gpu1):
        assert any("/var/run/docker.sock" in m for m in _mounts(worker))
        assert [str(g) for g in worker["group_add"]] == ["999"]  # DOCKER_GID from .env
        assert worker["environment"]["HN_REDIS_URL"] == "redis://redis:6379/0"
    assert cpu["command"] == ["worker", "--slot", "0"]
    assert gpu1["command"] == ["worker", "--slot", "1"]
    assert gpu1["healthcheck"]["test"] == ["CMD", "hypernode-host", "check", "--slot", "1"]
    (device,) = gpu1["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "utility" in device["capabilities"]


def _in_profile(config: dict[str, Any], profile: str) -> set[str]:
    return {name for name, service in config["services"].items() if profile in service.get("profiles", [])}


def test_each_profile_starts_one_bridge_and_a_worker_per_slot(project: Path) -> None:
    config = compose_config(project, *EVERY_PROFILE)
    assert _in_profile(config, "cpu") == {"bridge", "worker-cpu"}
    assert _in_profile(config, "cpu-slot") == {"worker-cpu"}
    assert _in_profile(config, "tools") == {"cli", "doctor", "doctor-gpu"}
    for count in (1, 4, 8):
        assert _in_profile(config, f"gpu{count}") == {"bridge-gpu"} | {f"worker-gpu{n}" for n in range(count)}
