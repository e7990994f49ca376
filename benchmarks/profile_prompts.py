"""What internalizing AgentBench's three prompts saves on the embedded model, side by side.

For each prompt (OS, WebShop, Mind2Web from ../shared/agentbench/prompts), profiles a synthetic
multi-turn conversation with ``genpi.profile`` and reports the FLOPs the adapter saves against the
prompted model with the prompt pre-cached (the paper: 39% on WebShop with Llama-3-8B) and the
latency ratio, every setting timed in the same run (repeats interleaved). Without --adapter the
adapter is a random LoRA of the paper's shape (r=16, all linear layers): cost does not depend on
the weights' values.

Run as: PYTHONPATH=src nice python benchmarks/profile_prompts.py --turns 5 --user-tokens 100 --assistant-tokens 10 --repeats 3 --threads 1 --out runs/profile_prompts
(add --no-count on a busy CPU: FLOPs from the formula, which equals the count for this model)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "agentbench" / "prompts"
# Recomputing the prompt every turn and LLMLingua cost several times the rest on a CPU; add them
# with --settings when the machine is free.
DEFAULT_SETTINGS = "prompted_cache,adapter_unmerged,adapter_merged,no_prompt"
PROMPTS = ("webshop", "os", "mind2web")  # the paper's headline first


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts-dir", default=str(SHARED))
    parser.add_argument("--model", default=None, help="default: smollm2-135m")
    parser.add_argument("--adapter", default=None, help="one adapter for every prompt (cost only)")
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--user-tokens", type=int, default=100)
    parser.add_argument("--assistant-tokens", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument(
        "--settings",
        default=DEFAULT_SETTINGS,
        help="comma-separated settings (default: the paper's comparison; every setting is "
        "prompted_no_cache,prompted_cache,compressed_cache,adapter_unmerged,adapter_merged,no_prompt)",
    )
    parser.add_argument("--prompts", default=",".join(PROMPTS), help="which of the three, in order")
    parser.add_argument(
        "--no-count", action="store_true", help="FLOPs from the analytic formula only"
    )
    parser.add_argument("--out", default="runs/profile_prompts")
    args = parser.parse_args()

    prompts_dir = Path(args.prompts_dir)
    if not prompts_dir.is_dir():
        print(
            f"AgentBench prompts not found at {prompts_dir} (../shared beside the checkout)",
            file=sys.stderr,
        )
        return 2
    import logging

    import torch

    from genpi.models import load_model
    from genpi.profile.conversation import synthetic_conversation
    from genpi.profile.measure import profile
    from genpi.profile.report import format_table, write_plots
    from genpi.prompt import load_prompt

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.model, dtype=args.dtype, device="cpu")
    conversation = synthetic_conversation(
        tokenizer, args.turns, args.user_tokens, args.assistant_tokens
    )
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    out = Path(args.out)
    rows = []
    for name in args.prompts.split(","):
        prompt = load_prompt(prompts_dir / f"{name}.json")
        start = time.perf_counter()
        report = profile(
            prompt,
            conversation,
            model,
            tokenizer,
            adapter=args.adapter,
            repeats=args.repeats,
            settings=settings,
            count=not args.no_count,
        )
        report["prompt"] = {"name": name, "fingerprint": prompt.fingerprint}
        report["model"] = model.genpi_ref.provenance
        report["command"] = " ".join(sys.argv)
        (out / name).mkdir(parents=True, exist_ok=True)
        (out / name / "profile.json").write_text(json.dumps(report, indent=2) + "\n")
        write_plots(report, out / name)
        print(
            f"\n## {name} ({time.perf_counter() - start:.0f} s)\n{format_table(report)}", flush=True
        )
        cmp = report["comparison"]
        rows.append((name, report["conversation"]["prompt_tokens"], cmp))

    def pct(entry: dict, key: str) -> str:
        return f"{entry[key] * 100:.1f}%" if key in entry else "-"

    def ratio(entry: dict, key: str) -> str:
        return f"{entry[key]:.2f}" if key in entry else "-"

    print(
        "\n| prompt | prompt tokens | FLOPs saved, merged | incl. pre-caching | FLOPs saved, unmerged "
        "| latency merged / prompted | unmerged / prompted | no cache / prompted |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, tokens, cmp in rows:
        merged, unmerged = cmp.get("adapter_merged", {}), cmp.get("adapter_unmerged", {})
        print(
            f"| {name} | {tokens} | {pct(merged, 'flops_saved')} | {pct(merged, 'flops_saved_vs_incl_precache')} "
            f"| {pct(unmerged, 'flops_saved')} | {ratio(merged, 'latency_ratio')} "
            f"| {ratio(unmerged, 'latency_ratio')} | {ratio(cmp.get('prompted_no_cache', {}), 'latency_ratio')} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
