"""docker-compose.yml validates with the compose this machine has, and says what the operator needs it to say."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from operator_support import ROOT, compose_command

PASSWORD = "0123456789abcdef0123456789abcdef"


def compose_config(project: Path, *args: str) -> dict[str, Any]:
    """The resolved configuration as JSON: the compose plugin prints it; compose v1 prints YAML, read with
    the YAML library of the interpreter that compose v1 itself runs on."""
    compose = compose_command()
    if compose[0] == "docker":
        done = _run([*compose, *args, "config", "--format", "json"], project)
        return dict(json.loads(done.stdout))
    done = _run([*compose, *args, "config"], project)
    interpreter = Path(compose[0]).read_text().splitlines()[0].removeprefix("#!").split()
    to_json = "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))"
    converted = subprocess.run(
        [*interpreter, "-c", to_json], input=done.stdout, capture_output=True, text=True, check=True
    )
    return dict(json.loads(converted.stdout))


def _run(argv: list[str], project: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, cwd=project, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done


def _env(project: Path, **values: str) -> None:
    """Set ``values`` in the project's .env, in place."""
    lines = [
        f"{line.partition('=')[0]}={values[line.partition('=')[0]]}" if line.partition("=")[0] in values else line
        for line in (project / ".env").read_text().splitlines()
    ]
    (project / ".env").write_text("\n".join(lines) + "\n")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """What an operator has after `cp .env.example .env` and setting the Redis password."""
    for path in [*ROOT.glob("docker-compose*.yml"), ROOT / "Dockerfile"]:
        shutil.copy(path, tmp_path / path.name)
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    _env(tmp_path, REDIS_PASSWORD=PASSWORD)
    return tmp_path


PROFILES = ["cpu", "cpu-slot", "tools", "notify", *(f"gpu{n}" for n in range(1, 9))]
EVERY_PROFILE = [arg for profile in PROFILES for arg in ("--profile", profile)]  # the plugin shows active ones only


def test_compose_config_validates_with_every_profile(project: Path) -> None:
    services = compose_config(project, *EVERY_PROFILE)["services"]

    assert set(services) == {
        "redis",
        "bridge",
        "bridge-gpu",
        "worker-cpu",
        "notifier",
        "cli",
        "doctor",
        "doctor-gpu",
    } | {f"worker-gpu{n}" for n in range(8)}
    every_part = [s for name, s in services.items() if name != "redis"]
    assert all(s["environment"]["HN_REDIS_URL"] == f"redis://:{PASSWORD}@redis:6379/0" for s in every_part)
    assert all(s["cap_drop"] == ["ALL"] and s["read_only"] is True for s in every_part)


def test_redis_is_durable_private_and_requires_the_password(project: Path) -> None:
    redis = compose_config(project)["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command and "--maxmemory-policy noeviction" in command
    assert "requirepass" in command and PASSWORD not in command  # in a config file, not in its arguments
    assert redis["environment"]["REDIS_PASSWORD"] == PASSWORD
    assert "ports" not in redis  # only the node's own services reach it
    assert redis["read_only"] is True and redis["user"] == "redis"


def test_compose_refuses_to_run_without_a_redis_password(project: Path) -> None:
    _env(project, REDIS_PASSWORD="")
    done = subprocess.run([*compose_command(), "config"], cwd=project, capture_output=True, text=True, check=False)
    assert done.returncode != 0
    assert "set REDIS_PASSWORD in .env (e.g. openssl rand -hex 32)" in done.stderr


def test_the_image_is_built_once_per_profile(project: Path) -> None:
    """`docker compose build` builds each service that has a build section: one per profile, not nine."""
    config = compose_config(project, *EVERY_PROFILE)
    builders = {name for name, service in config["services"].items() if "build" in service}
    assert builders == {"bridge", "bridge-gpu"}
    assert {p for name in builders for p in config["services"][name]["profiles"]} == {"cpu"} | {
        f"gpu{n}" for n in range(1, 9)
    }  # exactly one builder in each profile an operator runs
    images = {s["image"] for name, s in config["services"].items() if name != "redis"}
    assert images == {"hypernode/host:latest"}


def test_the_cpu_doctor_mounts_no_nvidia_path(project: Path) -> None:
    """A bind mount of a missing path makes Docker create it on the host: a CPU host has no toolkit."""
    services = compose_config(project, *EVERY_PROFILE)["services"]
    assert not any("nvidia" in m for m in _mounts(services["doctor"]))
    assert any(m.startswith("/etc/nvidia-container-runtime:") for m in _mounts(services["doctor-gpu"]))


def test_the_host_network_override_keeps_redis_on_loopback_and_publishes_nothing(project: Path) -> None:
    _env(project, COMPOSE_FILE="docker-compose.yml:docker-compose.host.yml", REDIS_PORT="16379")
    services = compose_config(project, *EVERY_PROFILE)["services"]

    assert {s.get("network_mode") for s in services.values()} == {"host"}
    assert not any("ports" in s for s in services.values())  # host networking publishes nothing
    assert services["redis"]["environment"]["REDIS_BIND"] == "127.0.0.1"
    assert services["worker-cpu"]["environment"]["HN_REDIS_URL"] == f"redis://:{PASSWORD}@redis:16379/0"
    assert all(_hosts(s) == {"redis": "127.0.0.1"} for name, s in services.items() if name != "redis")
    for bridge in (services["bridge"], services["bridge-gpu"]):
        assert bridge["environment"]["HN_METRICS_HOST"] == "127.0.0.1"
        assert bridge["build"]["network"] == "host"


def _hosts(service: dict[str, Any]) -> dict[str, str]:
    extra = service.get("extra_hosts", {})
    return dict(h.split(":", 1) for h in extra) if isinstance(extra, list) else dict(extra)


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
        assert worker["environment"]["HN_REDIS_URL"] == f"redis://:{PASSWORD}@redis:6379/0"
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
    assert _in_profile(config, "notify") == {"notifier"}
    for count in (1, 4, 8):
        assert _in_profile(config, f"gpu{count}") == {"bridge-gpu"} | {f"worker-gpu{n}" for n in range(count)}
