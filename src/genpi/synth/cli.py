"""``genpi synth``: synthesize training data from the prompt alone (all stages, or one).

Run as: genpi synth --prompt ../shared/agentbench/prompts/os.json --out runs/os --n 16 --preset quick
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from genpi.errors import GenpiError

STAGE_CHOICES = ("all", "inputs", "conversations", "outputs", "reasons", "report")


def _input_style(value: str) -> str:
    from genpi.synth.config import INPUT_STYLES

    if value not in INPUT_STYLES:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an input style: use {' or '.join(INPUT_STYLES)}"
        )
    return value


# SynthConfig fields set by a flag of their own name (--num-gen-once sets num_gen_once), in the
# order --help lists them; a flag not given (None) keeps the recorded or the preset's value.
SETTING_FLAGS: dict[str, tuple[Callable[[str], Any], str]] = {
    "n": (int, "pseudo inputs to keep (paper: 1000)"),
    "num_gen_once": (int, "inputs asked for per request"),
    "input_style": (
        _input_style,
        "how the generator is asked for inputs: continue (it continues a list of the prompt's "
        "demonstration inputs, seeds and inputs kept so far; default) or describe (it reads the "
        "whole prompt, as in the paper: for a large generator)",
    ),
    "input_temperature": (
        float,
        "sampling temperature of the generator's input lists (paper: 1.0, for a 70B generator; "
        "the CPU presets quick, demo and cpu: 0.7, at which the embedded 135M generator writes "
        "fewer fragments, and fewer distinct items)",
    ),
    "input_prefill": (
        str,
        "text the generator's list starts from in the describe style (default '1.'; the "
        "continue style starts it from the exemplars); '' for an endpoint that cannot "
        "continue an assistant message",
    ),
    "max_input_requests": (
        int,
        "generator requests after which stage 1 stops short of --n (default: 4 per "
        "ceil(n / num-gen-once), at least 8); raise it when the teacher's check drops most items",
    ),
    "max_turns": (int, "agent turns per conversation"),
    "heldout_fraction": (float, "inputs kept out of training"),
    "batch_size": (int, "conversations per generate call"),
    "seed": (int, "sampling seed"),
}
COUNTS = ("n", "num_gen_once", "max_input_requests", "max_turns", "batch_size")  # each at least 1
# --max-new-tokens caps every generation: these fields.
CAPPED = (
    "agent_max_new_tokens",
    "env_max_new_tokens",
    "output_max_new_tokens",
    "reason_max_new_tokens",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from genpi.synth.config import PRESETS

    parser.add_argument(
        "stage",
        nargs="?",
        default="all",
        choices=STAGE_CHOICES,
        help="run one stage only (default: all four, then the report)",
    )
    parser.add_argument("--prompt", default=None, help="prompt file (default: RUN_DIR/prompt.json)")
    parser.add_argument("--out", required=True, help="run directory (created, or resumed)")
    parser.add_argument(
        "--model", default=None, help="target model: teacher and student (default: smollm2-135m)"
    )
    parser.add_argument(
        "--generator", default=None, help="model that writes inputs and reasons (default: --model)"
    )
    parser.add_argument(
        "--preset",
        choices=list(PRESETS),
        default=None,
        help="defaults to start from: paper, quick (a CPU demo) or demo (internalize's quick) "
        "(default: the run directory's recorded settings, else paper)",
    )
    add_input_arguments(parser)
    parser.add_argument(
        "--force", action="store_true", help="reuse a run directory made for another run"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    group = parser.add_argument_group(
        "settings (default: the run directory's recorded ones, else the preset's)"
    )
    add_setting_arguments(group)


# -- the synthesis flags genpi internalize and genpi grid share, read by config_overrides --------


def add_input_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Where inputs come from besides the generator: --seed-inputs, --inputs-file."""
    parser.add_argument(
        "--seed-inputs",
        default=None,
        help="example inputs shown to the generator (one per line or JSONL)",
    )
    parser.add_argument(
        "--inputs-file",
        default=None,
        help="inputs to use first (one per line or JSONL); the generator writes the rest up to --n",
    )


def add_setting_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    names: Sequence[str] = tuple(SETTING_FLAGS),
    **helps: str,
) -> None:
    """The flags of the SETTING_FLAGS fields in ``names``, then --no-teacher-check and
    --max-new-tokens; ``helps``: a verb's own words for a flag (by field name)."""
    for name in names:
        kind, text = SETTING_FLAGS[name]
        parser.add_argument(
            "--" + name.replace("_", "-"), type=kind, default=None, help=helps.get(name, text)
        )
    parser.add_argument(
        "--no-teacher-check",
        action="store_true",
        help="keep generated inputs the target model does not answer in the prompt's action format "
        "(default: such inputs are dropped, where the prompt has an action_pattern)",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help=helps.get(
            "max_new_tokens",
            "cap every generation (agent, environment, outputs, reasons) at this many tokens",
        ),
    )


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The SynthConfig fields the synthesis flags given set, checked (a flag this verb lacks
    counts as not given)."""
    overrides = {
        name: getattr(args, name) for name in SETTING_FLAGS if getattr(args, name, None) is not None
    }
    if getattr(args, "no_teacher_check", False):
        overrides["teacher_check"] = False
    for key in COUNTS:
        if key in overrides and overrides[key] < 1:
            raise GenpiError(f"--{key.replace('_', '-')} must be at least 1, got {overrides[key]}")
    if "input_temperature" in overrides and not 0 <= overrides["input_temperature"] <= 2:
        raise GenpiError(
            f"--input-temperature must be in [0, 2], got {overrides['input_temperature']}"
        )
    if "heldout_fraction" in overrides and not 0 <= overrides["heldout_fraction"] < 1:
        raise GenpiError(
            f"--heldout-fraction must be in [0, 1), got {overrides['heldout_fraction']}"
        )
    cap = getattr(args, "max_new_tokens", None)
    if cap is not None:
        if cap < 1:
            raise GenpiError(f"--max-new-tokens must be at least 1, got {cap}")
        overrides.update(dict.fromkeys(CAPPED, cap))
    return overrides


def build_config(args: argparse.Namespace, recorded: dict | None = None):
    """The preset (or the settings a run directory recorded), with the flags given on top."""
    from genpi.synth.config import SynthConfig

    overrides = config_overrides(args)
    if args.preset is None and recorded:
        known = set(SynthConfig.__dataclass_fields__)
        # Runs recorded before input_style existed were asked in the "describe" style: resume so.
        recorded = {"input_style": "describe", **recorded}
        config = SynthConfig(**{**{k: v for k, v in recorded.items() if k in known}, **overrides})
    else:
        config = SynthConfig.preset(args.preset or "paper", **overrides)
    config.progress = not args.no_progress
    return config


def _load(ref: str | None, batch_size: int):
    from genpi.llm import load_backend, parse_backend_ref

    if parse_backend_ref(ref).kind != "local":  # the batch size is the local backend's setting
        return load_backend(ref)
    return load_backend(ref, batch_size=batch_size)


def _check_ready(run, stage: str) -> None:
    """A stage run alone needs the previous stage's records."""
    from genpi.synth.conversations import require_inputs
    from genpi.synth.rundir import RunDirError

    if stage == "conversations":
        require_inputs(run, run.read("inputs"))
    for needed, before in (("outputs", "conversations"), ("reasons", "outputs")):
        if stage == needed and not run.read(before):
            raise RunDirError(
                f"{str(run.path)!r} has no {before} yet: run `genpi synth {before}` first"
            )


def main(args: argparse.Namespace) -> int:
    from genpi.llm import parse_backend_ref
    from genpi.prompt import load_prompt
    from genpi.synth.pipeline import check_context, open_run, stages_needing, synthesize
    from genpi.synth.report import write_report
    from genpi.synth.rundir import PROMPT_FILE, STAGES, RunDir

    out = Path(args.out)
    prompt_path = args.prompt or (out / PROMPT_FILE)
    if args.prompt is None and not Path(prompt_path).exists():
        raise GenpiError(
            f"no --prompt given and {str(out)!r} holds no {PROMPT_FILE}: pass --prompt FILE"
        )
    prompt = load_prompt(prompt_path)
    if args.stage == "report":
        if not out.is_dir():
            raise GenpiError(f"run directory {str(out)!r} does not exist: run `genpi synth` first")
        _, text = write_report(RunDir(out, prompt))
        print(text)
        return 0

    manifest = RunDir(out, prompt).read_manifest()
    config = build_config(args, (manifest or {}).get("settings"))
    seed_inputs = None
    if args.seed_inputs:
        from genpi.synth.inputs import read_seed_inputs

        seed_inputs = read_seed_inputs(args.seed_inputs)
    given_inputs = None
    if args.inputs_file:
        from genpi.synth.inputs import read_seed_inputs

        given_inputs = read_seed_inputs(args.inputs_file)
    generator_ref = args.generator or args.model
    model_name = parse_backend_ref(args.model).name
    generator_name = parse_backend_ref(generator_ref).name
    stages = STAGES if args.stage == "all" else (args.stage,)
    needs_model, needs_generator = stages_needing(stages, config, prompt)
    check_context(prompt, args.model, generator_ref, config, needs_model, needs_generator)
    # Opened here so that a directory made for another run, or a stage whose input stage has not
    # run, is refused before any model loads; synthesize then reopens it as it stands.
    run = open_run(
        prompt,
        out,
        model_name=model_name,
        generator_name=generator_name,
        config=config,
        force=args.force,
    )
    _check_ready(run, args.stage)
    model = _load(args.model, config.batch_size) if needs_model else None
    generator = None
    if needs_generator:
        generator = (
            model
            if model is not None and model_name == generator_name
            else _load(generator_ref, config.batch_size)
        )
    start = time.perf_counter()
    synthesize(
        prompt,
        out,
        model_backend=model,
        generator_backend=generator,
        config=config,
        seed_inputs=seed_inputs,
        given_inputs=given_inputs,
        model_name=model_name,
        generator_name=generator_name,
        print_report=True,
        stages=stages,
    )
    print(
        f"\n{', '.join(stages)} done in {time.perf_counter() - start:.1f} s; run directory: {run.path}"
    )
    return 0
