"""Every error the agent raises on purpose derives from one root.

An error that ends a job names the job_result's ``reason`` (one of core/jobs.py ``Reason``) in its
``reason`` attribute: a class default, which an instance may narrow (``JobRejected(..., reason=...)``).

HypernodeError
├── ConfigError          bad or missing setting; the CLI prints one line and exits 2
├── ProtocolError        a frame from the backend that cannot be accepted
├── JobRejected          a job refused at admission (bad id, limits, image, capacity)
├── ContainerError       the Docker engine failed us (not the job's own failure)
│   ├── ImageUnavailable the image is missing and could not be pulled
│   ├── EngineUnreachable the engine stopped answering (restarting, stopped) while a job ran
│   └── NameTaken        the job's container name is taken: another worker holds the job
├── RequirementsFailed   a job's requirements could not be installed (pip's reason)
├── KeyFileError         the node key file is unreadable or malformed
├── GpuError             NVML or GPU inventory trouble
├── StorageRefused       the node's Redis refuses writes: a new job cannot be taken in
├── UnknownJob           an operator named a job (or dead letter) this node does not have
├── Stopping             the bridge was asked to stop while it waited (for Redis)
├── RequestRefused       the reference backend turns a peer's request down (the text it sends)
├── SubmitRefused        the reference backend answered a submit with an error (its text)
└── BackendUnreachable   the reference backend cannot be reached; also a ConnectionError (OSError)
"""


class HypernodeError(Exception):
    """Root of the agent's own errors."""

    reason = "internal"  # the job_result reason when this error ends a job (core/jobs.py Reason)


class ConfigError(HypernodeError):
    """A setting is missing or has a bad value."""


class ProtocolError(HypernodeError):
    """A frame that is not a valid protocol message."""


class JobRejected(HypernodeError):
    """A job refused before any Docker call; the message is the one-line reason."""

    reason = "invalid_job"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class ContainerError(HypernodeError):
    """The Docker engine failed (unreachable, API error): an infrastructure error.

    ``status_code`` is the engine's HTTP status (None when it did not answer) and ``container`` the
    id or name of the container concerned (None for images, volumes and listings).
    """

    reason = "engine_error"

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        container: str | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.container = container
        if reason is not None:
            self.reason = reason


class ImageUnavailable(ContainerError):
    """The image is not present and could not be pulled."""

    reason = "image_pull_failed"


class EngineUnreachable(ContainerError):
    """The Docker engine stopped answering while a job ran (it is restarting, or stopped)."""


class KeyFileError(HypernodeError):
    """The node key file cannot be used."""


class GpuError(HypernodeError):
    """NVML or the GPU inventory failed."""


class DriverMismatch(GpuError):
    """NVML's library and the loaded kernel driver differ: the driver was upgraded and the host not rebooted."""


class NameTaken(ContainerError):
    """A container with this name exists already: another worker holds the job (the name is the lock)."""


class RequirementsFailed(HypernodeError):
    """The requirements could not be installed; the message is pip's reason in one line."""

    reason = "requirements_failed"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:  # "timeout": installing them took the rest of the job's timeout
            self.reason = reason


class StorageRefused(HypernodeError):
    """The node's Redis refuses writes (out of memory under noeviction, a disk it cannot persist to):
    a new job cannot be recorded, so it is refused; the message is the server's reason."""

    reason = "node_storage_full"


class UnknownJob(HypernodeError):
    """No job (or no dead letter) with that id."""


class Stopping(HypernodeError):
    """The bridge was asked to stop while it waited for Redis."""


class RequestRefused(HypernodeError):
    """A request the reference backend turns down; the message is the error text sent on the wire."""


class SubmitRefused(HypernodeError):
    """The reference backend answered with an error frame; the message is its text."""


class BackendUnreachable(HypernodeError, ConnectionError):
    """The reference backend could not be reached, or went away before answering. Also an OSError."""
