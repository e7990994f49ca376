"""The sandbox's root filesystem: Debian minbase plus AgentBench's tools, built once with debootstrap.

The build goes into a temporary directory beside the cache entry and is renamed into place only
when complete, so an interrupted build never leaves a half-built root filesystem behind. The entry
name carries a hash of the suite and package list: changing either builds a new one.

Run as: genpi sandbox build   (needs root, debootstrap and the machine's Debian mirror)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from genpi.errors import GenpiError

# AgentBench's `default` image (res/dockerfiles/default) installs these on Ubuntu; procps and
# ca-certificates are what an agent reasonably expects too (ps, pgrep; https for curl/pip).
PACKAGES = (
    "python3",
    "python3-pip",
    "git",
    "vim",
    "curl",
    "wget",
    "unzip",
    "zip",
    "tree",
    "procps",
    "ca-certificates",
)
STAMP = "genpi_rootfs.json"
# Files are owned by UID_BASE + their uid, and the sandbox maps its uids 0..65535 there: the
# sandbox's root is then an unprivileged host uid (far above any real or subordinate uid).
UID_BASE = 1_000_000_000
UID_COUNT = 65536
DEFAULT_MIRROR = "http://deb.debian.org/debian"


class SandboxError(GenpiError, RuntimeError):
    """The sandbox cannot be built or started; the message says why and what to do."""


def sandbox_home() -> Path:
    from genpi.models import genpi_home

    return genpi_home() / "sandbox"


def host_suite() -> str:
    """The Debian suite this machine runs (its mirror serves it), e.g. ``bookworm``."""
    suite = os.environ.get("GENPI_SANDBOX_SUITE")
    if suite:
        return suite
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("VERSION_CODENAME=") and line.split("=", 1)[1].strip():
                return line.split("=", 1)[1].strip().strip('"')
    return "bookworm"


def host_mirror() -> str:
    """The Debian archive this machine's apt is configured with (no other host is contacted)."""
    mirror = os.environ.get("GENPI_SANDBOX_MIRROR")
    if mirror:
        return mirror
    sources = [Path("/etc/apt/sources.list")]
    sources += sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    sources += sorted(Path("/etc/apt/sources.list.d").glob("*.list"))
    for path in sources:
        with contextlib.suppress(OSError):
            text = path.read_text()
            # deb822: "URIs: http://deb.debian.org/debian"; one-line: "deb http://... bookworm main"
            for uri in re.findall(r"^\s*URIs:\s*(\S+)", text, re.M) + re.findall(
                r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)", text, re.M
            ):
                if uri.rstrip("/").endswith("/debian"):
                    return uri.rstrip("/")
    return DEFAULT_MIRROR


@dataclass(frozen=True)
class RootfsSpec:
    suite: str
    mirror: str
    packages: tuple[str, ...] = PACKAGES

    @property
    def key(self) -> str:
        blob = json.dumps([self.suite, sorted(self.packages)]).encode()
        return f"rootfs-{self.suite}-{hashlib.sha256(blob).hexdigest()[:12]}"


def default_spec() -> RootfsSpec:
    return RootfsSpec(suite=host_suite(), mirror=host_mirror())


def rootfs_path(spec: RootfsSpec | None = None, home: Path | None = None) -> Path:
    return (home or sandbox_home()) / (spec or default_spec()).key


def subordinate_range(user: str, kind: str = "uid", path: Path | None = None) -> int | None:
    """The first id of ``user``'s subordinate range of at least UID_COUNT ids (/etc/subuid)."""
    with contextlib.suppress(OSError, ValueError):
        for line in (path or Path(f"/etc/sub{kind}")).read_text().splitlines():
            fields = line.strip().split(":")
            if len(fields) == 3 and fields[0] == user and int(fields[2]) >= UID_COUNT:
                return int(fields[1])
    return None


def current_user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def expected_uid_base() -> int | None:
    """Where this user's sandbox uids start: UID_BASE for root, else the subordinate range."""
    if os.geteuid() == 0:
        return UID_BASE
    uid, gid = subordinate_range(current_user(), "uid"), subordinate_range(current_user(), "gid")
    return uid if uid is not None and uid == gid else None


def find_rootfs(
    spec: RootfsSpec | None = None, home: Path | None = None, uid_base: int | None = None
) -> Path | None:
    """The built root filesystem (``<entry>/root``) owned for ``uid_base`` (default: this
    user's), or None when it has not been built yet."""
    entry = rootfs_path(spec, home)
    try:
        stamp = json.loads((entry / STAMP).read_text())
    except (OSError, ValueError):
        return None
    want = uid_base if uid_base is not None else expected_uid_base()
    return entry / "root" if want is not None and stamp.get("uid_base") == want else None


def read_stamp(rootfs: Path) -> dict:
    """The build record beside a root filesystem (suite, mirror, packages, build seconds)."""
    return json.loads((rootfs.parent / STAMP).read_text())


def build_problems() -> list[str]:
    """What stops a build on this machine (empty when a build can run)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("debootstrap needs root: run `sudo -E genpi sandbox build` once")
    if shutil.which("debootstrap") is None:
        problems.append("debootstrap is not installed: `apt-get install debootstrap`")
    return problems


@contextlib.contextmanager
def _build_lock(home: Path) -> Iterator[None]:
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second builder waits, then finds the cache filled
        yield


def build_rootfs(
    spec: RootfsSpec | None = None,
    home: Path | None = None,
    *,
    force: bool = False,
    log: Path | None = None,
    for_user: str | None = None,
) -> Path:
    """Build (or find) the root filesystem; return its path. ``for_user``: shift it to that
    user's subordinate uid range and hand it over, for rootless sandboxes (needs root)."""
    spec = spec or default_spec()
    home = home or sandbox_home()
    uid_base, owner = UID_BASE, None
    if for_user:
        import pwd

        start = subordinate_range(for_user, "uid")
        if start is None or start != subordinate_range(for_user, "gid"):
            raise SandboxError(
                f"{for_user} has no subordinate uid/gid range of {UID_COUNT} ids starting at the "
                f"same number: add '{for_user}:START:{UID_COUNT}' to /etc/subuid and /etc/subgid"
            )
        uid_base, owner = start, pwd.getpwnam(for_user)
    with _build_lock(home):
        target = rootfs_path(spec, home)
        found = find_rootfs(spec, home, uid_base)
        if found is not None and not force:
            return found
        problems = build_problems()
        if problems:
            raise SandboxError("; ".join(problems))
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=home))
        log = log or home / "build.log"
        start = time.monotonic()
        cmd = [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(spec.packages)}",
            spec.suite,
            str(tmp / "root"),
            spec.mirror,
        ]
        try:
            with open(log, "w") as log_file:
                done = subprocess.run(cmd, stdout=log_file, stderr=subprocess.STDOUT)
            if done.returncode != 0:
                tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                raise SandboxError(
                    f"debootstrap failed (exit {done.returncode}; log {log}): {' | '.join(tail)}; "
                    f"check that the mirror {spec.mirror} is reachable"
                )
            root = tmp / "root"
            _trim(root)
            shift_ownership(root, uid_base)
            stamp = {
                "suite": spec.suite,
                "mirror": spec.mirror,
                "packages": list(spec.packages),
                "uid_base": uid_base,
                "build_seconds": round(time.monotonic() - start, 1),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            (tmp / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
            if target.exists():  # --force: move the old one aside, then remove it
                old = Path(tempfile.mkdtemp(prefix=".old-", dir=home))
                target.rename(old / "entry")
                shutil.rmtree(old, ignore_errors=True)
            if owner is not None:  # the user reads the stamp and reaches the tree
                os.chown(tmp / STAMP, owner.pw_uid, owner.pw_gid)
                tmp.chmod(0o755)
            tmp.rename(target)  # the entry appears complete or not at all
            return target / "root"
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _trim(root: Path) -> None:
    """Drop the package cache and make the tree look like AgentBench's container at start."""
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for entry in (root / cache).glob("*"):
            if entry.is_file():
                entry.unlink()
    (root / "root").mkdir(mode=0o700, exist_ok=True)
    (root / "etc/hostname").write_text("genpi-os\n")


def shift_ownership(root: Path, base: int) -> int:
    """Add ``base`` to every file's owner and group (idempotent); return how many changed.

    chown clears set-uid/set-gid bits, so they are put back from the mode read before."""
    changed = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for path in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            st = os.lstat(path)
            if st.st_uid >= base:
                continue
            os.lchown(path, st.st_uid + base, st.st_gid + base)
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                os.chmod(path, stat.S_IMODE(st.st_mode))
            changed += 1
    return changed
