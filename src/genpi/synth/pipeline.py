"""The synthesis stages in their one order: what ``genpi synth`` (all stages or one) and
``genpi internalize`` run, and the context check both make before touching the run directory."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from genpi.llm import Backend
from genpi.prompt import Prompt
from genpi.synth.config import SynthConfig
from genpi.synth.rundir import STAGES, RunDir


def check_context(
    prompt: Prompt,
    model_ref: str | None,
    generator_ref: str | None,
    config: SynthConfig,
    model: bool,
    generator: bool,
) -> None:
    """Refuse a prompt the models' contexts cannot hold, before the run directory is touched.

    The target model runs the prompt as the agent (and the role-swapped one as the environment);
    the generator reads it to write inputs and reasons. A remote server's context is unknown.
    """
    from genpi.context import check_model_fits

    if model:
        reserve = max(
            config.agent_max_new_tokens, config.env_max_new_tokens, config.output_max_new_tokens
        )
        check_model_fits(prompt, model_ref, reserve=reserve)
    if generator and not (model and generator_ref == model_ref):
        reserve = max(config.input_max_new_tokens, config.reason_max_new_tokens)
        check_model_fits(prompt, generator_ref, reserve=reserve)


def stages_needing(stages: Sequence[str], config: SynthConfig, prompt: Prompt) -> tuple[bool, bool]:
    """(needs the target model, needs the generator) to run ``stages``."""
    # Stage 1's teacher check answers each input with the target model and the prompt.
    teacher = config.teacher_check and bool(prompt.action_pattern)
    needs_model = any(
        s in ("conversations", "outputs") or s == "inputs" and teacher for s in stages
    )
    needs_generator = any(s in ("inputs", "reasons") for s in stages)
    return needs_model, needs_generator


def run_stages(
    run: RunDir,
    stages: Sequence[str],
    *,
    model_backend: Backend | None,
    generator_backend: Backend | None,
    config: SynthConfig,
    seed_inputs: list[str] | None = None,
    given_inputs: list[str] | None = None,
) -> None:
    """Run ``stages`` (a subset of ``STAGES``) in the pipeline's order; each resumes."""
    from genpi.synth.conversations import run_conversations
    from genpi.synth.inputs import import_inputs, run_inputs
    from genpi.synth.outputs import run_outputs
    from genpi.synth.reasons import run_reasons

    for stage in (s for s in STAGES if s in stages):
        if stage == "inputs":
            if given_inputs:
                import_inputs(run, given_inputs, config)
            run_inputs(run, generator_backend, config, seed_inputs=seed_inputs, model=model_backend)
        elif stage == "conversations":
            run_conversations(run, model_backend, config)
        elif stage == "outputs":
            run_outputs(run, model_backend, config)
        else:
            run_reasons(run, generator_backend, config)


def open_run(
    prompt: Prompt,
    out_dir: str | Path,
    *,
    model_name: str,
    generator_name: str,
    config: SynthConfig,
    force: bool = False,
) -> RunDir:
    """Create or reopen a run directory, refusing one made for another prompt or models."""
    return RunDir.open(
        out_dir,
        prompt,
        model=model_name,
        generator=generator_name,
        settings=config.to_dict(),
        force=force,
    )


def synthesize(
    prompt: Prompt,
    out_dir: str | Path,
    *,
    model_backend: Backend | None,
    generator_backend: Backend | None,
    config: SynthConfig | None = None,
    force: bool = False,
    seed_inputs: list[str] | None = None,
    given_inputs: list[str] | None = None,
    model_name: str | None = None,
    generator_name: str | None = None,
    print_report: bool = False,
    stages: Sequence[str] = STAGES,
) -> Path:
    """Run inputs, conversations, outputs and reasons (each resumes), then write the report.

    ``seed_inputs`` are shown to the generator as examples; ``given_inputs`` are used as inputs
    first (filtered like generated ones) and the generator writes the rest up to ``config.n``.
    ``stages`` runs a subset (``genpi synth STAGE``), whose backends alone are needed (see
    ``stages_needing``). Returns the run directory; ``genpi.data.load_examples`` reads it.
    """
    from genpi.synth.report import write_report

    config = config or SynthConfig()
    run = open_run(
        prompt,
        out_dir,
        model_name=model_name or getattr(model_backend, "name", "model"),
        generator_name=generator_name or getattr(generator_backend, "name", "generator"),
        config=config,
        force=force,
    )
    run_stages(
        run,
        stages,
        model_backend=model_backend,
        generator_backend=generator_backend,
        config=config,
        seed_inputs=seed_inputs,
        given_inputs=given_inputs,
    )
    _, text = write_report(run)
    if print_report:
        print(text)
    return run.path
