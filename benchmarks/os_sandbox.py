"""OS sandbox speed: start-up time per problem and problems/minute for the oracle agent.

Measures, side by side in one run, the namespace sandbox (bubblewrap + overlay) and, where a
Docker engine answers `docker info`, a plain `docker run` of the same image family; without an
engine it says so. Needs root, bubblewrap, the cached root filesystem and ../shared.

Run as: python benchmarks/os_sandbox.py [--data ../shared/agentbench/os_interaction] [--repeat 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from genpi.bench.os.agents import OracleAgent
from genpi.bench.os.rootfs import read_stamp
from genpi.bench.os.sandbox import NamespaceSandbox, SandboxFactory, docker_available, ready_rootfs
from genpi.bench.os.task import evaluate, load_problems

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "agentbench" / "os_interaction"


def time_startups(open_box, repeat: int) -> dict[str, float]:
    """Seconds from nothing to a shell's first answer (start, `true`, close)."""
    startup, first, total = [], [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        box = open_box()
        t1 = time.perf_counter()
        box.run("true")
        t2 = time.perf_counter()
        box.close()
        t3 = time.perf_counter()
        startup.append(t1 - t0)
        first.append(t2 - t0)
        total.append(t3 - t0)
    return {
        "startup_s_median": round(statistics.median(startup), 4),
        "first_command_s_median": round(statistics.median(first), 4),
        "start_to_closed_s_median": round(statistics.median(total), 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--image", default="genpi-os-default", help="Docker image to compare")
    args = parser.parse_args()

    rootfs, reason = ready_rootfs(build=False)
    if rootfs is None:
        print(f"namespace sandbox unavailable: {reason}", file=sys.stderr)
        return 1
    report: dict = {"rootfs_build_seconds": read_stamp(rootfs).get("build_seconds")}
    report["namespace"] = time_startups(lambda: NamespaceSandbox(rootfs), args.repeat)
    if docker_available():
        run = ["docker", "run", "--rm", "--network", "none", args.image, "true"]
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            subprocess.run(run, check=True, capture_output=True)
            times.append(time.perf_counter() - t0)
        report["docker_run_s_median"] = round(statistics.median(times), 4)
        report["docker_over_namespace"] = round(
            report["docker_run_s_median"] / report["namespace"]["start_to_closed_s_median"], 1
        )
    else:
        report["docker"] = "no Docker engine reachable (`docker info` fails): not compared"

    data = Path(args.data)
    if data.is_dir():
        problems = load_problems(data)
        factory = SandboxFactory(backend="namespace", rootfs=rootfs)
        summary = evaluate(problems, OracleAgent(), factory, concurrency=args.concurrency)
        report["oracle"] = {
            "pass": summary["pass"],
            "total": summary["total"],
            "seconds": summary["seconds"],
            "problems_per_minute": summary["problems_per_minute"],
            "concurrency": args.concurrency,
            "startup_s_per_problem_median": statistics.median(
                o["startup_seconds"] for o in summary["outcomes"]
            ),
        }
    else:
        report["oracle"] = f"no AgentBench data at {data}: not run"
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
