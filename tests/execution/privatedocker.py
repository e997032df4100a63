"""A Docker engine of a test's own, which it can stop and start while a job runs (the real one it must
never touch): its own data root, exec root, Unix socket and managed containerd, no bridge network, no
iptables. The job image is copied into it from the host's engine (`docker save | docker load`)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from support import TEST_IMAGE, wait_for

START_WAIT_S = 120  # a busy machine may take long to start an engine (and its containerd)


class PrivateDockerd:
    def __init__(self) -> None:
        # A Unix socket path must stay under 108 bytes: not under pytest's long tmp paths.
        self.root = Path(tempfile.mkdtemp(prefix="hn-dd-", dir="/tmp"))
        self.socket = self.root / "docker.sock"
        self.url = f"unix://{self.socket}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.url}

    def start(self) -> None:
        argv = [
            "dockerd",
            f"--data-root={self.root / 'data'}",
            f"--exec-root={self.root / 'exec'}",
            f"--pidfile={self.root / 'docker.pid'}",
            f"--host={self.url}",
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
        ]
        self.starts += 1
        with (self.root / f"dockerd-{self.starts}.log").open("wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self.answers, timeout=START_WAIT_S, interval=0.2)

    def answers(self) -> bool:
        done = subprocess.run(["docker", "version"], env=self.env(), capture_output=True, timeout=30, check=False)
        return done.returncode == 0

    def load_image(self, image: str = TEST_IMAGE) -> None:
        with subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE) as saved:
            subprocess.run(["docker", "load", "-q"], stdin=saved.stdout, env=self.env(), check=True, timeout=600)
        assert saved.returncode == 0

    def stop(self) -> None:
        """SIGTERM, as a package upgrade stops it: it stops its containers, then exits."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def docker(self, *args: str, check: bool = True) -> str:
        """``docker ARGS`` against this engine: its standard output (and error, unchecked)."""
        done = subprocess.run(["docker", *args], env=self.env(), capture_output=True, text=True, check=check)
        return done.stdout + ("" if check else done.stderr)

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-2000:] for p in sorted(self.root.glob("dockerd-*.log")))

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
