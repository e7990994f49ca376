"""``genpi internalize``: synthesis -> training -> evaluation -> comparison, resuming what is done.

Run as: genpi internalize examples/shell_agent.json --out runs/demo --preset quick

Each stage is the same code as its own verb (``genpi synth``, ``genpi train``, ``genpi eval``,
``genpi compare``); this recipe only wires them. Every stage resumes: synthesis skips finished
records, training resumes from its last checkpoint or returns a finished adapter as is, and
evaluation reuses answers already generated for the same system and inputs.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genpi.errors import GenpiError

DEFAULT_METHODS = ("genpi", "sft")


@dataclass
class Preset:
    """What a preset changes in each stage's config (everything else: that stage's defaults)."""

    synth: dict[str, Any] = field(default_factory=dict)
    train_preset: str = "paper"
    train: dict[str, Any] = field(default_factory=dict)
    methods: tuple[str, ...] = DEFAULT_METHODS
    eval_max_new_tokens: int = 256
    compression: tuple[float, ...] = (0.9, 0.7, 0.3)


PRESETS: dict[str, Preset] = {
    # The paper's settings: 1,000 inputs, 10 epochs, every baseline the paper compares.
    "paper": Preset(methods=("genpi", "sft", "prepend", "kld")),
    # The CPU demo (make demo): small counts so the whole run fits in ~15 minutes on 2 cores.
    "quick": Preset(
        synth={
            "n": 16,
            "heldout_fraction": 0.25,
            "max_turns": 2,
            "agent_max_new_tokens": 64,
            "env_max_new_tokens": 48,
            "output_max_new_tokens": 64,
            "reason_max_new_tokens": 64,
        },
        train_preset="quick",
        train={"max_steps": 12},
        methods=("genpi", "sft"),
        eval_max_new_tokens=64,
        compression=(0.5,),
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help="prompt file to internalize (text, JSON or YAML)")
    parser.add_argument("--out", required=True, help="run directory (resumed when it exists)")
    parser.add_argument("--model", default=None, help="target model (default: smollm2-135m)")
    parser.add_argument(
        "--generator", default=None, help="model that writes inputs and reasons (default: --model)"
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="paper")
    parser.add_argument(
        "--methods",
        default=None,
        help="comma-separated training methods (see `genpi train --help`)",
    )
    parser.add_argument("--n", type=int, default=None, help="number of pseudo inputs")
    parser.add_argument("--max-turns", type=int, default=None, help="agent turns per conversation")
    parser.add_argument(
        "--max-new-tokens", type=int, default=None, help="cap on every generation (synthesis, eval)"
    )
    parser.add_argument("--max-steps", type=int, default=None, help="optimizer steps per method")
    parser.add_argument(
        "--seed-inputs", default=None, help="example inputs shown to the generator (one per line)"
    )
    parser.add_argument(
        "--inputs-file",
        default=None,
        help="inputs to train on, used before the generator writes more (one per line or JSONL)",
    )
    parser.add_argument(
        "--eval-inputs",
        default=None,
        help="also evaluate on this file of real inputs (e.g. dev.json)",
    )
    parser.add_argument(
        "--compression",
        default=None,
        help="LLMLingua rates for the text-compression baseline, comma-separated; 'none' to skip",
    )
    parser.add_argument(
        "--force", action="store_true", help="reuse a run dir made for another prompt"
    )


def _methods(args: argparse.Namespace, preset: Preset) -> list[str]:
    from genpi.train.methods import get_method

    methods = [m.strip() for m in args.methods.split(",")] if args.methods else list(preset.methods)
    for m in methods:
        get_method(m)  # unknown names fail here, before hours of synthesis
    return methods


def _compression(args: argparse.Namespace, preset: Preset) -> list[float]:
    if args.compression is None:
        return list(preset.compression)
    if args.compression.strip().lower() == "none":
        return []
    try:
        return [float(x) for x in args.compression.split(",") if x.strip()]
    except ValueError:
        raise GenpiError(
            f"--compression takes rates like 0.9,0.7,0.3, not {args.compression!r}"
        ) from None


def main(args: argparse.Namespace) -> int:
    from genpi.data import load_examples
    from genpi.evaluate.cli import evaluate, format_summary
    from genpi.evaluate.compare import compare
    from genpi.llm import load_backend
    from genpi.models import DEFAULT_MODEL
    from genpi.prompt import load_prompt
    from genpi.synth.cli import backend_name, check_context
    from genpi.synth.config import SynthConfig
    from genpi.synth.inputs import read_seed_inputs
    from genpi.synth.pipeline import synthesize
    from genpi.train import make_config, train

    preset = PRESETS[args.preset]
    prompt = load_prompt(args.prompt)
    methods = _methods(args, preset)
    rates = _compression(args, preset)
    model_ref = args.model or DEFAULT_MODEL
    generator_ref = args.generator or model_ref
    out = Path(args.out)
    started = time.monotonic()

    def stage(title: str) -> None:
        print(f"\n== {title} ({time.monotonic() - started:.0f} s)", flush=True)

    stage(f"1/4 synthesis: {prompt.name!r} on {model_ref}")
    synth_settings = dict(preset.synth)
    for key in ("n", "max_turns"):
        if getattr(args, key) is not None:
            synth_settings[key] = getattr(args, key)
    if args.max_new_tokens is not None:
        for key in ("agent", "env", "output", "reason"):
            synth_settings[f"{key}_max_new_tokens"] = args.max_new_tokens
    synth_config = SynthConfig.preset(args.preset, **synth_settings)
    # Before hours of work: a prompt the target model (or a local generator) cannot hold.
    check_context(prompt, model_ref, generator_ref, synth_config, model=True, generator=True)
    model_backend = load_backend(model_ref)
    generator_backend = model_backend if generator_ref == model_ref else load_backend(generator_ref)
    synthesize(
        prompt,
        out,
        model_backend=model_backend,
        generator_backend=generator_backend,
        config=synth_config,
        force=args.force,
        seed_inputs=read_seed_inputs(args.seed_inputs) if args.seed_inputs else None,
        given_inputs=read_seed_inputs(args.inputs_file) if args.inputs_file else None,
        # Recorded as `genpi synth` records them, so either command resumes the other's run.
        model_name=backend_name(model_ref),
        generator_name=backend_name(generator_ref),
        print_report=True,
    )
    del model_backend, generator_backend  # free the weights before training loads its own copy
    # Checked before training, which can take hours, not after it.
    heldout = bool(load_examples(out, split="heldout"))
    if not heldout and not args.eval_inputs:
        raise GenpiError(
            f"{out} has no held-out inputs to evaluate on (the split kept none of {synth_config.n}): "
            "give --eval-inputs FILE, a larger --n, or a larger heldout_fraction"
        )

    adapters = []
    for i, method in enumerate(methods, 1):
        stage(f"2/4 training {i}/{len(methods)}: {method}")
        overrides = dict(preset.train)
        if args.max_steps is not None:
            overrides["max_steps"] = args.max_steps
        config = make_config(preset.train_preset, **overrides)
        adapters.append(train(out, method, config, model_ref=model_ref))

    sets = ["held-out inputs"] * heldout + [str(args.eval_inputs)] * bool(args.eval_inputs)
    stage(f"3/4 evaluation: {' and '.join(sets)}")
    summaries = evaluate(
        out,
        prompt=prompt,
        model=model_ref,
        adapters=adapters,
        inputs=args.eval_inputs,
        heldout=heldout,
        compression=rates,
        max_new_tokens=args.max_new_tokens or preset.eval_max_new_tokens,
    )
    for summary in summaries:
        print(format_summary(summary))

    stage("4/4 comparison")
    print(compare(out))
    print(f"\ndone in {time.monotonic() - started:.0f} s; everything is in {out}/")
    return 0
