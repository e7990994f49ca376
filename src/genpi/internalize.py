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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genpi.errors import GenpiError

DEFAULT_METHODS = ("genpi", "sft")


@dataclass
class Preset:
    """A preset of the whole recipe: one named preset per stage (each stage defines its presets
    once: ``genpi.synth.config.PRESETS``, ``genpi.train.config.PRESETS``), plus what only this
    recipe decides: which methods to train, the evaluation's generation cap, the compression
    rates."""

    synth_preset: str = "paper"
    train_preset: str = "paper"
    methods: tuple[str, ...] = DEFAULT_METHODS
    eval_max_new_tokens: int = 256
    compression: tuple[float, ...] = (0.9, 0.7, 0.3)


PRESETS: dict[str, Preset] = {
    # The paper's settings: 1,000 inputs, 10 epochs, every baseline the paper compares.
    "paper": Preset(methods=("genpi", "sft", "prepend", "kld")),
    # The CPU demo (make demo): small counts so the whole run fits in ~15 minutes on 2 cores.
    "quick": Preset(
        synth_preset="demo",
        train_preset="demo",
        methods=("genpi", "sft"),
        eval_max_new_tokens=64,
        compression=(0.5,),
    ),
    # Between quick and paper: one prompt's three main methods in about an hour on 2 cores
    # (30 optimizer steps of 4 examples each, 96-token generations; README's cross-prompt table).
    "cpu": Preset(
        synth_preset="cpu",
        train_preset="quick",
        methods=("genpi", "sft", "kld"),
        eval_max_new_tokens=96,
        compression=(0.5,),
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser)
    parser.add_argument(
        "--methods",
        default=None,
        help="comma-separated training methods (see `genpi train --help`)",
    )


def add_run_arguments(parser: argparse.ArgumentParser, compression_default: str = "") -> None:
    """The flags of one run directory's recipe (models, preset, counts, seeds, inputs, the
    bill), shared by ``genpi internalize`` and ``genpi grid``; ``compression_default`` names the
    rates used when --compression is not given. The synthesis flags are genpi synth's own."""
    from genpi.synth.cli import add_input_arguments, add_setting_arguments

    parser.add_argument("prompt", help="prompt file to internalize (text, JSON or YAML)")
    parser.add_argument("--out", required=True, help="run directory (resumed when it exists)")
    parser.add_argument("--model", default=None, help="target model (default: smollm2-135m)")
    parser.add_argument(
        "--generator", default=None, help="model that writes inputs and reasons (default: --model)"
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="paper")
    add_setting_arguments(
        parser,
        (
            "n",
            "max_turns",
            "heldout_fraction",
            "input_style",
            "input_temperature",
            "max_input_requests",
        ),
        heldout_fraction="share of the inputs kept out of training and evaluated on "
        "(0 with --eval-inputs)",
        max_new_tokens="cap on every generation (synthesis, eval)",
    )
    parser.add_argument("--max-steps", type=int, default=None, help="optimizer steps per method")
    parser.add_argument(
        "--seeds",
        default=None,
        help="training seeds, comma-separated (e.g. 0,1,2): each method is trained once per seed "
        "(seed 0 in adapters/METHOD, seed N in adapters/METHOD-seedN) and `genpi compare` "
        "reports their mean and spread (default: one seed, 0)",
    )
    add_input_arguments(parser)
    parser.add_argument(
        "--eval-inputs",
        default=None,
        help="also evaluate on this file of real inputs (e.g. dev.json)",
    )
    parser.add_argument(
        "--compression",
        default=None,
        help="LLMLingua rates for the text-compression baseline, comma-separated; 'none' to skip"
        + (f" (default: {compression_default})" if compression_default else ""),
    )
    parser.add_argument(
        "--force", action="store_true", help="reuse a run dir made for another prompt"
    )
    bill = parser.add_mutually_exclusive_group()
    bill.add_argument(
        "--estimate-only",
        action="store_true",
        help="measure a short probe, print each stage's estimated wall time here, and stop",
    )
    bill.add_argument(
        "--no-estimate",
        action="store_true",
        help="skip the probe that estimates each stage's wall time before the run",
    )


def _methods(args: argparse.Namespace, preset: Preset) -> list[str]:
    from genpi.train.methods import get_method

    methods = [m.strip() for m in args.methods.split(",")] if args.methods else list(preset.methods)
    for m in methods:
        get_method(m)  # unknown names fail here, before hours of synthesis
    return methods


def seeds_of(args: argparse.Namespace) -> list[int]:
    text = getattr(args, "seeds", None)
    if text is None:
        return [0]
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise GenpiError(f"--seeds takes integers like 0,1,2, not {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise GenpiError(f"--seeds needs distinct integers like 0,1,2, not {text!r}")
    return seeds


def rates_of(args: argparse.Namespace, default: Sequence[float]) -> list[float]:
    """The LLMLingua rates of --compression (``default`` when it is not given)."""
    if args.compression is None:
        return list(default)
    if args.compression.strip().lower() == "none":
        return []
    try:
        return [float(x) for x in args.compression.split(",") if x.strip()]
    except ValueError:
        raise GenpiError(
            f"--compression takes rates like 0.9,0.7,0.3, not {args.compression!r}"
        ) from None


# (method, adapter directory) of one training run: what the bill counts, finished ones left out.
TrainingRun = tuple[str, Path]


def _plan(
    args: argparse.Namespace,
    preset_name: str,
    synth_config: Any,
    runs: Sequence[TrainingRun],
    eval_systems: int,
    prompt_tokens: int,
    input_tokens: int,
    max_turns: int | None,
    out: Path,
) -> Any:
    """What the recipe will run under a preset, for the estimate (finished parts skipped)."""
    from genpi.data import load_examples
    from genpi.estimate import RunPlan
    from genpi.evaluate.inputs import read_inputs
    from genpi.llm.refs import parse_backend_ref
    from genpi.train import make_config
    from genpi.train.methods import get_method
    from genpi.train.trainer import is_finished

    preset = PRESETS[preset_name]
    overrides = {}
    if args.max_steps is not None:
        overrides["max_steps"] = args.max_steps
    done = len(load_examples(out)) if (out / "inputs.jsonl").exists() else 0
    todo = [method for method, path in runs if not is_finished(path)]
    heldout = round(synth_config.n * synth_config.heldout_fraction)
    extra = len(read_inputs(args.eval_inputs)) if args.eval_inputs else 0
    return RunPlan(
        synth=synth_config,
        train=make_config(preset.train_preset, **overrides),
        methods=tuple(get_method(m) for m in todo),
        turns=synth_config.turn_limit(max_turns),
        prompt_tokens=prompt_tokens,
        input_tokens=input_tokens,
        # A remote generator's time is not this machine's: it is left out of the estimate.
        local_generator=parse_backend_ref(args.generator).kind == "local",
        inputs_todo=max(synth_config.n - done, 0),
        eval_systems=eval_systems,
        eval_items=heldout + extra,
        eval_max_new_tokens=eval_max_new_tokens(args, preset),
    )


def print_bill(
    args: argparse.Namespace,
    prompt: Any,
    preset: Preset,
    synth_config: Any,
    runs: Sequence[TrainingRun],
    eval_systems: int,
    backend: Any,
    out: Path,
) -> None:
    """Know the bill before paying it: a short probe on this machine, then each stage's time.
    ``runs``: every training run of the recipe; ``eval_systems``: how many systems it evaluates."""
    from genpi.estimate import (
        estimate_run,
        human,
        probe_generation,
        probe_training,
        too_long_here,
    )
    from genpi.synth.inputs import demonstration_inputs
    from genpi.train import make_config

    model = getattr(backend, "model", None)
    if model is None:
        print("(no estimate: the target model is not loaded in this process)")
        return
    demos = demonstration_inputs(prompt) or ["a task for the agent"]
    probe_conversations = [prompt.teacher_messages(x) for x in demos]
    prompt_tokens = max(len(backend.encode(c)) for c in probe_conversations)
    input_tokens = max(len(backend.tokenizer(x)["input_ids"]) for x in demos)
    lengths = (prompt_tokens, input_tokens, prompt.max_turns, out)
    plan = _plan(args, args.preset, synth_config, runs, eval_systems, *lengths)
    if not plan.inputs_todo and not plan.methods:
        return  # synthesis and training are done: what is left reuses cached answers
    started = time.monotonic()
    rows = min(synth_config.batch_size, synth_config.n)
    generation = probe_generation(backend, probe_conversations, rows)
    longest = prompt_tokens + synth_config.reason_max_new_tokens
    training = probe_training(model, longest, make_config(preset.train_preset))
    probe_s = time.monotonic() - started
    estimate = estimate_run(plan, generation, training)
    device = str(next(model.parameters()).device)
    print(
        estimate.format(
            f"Estimated wall time on this machine ({device}; from a {probe_s:.0f} s probe; "
            "generation caps make synthesis and evaluation upper bounds):"
        ),
        flush=True,
    )
    if too_long_here(device, estimate.total) and args.preset != "quick":
        from genpi.synth.config import SynthConfig

        quick_synth = SynthConfig.preset(PRESETS["quick"].synth_preset)
        quick = _plan(args, "quick", quick_synth, runs, eval_systems, *lengths)
        print(
            f"That is {human(estimate.total)} on a CPU. `--preset quick` would take about "
            f"{human(estimate_run(quick, generation, training).total)}; fewer inputs (--n) or "
            "steps (--max-steps) also cut it, and a GPU takes the paper preset in minutes.",
            flush=True,
        )


# -- the stages, shared by `genpi internalize` and `genpi grid` ----------------------------------


@dataclass
class Recipe:
    """One run of the recipe, what every stage reads: the flags, the prompt, the preset, the
    target model and the run directory; it prints each stage's header with the time so far."""

    args: argparse.Namespace
    prompt: Any
    preset: Preset
    model_ref: str
    out: Path
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Recipe:
        from genpi.models import DEFAULT_MODEL
        from genpi.prompt import load_prompt

        return cls(
            args,
            load_prompt(args.prompt),
            PRESETS[args.preset],
            args.model or DEFAULT_MODEL,
            Path(args.out),
        )

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def stage(self, title: str) -> None:
        print(f"\n== {title} ({self.seconds:.0f} s)", flush=True)


def synth_config_of(args: argparse.Namespace, preset: Preset) -> Any:
    """The synthesis config of a preset with the flags on top, checked as `genpi synth` checks
    them, before any work."""
    from genpi.synth.cli import config_overrides
    from genpi.synth.config import SynthConfig

    synth_config = SynthConfig.preset(preset.synth_preset, **config_overrides(args))
    if synth_config.heldout_fraction == 0 and not args.eval_inputs:
        # Said before hours of synthesis and training, not after them.
        raise GenpiError(
            "--heldout-fraction 0 leaves nothing to evaluate on: give --eval-inputs FILE too"
        )
    return synth_config


def synthesis_stage(
    recipe: Recipe,
    *,
    runs: Sequence[TrainingRun],
    eval_systems: int,
    backends: tuple[Any, Any] | None = None,
) -> bool | None:
    """Stage 1: the synthesis config from the flags, check the context, load the models (or use
    ``backends``: target, generator), print the bill, synthesize (resuming). Returns whether the
    run has held-out inputs (:func:`require_heldout`); None after --estimate-only, stopped after
    the bill."""
    from genpi.llm import load_backend, parse_backend_ref
    from genpi.synth.inputs import read_seed_inputs
    from genpi.synth.pipeline import check_context, synthesize

    args, prompt, model_ref = recipe.args, recipe.prompt, recipe.model_ref
    synth_config = synth_config_of(args, recipe.preset)
    generator_ref = args.generator or model_ref
    # Before hours of work: a prompt the target model (or a local generator) cannot hold.
    check_context(prompt, model_ref, generator_ref, synth_config, model=True, generator=True)
    if backends is None:
        model_backend = load_backend(model_ref)
        same = generator_ref == model_ref
        generator_backend = model_backend if same else load_backend(generator_ref)
    else:
        model_backend, generator_backend = backends
    if not args.no_estimate:
        print_bill(
            args, prompt, recipe.preset, synth_config, runs, eval_systems, model_backend, recipe.out
        )
        if args.estimate_only:
            return None
    synthesize(
        prompt,
        recipe.out,
        model_backend=model_backend,
        generator_backend=generator_backend,
        config=synth_config,
        force=args.force,
        seed_inputs=read_seed_inputs(args.seed_inputs) if args.seed_inputs else None,
        given_inputs=read_seed_inputs(args.inputs_file) if args.inputs_file else None,
        # Recorded as `genpi synth` records them, so either command resumes the other's run.
        model_name=parse_backend_ref(model_ref).name,
        generator_name=parse_backend_ref(generator_ref).name,
        print_report=True,
    )
    return require_heldout(args, recipe.out, synth_config)


def require_heldout(args: argparse.Namespace, out: Path, synth_config: Any) -> bool:
    """Whether the run has held-out inputs; none and no --eval-inputs is refused (checked
    before training, which can take hours, not after it)."""
    from genpi.data import load_examples

    heldout = bool(load_examples(out, split="heldout"))
    if not heldout and not args.eval_inputs:
        raise GenpiError(
            f"{out} has no held-out inputs to evaluate on (the split kept none of {synth_config.n}): "
            "give --eval-inputs FILE, a larger --n, or a larger heldout_fraction"
        )
    return heldout


def train_config_of(args: argparse.Namespace, preset: Preset, seed: int, **fields: Any) -> Any:
    """The training config of every method of a run: the preset's, --max-steps, the seed, and
    ``fields`` (a grid cell's own settings, such as lam or prepend_prob)."""
    from genpi.train import make_config

    overrides: dict[str, Any] = {"seed": seed, **fields}
    if args.max_steps is not None:
        overrides["max_steps"] = args.max_steps
    return make_config(preset.train_preset, **overrides)


def eval_max_new_tokens(args: argparse.Namespace, preset: Preset) -> int:
    return args.max_new_tokens or preset.eval_max_new_tokens


def evaluation_stage(
    recipe: Recipe, *, adapters: Sequence[Path], heldout: bool, rates: Sequence[float]
) -> list[dict[str, Any]]:
    """Stage 3: every system on the held-out inputs and --eval-inputs (cached answers reused)."""
    from genpi.evaluate.run import evaluate

    return evaluate(
        recipe.out,
        prompt=recipe.prompt,
        model=recipe.model_ref,
        adapters=list(adapters),
        inputs=recipe.args.eval_inputs,
        heldout=heldout,
        compression=list(rates),
        max_new_tokens=eval_max_new_tokens(recipe.args, recipe.preset),
    )


def evaluation_sets(args: argparse.Namespace, heldout: bool) -> str:
    sets = ["held-out inputs"] * heldout + [str(args.eval_inputs)] * bool(args.eval_inputs)
    return " and ".join(sets)


def main(args: argparse.Namespace) -> int:
    from genpi.evaluate.compare import compare
    from genpi.evaluate.run import format_summary
    from genpi.train import train
    from genpi.train.trainer import adapter_dir

    recipe = Recipe.from_args(args)
    preset, out = recipe.preset, recipe.out
    methods = _methods(args, preset)
    seeds = seeds_of(args)
    rates = rates_of(args, preset.compression)

    recipe.stage(f"1/4 synthesis: {recipe.prompt.name!r} on {recipe.model_ref}")
    # Each seed in a directory of its own (seed 0 where a one-seed run always put it).
    runs = [(method, seed) for method in methods for seed in seeds]
    heldout = synthesis_stage(
        recipe,
        runs=[(method, adapter_dir(out, method, seed)) for method, seed in runs],
        eval_systems=2 + len(runs) + len(rates),
    )
    if heldout is None:
        return 0

    adapters = []
    for i, (method, seed) in enumerate(runs, 1):
        recipe.stage(
            f"2/4 training {i}/{len(runs)}: {method}" + (f" (seed {seed})" if seed else "")
        )
        config = train_config_of(args, preset, seed)
        adapters.append(train(out, method, config, model_ref=recipe.model_ref))

    recipe.stage(f"3/4 evaluation: {evaluation_sets(args, heldout)}")
    summaries = evaluation_stage(recipe, adapters=adapters, heldout=heldout, rates=rates)
    for summary in summaries:
        print(format_summary(summary))

    recipe.stage("4/4 comparison")
    print(compare(out))
    print(f"\ndone in {recipe.seconds:.0f} s; everything is in {out}/")
    return 0
