"""Synthesis end to end, all four stages: shared-prefix generation vs today's batched path.

The same synthesis (``genpi synth``'s preset, the embedded model as target and generator) runs
twice, each in a fresh process of its own: once with the local backend running the prompt that
the conversations of a call share once (the default), once with that turned off (today's batched
path, where every row recomputes the prompt). Prints each stage's wall time, the tokens it
generated and the process's peak resident memory, then the ratios. With greedy stages the two
runs can still part ways: in bf16 another batch layout rounds differently and can flip a
near-tie, after which the conversations differ; the token counts show how far.

Run as: python benchmarks/synthesis.py [--prompt ../shared/agentbench/prompts/os.json] [--preset quick]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = ("shared-prefix", "batched")
STAGES = ("inputs", "conversations", "outputs", "reasons")


def run_mode(args: argparse.Namespace) -> None:
    """One synthesis in this process; prints a JSON line with per-stage seconds and tokens."""
    from genpi.llm.local import LocalBackend
    from genpi.prompt import load_prompt
    from genpi.synth.config import SynthConfig
    from genpi.synth.conversations import run_conversations
    from genpi.synth.inputs import run_inputs
    from genpi.synth.outputs import run_outputs
    from genpi.synth.pipeline import open_run
    from genpi.synth.reasons import run_reasons

    prompt = load_prompt(args.prompt)
    backend = LocalBackend.from_ref(args.model)
    if args.mode == "batched":
        backend.min_shared_prefix = None
    overrides = {"progress": False} | ({"n": args.n} if args.n else {})
    config = SynthConfig.preset(args.preset, **overrides)
    run = open_run(
        prompt, args.out, model_name=backend.name, generator_name=backend.name, config=config
    )
    stages = {
        "inputs": lambda: run_inputs(run, backend, config, model=backend),
        "conversations": lambda: run_conversations(run, backend, config),
        "outputs": lambda: run_outputs(run, backend, config),
        "reasons": lambda: run_reasons(run, backend, config),
    }
    record: dict = {"mode": args.mode, "seconds": {}, "tokens": {}}
    for name, stage in stages.items():
        start = time.perf_counter()
        stats = stage()
        record["seconds"][name] = time.perf_counter() - start
        record["tokens"][name] = stats.get("completion_tokens", 0)
    record["records"] = len(run.read("reasons"))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    record["peak_rss_mb"] = usage.ru_maxrss / 1024
    record["cpu_s"] = usage.ru_utime + usage.ru_stime  # less sensitive to a busy machine
    print(json.dumps(record))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", default=str(ROOT.parent / "shared/agentbench/prompts/os.json"))
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--preset", default="quick", choices=("quick", "paper"))
    parser.add_argument("--n", type=int, default=None, help="inputs (default: the preset's)")
    parser.add_argument("--mode", choices=MODES, help="run one path only (used internally)")
    parser.add_argument("--out", default=None, help="run directory (used internally)")
    args = parser.parse_args()
    if args.mode:
        run_mode(args)
        return

    results = {}
    with tempfile.TemporaryDirectory(prefix="genpi-synth-bench-") as work:
        for mode in MODES:
            cmd = [sys.executable, __file__, "--mode", mode, "--prompt", args.prompt]
            cmd += ["--model", args.model, "--preset", args.preset, "--out", f"{work}/{mode}"]
            cmd += ["--n", str(args.n)] if args.n else []
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            results[mode] = json.loads(out.strip().splitlines()[-1])
    print(f"prompt {args.prompt}, model {args.model}, preset {args.preset}, n {args.n or 'preset'}")
    for mode, r in results.items():
        total = sum(r["seconds"].values())
        per_stage = ", ".join(f"{s} {r['seconds'][s]:.0f} s/{r['tokens'][s]} tok" for s in STAGES)
        print(
            f"{mode:13s}: {total:6.0f} s ({per_stage}); {r['records']} records; "
            f"CPU {r['cpu_s']:.0f} s; peak RSS {r['peak_rss_mb']:.0f} MB"
        )
    shared, today = results["shared-prefix"], results["batched"]
    for stage in STAGES:
        print(f"speed-up {stage:13s}: {today['seconds'][stage] / shared['seconds'][stage]:.2f}x")
    ratio = sum(today["seconds"].values()) / sum(shared["seconds"].values())
    print(
        f"speed-up end to end   : {ratio:.2f}x (CPU seconds: {today['cpu_s'] / shared['cpu_s']:.2f}x)"
    )


if __name__ == "__main__":
    main()
