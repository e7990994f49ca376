"""Sandboxes for model-written shell commands, behind one interface; this module picks a backend
per problem (``SandboxFactory``) and checks that namespace sandboxes run here.

- ``DockerSandbox`` (``docker``): AgentBench's own setup (a container per problem), used when
  ``docker info`` works.
- ``NamespaceSandbox`` (``namespace``, limits in ``cgroups``): no engine needed; a copy-on-write
  overlay over the cached root filesystem, run with bubblewrap in a user namespace whose root is
  an unprivileged host uid (its module docstring gives the design).
- ``shell``: what both give, a persistent shell (``run``: each command's output and exit status,
  up to a unique end marker; a command past its timeout is interrupted, a dead shell replaced),
  one-off processes (``exec``, like ``docker exec``), and output bounded to about
  ``OUTPUT_HEAD + OUTPUT_TAIL`` bytes per read, so a flood costs the evaluator time, never memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from genpi.bench.os.docker import DockerSandbox, docker_available, ensure_docker_image
from genpi.bench.os.namespace import NamespaceSandbox, namespace_problems
from genpi.bench.os.rootfs import SandboxError, find_rootfs
from genpi.bench.os.shell import COMMAND_TIMEOUT, CommandResult, Limits, Sandbox

__all__ = [
    "COMMAND_TIMEOUT",
    "CommandResult",
    "DockerSandbox",
    "Limits",
    "NamespaceSandbox",
    "Sandbox",
    "SandboxFactory",
    "docker_available",
    "namespace_problems",
    "ready_rootfs",
]


@dataclass
class SandboxFactory:
    """Opens one sandbox per problem with the chosen backend (``auto``: Docker if reachable)."""

    backend: str = "auto"
    rootfs: Path | None = None
    image: str = "genpi-os-default"
    network: bool = False
    limits: Limits = field(default_factory=Limits)

    dockerfiles: Path | None = None  # AgentBench's res/dockerfiles: builds a missing image

    def __post_init__(self) -> None:
        if self.backend == "auto":
            self.backend = "docker" if docker_available() else "namespace"
        if self.backend not in ("docker", "namespace"):
            raise SandboxError(f"unknown sandbox backend {self.backend!r}; use docker or namespace")
        if self.backend == "docker":
            ensure_docker_image(self.image, self.dockerfiles)

    def __call__(self) -> Sandbox:
        if self.backend == "docker":
            return DockerSandbox(self.image, network=self.network, limits=self.limits)
        return NamespaceSandbox(self.rootfs, network=self.network, limits=self.limits)

    def describe(self) -> dict:
        return {"backend": self.backend, "network": self.network, **self.limits.__dict__}


def ready_rootfs(build: bool = True) -> tuple[Path | None, str]:
    """The root filesystem when namespace sandboxes can run here (building it if allowed), else
    None and the reason (for tests and benchmarks to skip with)."""
    from genpi.bench.os.rootfs import build_problems, build_rootfs

    problems = namespace_problems()
    if problems:
        return None, "; ".join(problems)
    path = find_rootfs()
    if path is None:
        if not build:
            return None, "the sandbox root filesystem is not built: run `genpi sandbox build`"
        problems = build_problems()
        if problems:
            return None, "; ".join(problems)
        try:
            path = build_rootfs()
        except SandboxError as exc:
            return None, str(exc)
    try:  # the tools can be there while the kernel refuses (e.g. inside an unprivileged container)
        with NamespaceSandbox(path, limits=Limits(command_timeout=20)) as probe:
            answer = probe.run("echo ready")
        if answer.output != "ready\n":
            return None, f"a test sandbox did not answer: {answer.output.strip()[:200]!r}"
    except SandboxError as exc:
        return None, str(exc)
    return path, ""
