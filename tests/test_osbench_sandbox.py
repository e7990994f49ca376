"""The namespace sandbox, for real: the shell protocol, and hostile commands that must leave the
host untouched (each bounded in time). Needs root, bubblewrap and the cached root filesystem
(built on first use, about a minute or two); skipped with the reason otherwise."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

from genpi.bench.os.cgroups import remove_cgroups
from genpi.bench.os.namespace import PROC_MASKED, NamespaceSandbox, stage_base
from genpi.bench.os.rootfs import SandboxError
from genpi.bench.os.shell import Limits

FAST = Limits(command_timeout=20.0, disk_bytes=64 << 20, processes=128, memory_bytes=512 << 20)


@pytest.fixture(scope="module")
def rootfs(sandbox_rootfs):
    return sandbox_rootfs


@pytest.fixture
def box(rootfs):
    sandbox = NamespaceSandbox(rootfs, limits=FAST)
    yield sandbox
    sandbox.close()


def test_shell_keeps_state_and_reports_status(box):
    assert box.run("cd /tmp && X=5 && echo start").output == "start\n"
    result = box.run("pwd; echo $X; echo err >&2; false")
    assert (result.output, result.exit_code) == ("/tmp\n5\nerr\n", 1)
    assert box.run("printf 'no newline'").output == "no newline"
    # tracing the wrapper must not forge the end marker
    traced = box.run("set -x; echo hi; set +x")
    assert traced.exit_code == 0 and "hi" in traced.output
    assert box.run("cat").output == ""  # input operations read nothing (stdin is /dev/null)
    assert box.run("echo 'unclosed").exit_code == 2  # a syntax error does not wedge the shell
    assert box.run("hostname; id -u").output == "genpi-os\n0\n"
    gone = box.run("exit 3")
    assert gone.restarted
    assert box.run("echo again; pwd").output == "again\n/\n"  # a new shell, same machine
    assert box.exec(["cat", "/etc/hostname"]).output == "genpi-os\n"


def test_never_ending_command_is_bounded_and_jobs_survive(box):
    box.run("sleep 300 & echo $! > /tmp/job; Y=kept")
    start = time.monotonic()
    result = box.run("echo before; tail -f /dev/null", timeout=2)
    took = time.monotonic() - start
    assert result.timed_out and result.exit_code is None and took < 10
    assert result.output.startswith("before")
    after = box.run("echo $Y; kill -0 $(cat /tmp/job) && echo job-alive")
    assert after.output == "kept\njob-alive\n"
    flood = box.run("yes", timeout=2)  # endless output: bounded in time and in memory
    assert flood.timed_out and flood.output.startswith("y\ny\n") and len(flood.output) < 2 << 20
    assert box.run("yes | head -c 5000000 | wc -c; echo done").output == "5000000\ndone\n"
    wedged = box.run("exec sleep 100", timeout=1)  # the shell itself never answers
    assert wedged.timed_out and wedged.restarted
    assert box.run("echo back; cat /tmp/job").output.startswith("back\n")  # files survive
    one_off = box.exec(["sleep", "100"], timeout=2)
    assert one_off.timed_out and one_off.seconds < 10


def test_rm_rf_root_leaves_host_and_rootfs_intact(rootfs, tmp_path):
    sentinel = tmp_path / "sentinel"
    sentinel.write_text("still here")
    bash_size = (rootfs / "bin/bash").stat().st_size
    with NamespaceSandbox(rootfs, limits=FAST) as sandbox:
        sandbox.run("rm -rf --no-preserve-root / 2>/dev/null", timeout=60)
        wrecked = sandbox.exec(["/bin/ls", "/"])  # the removal did happen, inside
        assert wrecked.exit_code != 0
    assert sentinel.read_text() == "still here"
    assert (rootfs / "bin/bash").stat().st_size == bash_size
    assert (rootfs.parent / "genpi_rootfs.json").is_file()
    with NamespaceSandbox(rootfs, limits=FAST) as fresh:
        assert fresh.run("ls /bin/bash").output == "/bin/bash\n"


def test_fork_bomb_is_capped_and_cleaned_up(rootfs):
    sandbox = NamespaceSandbox(rootfs, limits=FAST)
    try:
        sandbox.run(":(){ :|:& };:", timeout=5)
        time.sleep(2)
        counts = [len((g / "cgroup.procs").read_text().split()) for g in sandbox._cgroups]
        if sandbox._cgroups:  # the pids cgroup holds the bomb at its limit
            assert max(counts) <= FAST.processes
        assert subprocess.run(["true"], timeout=10).returncode == 0  # the host still forks
        groups = list(sandbox._cgroups)
        holder = sandbox._holder.pid
    finally:
        sandbox.close()
    for group in groups:
        assert not group.exists()  # every process gone, the cgroup removed
    leftover = subprocess.run(["pgrep", "-f", "genpi-holder"], capture_output=True, text=True)
    assert str(holder) not in leftover.stdout.split()


def test_filling_the_disk_stops_at_the_limit(box):
    free_before = shutil.disk_usage(box.dir).free
    result = box.run("dd if=/dev/zero of=/fill bs=1M count=1000 2>&1; du -sm /fill")
    assert "No space left" in result.output
    used_mb = int(result.output.split()[-2])
    assert used_mb <= FAST.disk_bytes >> 20
    assert abs(shutil.disk_usage(box.dir).free - free_before) < 50 << 20
    assert os.listdir(box.dir / "disk") == []  # the writable layer never touches the host disk


def test_host_files_are_out_of_reach(box, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("host-secret-7f3a")
    out = box.run(f"cat {secret} 2>&1; ls /work 2>&1; cat /proc/1/root{secret} 2>&1").output
    assert "host-secret-7f3a" not in out and "No such file" in out
    assert "host-secret-7f3a" not in box.run("grep -rs host-secret-7f3a /tmp /root /home").output
    # no way back to the host: no mounts, no device nodes, no kernel settings
    assert box.run("mount -t tmpfs x /mnt").exit_code != 0
    assert box.run("mknod /tmp/disk b 8 0").exit_code != 0
    assert box.run("echo 1 > /proc/sys/vm/drop_caches").exit_code != 0
    assert box.run("echo h > /proc/sysrq-trigger").exit_code != 0
    masked = [p for p in PROC_MASKED if os.path.exists(f"/proc/{p}")]
    assert masked
    for name in masked:
        # masked by /dev/null (nodev: reading is refused or empty), never the host's data
        assert box.run(f"head -c 16 /proc/{name} | wc -c").output.split()[-1] == "0"


class _Listener:
    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.sendall(b"hello from the host\n")
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


@pytest.mark.parametrize("network", [False, True])
def test_host_loopback_is_unreachable_without_network(rootfs, network):
    listener = _Listener()
    probe = (
        "python3 -c \"import socket; s = socket.create_connection(('127.0.0.1', "
        f'{listener.port}), timeout=3); print(s.recv(100).decode())"'
    )
    try:
        with NamespaceSandbox(rootfs, network=network, limits=FAST) as sandbox:
            result = sandbox.run(probe, timeout=15)
    finally:
        listener.close()
    if network:  # the control: the same probe reaches the listener when the network is shared
        assert "hello from the host" in result.output and listener.accepted == 1
    else:
        assert "Connection refused" in result.output and listener.accepted == 0


def test_memory_hog_is_stopped_at_the_limit(box):
    hog = box.run("python3 -c 'x = bytearray(1536 << 20); print(len(x))'", timeout=60)
    assert hog.exit_code not in (0, None) and "1610612736" not in hog.output
    assert box.run("echo fine").output == "fine\n"  # the shell outlives the killed hog


def test_subordinate_ranges_for_rootless_use(tmp_path):
    from genpi.bench.os.rootfs import subordinate_range

    table = tmp_path / "subuid"
    table.write_text("alice:100000:65536\nbob:165536:1000\ncarol:231072:70000\n")
    assert subordinate_range("alice", path=table) == 100000
    assert subordinate_range("bob", path=table) is None  # too small for uids 0..65535
    assert subordinate_range("carol", path=table) == 231072
    assert subordinate_range("dave", path=table) is None


def test_rootfs_owned_for_other_uids_is_refused(rootfs, tmp_path):
    fake = tmp_path / "entry" / "root"
    (fake / "bin").mkdir(parents=True)
    (fake.parent / "genpi_rootfs.json").write_text('{"uid_base": 5}')
    before = set(stage_base().iterdir())
    with pytest.raises(SandboxError, match="owned for uids from 5"):
        NamespaceSandbox(fake, limits=FAST)
    assert set(stage_base().iterdir()) == before  # nothing left behind


def test_a_killed_evaluator_leaves_no_sandbox_running(rootfs):
    import signal
    import sys
    from pathlib import Path

    script = (
        "from genpi.bench.os.sandbox import NamespaceSandbox\n"
        f"box = NamespaceSandbox({str(rootfs)!r})\n"
        "box.run('sleep 300 &')\n"
        "print(box._holder.pid, box.dir, ' '.join(str(g) for g in box._cgroups), flush=True)\n"
        "import time; time.sleep(300)\n"
    )
    src = str(Path(__file__).resolve().parents[1] / "src")
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": src},
    )  # fmt: skip
    holder, stage, *groups = child.stdout.readline().split()
    child.send_signal(signal.SIGKILL)  # no close(), no atexit: only the kernel cleans up
    child.wait(timeout=10)
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{holder}") and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        assert not os.path.exists(f"/proc/{holder}")
        for group in groups:  # the holder's and the shell's processes are all gone
            remaining = (Path(group) / "cgroup.procs").read_text().split()
            assert remaining == [], remaining
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(holder), signal.SIGKILL)  # a failing run must not leak the holder either
        for group in groups:
            remove_cgroups([Path(group)])
        for sub in ("lower", "disk", ""):
            with contextlib.suppress(OSError):
                (Path(stage) / sub).rmdir()
