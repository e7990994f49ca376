"""cgroup v1 ``pids`` and ``memory`` groups that bound one namespace sandbox (as root), and the
sweep of what a killed run left."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path

from genpi.bench.os.shell import Limits

log = logging.getLogger(__name__)

CGROUP_V1 = Path("/sys/fs/cgroup")


def make_cgroups(name: str, limits: Limits) -> list[Path]:
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


def remove_cgroups(groups: list[Path]) -> None:
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


def sweep_stale(base: Path) -> None:
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
