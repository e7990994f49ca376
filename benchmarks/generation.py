"""Generated tokens/s of the batched local backend vs one-at-a-time ``model.generate``.

Run as: .venv/bin/python benchmarks/generation.py [--model smollm2-135m] [--n 32] [--max-new-tokens 64]

Both sides run on the same model object, the same 32 prompts (AgentBench's OS dev problems with
the OS prompt when ../shared is there, else the example prompt's inputs) and greedy decoding, in
one process, one after the other; the ratio is what to read, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from genpi.llm import SamplingParams
from genpi.llm.local import LocalBackend
from genpi.prompt import load_prompt

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "agentbench"


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


def one_at_a_time(backend: LocalBackend, conversations: list, max_new_tokens: int) -> int:
    import torch

    total = 0
    for conv in conversations:
        ids = torch.tensor([backend.encode(conv)])
        with torch.inference_mode():
            out = backend.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=backend.tokenizer.pad_token_id,
            )
        new = out[0, ids.shape[1] :].tolist()
        eos = backend.tokenizer.eos_token_id
        total += new.index(eos) if eos in new else len(new)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    backend = LocalBackend.from_ref(args.model, batch_size=args.batch_size)
    conversations, source = workload(args.n)
    backend.generate(conversations[:2], SamplingParams(max_new_tokens=4))  # warm-up

    t0 = time.perf_counter()
    gens = backend.generate(conversations, SamplingParams(max_new_tokens=args.max_new_tokens))
    batched_s = time.perf_counter() - t0
    batched_tokens = sum(g.completion_tokens for g in gens)

    t0 = time.perf_counter()
    single_tokens = one_at_a_time(backend, conversations, args.max_new_tokens)
    single_s = time.perf_counter() - t0

    batched_rate, single_rate = batched_tokens / batched_s, single_tokens / single_s
    print(
        f"workload: {args.n} prompts ({source}), model {args.model}, greedy, "
        f"max_new_tokens {args.max_new_tokens}, batch size {args.batch_size}, dtype {backend.model.dtype}"
    )
    print(
        f"batched backend : {batched_tokens:6d} tokens in {batched_s:7.1f} s = {batched_rate:7.1f} tok/s"
    )
    print(
        f"one at a time   : {single_tokens:6d} tokens in {single_s:7.1f} s = {single_rate:7.1f} tok/s"
    )
    print(f"speed-up (batched / one at a time): {batched_rate / single_rate:.2f}x")


if __name__ == "__main__":
    main()
