"""``genpi eval-agent --bench NAME``: an agent's success rate on a benchmark harness.

Run as: genpi eval-agent --bench os --data ../shared/agentbench/os_interaction --oracle --out runs/os-oracle
"""

from __future__ import annotations

import argparse

from genpi.bench import HARNESSES, get_harness, runnable


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from genpi.bench.core import add_agent_arguments

    parser.add_argument("--bench", required=True, choices=runnable(), help="the harness to run")
    add_agent_arguments(parser, "<bench>.json")
    # Each harness's own flags in a group named after it; --bench picks which ones count.
    for name in runnable():
        group = parser.add_argument_group(f"--bench {name}", HARNESSES[name].summary)
        get_harness(name).cli().add_harness_arguments(group)


def main(args: argparse.Namespace) -> int:
    return get_harness(args.bench).cli().main(args)
