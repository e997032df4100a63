"""The container contract, pinned field by field (research/reliability.md 1.2)."""

from __future__ import annotations

from docker.types import DeviceRequest, LogConfig, Mount, Ulimit

from hypernode_host import constants as C
from hypernode_host.tasks.containers import ContainerSpec, _ms, container_config


def spec(**overrides: object) -> ContainerSpec:
    values: dict[str, object] = {
        "name": "hn-job-j1",
        "image": "sha256:abc",
        "command": ["python", "/job/script.py"],
        "env": {"JOB_ID": "j1"},
        "labels": {C.LABEL_JOB: "j1", C.LABEL_NODE: "rig", C.LABEL_WORKER: "0", C.LABEL_ATTEMPT: "1"},
        "memory_bytes": 256 << 20,
        "nano_cpus": 1_000_000_000,
    }
    values.update(overrides)
    return ContainerSpec(**values)  # type: ignore[arg-type]


def test_every_field_of_the_contract() -> None:
    config = container_config(spec())
    assert config == {
        "image": "sha256:abc",
        "command": ["python", "/job/script.py"],
        "name": "hn-job-j1",
        "labels": {C.LABEL_JOB: "j1", C.LABEL_NODE: "rig", C.LABEL_WORKER: "0", C.LABEL_ATTEMPT: "1"},
        "environment": {
            "JOB_ID": "j1",
            "HOME": "/work",
            "PYTHONUNBUFFERED": "1",
            "NVIDIA_VISIBLE_DEVICES": "void",
        },
        "user": "65534:65534",
        "working_dir": "/work",
        "network_mode": "none",
        "read_only": True,
        "tmpfs": {
            "/tmp": "rw,nosuid,nodev,size=256m",
            "/work": "rw,nosuid,nodev,size=256m,uid=65534,gid=65534,mode=0700",
        },
        "mounts": [Mount("/job", None, type="volume")],
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "pids_limit": 1024,
        "mem_limit": 256 << 20,
        "memswap_limit": 256 << 20,
        "nano_cpus": 1_000_000_000,
        "ulimits": [Ulimit(name="nofile", soft=4096, hard=4096), Ulimit(name="core", soft=0, hard=0)],
        "ipc_mode": "private",
        "shm_size": 256 << 20,
        "init": True,
        "privileged": False,
        "restart_policy": {"Name": "no"},
        "auto_remove": False,
        "log_config": LogConfig(type="json-file", config={"max-size": "50m", "max-file": "2"}),
        "detach": True,
    }


def test_never_a_host_path_or_the_docker_socket() -> None:
    config = container_config(spec())
    assert "volumes" not in config and "devices" not in config
    assert all(m["Type"] == "volume" and m["Source"] is None for m in config["mounts"])
    assert "docker.sock" not in repr(config)


def test_real_gpus_by_exact_uuid_and_env_overridden() -> None:
    config = container_config(
        spec(gpu_uuids=("GPU-aaa", "GPU-bbb"), real_gpus=True, env={"NVIDIA_VISIBLE_DEVICES": "all"})
    )
    assert config["device_requests"] == [
        DeviceRequest(driver="nvidia", device_ids=["GPU-aaa", "GPU-bbb"], capabilities=[["gpu"]])
    ]
    assert config["environment"]["NVIDIA_VISIBLE_DEVICES"] == "GPU-aaa,GPU-bbb"  # the image's "all" never wins
    assert config["environment"]["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"


def test_simulated_gpus_show_in_env_without_a_device_request() -> None:
    config = container_config(spec(gpu_uuids=("GPU-sim",), real_gpus=False))
    assert "device_requests" not in config
    assert config["environment"]["NVIDIA_VISIBLE_DEVICES"] == "GPU-sim"


def test_docker_timestamps_to_epoch_ms() -> None:
    assert _ms("2026-11-26T20:10:01.123456789Z") == 1795723801123
    assert _ms("0001-01-01T00:00:00Z") == 0
    assert _ms("2026-11-26T20:10:01Z") == 1795723801000
