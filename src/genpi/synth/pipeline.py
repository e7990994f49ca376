"""All four synthesis stages in order, as one call: what ``genpi synth`` and ``genpi internalize`` run."""

from __future__ import annotations

from pathlib import Path

from genpi.llm import Backend
from genpi.prompt import Prompt
from genpi.synth.config import SynthConfig
from genpi.synth.rundir import RunDir


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
    model_backend: Backend,
    generator_backend: Backend,
    config: SynthConfig | None = None,
    force: bool = False,
    seed_inputs: list[str] | None = None,
    given_inputs: list[str] | None = None,
    model_name: str | None = None,
    generator_name: str | None = None,
    print_report: bool = False,
) -> Path:
    """Run inputs, conversations, outputs and reasons (each resumes), then write the report.

    ``seed_inputs`` are shown to the generator as examples; ``given_inputs`` are used as inputs
    first (filtered like generated ones) and the generator writes the rest up to ``config.n``.
    Returns the run directory; ``genpi.data.load_examples`` reads it.
    """
    from genpi.synth.conversations import run_conversations
    from genpi.synth.inputs import import_inputs, run_inputs
    from genpi.synth.outputs import run_outputs
    from genpi.synth.reasons import run_reasons
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
    if given_inputs:
        import_inputs(run, given_inputs, config)
    run_inputs(run, generator_backend, config, seed_inputs=seed_inputs, model=model_backend)
    run_conversations(run, model_backend, config)
    run_outputs(run, model_backend, config)
    run_reasons(run, generator_backend, config)
    _, text = write_report(run)
    if print_report:
        print(text)
    return run.path
