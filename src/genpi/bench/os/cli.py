"""``genpi eval-agent --bench os`` (alias ``genpi eval-os``): AgentBench OS-interaction success
rate, each problem in a fresh sandbox.

Run as: genpi eval-agent --bench os --data ../shared/agentbench/os_interaction --oracle --out runs/os-oracle
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

PROMPT_FILE = "os.json"  # AgentBench's OS prompt, under prompts/ beside --data


def add_harness_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The flags only this harness reads (``genpi eval-agent`` gives them a group of their own)."""
    from genpi.bench.os.sandbox import COMMAND_TIMEOUT, SandboxFactory
    from genpi.bench.os.task import MAX_ROUNDS

    parser.add_argument("--split", default=None, help="only data/<SPLIT>.json (default: all)")
    parser.add_argument(
        "--rounds", type=int, default=MAX_ROUNDS, help=f"round limit (AgentBench: {MAX_ROUNDS})"
    )
    parser.add_argument("--backend", default="auto", choices=("auto", "docker", "namespace"))
    parser.add_argument(
        "--image", default=SandboxFactory.image, help="Docker image (docker backend)"
    )
    parser.add_argument("--network", action="store_true", help="give the sandbox the host network")
    parser.add_argument(
        "--timeout", type=float, default=COMMAND_TIMEOUT, help="seconds per command"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from genpi.bench.core import add_agent_arguments

    add_agent_arguments(parser, PROMPT_FILE)
    add_harness_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from genpi.bench.core import agent_config, build_agent, read_upper_bound
    from genpi.bench.os.agents import OracleAgent
    from genpi.bench.os.sandbox import Limits, SandboxFactory
    from genpi.bench.os.task import evaluate, load_problems

    problems = load_problems(args.data, args.split)
    if args.limit:
        problems = problems[: args.limit]
    upper = read_upper_bound(args.upper_bound) if args.upper_bound else None
    factory = SandboxFactory(
        backend=args.backend,
        image=args.image,
        dockerfiles=Path(args.data) / "res" / "dockerfiles",
        network=args.network,
        limits=Limits(command_timeout=args.timeout),
    )
    agent = build_agent(args, PROMPT_FILE, OracleAgent)
    # Everything that changes a problem's outcome; a rerun with the same settings resumes (a
    # different --limit only picks other problems, so it is not a setting).
    config = {
        "data": str(Path(args.data).resolve()),
        "split": args.split,
        "sandbox": factory.describe(),
        **agent_config(args, agent),
    }
    summary = evaluate(
        problems,
        agent,
        factory,
        out_dir=args.out,
        concurrency=args.concurrency,
        max_rounds=args.rounds,
        upper_bound=upper,
        config=config,
    )
    line = {k: summary[k] for k in ("total", "pass", "success_rate", "normalized")}
    print(json.dumps({"agent": agent.name, "sandbox": factory.backend, **line}))
    for outcome in summary["outcomes"]:
        if not outcome["result"]:
            print(f"  fail {outcome['id']}: {outcome['status']} answer={outcome['answer']!r}")
    return 0
