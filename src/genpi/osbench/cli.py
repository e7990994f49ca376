"""``genpi eval-os``: AgentBench OS-interaction success rate, each problem in a fresh sandbox.

Run as: genpi eval-os --data ../shared/agentbench/os_interaction --oracle --out runs/os-oracle
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from genpi.errors import GenpiError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="AgentBench os_interaction directory")
    parser.add_argument("--split", default=None, help="only data/<SPLIT>.json (default: all)")
    parser.add_argument("--model", default=None, help="backend reference (default: smollm2-135m)")
    parser.add_argument(
        "--prompt",
        default=None,
        help="the OS prompt file (default: prompts/os.json beside --data, or the adapter's prompt)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--adapter", default=None, help="a GenPI adapter: the model without prompt")
    mode.add_argument("--no-prompt", action="store_true", help="the bare model without prompt")
    mode.add_argument("--oracle", action="store_true", help="the oracle agent (harness check)")
    parser.add_argument("--concurrency", type=int, default=1, help="problems run in parallel")
    parser.add_argument("--out", default=None, help="output directory (transcripts, result.json)")
    parser.add_argument("--upper-bound", default=None, help="result.json of the upper-bound run")
    parser.add_argument("--limit", type=int, default=None, help="only the first N problems")
    parser.add_argument("--rounds", type=int, default=8, help="round limit (AgentBench: 8)")
    parser.add_argument("--max-new-tokens", type=int, default=384)
    parser.add_argument("--backend", default="auto", choices=("auto", "docker", "namespace"))
    parser.add_argument("--image", default="genpi-os-default", help="Docker image (docker backend)")
    parser.add_argument("--network", action="store_true", help="give the sandbox the host network")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per command")


def _prompt_path(args: argparse.Namespace) -> Path | None:
    if args.prompt:
        return Path(args.prompt)
    guess = Path(args.data).resolve().parent / "prompts" / "os.json"
    return guess if guess.is_file() else None


def build_agent(args: argparse.Namespace):
    from genpi.osbench.agents import LLMAgent, OracleAgent

    if args.oracle:
        return OracleAgent()
    from genpi.llm import SamplingParams, load_backend
    from genpi.prompt import load_prompt

    prompt_path = _prompt_path(args)
    if args.adapter and not args.prompt:
        from genpi.adapter import read_adapter_prompt

        prompt = read_adapter_prompt(args.adapter)
    elif prompt_path is None:
        raise GenpiError(
            "no OS prompt found beside --data: pass --prompt PATH (AgentBench os.json)"
        )
    else:
        prompt = load_prompt(prompt_path)
    with_prompt = not (args.adapter or args.no_prompt)
    if with_prompt:
        from genpi.context import check_model_fits

        # Before the weights load and the sandboxes start: the agent reads the whole prompt.
        check_model_fits(prompt, args.model, reserve=args.max_new_tokens)
    backend = load_backend(args.model, adapter=args.adapter)
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=0.0)
    return LLMAgent(backend, prompt, with_prompt=with_prompt, params=params)


def main(args: argparse.Namespace) -> int:
    from genpi.osbench.agents import LLMAgent
    from genpi.osbench.runner import evaluate, read_upper_bound
    from genpi.osbench.sandbox import Limits, SandboxFactory
    from genpi.osbench.task import load_problems

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
    agent = build_agent(args)
    # Everything that changes a problem's outcome; a rerun with the same settings resumes (a
    # different --limit only picks other problems, so it is not a setting).
    config = {
        "data": str(Path(args.data).resolve()),
        "split": args.split,
        "adapter": args.adapter,
        "no_prompt": args.no_prompt,
        "sandbox": factory.describe(),
    }
    if isinstance(agent, LLMAgent):
        config["prompt"] = agent.prompt.fingerprint
        config["params"] = agent.params.to_dict()
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
