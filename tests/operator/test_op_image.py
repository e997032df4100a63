"""The agent's Docker image: it builds here (from the local job image), holds the real package, runs as a
non-root user that reaches the Docker socket through its group, and its HEALTHCHECK command runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from operator_support import DOCKER_SOCKET, docker, socket_gid

import hypernode_host
from hypernode_host import AGENT_VERSION
from hypernode_host.state import holders

pytestmark = pytest.mark.timeout(900)  # the first test here may build the image (agent_image)


def test_the_image_is_labelled_non_root_and_health_checked(agent_image: str) -> None:
    (info,) = json.loads(docker("image", "inspect", agent_image).stdout)
    config = info["Config"]
    assert config["User"] == "hypernode"
    assert config["Healthcheck"]["Test"] == ["CMD", "hypernode-host", "check"]
    assert config["Entrypoint"] == ["hypernode-host"] and config["Cmd"] == ["up"]
    assert "HN_STATE_DIR=/var/lib/hypernode" in config["Env"]
    assert list(config["Volumes"]) == ["/var/lib/hypernode"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "hypernode-host"
    assert labels["org.opencontainers.image.revision"] == "unknown"
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    assert labels["org.opencontainers.image.licenses"] == "MIT"
    ids = docker("run", "--rm", "--network", "none", "--entrypoint", "id", agent_image)
    assert ids.stdout.startswith("uid=10001(hypernode)")
    assert ",999(" in ids.stdout  # the image's default socket group (DOCKER_GID); run time adds the host's


def test_the_image_holds_this_package_and_its_entry_point(agent_image: str) -> None:
    """A stale build/ once put an empty hypernode_host/__init__.py in the wheel: every command crashed."""
    version = docker("run", "--rm", "--network", "none", agent_image, "--version")
    assert (version.returncode, version.stdout) == (0, f"hypernode-host {AGENT_VERSION}\n"), version.stderr
    done = docker("run", "--rm", "--network", "none", agent_image, "--help")
    assert done.returncode == 0, done.stderr
    for command in ("up", "bridge", "worker", "queue", "jobs", "workers", "dead", "check", "doctor", "top"):
        assert f" {command} " in done.stdout
    tools = docker("run", "--rm", "--network", "none", "--entrypoint", "redis-server", agent_image, "--version")
    assert tools.stdout.startswith("Redis server v=")  # for `up`'s own Redis


def test_the_image_carries_every_lua_script(agent_image: str) -> None:
    """The Lua scripts are package data: a wheel without them would fail at the first job record."""
    source = Path(hypernode_host.__file__).parent
    ours = sorted(str(path.relative_to(source)) for path in source.rglob("*.lua"))
    listing = (
        "import pathlib, hypernode_host; root = pathlib.Path(hypernode_host.__file__).parent; "
        "print(*sorted(str(p.relative_to(root)) for p in root.rglob('*.lua')))"
    )
    shipped = docker("run", "--rm", "--network", "none", "--entrypoint", "python", agent_image, "-c", listing)
    assert shipped.returncode == 0, shipped.stderr
    assert len(ours) >= 7 and shipped.stdout.split() == ours


def test_a_container_has_a_pid_namespace_of_its_own(agent_image: str) -> None:
    """Even on the host's network (and so with its host name), a worker in a container has its own pids."""
    inside = docker(
        "run", "--rm", "--network", "host", "--entrypoint", "python", agent_image,
        "-c", "from hypernode_host.state import holders; print(holders.current())",
    )  # fmt: skip
    assert inside.returncode == 0, inside.stderr
    assert len(inside.stdout.strip()) == 16 and inside.stdout.strip() != holders.current()


def test_doctor_runs_in_the_image_and_reaches_docker_through_the_group(agent_image: str) -> None:
    done = docker(
        "run",
        "--rm",
        "--network",
        "none",
        "-e",
        "COLUMNS=200",
        "-v",
        f"{DOCKER_SOCKET}:{DOCKER_SOCKET}",
        "--group-add",
        socket_gid(),
        agent_image,
        "doctor",
        "--json",
    )
    assert done.returncode == 1  # no Redis and no token in this bare container
    checks = {c["part"]: c for c in json.loads(done.stdout)["checks"]}
    assert checks["docker"]["level"] == "ok"  # a non-root user, through the socket's group
    assert checks["redis"]["level"] == "fail" and checks["token"]["level"] == "fail"
    assert {"gpus", "live-restore", "nvidia-runtime", "default-runtime", "disk", "image", "node-key"} <= checks.keys()


def test_the_healthcheck_command_runs_and_reports_what_fails(agent_image: str) -> None:
    done = docker("run", "--rm", "--network", "none", agent_image, "check")
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.startswith("redis: no answer from redis://127.0.0.1:6379/0")  # `up` never ran: no own Redis
    assert line.endswith("(fix: HN_REDIS_URL is unset and `up` has not run here: run `up`, or set HN_REDIS_URL)")
