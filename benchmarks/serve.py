"""Serving cost of a long fixed prompt vs its internalized adapter, through ``genpi serve``.

One server (the embedded model plus a LoRA adapter for the prompt) answers the same stream of
prompted requests twice per round: once with routing off (``x-genpi-route: off``: the base model
reads the whole prompt, as a plain server would) and once routed to the adapter (the prompt
dropped). The arms alternate within one run and the ratio is reported side by side. The adapter has
random weights (its answers mean nothing; its cost is a trained one's), and ``ignore_eos`` makes
both arms generate exactly ``--max-tokens`` tokens, so only the prompt differs.

Run as: PYTHONPATH=src python benchmarks/serve.py --requests 16 --concurrency 8 --max-tokens 16
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run_arm(url: str, model: str, conversations: list[list[dict]], args, route: str) -> dict:
    import httpx

    def one(messages: list[dict]) -> tuple[float, float, int, int]:
        body = {
            "model": model,
            "messages": messages,
            "max_tokens": args.max_tokens,
            "temperature": 0,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        t0 = time.perf_counter()
        first = None
        usage = {}
        with httpx.stream(
            "POST",
            f"{url}/v1/chat/completions",
            json=body,
            headers={"x-genpi-route": route},
            timeout=600,
        ) as r:
            r.raise_for_status()
            for line in r.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if (
                    chunk["choices"]
                    and chunk["choices"][0]["delta"].get("content")
                    and first is None
                ):
                    first = time.perf_counter() - t0
                usage = chunk.get("usage") or usage
        return (
            time.perf_counter() - t0,
            first or 0.0,
            usage["prompt_tokens"],
            usage["completion_tokens"],
        )

    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.concurrency) as pool:
        results = list(pool.map(one, conversations))
    wall = time.perf_counter() - t0
    latencies = [r[0] for r in results]
    ttft = [r[1] for r in results]
    return {
        "wall_s": wall,
        "requests_per_s": len(results) / wall,
        "completion_tokens_per_s": sum(r[3] for r in results) / wall,
        "latency_p50_s": statistics.median(latencies),
        "latency_p95_s": percentile(latencies, 0.95),
        "ttft_p50_s": statistics.median(ttft),
        "prompt_tokens_per_request": statistics.mean(r[2] for r in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompt", default=str(ROOT / "examples" / "shell_agent.json"))
    parser.add_argument("--inputs", default=str(ROOT / "examples" / "shell_agent_inputs.txt"))
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="A/B rounds, alternating the arms")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: on a shared CPU, 2 threads measured up to 6x slower per step)",
    )
    parser.add_argument("--out", default=None, help="write the figures as JSON here too")
    args = parser.parse_args()

    import torch

    from genpi.adapter import make_random_adapter
    from genpi.prompt import load_prompt
    from genpi.serve.engine import load_engine
    from genpi.serve.server import ServeConfig, create_app
    from genpi.serve.testing import ServerThread

    torch.set_num_threads(args.threads)
    prompt = load_prompt(args.prompt)
    inputs = [x.strip() for x in Path(args.inputs).read_text().splitlines() if x.strip()]
    stream = [prompt.teacher_messages(inputs[i % len(inputs)]) for i in range(args.requests)]
    with tempfile.TemporaryDirectory() as tmp:
        adapter = make_random_adapter(args.model, prompt, Path(tmp) / "adapter", rank=16)
        loaded = load_engine(
            args.model, {"adapter": adapter}, dtype=args.dtype, max_batch_size=args.max_batch_size
        )
    app = create_app(loaded, ServeConfig(served_name="base"))
    arms = {"prompted": "off", "internalized": "on"}
    figures: dict[str, list[dict]] = {arm: [] for arm in arms}
    with ServerThread(app) as server:
        for route in arms.values():  # warm-up, not measured
            run_arm(server.url, "base", stream[: args.concurrency], args, route)
        for r in range(args.rounds):
            order = list(arms.items()) if r % 2 == 0 else list(reversed(arms.items()))
            for arm, route in order:
                figures[arm].append(run_arm(server.url, "base", stream, args, route))
    summary = {
        arm: {k: statistics.mean(f[k] for f in runs) for k in runs[0]}
        for arm, runs in figures.items()
    }
    a, b = summary["prompted"], summary["internalized"]
    report = {
        "model": args.model,
        "prompt": prompt.name,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "max_tokens": args.max_tokens,
        "rounds": args.rounds,
        "dtype": str(next(loaded.engine.model.parameters()).dtype),
        "threads": args.threads,
        "arms": summary,
        "throughput_ratio": b["requests_per_s"] / a["requests_per_s"],
        "latency_p50_ratio": a["latency_p50_s"] / b["latency_p50_s"],
        "ttft_p50_ratio": a["ttft_p50_s"] / b["ttft_p50_s"],
    }
    print(
        f"{args.model}, prompt {prompt.name!r}: {args.requests} requests x {args.max_tokens} tokens, "
        f"{args.concurrency} concurrent, {args.rounds} rounds, {report['dtype']}"
    )
    print(
        f"{'arm':<14}{'prompt tok':>11}{'req/s':>8}{'tok/s':>8}{'p50 s':>8}{'p95 s':>8}{'TTFT p50':>10}"
    )
    for arm, f in summary.items():
        print(
            f"{arm:<14}{f['prompt_tokens_per_request']:>11.0f}{f['requests_per_s']:>8.2f}"
            f"{f['completion_tokens_per_s']:>8.1f}{f['latency_p50_s']:>8.2f}{f['latency_p95_s']:>8.2f}"
            f"{f['ttft_p50_s']:>10.2f}"
        )
    print(
        f"internalized / prompted: throughput x{report['throughput_ratio']:.2f}, "
        f"p50 latency x{report['latency_p50_ratio']:.2f} faster, TTFT x{report['ttft_p50_ratio']:.2f} faster"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
