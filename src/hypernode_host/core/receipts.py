"""The receipt: what produced a result, bound to every byte of it (README: "Proofs").

``executionHash`` and ``signature`` keep upstream's meaning (an Oracle that knows only them still
checks them). The receipt is a new, separate binding: ``receipt`` names the agent, the Docker engine
and runtime, each assigned GPU, the sandbox the engine applied, the requirements set's digest and
the artifacts' root; ``receiptHash`` is the SHA-256 of the canonical JSON of the whole result (as it
goes on the wire, ``type`` included) except ``receiptHash`` and ``receiptSignature``, so it covers the
receipt, ``executionHash``, ``signature``, the logs, the artifact list and every other field;
``receiptSignature`` is the node key's Ed25519 signature over it. A result changed anywhere after
signing fails the receipt checks.

Pure: the worker gathers the facts (tasks/runner.py), this module shapes and hashes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hypernode_host.core import proofs

PROOF_VERSION = 1
# The fields receiptHash leaves out: the binding itself.
UNHASHED_FIELDS = frozenset({"receiptHash", "receiptSignature"})
# What `seccompProfile` says when the engine applied its own built-in profile (no profile of ours).
DOCKER_DEFAULT_SECCOMP = "docker-default"
UNCONFINED_SECCOMP = "unconfined"


@dataclass(frozen=True)
class GpuFacts:
    uuid: str
    model: str
    driver_version: str | None
    cuda_version: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "uuid": self.uuid,
            "model": self.model,
            "driverVersion": self.driver_version,
            "cudaVersion": self.cuda_version,
        }


@dataclass(frozen=True)
class Sandbox:
    """The limits and isolation the engine reports for the job's container (``docker inspect``)."""

    memory_bytes: int
    nano_cpus: int
    pids_limit: int | None
    network: str
    read_only_root: bool
    cap_drop: tuple[str, ...]
    no_new_privileges: bool
    user: str
    seccomp_profile: str  # DOCKER_DEFAULT_SECCOMP, UNCONFINED_SECCOMP or "sha256:<hex>" of the profile

    def to_json(self) -> dict[str, Any]:
        return {
            "memoryBytes": self.memory_bytes,
            "nanoCpus": self.nano_cpus,
            "pidsLimit": self.pids_limit,
            "network": self.network,
            "readOnlyRoot": self.read_only_root,
            "capDrop": list(self.cap_drop),
            "noNewPrivileges": self.no_new_privileges,
            "user": self.user,
            "seccompProfile": self.seccomp_profile,
        }


@dataclass(frozen=True)
class RunFacts:
    """Everything the receipt names about one run; absent parts (no container ran) are None or empty."""

    agent_version: str
    engine_version: str | None = None
    runtime: str | None = None
    gpus: tuple[GpuFacts, ...] = ()
    sandbox: Sandbox | None = None
    requirements: Sequence[str] = ()  # normalized (core/jobs.py parse_requirements)
    artifacts_root: str | None = None


def seccomp_profile(security_opt: Sequence[str]) -> str:
    """What seccomp profile a container's ``HostConfig.SecurityOpt`` says it runs under.

    The engine keeps a profile it was given as ``seccomp=<the profile's JSON>``: its digest names it,
    so a node's own profile shows as ``sha256:<hex>`` and anyone holding the profile can check it.
    """
    for option in security_opt:
        name, sep, value = option.partition("=")
        if not sep:
            name, sep, value = option.partition(":")
        if name != "seccomp":
            continue
        if value in ("unconfined", ""):
            return UNCONFINED_SECCOMP
        return "sha256:" + proofs.sha256_hex(value.encode())
    return DOCKER_DEFAULT_SECCOMP


def requirements_digest(requirements: Sequence[str]) -> str | None:
    """SHA-256 of the canonical JSON list of the normalized requirements; None for a job without any."""
    if not requirements:
        return None
    return proofs.sha256_hex(proofs.canonical_json(list(requirements)))


def receipt(facts: RunFacts) -> dict[str, Any]:
    """The ``receipt`` object of a result."""
    return {
        "proofVersion": PROOF_VERSION,
        "agentVersion": facts.agent_version,
        "engine": {"version": facts.engine_version, "runtime": facts.runtime},
        "gpus": [gpu.to_json() for gpu in facts.gpus],
        "sandbox": None if facts.sandbox is None else facts.sandbox.to_json(),
        "requirementsDigest": requirements_digest(facts.requirements),
        "artifactsRoot": facts.artifacts_root,
    }


def receipt_hash(result: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``result`` without ``receiptHash`` and ``receiptSignature``."""
    return proofs.sha256_hex(proofs.canonical_json({k: v for k, v in result.items() if k not in UNHASHED_FIELDS}))


def seal(result: Mapping[str, Any], key: proofs.NodeKey) -> dict[str, Any]:
    """``result`` (as it goes on the wire) with its ``receiptHash`` and ``receiptSignature``."""
    sealed = {k: v for k, v in result.items() if k not in UNHASHED_FIELDS}
    digest = receipt_hash(sealed)
    return {**sealed, "receiptHash": digest, "receiptSignature": key.sign_hex_digest(digest)}


RECEIPT_FIELDS = frozenset(
    {"proofVersion", "agentVersion", "engine", "gpus", "sandbox", "requirementsDigest", "artifactsRoot"}
)
