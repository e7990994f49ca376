"""Generated tokens/s of the local backend: shared-prefix batches vs today's batched path (the
prompt recomputed in every row) vs one-at-a-time ``model.generate``.

Run as: .venv/bin/python benchmarks/generation.py [--model smollm2-135m] [--n 16] [--max-new-tokens 64]

All paths run the same prompts (AgentBench's OS dev problems with the OS prompt when ../shared is
there, else the example prompt's inputs) with greedy decoding, one after the other, each in a
fresh process of its own so that its peak resident memory is its own; the ratios are what to
read, not the absolute numbers. It also counts how many replies of each path are identical to the
one-at-a-time replies (in bf16, another batch layout rounds differently and can flip a near-tie).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from genpi.llm import SamplingParams
from genpi.llm.local import LocalBackend
from genpi.prompt import load_prompt

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "agentbench"
MODES = ("shared-prefix", "batched", "one-at-a-time")


def workload(n: int) -> tuple[list, str]:
    if (SHARED / "prompts" / "os.json").exists():
        prompt = load_prompt(SHARED / "prompts" / "os.json")
        inputs = [
            p["description"]
            for p in json.loads((SHARED / "os_interaction/data/dev.json").read_text())
        ]
        source = "AgentBench OS prompt, dev problems"
    else:
        prompt = load_prompt(ROOT / "examples" / "shell_agent.json")
        inputs = (ROOT / "examples" / "shell_agent_inputs.txt").read_text().splitlines()
        source = "examples/shell_agent.json"
    inputs = (inputs * (n // len(inputs) + 1))[:n]
    return [prompt.teacher_messages(x) for x in inputs], source


def run_mode(args: argparse.Namespace) -> None:
    """One path, in this process: print a JSON line with its figures."""
    backend = LocalBackend.from_ref(args.model, batch_size=args.batch_size)
    if args.mode != "shared-prefix":
        backend.min_shared_prefix = None
    conversations, source = workload(args.n)
    params = SamplingParams(max_new_tokens=args.max_new_tokens)
    backend.generate(conversations[:2], SamplingParams(max_new_tokens=4))  # warm-up
    t0 = time.perf_counter()
    if args.mode == "one-at-a-time":
        gens = [backend.generate([c], params)[0] for c in conversations]
    else:
        gens = backend.generate(conversations, params)
    seconds = time.perf_counter() - t0
    record = {
        "mode": args.mode,
        "source": source,
        "dtype": str(backend.model.dtype),
        "seconds": seconds,
        "tokens": sum(g.completion_tokens for g in gens),
        "texts": [g.text for g in gens],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps(record))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--mode", choices=MODES, help="run one path only (used internally)")
    args = parser.parse_args()
    if args.mode:
        run_mode(args)
        return

    results = {}
    for mode in MODES:
        cmd = [sys.executable, __file__, "--mode", mode, "--model", args.model, "--n", str(args.n)]
        cmd += ["--max-new-tokens", str(args.max_new_tokens), "--batch-size", str(args.batch_size)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results[mode] = json.loads(out.strip().splitlines()[-1])
    first = results["shared-prefix"]
    print(
        f"workload: {args.n} prompts ({first['source']}), model {args.model}, greedy, "
        f"max_new_tokens {args.max_new_tokens}, batch size {args.batch_size}, dtype {first['dtype']}"
    )
    reference = results["one-at-a-time"]["texts"]
    rate = {m: r["tokens"] / r["seconds"] for m, r in results.items()}
    for mode, r in results.items():
        same = sum(a == b for a, b in zip(r["texts"], reference, strict=True))
        print(
            f"{mode:14s}: {r['tokens']:6d} tokens in {r['seconds']:7.1f} s = {rate[mode]:7.1f} tok/s,"
            f" peak RSS {r['peak_rss_mb']:6.0f} MB, {same}/{len(reference)} replies as one-at-a-time"
        )
    print(f"speed-up shared-prefix / batched      : {rate['shared-prefix'] / rate['batched']:.2f}x")
    print(
        f"speed-up shared-prefix / one at a time: {rate['shared-prefix'] / rate['one-at-a-time']:.2f}x"
    )
    print(f"speed-up batched / one at a time      : {rate['batched'] / rate['one-at-a-time']:.2f}x")


if __name__ == "__main__":
    main()
