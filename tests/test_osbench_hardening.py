"""The namespace sandbox against an agent that attacks its judge: output floods, /dev/shm, nested
user namespaces, leaks of the evaluator's paths, a planted stage directory, shadowed
interpreters. Each test is bounded in time; the ones that start sandboxes need the cached root
filesystem (``sandbox_rootfs``: skipped with the reason, or failed under
GENPI_REQUIRE_SANDBOX=1)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest

from genpi.bench.os.namespace import NamespaceSandbox, stage_base
from genpi.bench.os.rootfs import SandboxError
from genpi.bench.os.shell import OUTPUT_HEAD, OUTPUT_TAIL, Limits
from genpi.bench.os.task import Problem, judge

FAST = Limits(command_timeout=20.0, disk_bytes=64 << 20, processes=128, memory_bytes=512 << 20)
FLOOD = 200_000_000  # bytes a hostile command prints, about 200 times what is kept


@pytest.fixture
def box(sandbox_rootfs):
    sandbox = NamespaceSandbox(sandbox_rootfs, limits=FAST)
    yield sandbox
    sandbox.close()


def _check(language: str, code: str) -> Problem:
    return Problem(id="t-00000", index=0, description="", check=((language, code),))


# -- 7: output is bounded, checks run under the sandbox's limits -------------------------------


def test_a_flooding_check_keeps_the_evaluator_bounded(box):
    flood = f"head -c {FLOOD} /dev/zero | tr '\\0' x; echo; echo last-line; exit 3"
    start = time.monotonic()
    done = box.exec_script("bash", flood)
    took = time.monotonic() - start
    assert len(done.output) <= OUTPUT_HEAD + 2 * OUTPUT_TAIL
    assert done.output.startswith("x" * 1000) and done.output.endswith("last-line\n")
    assert done.exit_code == 3 and not done.timed_out and took < FAST.command_timeout
    one_off = box.exec(["sh", "-c", f"head -c {FLOOD} /dev/zero"])
    assert len(one_off.output) <= OUTPUT_HEAD + 2 * OUTPUT_TAIL and one_off.exit_code == 0
    endless = box.exec(["yes"], timeout=2)  # never ends: bounded in time and in memory
    assert endless.timed_out and len(endless.output) <= OUTPUT_HEAD + 2 * OUTPUT_TAIL


def test_checks_run_under_the_sandbox_limits(box):
    hog = box.exec_script("python", "x = bytearray(1536 << 20); print(len(x))", timeout=60)
    assert hog.exit_code not in (0, None) and "1610612736" not in hog.output
    stuck = box.exec_script("bash", "sleep 100", timeout=2)
    assert stuck.timed_out and stuck.exit_code is None and stuck.seconds < 10


# -- 8: /dev/shm counts against the disk limit -------------------------------------------------


def test_dev_shm_is_bounded_by_the_disk_limit(box):
    result = box.run("dd if=/dev/zero of=/dev/shm/fill bs=1M count=200 2>&1; du -sm /dev/shm/fill")
    assert "No space left" in result.output
    assert int(result.output.split()[-2]) <= FAST.disk_bytes >> 20
    # /dev/shm shares the one bounded disk: what it holds is gone from / and /tmp
    assert "No space left" in box.run("dd if=/dev/zero of=/tmp/more bs=1M count=8 2>&1").output
    assert box.run("rm /dev/shm/fill /tmp/more && echo 1 > /dev/shm/ok && cat /dev/shm/ok").output
    # the rest of /dev, an unbounded tmpfs, is read-only; its device nodes still work
    assert box.run("touch /dev/extra").exit_code != 0
    assert box.run("echo x > /dev/null && head -c 3 /dev/zero | wc -c").output == "3\n"


# -- 9: no nested user namespaces ---------------------------------------------------------------


def test_nested_user_namespaces_are_refused(box):
    for command in (
        "unshare -Urm true",
        "unshare -U true",
        "unshare -Ur sh -c 'mount -t tmpfs x /mnt'",
    ):
        assert box.run(command).exit_code != 0, command
        assert box.exec_script("bash", command).exit_code != 0, command
    assert "No space left" in box.run("unshare -U true 2>&1").output  # the count limit says so
    assert box.run("cat /proc/sys/user/max_user_namespaces").output == "0\n"
    assert box.run("echo 100 > /proc/sys/user/max_user_namespaces").exit_code != 0


# -- 10: nothing of the evaluator shows inside --------------------------------------------------

_LOOK = (
    "tr '\\0' '\\n' < /proc/1/environ; env; tr '\\0' ' ' < /proc/1/cmdline; ps -eo args; "
    "cat /proc/self/mountinfo /proc/1/mountinfo"
)


def test_evaluator_paths_do_not_leak_into_the_sandbox(sandbox_rootfs, tmp_path, monkeypatch):
    here = tmp_path / "evaluator-cwd-5d1c"
    here.mkdir()
    monkeypatch.chdir(here)
    with NamespaceSandbox(sandbox_rootfs, limits=FAST) as sandbox:
        seen = [
            sandbox.run(_LOOK).output,
            sandbox.exec(["sh", "-c", _LOOK]).output,
            sandbox.exec_script("bash", _LOOK).output,
        ]
        stage = str(sandbox.dir)
    assert all("PWD=/\n" in out for out in seen)  # the probes ran and printed their env
    for out in seen:
        for host_path in ("evaluator-cwd-5d1c", str(tmp_path), stage, str(stage_base()),
                          str(sandbox_rootfs), "genpi-sandbox-"):  # fmt: skip
            assert host_path not in out, (host_path, out)


def test_the_sandbox_has_its_own_resolv_conf(box):
    inside = box.run("cat /etc/resolv.conf").output
    nameservers = [line for line in inside.splitlines() if line.startswith("nameserver")]
    assert nameservers == ["nameserver 127.0.0.1"], inside
    with open("/etc/resolv.conf") as host:
        for line in host:
            if line.startswith("nameserver") and "127.0.0.1" not in line:
                assert line.strip() not in inside


# -- 11: the stage directory is not planted ----------------------------------------------------


@pytest.fixture
def tmpdir_base(tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path / f"genpi-sandbox-{os.geteuid()}"


def test_stage_base_refuses_a_planted_symlink(tmpdir_base, tmp_path):
    elsewhere = tmp_path / "attacker"
    elsewhere.mkdir()
    tmpdir_base.symlink_to(elsewhere)
    with pytest.raises(SandboxError, match="symlink"):
        stage_base()
    dangling = tmp_path / "gone"
    tmpdir_base.unlink()
    tmpdir_base.symlink_to(dangling)
    with pytest.raises(SandboxError, match="symlink"):
        stage_base()
    assert not dangling.exists() and list(elsewhere.iterdir()) == []


def test_stage_base_refuses_a_directory_others_can_write(tmpdir_base):
    tmpdir_base.mkdir()
    tmpdir_base.chmod(0o777)
    with pytest.raises(SandboxError, match="writable by others"):
        stage_base()


@pytest.mark.skipif(os.geteuid() != 0, reason="planting another user's directory needs root")
def test_stage_base_refuses_another_users_directory(tmpdir_base):
    tmpdir_base.mkdir(mode=0o755)
    os.chown(tmpdir_base, 54321, 54321)
    with pytest.raises(SandboxError, match="belongs to uid 54321"):
        stage_base()


def test_stage_base_is_created_private(tmpdir_base):
    base = stage_base()
    info = os.lstat(base)
    assert base == tmpdir_base and not base.is_symlink() and base.is_dir()
    assert info.st_uid == os.geteuid() and info.st_mode & 0o022 == 0
    assert stage_base() == base  # and trusted on the next call


# -- 12: checks use interpreters the agent cannot have changed ----------------------------------

_SHADOW = r"""
printf '#!/bin/sh\nexit 0\n' > /tmp/fake && chmod 755 /tmp/fake
version=$(python3 -c 'import sys; print("python%d.%d" % sys.version_info[:2])')
for name in python3 $version bash sh; do cp /tmp/fake /usr/local/bin/$name; done
rm -f /usr/bin/python3 && cp /tmp/fake /usr/bin/python3
cp /tmp/fake /usr/bin/$version
printf 'import os\nos._exit(0)\n' > /etc/$version/sitecustomize.py
mkdir -p /root/.local/lib/$version/site-packages
echo 'import os; os._exit(0)' > /root/.local/lib/$version/site-packages/evil.pth
printf '#!/bin/sh\necho calc-ok\n' > /usr/local/bin/calc && chmod 755 /usr/local/bin/calc
echo shadowed
"""


def test_shadowed_interpreters_cannot_pass_a_check(box):
    assert box.run(_SHADOW).output == "shadowed\n"
    assert box.run("python3 -c 'import sys; sys.exit(1)'").exit_code == 0  # the agent's view
    failing = [
        ("python", "import sys; sys.exit(1)"),
        ("bash", "exit 1"),
        ("bash", "python3 -c 'import sys; sys.exit(1)'"),
        ("bash", "sh -c 'exit 1'"),
    ]
    for language, code in failing:
        passed, trail = judge(_check(language, code), "answer", box)
        assert not passed, (language, code, trail)
    passing = [
        ("bash", '[ "$(python3 -c "print(6 * 7)")" = 42 ]'),  # the real python3 computed it
        ("bash", '[ "$(calc)" = calc-ok ]'),  # the agent's own commands are still found
        ("python", "import sys; sys.exit(0 if sys.argv[1] == 'answer' else 1)"),
    ]
    for language, code in passing:
        passed, trail = judge(_check(language, code), "answer", box)
        assert passed, (language, code, trail)
