"""The reference backend: the project's stand-in for the non-public Hypernode backend (DESIGN.md).

The test peer of every bridge test and the demo's default: upstream's message set and error texts,
job submission, and an Oracle that checks each result's proofs.
"""

from hypernode_host.backend.oracle import Verification, verify
from hypernode_host.backend.server import BackendThread, ReferenceBackend, run_backend
from hypernode_host.backend.submit import build_job, submit_job

__all__ = [
    "BackendThread",
    "ReferenceBackend",
    "Verification",
    "build_job",
    "run_backend",
    "submit_job",
    "verify",
]
