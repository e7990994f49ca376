"""``NamespaceSandbox``: no engine needed. Per problem, a holder process enters a new user and
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
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from genpi.bench.os.cgroups import make_cgroups, remove_cgroups, sweep_stale
from genpi.bench.os.rootfs import (
    UID_COUNT,
    SandboxError,
    expected_uid_base,
    find_rootfs,
    read_stamp,
)
from genpi.bench.os.shell import DEFAULT_LIMITS, Launch, Limits, Sandbox

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
        limits: Limits = DEFAULT_LIMITS,
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
        sweep_stale(base)
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
        self._cgroups = make_cgroups(self.dir.name, limits) if os.geteuid() == 0 else []
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
        remove_cgroups(self._cgroups)
        self._remove_stage()

    def _remove_stage(self) -> None:
        for sub in ("lower", "disk", ""):  # empty on the host: the mounts lived in the holder's
            with contextlib.suppress(OSError):
                (self.dir / sub).rmdir()
