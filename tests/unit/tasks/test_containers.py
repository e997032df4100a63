"""The container contract, pinned field by field, and its pure helpers."""

from __future__ import annotations

from docker.types import DeviceRequest, LogConfig, Mount, Ulimit

from hypernode_host.tasks.containers import (
    LABEL_ATTEMPT,
    LABEL_JOB,
    LABEL_NODE,
    LABEL_WORKER,
    ContainerSpec,
    PrepSpec,
    _ms,
    container_config,
    prep_container_config,
    scratch_bytes,
)
from hypernode_host.tasks.seccomp import security_opt


def spec(**overrides: object) -> ContainerSpec:
    values: dict[str, object] = {
        "name": "hn-job-j1",
        "image": "sha256:abc",
        "command": ["python", "/job/script.py"],
        "env": {"JOB_ID": "j1"},
        "labels": {LABEL_JOB: "j1", LABEL_NODE: "rig", LABEL_WORKER: "0", LABEL_ATTEMPT: "1"},
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
        "labels": {LABEL_JOB: "j1", LABEL_NODE: "rig", LABEL_WORKER: "0", LABEL_ATTEMPT: "1"},
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
        # A quarter of the job's 256 MiB each: scratch space fills up (ENOSPC) before memory does.
        "tmpfs": {
            "/tmp": "rw,nosuid,nodev,size=64m",
            "/work": "rw,nosuid,nodev,size=64m,uid=65534,gid=65534,mode=0700",
        },
        "mounts": [Mount("/job", None, type="volume")],
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true", security_opt()],
        "pids_limit": 1024,
        "mem_limit": 256 << 20,
        "memswap_limit": 256 << 20,
        "oom_score_adj": 500,
        "nano_cpus": 1_000_000_000,
        "ulimits": [Ulimit(name="nofile", soft=4096, hard=4096), Ulimit(name="core", soft=0, hard=0)],
        "ipc_mode": "private",
        "shm_size": 64 << 20,
        "init": True,
        "privileged": False,
        "restart_policy": {"Name": "no"},
        "auto_remove": False,
        "log_config": LogConfig(type="local", config={"max-size": "10m", "max-file": "3", "compress": "false"}),
        "detach": True,
    }


def test_scratch_space_is_a_quarter_of_memory_capped_at_256_mib() -> None:
    assert scratch_bytes(32 << 20) == 8 << 20
    assert scratch_bytes(8 << 30) == 256 << 20
    assert scratch_bytes(3 << 20) == 1 << 20  # never zero: a zero-sized tmpfs is unlimited
    big = container_config(spec(memory_bytes=8 << 30))
    assert big["tmpfs"]["/tmp"] == "rw,nosuid,nodev,size=256m" and big["shm_size"] == 256 << 20


def test_requirements_volume_is_read_only_and_first_on_the_path() -> None:
    config = container_config(spec(deps_volume="hn-req-0123456789abcdef", env={"PYTHONPATH": "/work/lib"}))
    assert config["mounts"] == [
        Mount("/job", None, type="volume"),
        Mount("/opt/hypernode/deps", "hn-req-0123456789abcdef", type="volume", read_only=True),
    ]
    assert config["environment"]["PYTHONPATH"] == "/opt/hypernode/deps/site:/work/lib"
    assert config["network_mode"] == "none"


def test_requirements_step_is_a_job_container_with_the_jobs_limits_and_no_host_path() -> None:
    """It runs the job's image, so it is built as a job is (no network, the job's memory, CPUs and
    pids, seccomp, no capabilities), with the cache volume writable and an anonymous one for the wheels."""
    prep = PrepSpec(
        name="hn-prep-0123456789ab-0123456789abcdef",
        image="sha256:abc",
        command=["sh", "-c", "pip install"],
        labels={"hypernode.role": "prep"},
        volume="hn-req-0123456789ab-0123456789abcdef",
        memory_bytes=256 << 20,
        nano_cpus=500_000_000,
        env={"TMPDIR": "/deps/tmp"},
    )
    config = prep_container_config(prep)
    job = container_config(
        spec(
            name=prep.name,
            command=prep.command,
            labels=prep.labels,
            env={"TMPDIR": "/deps/tmp", "PIP_NO_CACHE_DIR": "1"},
            nano_cpus=500_000_000,
        )
    )
    assert config == {
        **job,
        "mounts": [
            Mount("/deps", "hn-req-0123456789ab-0123456789abcdef", type="volume"),
            Mount("/wheels", None, type="volume"),
        ],
    }
    assert config["network_mode"] == "none" and config["mem_limit"] == 256 << 20 and config["pids_limit"] == 1024
    assert config["security_opt"] == ["no-new-privileges:true", security_opt()]
    assert "NVIDIA_VISIBLE_DEVICES" in config["environment"] and "device_requests" not in config
    assert all(m["Type"] == "volume" for m in config["mounts"])


def test_never_a_host_path_or_the_docker_socket() -> None:
    for config in (container_config(spec()), container_config(spec(deps_volume="hn-req-x"))):
        assert "volumes" not in config and "devices" not in config
        assert all(m["Type"] == "volume" for m in config["mounts"])
        assert all(m["Source"] is None or m["ReadOnly"] for m in config["mounts"])  # only the read-only cache
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
