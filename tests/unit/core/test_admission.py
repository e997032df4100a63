"""Admission: refusals before any Docker call, and queue routing by GPU need."""

from __future__ import annotations

import random

import pytest

from hypernode_host.bridge.backoff import reconnect_delays
from hypernode_host.core.admission import admit, image_allowed, open_patterns, pinned_digests, split_pin
from hypernode_host.core.jobs import JobSpec, parse_requirements, parse_size
from hypernode_host.core.slots import CPU_QUEUE, plan_slots
from hypernode_host.errors import ConfigError, JobRejected
from hypernode_host.gpu.simulated import parse_spec, simulated_gpus
from hypernode_host.settings import Settings

SETTINGS = Settings.from_env({"HN_JOB_IMAGE": "hypernode/job-python:3.11", "HN_JOB_TIMEOUT": "120"})
WITH_WHEELS = SETTINGS.model_copy(update={"pip_find_links": "/srv/wheels"})
CPU_ONLY = plan_slots([], 1)
TWO_GPUS = plan_slots(simulated_gpus("2xRTX4090:24576"), 1)


def job(**fields: object) -> JobSpec:
    return JobSpec.parse({"id": "j", "script": "print(1)", "memoryLimit": "256m", "cpuLimit": 1, **fields})


def test_cpu_job_goes_to_the_cpu_queue_with_the_default_image() -> None:
    admission = admit(job(), SETTINGS, CPU_ONLY)
    assert admission.queue == CPU_QUEUE
    assert admission.image == "hypernode/job-python:3.11"
    assert admission.timeout_s == 120


def test_job_timeout_is_capped_by_the_node() -> None:
    assert admit(job(timeout=5), SETTINGS, CPU_ONLY).timeout_s == 5
    assert admit(job(timeout=10_000), SETTINGS, CPU_ONLY).timeout_s == 120


def test_gpu_job_goes_to_a_gpu_queue() -> None:
    assert admit(job(gpuRequired=True), SETTINGS, TWO_GPUS).queue == "hn-gpu1"


@pytest.mark.parametrize(
    ("fields", "slots", "reason"),
    [
        ({"image": "evil/miner"}, CPU_ONLY, "image 'evil/miner' is not allowed on this node"),
        ({"gpuRequired": True}, CPU_ONLY, "job needs 1 GPU(s); this node's GPU slots hold 0"),
        ({"gpuCount": 2}, TWO_GPUS, "job needs 2 GPU(s)"),
        ({"gpuRequired": True, "gpuMemoryMb": 80000}, TWO_GPUS, "needs 80000 MiB of GPU memory"),
        ({"memoryLimit": "1m"}, CPU_ONLY, "memoryLimit 1m is outside"),
        ({"memoryLimit": "100000g"}, CPU_ONLY, "memoryLimit 100000g is outside"),
        ({"cpuLimit": 1000}, CPU_ONLY, "exceeds this node's"),
        ({"requirements": "numpy"}, CPU_ONLY, "requirements are not supported by this node (no HN_PIP_FIND_LINKS"),
        ({"datasets": ["https://x/y"]}, CPU_ONLY, "datasets are not supported"),
    ],
)
def test_refusals_are_one_line(fields: dict[str, object], slots: list, reason: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(JobRejected) as caught:
        admit(job(**fields), SETTINGS, slots)
    assert reason in str(caught.value) and "\n" not in str(caught.value)


def test_no_cpu_slot_refuses_cpu_jobs() -> None:
    with pytest.raises(JobRejected, match="runs no CPU jobs"):
        admit(job(), SETTINGS, plan_slots(simulated_gpus("1"), 0))


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"script": None}, "exactly one of 'script' or 'command'"),
        ({"command": "ls"}, "exactly one of 'script' or 'command'"),
        ({"cpuLimit": -1}, "cpuLimit"),
        ({"timeout": float("inf")}, "timeout"),
        ({"env": {"NVIDIA_VISIBLE_DEVICES": "all"}}, "NVIDIA_"),
        ({"env": {"bad name": "x"}}, "env"),
        ({"memoryLimit": "lots"}, "memoryLimit: not a size"),
    ],
)
def test_invalid_jobs_are_rejected_with_the_field(fields: dict[str, object], where: str) -> None:
    with pytest.raises(JobRejected) as caught:
        job(**fields)
    assert where in str(caught.value)


def test_sizes() -> None:
    assert parse_size("512m") == 512 << 20
    assert parse_size("8g") == 8 << 30
    assert parse_size("1024") == 1024
    assert parse_size("1.5g") == int(1.5 * (1 << 30))


def test_image_patterns() -> None:
    assert image_allowed("ghcr.io/acme/train:1", ["ghcr.io/acme/*"])
    assert not image_allowed("ghcr.io/acme2/x", ["ghcr.io/acme/*"])


DIGEST = "sha256:" + "ab" * 32


def test_an_entry_may_pin_a_digest_that_the_worker_then_requires() -> None:
    assert split_pin(f"ghcr.io/acme/train@{DIGEST}") == ("ghcr.io/acme/train", DIGEST)
    assert split_pin("ghcr.io/acme/*") == ("ghcr.io/acme/*", None)
    assert split_pin("x@sha256:short") == ("x@sha256:short", None)  # not a digest: an ordinary pattern
    pinned = [f"ghcr.io/acme/train@{DIGEST}"]
    assert pinned_digests("ghcr.io/acme/train", pinned) == (DIGEST,)
    assert pinned_digests(f"ghcr.io/acme/train@{DIGEST}", pinned) == (DIGEST,)
    assert pinned_digests("ghcr.io/acme/other", pinned) is None
    assert pinned_digests("ghcr.io/acme/train", [*pinned, "ghcr.io/acme/*"]) == ()  # an unpinned entry allows any
    settings = Settings.from_env({"HN_JOB_IMAGE": "img", "HN_ALLOWED_IMAGES": f"ghcr.io/acme/train@{DIGEST}"})
    spec = JobSpec.parse({"id": "j", "command": "x", "image": "ghcr.io/acme/train:1"})
    assert admit(spec, settings, plan_slots([], 1)).digests == (DIGEST,)


@pytest.mark.parametrize(
    ("pattern", "is_open"),
    [
        ("*", True),
        ("*/*", True),
        ("docker.io/*", True),
        ("docker.io/someuser/*", True),
        ("someuser/*", True),
        ("python:3.11-*", True),
        ("127.0.0.1:*/hn/*", True),
        ("ghcr.io/*", True),
        ("ghcr.io/acme/*", False),
        ("registry.example.com:5000/team/*", False),
        ("python:3.11-slim", False),
        ("hypernode/job-python:3.11", False),
        (f"someuser/train@{DIGEST}", False),
    ],
)
def test_patterns_that_let_anyone_publish_a_matching_image(pattern: str, is_open: bool) -> None:
    assert open_patterns([pattern]) == ([pattern] if is_open else [])


def test_simulated_inventory_is_stable_and_mixed() -> None:
    gpus = simulated_gpus("2xRTX4090:24576,1xA100:81920")
    assert [(g.index, g.name, g.memory_total_mb) for g in gpus] == [
        (0, "RTX4090", 24576),
        (1, "RTX4090", 24576),
        (2, "A100", 81920),
    ]
    assert [g.uuid for g in gpus] == [g.uuid for g in simulated_gpus("2xRTX4090:24576,1xA100:81920")]
    assert len({g.uuid for g in gpus}) == 3
    assert len(parse_spec("4")) == 4
    with pytest.raises(ConfigError, match="HN_SIMULATE_GPUS: bad entry"):
        parse_spec("lots")


def test_slots_one_per_gpu_then_cpu() -> None:
    slots = plan_slots(simulated_gpus("2"), 2)
    assert [(s.id, len(s.gpus), s.queue) for s in slots] == [
        (0, 1, "hn-gpu1"),
        (1, 1, "hn-gpu1"),
        (2, 0, "hn-cpu"),
        (3, 0, "hn-cpu"),
    ]


def test_reconnect_delays_grow_with_full_jitter_and_cap() -> None:
    delays = reconnect_delays(5, 60, random.Random(7))
    values = [next(delays) for _ in range(200)]
    assert 0 <= values[0] <= 5 and 0 <= values[1] <= 10 and 0 <= values[2] <= 20
    assert all(0 <= v <= 60 for v in values)
    assert max(values[4:]) > 30  # the ceiling reached the cap
    assert len(set(values)) == len(values)  # jittered


def test_requirements_are_admitted_normalized_when_the_node_has_wheels() -> None:
    admission = admit(job(requirements="Numpy>=1.26\n\n# comment\nrequests[socks] ==2.31  # pinned\nnumpy >= 1.26\n"),
                      WITH_WHEELS, CPU_ONLY)  # fmt: skip
    assert admission.requirements == ("numpy>=1.26", "requests[socks]==2.31")


def test_no_requirements_is_an_empty_tuple() -> None:
    assert admit(job(), WITH_WHEELS, CPU_ONLY).requirements == ()
    assert admit(job(requirements="\n# nothing\n"), SETTINGS, CPU_ONLY).requirements == ()


@pytest.mark.parametrize(
    ("requirements", "reason"),
    [
        ("--index-url http://evil/simple", "line 1: pip options are not allowed"),
        ("numpy\n-e git+https://x/y.git#egg=y", "line 2: pip options are not allowed"),
        ("-r /etc/passwd", "pip options are not allowed"),
        ("pkg @ https://evil/pkg.whl", "line 1: URLs and paths are not allowed"),
        ("pkg @ file:///etc/passwd", "URLs and paths are not allowed"),
        ("./local/path", "line 1 is not a PEP 508 requirement"),
        ("numpy pandas", "line 1 is not a PEP 508 requirement"),
        ("numpy; os.system('id')", "not a PEP 508 requirement"),
        ("x" * 300, "longer than 256 characters"),
        ("\n".join(f"pkg{i}" for i in range(65)), "65 requirements, at most 64 per job"),
    ],
)
def test_requirements_other_than_names_and_versions_are_refused(requirements: str, reason: str) -> None:
    with pytest.raises(JobRejected) as caught:
        job(requirements=requirements)
    message = str(caught.value)
    assert message.startswith("invalid job: requirements: ") and reason in message and "\n" not in message


def test_requirement_normalization_is_stable() -> None:
    assert parse_requirements("B\na[Y,X]>=1,<2 ; python_version >= '3.8'\nb") == (
        'a[x,y]<2,>=1; python_version >= "3.8"',
        "b",
    )
