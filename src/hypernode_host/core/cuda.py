"""Can this driver run that image? The image's CUDA requirement against the driver's CUDA version. Pure.

An image says what it needs in its config's environment, as the NVIDIA Container Toolkit reads it:
``NVIDIA_REQUIRE_CUDA`` is a list of alternatives separated by spaces, each a comma-separated list
of conditions (``cuda>=12.8 brand=tesla,driver>=470,driver<471``: CUDA 12.8, or a 470 driver with
the forward-compatibility package); without it, ``CUDA_VERSION`` (12.4.1) means ``cuda>=12.4``;
``NVIDIA_DISABLE_REQUIRE`` turns the check off. The driver's CUDA version is the newest CUDA it
supports (NVML's ``nvmlSystemGetCudaDriverVersion``). Conditions on ``brand`` and ``arch`` are
taken as met: the alternatives the images list cover every brand, and the driver decides the rest.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

_CONDITION = re.compile(r"^(cuda|driver|brand|arch)(>=|<=|==|=|>|<)(\S+)$")
_OPS = {
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    "=": lambda a, b: a == b,
    "==": lambda a, b: a == b,
}
MAX_SHOWN = 120  # characters of an image's requirement quoted in a refusal


@dataclass(frozen=True)
class Driver:
    """A host's GPU driver: its version and the newest CUDA it supports (None where unknown)."""

    version: str | None = None
    cuda: str | None = None

    def __str__(self) -> str:
        return f"{self.version or 'unknown'} (CUDA {self.cuda or 'unknown'})"


def parse_driver(text: str) -> Driver:
    """``550.54/12.4`` (HN_SIMULATE_DRIVER, ``sim-gpu --driver --cuda``) as a Driver; ValueError if not that."""
    version, sep, cuda = text.strip().partition("/")
    if not sep or version_tuple(version) is None or version_tuple(cuda) is None:
        raise ValueError(f"not a driver/CUDA pair: {text!r} (use for example 550.54/12.4)")
    return Driver(version.strip(), cuda.strip())


def version_tuple(text: str) -> tuple[int, ...] | None:
    """``12.4.1`` as (12, 4, 1); None when it is not dotted numbers."""
    parts = text.strip().split(".")
    if not parts or not all(p.isdigit() and len(p) <= 9 for p in parts):
        return None
    return tuple(int(p) for p in parts)


def _compare(have: tuple[int, ...], op: str, want: tuple[int, ...]) -> bool:
    width = max(len(have), len(want))
    padded = (have + (0,) * (width - len(have)), want + (0,) * (width - len(want)))
    return bool(_OPS[op](*padded))


def image_requirement(env: Sequence[str]) -> str | None:
    """The image's CUDA requirement in the toolkit's syntax; None when it states none (or disables the check)."""
    values: Mapping[str, str] = dict(item.partition("=")[::2] for item in env if "=" in item)
    if values.get("NVIDIA_DISABLE_REQUIRE", "").strip().lower() in {"1", "true", "yes", "on"}:
        return None
    required = values.get("NVIDIA_REQUIRE_CUDA", "").strip()
    if required:
        return required
    cuda = version_tuple(values.get("CUDA_VERSION", ""))
    if cuda is None:
        return None
    return f"cuda>={'.'.join(str(p) for p in cuda[:2])}"


def _met(condition: str, driver: Driver) -> bool | None:
    """Whether one condition holds for ``driver``; None when it cannot be told."""
    match = _CONDITION.match(condition)
    if match is None:
        return None
    name, op, value = match.groups()
    if name in ("brand", "arch"):
        return True
    have = version_tuple((driver.cuda if name == "cuda" else driver.version) or "")
    want = version_tuple(value)
    if have is None or want is None:
        return None
    return _compare(have, op, want)


def incompatibility(env: Sequence[str], driver: Driver) -> str | None:
    """Why an image with config environment ``env`` cannot run on ``driver``; None when it can (or
    when either side is unknown: the toolkit, which reads the same, still has the last word)."""
    requirement = image_requirement(env)
    if requirement is None or driver.cuda is None:
        return None
    alternatives = [a.split(",") for a in requirement.split()]
    verdicts = [[_met(c, driver) for c in conditions] for conditions in alternatives]
    if any(all(v is True for v in clause) for clause in verdicts):
        return None
    if any(v is None for clause in verdicts for v in clause):
        return None  # a condition we cannot evaluate: not ours to refuse
    shown = requirement if len(requirement) <= MAX_SHOWN else requirement[:MAX_SHOWN] + "..."
    needs = next((c for c in alternatives[0] if c.startswith("cuda")), alternatives[0][0])
    return (
        f"the image needs {needs} (requires {shown!r}); this GPU's driver {driver.version or 'unknown'} "
        f"supports CUDA {driver.cuda} at most"
    )
