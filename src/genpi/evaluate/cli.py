"""``genpi eval``: every system's greedy answers on held-out inputs, scored against the teacher.

Run as: genpi eval RUN_DIR [--prompt P] [--model M] [--adapters DIR,...] [--inputs FILE]
        [--heldout] [--multi-turn] [--compression 0.9,0.7,0.3] [--limit N]

Reads the run directory with ``genpi.evaluate.inputs`` and evaluates with ``genpi.evaluate.run``;
this module only parses the arguments.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from genpi.evaluate.run import evaluate, format_summary


def _rates(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--compression takes rates like 0.9,0.7,0.3, not {text!r}"
        ) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_dir", help="the run directory (adapters in RUN_DIR/adapters, results in RUN_DIR/eval)"
    )
    parser.add_argument("--prompt", help="prompt file (default: RUN_DIR/prompt.json)")
    parser.add_argument(
        "--model",
        help="base model reference (default: the adapters' base model, else smollm2-135m)",
    )
    parser.add_argument(
        "--adapters",
        help="comma-separated adapter directories (default: all of RUN_DIR/adapters/*); "
        "'none' for none",
    )
    parser.add_argument(
        "--inputs",
        help="a file of real inputs: one a line, JSONL/JSON with 'input' or "
        "'description' (e.g. AgentBench's os_interaction/data/dev.json)",
    )
    parser.add_argument(
        "--name", help="name of the --inputs evaluation set (default: the file's stem)"
    )
    parser.add_argument(
        "--heldout",
        action="store_true",
        help="also evaluate the run's held-out synthesized inputs "
        "(the default when no --inputs is given)",
    )
    parser.add_argument(
        "--multi-turn",
        action="store_true",
        help="replay the held-out role-played conversations and score every agent turn",
    )
    parser.add_argument(
        "--compression",
        type=_rates,
        default=[],
        metavar="RATES",
        help="add the LLMLingua-compressed prompt at these rates (e.g. 0.9,0.7,0.3)",
    )
    parser.add_argument("--limit", type=int, help="evaluate only the first N items of each set")
    parser.add_argument(
        "--max-new-tokens", type=int, default=256, help="answer length limit (default 256)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=8, help="generation batch size (default 8)"
    )
    parser.add_argument("--dtype", default="auto", help="auto, bf16 or fp32 (default auto)")
    parser.add_argument("--device", help="cpu or cuda (default: the best available)")


def main(args: argparse.Namespace) -> int:
    adapters: list[str] | None = None
    if args.adapters:
        adapters = [] if args.adapters == "none" else [a for a in args.adapters.split(",") if a]
    start = time.perf_counter()
    summaries = evaluate(
        args.run_dir,
        prompt=args.prompt,
        model=args.model,
        adapters=adapters,
        inputs=args.inputs,
        heldout=True if args.heldout else None,
        multi_turn=args.multi_turn,
        compression=args.compression,
        limit=args.limit,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        dtype=args.dtype,
        device=args.device,
        set_name=args.name,
    )
    for summary in summaries:
        print(format_summary(summary))
        print()
    print(
        f"wrote {Path(args.run_dir) / 'eval'} in {time.perf_counter() - start:.0f} s "
        "(scores: raw(normalised by the upper bound))"
    )
    return 0
