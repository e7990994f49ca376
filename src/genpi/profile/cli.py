"""``genpi profile``: FLOPs, MACs, latency and KV-cache bytes per turn, with and without the prompt.

Run as: genpi profile --prompt ../shared/agentbench/prompts/webshop.json --turns 5 --out runs/profile
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from genpi.errors import GenpiError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt", required=True, help="prompt file (text, JSON or YAML)")
    parser.add_argument("--model", default=None, help="model reference (default: smollm2-135m)")
    parser.add_argument(
        "--adapter",
        default=None,
        help="adapter directory; without it a random LoRA of --lora-rank on all linear layers "
        "(the cost does not depend on the weights' values)",
    )
    parser.add_argument(
        "--lora-rank", type=int, default=16, help="rank of the random LoRA (paper: 16)"
    )
    parser.add_argument(
        "--conversation",
        default=None,
        help="a run directory (its role-played conversations) or a JSON transcript "
        "(list of {role, content}, starting with the user's task input); default: synthetic",
    )
    parser.add_argument("--example", default=None, help="id of the run directory's conversation")
    parser.add_argument("--turns", type=int, default=5, help="turns to profile (default 5)")
    parser.add_argument(
        "--user-tokens", type=int, default=100, help="synthetic: tokens per user message"
    )
    parser.add_argument(
        "--assistant-tokens", type=int, default=50, help="synthetic: tokens per answer"
    )
    parser.add_argument(
        "--compress-rate", type=float, default=0.5, help="LLMLingua rate (kept fraction)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="latency repeats, median reported (0: no timing)"
    )
    parser.add_argument(
        "--latency-attention",
        default="sdpa",
        choices=["sdpa", "eager"],
        help="attention kernel when timing (FLOPs are always counted with eager attention)",
    )
    parser.add_argument(
        "--no-count",
        action="store_true",
        help="FLOPs from the analytic formula only, no counting passes (fast on a busy CPU; "
        "equal to the count for Llama-family models)",
    )
    parser.add_argument("--settings", default=None, help="comma-separated subset of the settings")
    parser.add_argument(
        "--dtype", default="auto", help="auto, fp32, bf16 (changes latency and KV bytes)"
    )
    parser.add_argument("--device", default=None, help="cpu, cuda (default: best available)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--out", default=None, help="directory for profile.json and the plots")


def main(args: argparse.Namespace) -> int:
    from genpi.models import load_model
    from genpi.profile.conversation import load_conversation, synthetic_conversation
    from genpi.profile.measure import profile
    from genpi.profile.report import format_table, write_plots
    from genpi.prompt import load_prompt

    if args.turns < 1:
        raise GenpiError("--turns must be at least 1")
    if args.repeats < 0:
        raise GenpiError("--repeats must be 0 (no timing) or more")
    if not 0 < args.compress_rate <= 1:
        raise GenpiError(
            "--compress-rate is the fraction of the prompt kept: give a number in (0, 1]"
        )
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    prompt = load_prompt(args.prompt)
    from genpi.context import check_model_fits

    # The prompted settings hold the prompt and every turn; a synthetic conversation's size is
    # known now, a loaded one's only after the tokenizer reads it (the prompt alone is checked).
    turns = 0 if args.conversation else args.turns * (args.user_tokens + args.assistant_tokens)
    check_model_fits(prompt, args.model, reserve=turns)
    model, tokenizer = load_model(args.model, dtype=args.dtype, device=args.device)
    if args.conversation:
        conversation = load_conversation(args.conversation, args.example).truncated(args.turns)
    else:
        conversation = synthetic_conversation(
            tokenizer, args.turns, args.user_tokens, args.assistant_tokens
        )
    settings = [s.strip() for s in args.settings.split(",") if s.strip()] if args.settings else None
    report = profile(
        prompt,
        conversation,
        model,
        tokenizer,
        adapter=args.adapter,
        lora_rank=args.lora_rank,
        compress_rate=args.compress_rate,
        repeats=args.repeats,
        latency_attention=args.latency_attention,
        settings=settings,
        count=not args.no_count,
    )
    report["prompt"] = {
        "name": prompt.name,
        "path": str(args.prompt),
        "fingerprint": prompt.fingerprint,
    }
    report["model"] = model.genpi_ref.provenance
    print(format_table(report))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "profile.json").write_text(json.dumps(report, indent=2) + "\n")
        plots = write_plots(report, out)
        print(f"wrote {out / 'profile.json'}, " + ", ".join(str(p) for p in plots))
    return 0
