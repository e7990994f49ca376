"""The sandbox's persistent shell and the interface every backend implements.

Both backends give a persistent shell (``run``: each command's output and exit status, read up to
a unique end marker) and one-off processes (``exec``, like ``docker exec``). A command past its
timeout is interrupted by killing the processes it started (the shell, its variables and earlier
background jobs survive); if the shell itself dies, a new one is started over the same file
system. Every read of a sandbox's output keeps about ``OUTPUT_HEAD + OUTPUT_TAIL`` bytes (the rest
is drained and dropped), so a flood costs the evaluator time, never memory.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import secrets
import select
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

from genpi.bench.os.rootfs import SandboxError

COMMAND_TIMEOUT = 30.0  # AgentBench's per-command limit
# Every read of a sandbox's output (the shell's commands, one-off processes, init and check
# scripts) keeps at most this much; the rest is read and dropped, so a flood costs the evaluator
# time (until the command's timeout), never memory.
OUTPUT_HEAD = 1 << 20  # bytes of a command's output kept from its start (the agent sees 780 chars)
OUTPUT_TAIL = 1 << 12  # and from its end, where the end marker is


@dataclass(frozen=True)
class Limits:
    memory_bytes: int = 2 << 30
    processes: int = 512
    disk_bytes: int = 1 << 30  # the overlay's writable layer
    command_timeout: float = COMMAND_TIMEOUT


DEFAULT_LIMITS = Limits()  # frozen: one shared default is safe


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
