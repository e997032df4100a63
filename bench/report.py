"""What run_all.py writes: the machine it ran on, the figures table (markdown) and the latency chart (PNG)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import docker

import hypernode_host

# Published by upstream for its own agent (not measured here): beside ours in the markdown for context.
UPSTREAM_PUBLISHED = [
    ("heartbeat latency", "~10 ms"),
    ("job start", "~2-3 s cold, ~500 ms warm"),
    ("concurrent jobs", "10"),
    ("agent memory", "~50 MB idle, ~100 MB under load"),
]


@dataclass
class Figure:
    """One row of the table: our figure beside its baseline from the same run, and its target."""

    item: int
    name: str
    ours: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""
    met: bool | None = None
    digits: int = 1

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0:
            return None
        return self.ours / self.baseline

    def to_json(self) -> dict[str, Any]:
        ratio = self.ratio
        return {**asdict(self), "ratio": None if ratio is None else round(ratio, 3)}

    def cells(self) -> list[str]:
        ours = f"{self.ours:.{self.digits}f} {self.unit}"
        baseline = f"{self.baseline:.{self.digits}f} {self.unit} ({self.baseline_name})" if self.baseline else "—"
        ratio = f"{self.ratio:.2f}" if self.ratio is not None else "—"
        met = {None: "", True: "yes", False: "**no**"}[self.met]
        return [str(self.item), self.name, ours, baseline, ratio, self.target or "—", met]


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {
        "nproc": len(os.sched_getaffinity(0)),
        "memory_gib": round(_meminfo_kib("MemTotal") / 2**20, 1),
        "kernel": platform.release(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "docker_server": _docker_version(),
    }
    info["package"] = str(Path(hypernode_host.__file__).parent)  # which src/ ran (PYTHONPATH can point elsewhere)
    info["git_commit"] = _git("rev-parse", "--short", "HEAD")
    info["git_dirty"] = bool(_git("status", "--porcelain", "--", "src"))  # src/ edits change the figures
    return info


def _meminfo_kib(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def _docker_version() -> str:
    client = docker.from_env()
    try:
        return str(client.version().get("Version", "unknown"))
    finally:
        client.close()


def _git(*args: str) -> str:
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def markdown(figures: list[Figure], info: dict[str, Any], duration_s: float, errors: dict[str, str]) -> str:
    header = ["#", "Figure", "Ours", "Baseline (same run)", "Ratio", "Target", "Met"]
    lines = [
        "# hypernode-host benchmarks",
        "",
        f"Machine: {info['nproc']} CPUs ({info['cpu_model']}), {info['memory_gib']} GiB, kernel {info['kernel']}, "
        f"Docker {info['docker_server']}, Python {info['python']}; commit {info['git_commit']}"
        f"{' (src/ modified)' if info['git_dirty'] else ''}. The run took {duration_s / 60:.1f} min.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(figure.cells()) + " |" for figure in figures]
    lines += ["", "Targets are reported, never asserted. Ratio = ours / baseline. MB = 10^6 bytes.", ""]
    if errors:
        lines += ["Benchmarks that failed in this run:", ""]
        lines += [f"- {name}: {error}" for name, error in errors.items()]
        lines.append("")
    lines += ["Upstream's published numbers for its own agent (not measured here):", ""]
    lines += [f"- {name}: {value}" for name, value in UPSTREAM_PUBLISHED]
    return "\n".join(lines) + "\n"


def chart(path: Path, latency: dict[str, Any] | None, heartbeat: dict[str, Any] | None) -> None:
    """Latency ECDFs (ours vs raw docker-py) and heartbeat jitter ECDFs (idle vs 8 jobs running)."""
    import matplotlib

    matplotlib.use("Agg")  # no display: write the PNG only
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    if latency:
        for label, key in (("hypernode-host (backend job → job_result)", "ours"), ("raw docker-py", "raw")):
            samples = latency[key]["samples_ms"]
            left.ecdf(samples, label=f"{label}, p50 {latency[key]['p50_ms']:.0f} ms")
        left.set(title="Trivial job latency, one at a time", xlabel="ms", ylabel="fraction of jobs")
        left.legend(loc="lower right", fontsize="small")
    if heartbeat:
        for label, key in (("idle", "idle_jitter_ms"), ("8 jobs running", "load_jitter_ms")):
            samples = heartbeat[key].get("samples") or [0.0]
            right.ecdf(samples, label=f"{label}, p99 {heartbeat[key].get('p99', 0):.1f} ms")
        right.set(title="Heartbeat jitter |gap − 1 s| at the backend", xlabel="ms", ylabel="fraction of beats")
        right.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def bare_interpreter_hwm_kb() -> int:
    """VmHWM of a bare interpreter that has started and imported nothing: the floor of any Python process."""
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        # Started once it blocks reading stdin; /proc shows it sleeping then.
        status = Path(f"/proc/{child.pid}/status")
        for _ in range(200):
            text = status.read_text()
            if "State:\tS" in text and "VmHWM" in text:
                break
            time.sleep(0.02)
        return int(next(line.split()[1] for line in text.splitlines() if line.startswith("VmHWM:")))
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(10)
