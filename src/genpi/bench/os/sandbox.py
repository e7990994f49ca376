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

Both give a persistent shell (``run``: each command's output and exit status, read up to a unique
end marker) and one-off processes (``exec``, like ``docker exec``). A command past its timeout is
interrupted by killing the processes it started (the shell, its variables and earlier background
jobs survive); if the shell itself dies, a new one is started over the same file system. Every
read of a sandbox's output keeps about ``OUTPUT_HEAD + OUTPUT_TAIL`` bytes (the rest is drained
and dropped), so a flood costs the evaluator time, never memory.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
import secrets
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import IO

from genpi.bench.os.rootfs import (
    UID_COUNT,
    SandboxError,
    expected_uid_base,
    find_rootfs,
    read_stamp,
)

log = logging.getLogger(__name__)

COMMAND_TIMEOUT = 30.0  # AgentBench's per-command limit
# Every read of a sandbox's output (the shell's commands, one-off processes, init and check
# scripts) keeps at most this much; the rest is read and dropped, so a flood costs the evaluator
# time (until the command's timeout), never memory.
OUTPUT_HEAD = 1 << 20  # bytes of a command's output kept from its start (the agent sees 780 chars)
OUTPUT_TAIL = 1 << 12  # and from its end, where the end marker is
SANDBOX_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "USER": "root",
    "LOGNAME": "root",
    "SHELL": "/bin/bash",
    "TERM": "dumb",
    "LANG": "C.UTF-8",
}
# Docker's default capabilities without CAP_MKNOD: a device node is the one way from a
# pivot_root'ed tree back to the host's disks.
CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SYS_CHROOT",
    "CAP_AUDIT_WRITE",
    "CAP_SETFCAP",
)
CGROUP_V1 = Path("/sys/fs/cgroup")
# As Docker does: kernel knobs in /proc stay read-only, and files that expose host memory or
# kernel state read as empty (the sandbox's root is the host's uid 0, only with fewer capabilities).
PROC_READ_ONLY = ("sys", "sysrq-trigger", "irq", "bus", "fs")
PROC_MASKED = ("kcore", "keys", "timer_list", "sched_debug", "kmsg", "kallsyms")
# Init and check scripts run with bash, sh and python3 from the pristine root filesystem, bound
# read-only here, first on their PATH: an agent that shadows or overwrites an interpreter
# (`/usr/local/bin/python3`, `/usr/bin/bash`) cannot make a check pass. /dev is each process's own
# tmpfs, so these mount points never appear in the agent's file system.
TRUSTED_ROOT = "/dev/genpi"
TRUSTED_BIN = f"{TRUSTED_ROOT}/bin"
SCRIPT_PATH = f"{TRUSTED_BIN}:{SANDBOX_ENV['PATH']}"
# The sandbox's /etc/resolv.conf without --network: the rootfs build copied the host's.
RESOLV_CONF = "# genpi sandbox: no network\nnameserver 127.0.0.1\n"


@dataclass(frozen=True)
class Limits:
    memory_bytes: int = 2 << 30
    processes: int = 512
    disk_bytes: int = 1 << 30  # the overlay's writable layer
    command_timeout: float = COMMAND_TIMEOUT


@dataclass
class CommandResult:
    output: str
    exit_code: int | None  # None when the command was killed or the shell died
    timed_out: bool = False
    restarted: bool = False
    seconds: float = 0.0


# -- bounded output ------------------------------------------------------------------------------


def _keep_bounded(buffer: bytearray) -> None:
    """Drop the middle of ``buffer`` once it passes OUTPUT_HEAD + 2 * OUTPUT_TAIL bytes: the
    head is what the agent and the checks see, the tail holds the end marker and error text."""
    if len(buffer) > OUTPUT_HEAD + 2 * OUTPUT_TAIL:
        del buffer[OUTPUT_HEAD : len(buffer) - OUTPUT_TAIL]


def _drain(fd: int, buffer: bytearray, deadline: float) -> bool:
    """Read ``fd`` into ``buffer`` (bounded) until EOF (True) or the deadline (False)."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        ready, _, _ = select.select([fd], [], [], min(left, 0.5))
        if not ready:
            continue
        try:
            chunk = os.read(fd, 1 << 16)
        except OSError:
            chunk = b""
        if not chunk:
            return True
        buffer += chunk
        _keep_bounded(buffer)


@dataclass
class Launch:
    """A command line to start, its environment, and the descriptors it inherits (the parent's
    copies are closed once it started)."""

    argv: list[str]
    env: dict[str, str] | None = None
    pass_fds: tuple[int, ...] = ()

    def popen(self) -> subprocess.Popen:
        try:
            return subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=self.env,
                # a neutral working directory: a shell started here exports it as PWD, which
                # would otherwise show the evaluator's directory inside the sandbox
                cwd="/",
                start_new_session=True,
                pass_fds=self.pass_fds,
            )
        finally:
            for fd in self.pass_fds:
                with contextlib.suppress(OSError):
                    os.close(fd)


# -- the persistent shell ------------------------------------------------------------------------


def _process_children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(b")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (host pids)."""
    children = _process_children()
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


class ShellSession:
    """One ``bash`` read over pipes: each command is sent base64-encoded, run with ``eval`` (stdin
    from /dev/null: AgentBench forbids input operations), and followed by a marker line carrying
    its exit status. The marker's two halves are printed as separate words, so a command that
    traces (``set -x``) or echoes the wrapper cannot forge it."""

    def __init__(self, argv: Sequence[str] | Launch, env: dict[str, str] | None = None) -> None:
        launch = argv if isinstance(argv, Launch) else Launch(list(argv), env)
        self.proc = launch.popen()
        self._token = secrets.token_hex(12)
        self._marker = re.compile(rb"\n__GENPI_END_" + self._token.encode() + rb" (\d+)\n")
        self._buffer = bytearray()
        self._eof = False
        self.broken = False
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            with self._cond:
                if not chunk:
                    self._eof = True
                    self._cond.notify_all()
                    return
                self._buffer += chunk
                # a flood (`yes`) must not fill the host's memory: the agent sees only the
                # head, and the tail is where the end marker arrives
                _keep_bounded(self._buffer)
                self._cond.notify_all()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None and not self._eof

    def _wait_marker(self, deadline: float) -> tuple[int, int, int] | None:
        """(start, end, exit status) of the marker once it arrived; None at the deadline or EOF."""
        with self._cond:
            while True:
                # read the match now: it points into the buffer, which _take later shrinks
                found = self._marker.search(self._buffer)
                if found:
                    return found.start(), found.end(), int(found.group(1))
                if self._eof:
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 0.5))

    def _take(self, end: int | None = None) -> bytes:
        with self._cond:
            end = len(self._buffer) if end is None else end
            data = bytes(self._buffer[:end])
            del self._buffer[:end]
            return data

    def run(self, command: str, timeout: float) -> CommandResult:
        start = time.monotonic()
        if not self.alive:
            return CommandResult("", None, seconds=0.0)
        before = descendants(self.proc.pid)
        encoded = base64.b64encode(command.encode("utf-8")).decode()
        line = (
            f"__genpi_cmd=$(printf %s {encoded} | base64 -d); "
            f'eval "$__genpi_cmd" </dev/null; '
            f"printf '\\n%s%s %s\\n' __GENPI_END_ {self._token} \"$?\"\n"
        )
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(line.encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return CommandResult(self._take().decode("utf-8", "replace"), None)
        found = self._wait_marker(start + timeout)
        timed_out = False
        if found is None and not self._eof:
            timed_out = True
            self.interrupt(before)
            found = self._wait_marker(time.monotonic() + 3.0)
        if found is None:  # the shell is wedged or gone: its owner replaces it
            self.broken = True
            output = self._take()
            return CommandResult(output.decode("utf-8", "replace"), None, timed_out, False,
                                 time.monotonic() - start)  # fmt: skip
        begin, end, status = found
        output = self._take(end)[:begin]
        code = None if timed_out else status
        return CommandResult(
            output.decode("utf-8", "replace"), code, timed_out, False, time.monotonic() - start
        )

    def interrupt(self, keep: set[int]) -> None:
        """Kill what the current command started, keeping the shell and earlier jobs."""
        for _ in range(50):  # a forking command may spawn while we kill: repeat until quiet
            new = descendants(self.proc.pid) - keep
            if not new:
                return
            for pid in new:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=5)
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(Exception):
                stream.close()


# -- the interface -------------------------------------------------------------------------------


class Sandbox:
    """A fresh machine for one problem: a persistent shell plus one-off processes."""

    name = "sandbox"

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._shell: ShellSession | None = None
        self._lock = threading.Lock()
        self.startup_seconds = 0.0

    # backends implement these two
    def _shell_argv(self) -> list[str]:
        raise NotImplementedError

    def _exec_argv(self, argv: Sequence[str]) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str] | None:
        return None

    def _shell_launch(self) -> Launch:
        return Launch(self._shell_argv(), self._env())

    def _exec_launch(self, argv: Sequence[str], script: bool = False) -> Launch:
        """``script``: an init or check script, which gets the trusted interpreters if the
        backend has them."""
        return Launch(self._exec_argv(argv), self._env())

    def _interpreter(self, language: str) -> str:
        return {"bash": "bash", "python": "python3"}[language]

    def run(self, command: str, timeout: float | None = None) -> CommandResult:
        """Run ``command`` in the persistent shell (cwd, variables and jobs carry over)."""
        timeout = self.limits.command_timeout if timeout is None else timeout
        with self._lock:
            restarted = False
            if self._shell is None or not self._shell.alive or self._shell.broken:
                restarted = self._shell is not None
                if self._shell is not None:
                    self._shell.close()
                self._shell = ShellSession(self._shell_launch())
            result = self._shell.run(command, timeout)
            if self._shell.broken or not self._shell.alive:
                # `exit`, killed, or past its timeout without answering: the next command gets
                # a new shell over the same file system
                self._shell.close()
                result.restarted = True
            result.restarted = result.restarted or restarted
            return result

    def exec(
        self, argv: Sequence[str], timeout: float | None = None, stdin: bytes = b""
    ) -> CommandResult:
        """Run one process (stdout and stderr together), like ``docker exec``."""
        return self._run_process(self._exec_launch(argv), timeout, stdin)

    def _run_process(self, launch: Launch, timeout: float | None, stdin: bytes) -> CommandResult:
        """Start ``launch`` and read its output, bounded in size (OUTPUT_HEAD + OUTPUT_TAIL
        bytes kept) and in time (killed at ``timeout``)."""
        timeout = self.limits.command_timeout if timeout is None else timeout
        start = time.monotonic()
        proc = launch.popen()
        assert proc.stdin is not None and proc.stdout is not None
        writer = None
        if stdin:  # in a thread: a process that never reads its input must not block us
            writer = threading.Thread(target=_feed, args=(proc.stdin, stdin), daemon=True)
            writer.start()
        else:
            proc.stdin.close()
        out = bytearray()
        finished = _drain(proc.stdout.fileno(), out, start + timeout)
        timed_out = not finished
        if timed_out:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            for pid in descendants(proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            _drain(proc.stdout.fileno(), out, time.monotonic() + 5.0)
        proc.stdout.close()
        try:
            code: int | None = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        if writer is not None:
            writer.join(timeout=1)
        if timed_out:
            code = None
        return CommandResult(out.decode("utf-8", "replace"), code, timed_out, False,
                             time.monotonic() - start)  # fmt: skip

    def exec_script(
        self, language: str, code: str, args: Sequence[str] = (), timeout: float | None = None
    ) -> CommandResult:
        """Run an AgentBench script (``bash`` or ``python``) with arguments, in a new process."""
        if language == "bash":
            argv = [self._interpreter("bash"), "-c", code, *(["--", *args] if args else [])]
        elif language == "python":
            argv = [self._interpreter("python"), "-c", code, *args]
        else:
            raise SandboxError(f"script language {language!r} is not supported; use bash or python")
        return self._run_process(self._exec_launch(argv, script=True), timeout, b"")

    def close(self) -> None:
        if self._shell is not None:
            self._shell.close()
            self._shell = None

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _feed(stream: IO[bytes], data: bytes) -> None:
    with contextlib.suppress(OSError):
        stream.write(data)
    with contextlib.suppress(OSError):
        stream.close()


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

    def __init__(self, image: str = "ubuntu", *, network: bool = False, limits: Limits = Limits()):
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


# -- namespaces ----------------------------------------------------------------------------------

# Runs (with the host's python) as the holder's first stage: enters a new user and mount
# namespace, waits for the parent to write the uid/gid maps, binds the root filesystem where the
# sandbox's uids can reach it (the cache may sit under a private home), becomes the namespace's
# root (= the first host id of the mapped range) and execs the mount script. Raw syscalls, because an exec before
# becoming root in the namespace would drop the capabilities the bind needs.
_HOLDER_HELPER = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
def check(ok, what):
    if not ok:
        sys.exit(f"genpi sandbox: {what}: {os.strerror(ctypes.get_errno())}")
check(libc.unshare(0x10000000 | 0x00020000) == 0, "unshare(user, mount)")
print("unshared", flush=True)
if sys.stdin.readline().strip() != "mapped":
    sys.exit("genpi sandbox: no uid map")
MS_BIND, MS_REC, MS_PRIVATE, MS_RDONLY, MS_REMOUNT = 4096, 16384, 1 << 18, 1, 32
check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) == 0, "make / private")
lower, stage = sys.argv[1].encode(), sys.argv[2].encode()
check(libc.mount(lower, stage + b"/lower", None, MS_BIND | MS_REC, None) == 0, "bind rootfs")
parent = os.getppid()
os.setgroups([]); os.setresgid(0, 0, 0); os.setresuid(0, 0, 0)
# a change of credentials clears the parent-death signal: set it again, then make sure the
# parent did not die in between (the holder must never outlive the evaluating process)
check(libc.prctl(1, 9, 0, 0, 0) == 0, "prctl(PR_SET_PDEATHSIG, SIGKILL)")
if os.getppid() != parent:
    sys.exit("genpi sandbox: the evaluating process is gone")
os.execv(sys.argv[3], sys.argv[3:])  # an absolute path: the stdlib may be out of reach now
"""

_HOLDER_SCRIPT = r"""
set -eu
stage=$1; size=$2; trusted=$3; resolv=$4
cd "$stage"
# As bubblewrap's --disable-userns, for the namespace that maps all 65536 ids: no user namespace
# can be made below this one, so the sandbox's root never gets one where it holds CAP_SYS_ADMIN
# (mounts, an unbounded tmpfs). /proc/sys is read-only inside and CAP_SYS_RESOURCE is not granted,
# so the limit cannot be raised again.
echo 0 > /proc/sys/user/max_user_namespaces
mount -t tmpfs -o "size=$size,mode=0755" genpi-sandbox disk
cd disk
mkdir upper work root shm mask trusted bin
chmod 1777 shm  # /dev/shm: on this tmpfs, so it counts against the same disk limit as /tmp
# relative paths: the options show in the sandbox's /proc/self/mountinfo, host paths must not
mount -t overlay genpi-overlay -o "lowerdir=../lower,upperdir=upper,workdir=work,userxattr" root
# The pristine root filesystem, read-only, for the check scripts' interpreters. Debian's
# sitecustomize.py is a link to /etc, i.e. into the agent's files: masked by an empty one.
for f in ../lower/usr/lib/python3*/sitecustomize.py; do
    if [ -e "$f" ] || [ -L "$f" ]; then
        d=mask/${f#../lower/}; mkdir -p "${d%/*}"; : > "$d"
    fi
done
mount -t overlay genpi-trusted -o "ro,lowerdir=mask:../lower,userxattr" trusted
# python3 isolated (-I): no PYTHON* variables, no user site-packages (the agent's ~/.local)
printf '#!%s/usr/bin/sh\nexec %s/usr/bin/python3 -I "$@"\n' "$trusted" "$trusted" > bin/python3
ln -s "$trusted/usr/bin/bash" bin/bash
ln -s "$trusted/usr/bin/sh" bin/sh
chmod 0555 bin/python3 bin
if [ -n "$resolv" ]; then  # not the host's nameservers (the rootfs build copied its file)
    rm -f root/etc/resolv.conf
    printf '%s' "$resolv" > root/etc/resolv.conf
fi
echo ready
exec sleep infinity
"""

# Joins the problem's cgroups (so the limits cover every process), then runs the rest.
_CGROUP_SCRIPT = r'for f in $1; do echo $$ > "$f"; done; shift; exec "$@"'


def namespace_problems() -> list[str]:
    """What stops the namespace sandbox on this machine (empty when it can run)."""
    problems = []
    tools = [("bwrap", "bubblewrap"), ("nsenter", "util-linux"), ("prlimit", "util-linux"),
             ("setpriv", "util-linux")]  # fmt: skip
    if os.geteuid() != 0:
        tools += [("newuidmap", "uidmap"), ("newgidmap", "uidmap")]
        if expected_uid_base() is None:
            problems.append(
                f"without root the sandbox maps its users onto your subordinate ids: add a range "
                f"of {UID_COUNT} to /etc/subuid and /etc/subgid (same start), or run as root"
            )
    for tool, package in tools:
        if shutil.which(tool) is None:
            problems.append(f"{tool} is not installed: `apt-get install {package}`")
    with contextlib.suppress(OSError):
        if "overlay" not in Path("/proc/filesystems").read_text():
            problems.append("the kernel has no overlayfs: `modprobe overlay`")
    with contextlib.suppress(OSError, ValueError):
        if int(Path("/proc/sys/user/max_user_namespaces").read_text()) == 0:
            problems.append("user namespaces are disabled (user.max_user_namespaces = 0)")
    return problems


def _make_cgroups(name: str, limits: Limits) -> list[Path]:
    """cgroup v1 ``pids`` and ``memory`` groups for one sandbox (root only); [] if unavailable."""
    made = []
    for controller, settings in (
        ("pids", {"pids.max": str(limits.processes)}),
        ("memory", {"memory.limit_in_bytes": str(limits.memory_bytes)}),
    ):
        base = CGROUP_V1 / controller
        if not (base / "cgroup.procs").is_file():
            continue
        group = base / "genpi" / name
        try:
            group.mkdir(parents=True, exist_ok=True)
            for key, value in settings.items():
                (group / key).write_text(value)
        except OSError as exc:
            log.warning("cgroup %s unavailable (%s): its limit is not applied", controller, exc)
            with contextlib.suppress(OSError):
                group.rmdir()
            continue
        made.append(group)
    return made


def _remove_cgroups(groups: list[Path]) -> None:
    for group in groups:
        for _ in range(100):
            try:
                for pid in (group / "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pid), signal.SIGKILL)
                group.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.05)


def _sweep_stale(base: Path) -> None:
    """Remove what a killed run left: empty cgroups, then their (host-side empty) directories.

    A live sandbox's cgroups hold its ``sleep`` holder, so only dead sandboxes' groups can be
    removed; a directory is removed only when its group was (on the host it is always empty:
    its mounts live in the holder's namespace)."""
    for stage in base.glob("sb-*"):
        with contextlib.suppress(OSError):
            if time.time() - stage.stat().st_mtime < 300:
                continue  # maybe still being set up: its holder has not joined its groups yet
        groups = [CGROUP_V1 / c / "genpi" / stage.name for c in ("pids", "memory")]
        present = [g for g in groups if g.is_dir()]
        if not present:
            continue  # no cgroups here: nothing tells a live sandbox from a dead one
        try:
            for group in present:
                group.rmdir()  # fails (EBUSY) while any process is in it
        except OSError:
            continue
        for sub in ("lower", "disk", ""):
            with contextlib.suppress(OSError):
                (stage / sub).rmdir()


def stage_base() -> Path:
    """Where per-problem mount points go: traversable by all (0711), so the sandbox's uids reach
    them. The name is predictable and TMPDIR is usually world-writable: a directory already there
    is used only when it is a real directory (not a symlink), owned by this user and writable by
    no one else; anything else is refused rather than followed."""
    base = Path(tempfile.gettempdir()) / f"genpi-sandbox-{os.geteuid()}"
    with contextlib.suppress(FileExistsError):
        os.mkdir(base, 0o711)  # never follows a symlink at `base`: EEXIST instead
    try:
        st = os.lstat(base)
    except OSError as exc:
        raise SandboxError(f"the sandbox's stage directory {base} is unusable: {exc}") from None
    problem = None
    if stat.S_ISLNK(st.st_mode):
        problem = "is a symlink"
    elif not stat.S_ISDIR(st.st_mode):
        problem = "is not a directory"
    elif st.st_uid != os.geteuid():
        problem = f"belongs to uid {st.st_uid}, not to this user ({os.geteuid()})"
    elif st.st_mode & 0o022:
        problem = f"is writable by others (mode {stat.S_IMODE(st.st_mode):o})"
    if problem:
        raise SandboxError(
            f"the sandbox's stage directory {base} {problem}: refusing to use it; remove it, or "
            f"set TMPDIR to a directory only you can write"
        )
    return base


@cache
def _bwrap_options(bwrap: str) -> str:
    """bubblewrap's --help, to tell which options this version has."""
    try:
        done = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout + done.stderr


class NamespaceSandbox(Sandbox):
    """A fresh copy-on-write overlay over the root filesystem, run with bubblewrap in a user
    namespace whose root is an unprivileged host uid (see the module docstring)."""

    name = "namespace"

    def __init__(
        self,
        rootfs: str | Path | None = None,
        *,
        network: bool = False,
        limits: Limits = Limits(),
    ) -> None:
        super().__init__(limits)
        start = time.monotonic()
        self._cgroups: list[Path] = []
        self._holder: subprocess.Popen | None = None
        problems = namespace_problems()
        if problems:
            raise SandboxError("; ".join(problems))
        found = Path(rootfs) if rootfs else find_rootfs()
        if found is None or not (found / "bin").exists():
            raise SandboxError(
                "the sandbox root filesystem is not built: run `genpi sandbox build`"
            )
        self.rootfs = found.resolve()
        self.network = network
        base = stage_base()
        _sweep_stale(base)
        self.dir = Path(tempfile.mkdtemp(prefix="sb-", dir=base))  # random name, 0700, ours
        self.dir.chmod(0o711)  # the sandbox's uids traverse it; no one lists it
        for sub in ("lower", "disk"):
            (self.dir / sub).mkdir()
        self.uid_base = expected_uid_base()
        with contextlib.suppress(OSError, ValueError):
            owned = read_stamp(self.rootfs).get("uid_base")
            if owned != self.uid_base:
                self._remove_stage()
                raise SandboxError(
                    f"{self.rootfs} is owned for uids from {owned}, this user's sandbox maps from "
                    f"{self.uid_base}: build one for this user (`genpi sandbox build`)"
                )
        self._cgroups = _make_cgroups(self.dir.name, limits) if os.geteuid() == 0 else []
        self._tools = {
            t: shutil.which(t) or t for t in ("bwrap", "nsenter", "prlimit", "sh", "setpriv")
        }
        cgroup_files = " ".join(str(g / "cgroup.procs") for g in self._cgroups)
        self._holder = subprocess.Popen(
            [self._tools["sh"], "-c", _CGROUP_SCRIPT, "genpi-cg", cgroup_files,
             self._tools["setpriv"], "--pdeathsig", "KILL", sys.executable, "-I", "-S", "-c",
             _HOLDER_HELPER, str(self.rootfs), str(self.dir), self._tools["sh"], "-c",
             _HOLDER_SCRIPT, "genpi-holder", str(self.dir), str(limits.disk_bytes), TRUSTED_ROOT,
             "" if network else RESOLV_CONF],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # none of the evaluator's environment or working directory goes along
            env={"PATH": os.environ.get("PATH") or SANDBOX_ENV["PATH"], "LANG": "C.UTF-8"},
            cwd="/",
            start_new_session=True,
        )  # fmt: skip
        try:
            self._expect(b"unshared")
            self._write_maps(self._holder.pid)
            assert self._holder.stdin is not None
            self._holder.stdin.write(b"mapped\n")
            self._holder.stdin.flush()
            self._expect(b"ready")
        except (SandboxError, OSError) as exc:
            self.close()
            raise SandboxError(f"the sandbox could not be set up: {exc}") from None
        self.startup_seconds = time.monotonic() - start

    def _write_maps(self, pid: int) -> None:
        """Map the sandbox's ids 0..65535 onto the host range its root filesystem is owned by."""
        if os.geteuid() == 0:
            for name in ("uid_map", "gid_map"):
                Path(f"/proc/{pid}/{name}").write_text(f"0 {self.uid_base} {UID_COUNT}\n")
            return
        for tool in ("newuidmap", "newgidmap"):  # set-uid helpers that check /etc/sub[ug]id
            done = subprocess.run(
                [tool, str(pid), "0", str(self.uid_base), str(UID_COUNT)],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            if done.returncode != 0:
                raise SandboxError(f"{tool} failed: {done.stderr.strip()}")

    def _expect(self, word: bytes) -> None:
        assert self._holder is not None and self._holder.stdout is not None
        line = self._holder.stdout.readline(4096)
        if line.strip() != word:
            rest = b""
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._holder.wait(timeout=2)
                rest = self._holder.stdout.read(1 << 16)
            raise SandboxError((line + rest).decode(errors="replace").strip() or "no answer")

    def _env(self) -> dict[str, str]:
        return dict(SANDBOX_ENV)

    def _interpreter(self, language: str) -> str:
        return {"bash": f"{TRUSTED_BIN}/bash", "python": f"{TRUSTED_BIN}/python3"}[language]

    def _wrap(self, argv: Sequence[str], script: bool = False) -> Launch:
        assert self._holder is not None
        disk = self.dir / "disk"
        bwrap = self._tools["bwrap"]
        options = [
            "--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try",
            *([] if self.network else ["--unshare-net"]),
            "--die-with-parent", "--new-session",
            # the holder's user namespace allows no nested one: refuse to start if it would
            *(["--assert-userns-disabled"] if "--assert-userns-disabled" in _bwrap_options(bwrap)
              else []),
            "--bind", str(disk / "root"), "/",
            "--proc", "/proc", "--dev", "/dev",
            # /dev is an unbounded tmpfs of its own: /dev/shm is the sandbox's disk (bounded as
            # / and /tmp are), and the rest of /dev is read-only (device nodes stay writable)
            "--bind", str(disk / "shm"), "/dev/shm",
            *(["--ro-bind", str(disk / "trusted" / "usr"), f"{TRUSTED_ROOT}/usr",
               "--ro-bind", str(disk / "bin"), TRUSTED_BIN] if script else []),
            "--remount-ro", "/dev",
            *[a for p in PROC_READ_ONLY for a in ("--ro-bind-try", f"/proc/{p}", f"/proc/{p}")],
            *[a for p in PROC_MASKED if os.path.exists(f"/proc/{p}")
              for a in ("--ro-bind", "/dev/null", f"/proc/{p}")],
            # the host's root-only /proc/tty/driver would make `find /` report an error that
            # Docker's root never sees: show an empty (read-only) directory instead
            *(["--tmpfs", "/proc/tty/driver", "--remount-ro", "/proc/tty/driver"]
              if os.path.isdir("/proc/tty/driver") else []),
            "--hostname", "genpi-os", "--chdir", "/",
            "--cap-drop", "ALL",
        ]  # fmt: skip
        if self.network:
            options += ["--ro-bind-try", "/etc/resolv.conf", "/etc/resolv.conf"]
        for cap in CAPABILITIES:
            options += ["--cap-add", cap]
        limits = [self._tools["prlimit"], "--core=0"]
        controllers = {g.parent.parent.name for g in self._cgroups}
        if "pids" not in controllers:
            # RLIMIT_NPROC counts every process of the uid, i.e. of all sandboxes at once: the
            # fallback bound holds, but concurrent problems share it
            limits.append(f"--nproc={self.limits.processes}")
        if "memory" not in controllers:
            limits.append(f"--as={self.limits.memory_bytes}")
        nsenter = [self._tools["nsenter"], f"--target={self._holder.pid}", "--user", "--mount"]
        cgroup_files = " ".join(str(g / "cgroup.procs") for g in self._cgroups)
        # bwrap's options come through a pipe (--args): its command line is the sandbox's
        # /proc/1/cmdline, which must not show the host's stage paths
        read_end, write_end = os.pipe()
        try:
            data = b"".join(o.encode() + b"\0" for o in options)
            view = memoryview(data)
            while view:  # a few KiB: fits the pipe's buffer, nothing reads it yet
                view = view[os.write(write_end, view) :]
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        env = self._env()
        if script:
            env["PATH"] = SCRIPT_PATH
        return Launch(
            [self._tools["sh"], "-c", _CGROUP_SCRIPT, "genpi-cg", cgroup_files, *nsenter, "--",
             *limits, "--", bwrap, "--args", str(read_end), "--", *argv],
            env,
            (read_end,),
        )  # fmt: skip

    def _shell_argv(self) -> list[str]:
        raise NotImplementedError("NamespaceSandbox starts processes with _shell_launch")

    def _exec_argv(self, argv: Sequence[str]) -> list[str]:
        raise NotImplementedError("NamespaceSandbox starts processes with _exec_launch")

    def _shell_launch(self) -> Launch:
        return self._wrap(["/bin/bash", "--login"])

    def _exec_launch(self, argv: Sequence[str], script: bool = False) -> Launch:
        return self._wrap(argv, script=script)

    def close(self) -> None:
        super().close()
        holder = self._holder
        if holder is not None:
            if holder.poll() is None:
                holder.kill()
            with contextlib.suppress(Exception):
                holder.wait(timeout=10)
            for stream in (holder.stdin, holder.stdout, holder.stderr):
                with contextlib.suppress(Exception):
                    if stream is not None:
                        stream.close()
            self._holder = None
        _remove_cgroups(self._cgroups)
        self._remove_stage()

    def _remove_stage(self) -> None:
        for sub in ("lower", "disk", ""):  # empty on the host: the mounts lived in the holder's
            with contextlib.suppress(OSError):
                (self.dir / sub).rmdir()


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
