"""Sandboxes for model-written shell commands, behind one interface.

- ``DockerSandbox``: AgentBench's own setup (a container per problem), used when ``docker info``
  works.
- ``NamespaceSandbox``: no engine needed. Per problem, a holder process enters a new user and
  mount namespace whose ids 0..65535 map onto an unprivileged host range (the one the cached root
  filesystem is owned by: 1,000,000,000 as root, the user's /etc/subuid range without root),
  mounts a size-limited tmpfs and on it a copy-on-write overlay over the root filesystem, and
  sleeps. Every shell and every check script then runs in a fresh ``bwrap`` over that overlay,
  entered with ``nsenter``: own mount (pivot_root, the host tree is gone), pid, uts, ipc and
  network namespaces (loopback only unless ``network=True``), Docker's default capability set
  minus ``CAP_MKNOD``, ``/proc`` knobs read-only, and cgroup (or rlimit) bounds on processes and
  memory. Closing the sandbox kills the holder: the mounts and the tmpfs vanish with its
  namespace, so nothing is left on the host. The holder's user namespace allows no nested one
  (``user.max_user_namespaces = 0``, as bubblewrap's ``--disable-userns``); ``/dev/shm`` lives on
  the size-limited tmpfs; nothing of the evaluator (environment, working directory, stage paths,
  nameservers) shows inside; init and check scripts run with bash, sh and python3 from the
  pristine root filesystem, first on their PATH (``TRUSTED_BIN``), so an agent cannot shadow them.

Modules: ``shell`` (the persistent shell, bounded output, the ``Sandbox`` interface), ``docker``,
``namespace`` (bubblewrap, the holder, the stage directory), ``cgroups``; this module picks a
backend per problem (``SandboxFactory``) and checks that namespace sandboxes run here.

Both give a persistent shell (``run``: each command's output and exit status, read up to a unique
end marker) and one-off processes (``exec``, like ``docker exec``). A command past its timeout is
interrupted by killing the processes it started (the shell, its variables and earlier background
jobs survive); if the shell itself dies, a new one is started over the same file system. Every
read of a sandbox's output keeps about ``OUTPUT_HEAD + OUTPUT_TAIL`` bytes (the rest is drained
and dropped), so a flood costs the evaluator time, never memory.
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
