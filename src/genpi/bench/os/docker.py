"""``DockerSandbox``: AgentBench's own setup (a container per problem), used when ``docker info``
works."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from genpi.bench.os.rootfs import SandboxError
from genpi.bench.os.shell import DEFAULT_LIMITS, Limits, Sandbox

# -- Docker --------------------------------------------------------------------------------------


def docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def ensure_docker_image(image: str, dockerfiles: Path | None) -> None:
    """Build AgentBench's ``default`` image as ``image`` when the engine does not have it yet."""
    have = subprocess.run(["docker", "image", "inspect", image], capture_output=True, timeout=60)
    if have.returncode == 0:
        return
    dockerfile = dockerfiles / "default" if dockerfiles else None
    if dockerfile is None or not dockerfile.is_file():
        raise SandboxError(
            f"Docker image {image!r} is missing and no res/dockerfiles/default to build it from; "
            f"build it or pass --image"
        )
    done = subprocess.run(
        ["docker", "build", "-t", image, "-f", str(dockerfile), str(dockerfiles)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise SandboxError(f"docker build of {image!r} failed: {done.stderr.strip()[-300:]}")


class DockerSandbox(Sandbox):
    """A container per problem (AgentBench's setup); the image must exist (``docker build``)."""

    name = "docker"

    def __init__(
        self, image: str = "ubuntu", *, network: bool = False, limits: Limits = DEFAULT_LIMITS
    ):
        super().__init__(limits)
        start = time.monotonic()
        cmd = ["docker", "run", "-d", "--rm", "-i", "--pids-limit", str(limits.processes)]
        cmd += ["--memory", str(limits.memory_bytes), "--label", "created_by=genpi-osbench"]
        if not network:
            cmd += ["--network", "none"]
        done = subprocess.run([*cmd, image, "bash"], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise SandboxError(f"docker run {image} failed: {done.stderr.strip()}")
        self.container = done.stdout.strip()
        self.startup_seconds = time.monotonic() - start

    def _shell_argv(self) -> list[str]:
        return ["docker", "exec", "-i", self.container, "bash", "--login"]

    def _exec_argv(self, argv: Sequence[str]) -> list[str]:
        return ["docker", "exec", "-i", self.container, *argv]

    def close(self) -> None:
        super().close()
        subprocess.run(["docker", "rm", "-f", self.container], capture_output=True, timeout=60)
