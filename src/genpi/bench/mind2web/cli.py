"""``genpi eval-agent --bench mind2web``: AgentBench's Web Browsing task on Mind2Web data the
user supplies (multiple-choice element selection, Mind2Web's step-level metrics); no network.

Run as: genpi eval-agent --bench mind2web --data mind2web/test_task --ranks scores_all_data.pkl --model smollm2-135m --prompt ../shared/agentbench/prompts/mind2web.json --out runs/m2w
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

PROMPT_FILE = "mind2web.json"  # AgentBench's Mind2Web prompt, under prompts/ beside --data


def add_harness_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The flags only this harness reads (``genpi eval-agent`` gives them a group of their own)."""
    from genpi.bench.mind2web.data import SEED, TOP_K

    parser.add_argument(
        "--top-k",
        type=int,
        default=TOP_K,
        help=f"candidates ranked under K are asked (AgentBench: {TOP_K}; Mind2Web's MindAct: 50)",
    )
    parser.add_argument(
        "--ranks",
        default=None,
        help="Mind2Web's candidate ranking (scores_all_data.pkl, or JSON) when the candidates "
        "carry no 'rank'",
    )
    parser.add_argument(
        "--seed", type=int, default=SEED, help=f"candidate order per step (default {SEED})"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from genpi.bench.core import add_agent_arguments

    add_agent_arguments(parser, PROMPT_FILE)
    add_harness_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from genpi.bench.core import agent_config, build_agent, read_upper_bound
    from genpi.bench.mind2web.agents import OracleAgent
    from genpi.bench.mind2web.data import load_steps
    from genpi.bench.mind2web.task import evaluate, max_rounds

    steps = load_steps(args.data, top_k=args.top_k, ranks=args.ranks, seed=args.seed)
    rounds = max_rounds(steps)  # of all steps: run.json stays the same under another --limit
    if args.limit:
        steps = steps[: args.limit]
    upper = read_upper_bound(args.upper_bound) if args.upper_bound else None
    agent = build_agent(args, PROMPT_FILE, OracleAgent)
    # Everything that changes a step's outcome; a rerun with the same settings resumes.
    config = {
        "data": str(Path(args.data).resolve()),
        "top_k": args.top_k,
        "ranks": str(Path(args.ranks).resolve()) if args.ranks else None,
        "seed": args.seed,
        **agent_config(args, agent),
    }
    summary = evaluate(
        steps,
        agent,
        rounds=rounds,
        out_dir=args.out,
        concurrency=args.concurrency,
        upper_bound=upper,
        config=config,
    )
    metrics = summary["mind2web"]
    line = {k: summary[k] for k in ("total", "pass", "success_rate", "normalized")}
    line |= {k: metrics[k] for k in ("tasks", "micro", "macro", "task_sr")}
    print(json.dumps({"agent": agent.name, **line}))
    return 0
