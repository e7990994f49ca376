"""The stage order lives in the pipeline: ``genpi synth`` (all stages or one) and
``genpi internalize`` both run it through ``run_stages``."""

from __future__ import annotations

import pytest

from genpi.synth.config import SynthConfig
from genpi.synth.pipeline import run_stages, stages_needing


@pytest.fixture
def calls(monkeypatch):
    import genpi.synth.conversations
    import genpi.synth.inputs
    import genpi.synth.outputs
    import genpi.synth.reasons

    seen: list[tuple[str, object]] = []
    for module, name in [
        (genpi.synth.inputs, "import_inputs"),
        (genpi.synth.inputs, "run_inputs"),
        (genpi.synth.conversations, "run_conversations"),
        (genpi.synth.outputs, "run_outputs"),
        (genpi.synth.reasons, "run_reasons"),
    ]:
        monkeypatch.setattr(
            module, name, lambda run, backend, *a, _n=name, **k: seen.append((_n, backend))
        )
    return seen


def test_stages_run_in_the_pipelines_order_with_their_backends(calls):
    run_stages(
        "RUN",  # type: ignore[arg-type]
        ("reasons", "inputs", "outputs", "conversations"),
        model_backend="M",  # type: ignore[arg-type]
        generator_backend="G",  # type: ignore[arg-type]
        config=SynthConfig(),
        given_inputs=["x"],
    )
    assert calls == [
        ("import_inputs", ["x"]),
        ("run_inputs", "G"),
        ("run_conversations", "M"),
        ("run_outputs", "M"),
        ("run_reasons", "G"),
    ]


def test_one_stage_runs_alone(calls):
    run_stages("RUN", ("outputs",), model_backend="M", generator_backend=None, config=SynthConfig())  # type: ignore[arg-type]
    assert calls == [("run_outputs", "M")]


def test_what_each_stage_needs(example_prompt_path):
    from genpi.prompt import load_prompt

    prompt = load_prompt(example_prompt_path)
    config = SynthConfig(teacher_check=False)
    assert stages_needing(("inputs",), config, prompt) == (False, True)
    assert stages_needing(("conversations",), config, prompt) == (True, False)
    assert stages_needing(("outputs", "reasons"), config, prompt) == (True, True)
