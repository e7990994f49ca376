"""Serving cost of a long fixed prompt vs its internalized adapter, through ``genpi serve``.

One server (the embedded model plus a LoRA adapter for the prompt) answers the same stream of
prompted requests three times per round: with routing off (``x-genpi-route: off``: the base model
reads the whole prompt, as a plain server would), with routing off and the prefix cache on (the
prompt's KV computed once and reused, as a vLLM server with automatic prefix caching does), and
routed to the adapter (the prompt dropped). The arms alternate within one run and the ratios are
reported side by side. The adapter has random weights (its answers mean nothing; its cost is a
trained one's), and ``ignore_eos`` makes every arm generate exactly ``--max-tokens`` tokens, so
only the prompt differs. Beside the timings: the KV cache a request holds at its last token and
the context each decoding step attends over, from the model's shape and the measured token counts
(prefix caching saves the prompt's prefill, not these).

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
    parser.add_argument(
        "--prefix-cache-mb",
        type=float,
        default=256,
        help="size of the prefix cache of the cached arm (genpi serve's default)",
    )
    parser.add_argument("--out", default=None, help="write the figures as JSON here too")
    args = parser.parse_args()

    import torch

    from genpi.adapter import make_random_adapter
    from genpi.profile.flops import ModelShape
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
            args.model,
            {"adapter": adapter},
            dtype=args.dtype,
            max_batch_size=args.max_batch_size,
            prefix_cache_bytes=int(args.prefix_cache_mb * 2**20),
        )
    engine = loaded.engine
    cache = engine.prefix_cache
    if cache is None:
        parser.error("--prefix-cache-mb must be above 0: the cached arm needs the cache")
    app = create_app(loaded, ServeConfig(served_name="base"))
    # arm -> (route header, prefix cache on). Between arms no request is in flight, so switching
    # the engine's cache on and off is safe; the cached arm keeps what its warm-up stored (the
    # prompt's KV), as a long-running prefix-caching server would have it.
    arms = {
        "prompted": ("off", False),
        "prompted+cache": ("off", True),
        "internalized": ("on", False),
    }
    figures: dict[str, list[dict]] = {arm: [] for arm in arms}

    def measure(arm: str, requests: list[list[dict]]) -> dict:
        route, cached = arms[arm]
        engine.prefix_cache = cache if cached else None
        return run_arm(server.url, "base", requests, args, route)

    with ServerThread(app) as server:
        for arm in arms:  # warm-up, not measured
            measure(arm, stream[: args.concurrency])
        hits_before = cache.hits
        for r in range(args.rounds):
            order = list(arms) if r % 2 == 0 else list(reversed(arms))
            for arm in order:
                figures[arm].append(measure(arm, stream))
        cache_hits = cache.hits - hits_before
    summary = {
        arm: {k: statistics.mean(f[k] for f in runs) for k in runs[0]}
        for arm, runs in figures.items()
    }
    weight = next(engine.model.parameters())
    kv_bytes_per_token = ModelShape.from_config(engine.model.config).kv_bytes(
        1, weight.element_size()
    )
    for f in summary.values():
        context = f["prompt_tokens_per_request"] + args.max_tokens
        f["kv_mib_per_request"] = context * kv_bytes_per_token / 2**20
        # the n-th new token attends over the prompt and the n-1 tokens before it
        f["context_per_decode_step"] = f["prompt_tokens_per_request"] + (args.max_tokens - 1) / 2
    a, c, b = summary["prompted"], summary["prompted+cache"], summary["internalized"]
    report = {
        "model": args.model,
        "prompt": prompt.name,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "max_tokens": args.max_tokens,
        "rounds": args.rounds,
        "dtype": str(weight.dtype),
        "threads": args.threads,
        "arms": summary,
        "prefix_cache_mb": args.prefix_cache_mb,
        "prefix_cache_hits": cache_hits,
        "kv_bytes_per_token": kv_bytes_per_token,
        "throughput_ratio": b["requests_per_s"] / a["requests_per_s"],
        "latency_p50_ratio": a["latency_p50_s"] / b["latency_p50_s"],
        "ttft_p50_ratio": a["ttft_p50_s"] / b["ttft_p50_s"],
        "vs_prefix_cached": {
            "throughput_ratio": b["requests_per_s"] / c["requests_per_s"],
            "latency_p50_ratio": c["latency_p50_s"] / b["latency_p50_s"],
            "ttft_p50_ratio": c["ttft_p50_s"] / b["ttft_p50_s"],
            "kv_memory_ratio": c["kv_mib_per_request"] / b["kv_mib_per_request"],
            "decode_context_ratio": c["context_per_decode_step"] / b["context_per_decode_step"],
        },
    }
    print(
        f"{args.model}, prompt {prompt.name!r}: {args.requests} requests x {args.max_tokens} tokens, "
        f"{args.concurrency} concurrent, {args.rounds} rounds, {report['dtype']}"
    )
    print(
        f"{'arm':<16}{'prompt tok':>11}{'req/s':>8}{'tok/s':>8}{'p50 s':>8}{'p95 s':>8}"
        f"{'TTFT p50':>10}{'KV MiB/req':>12}{'ctx/step':>10}"
    )
    for arm, f in summary.items():
        print(
            f"{arm:<16}{f['prompt_tokens_per_request']:>11.0f}{f['requests_per_s']:>8.2f}"
            f"{f['completion_tokens_per_s']:>8.1f}{f['latency_p50_s']:>8.2f}{f['latency_p95_s']:>8.2f}"
            f"{f['ttft_p50_s']:>10.2f}{f['kv_mib_per_request']:>12.2f}"
            f"{f['context_per_decode_step']:>10.0f}"
        )
    print(f"prefix cache hits in the measured rounds: {cache_hits}")
    print(
        f"internalized / prompted: throughput x{report['throughput_ratio']:.2f}, "
        f"p50 latency x{report['latency_p50_ratio']:.2f} faster, TTFT x{report['ttft_p50_ratio']:.2f} faster"
    )
    v = report["vs_prefix_cached"]
    print(
        f"internalized / prompted+cache: throughput x{v['throughput_ratio']:.2f}, "
        f"p50 latency x{v['latency_p50_ratio']:.2f} faster, TTFT x{v['ttft_p50_ratio']:.2f} faster, "
        f"KV per request x{v['kv_memory_ratio']:.2f} smaller, "
        f"context per decoding step x{v['decode_context_ratio']:.2f} shorter"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
