"""End to end on the embedded model with AgentBench's OS prompt: ``genpi synth --n 8``, kept short."""

from __future__ import annotations

import json

import pytest

from genpi.data import load_examples, read_jsonl
from genpi.prompt import load_prompt
from genpi.synth import SynthConfig, synthesize

pytestmark = pytest.mark.integration


def test_synth_end_to_end_on_the_embedded_model(tmp_path, os_prompt_path, embedded_backend, capsys):
    prompt = load_prompt(os_prompt_path)
    config = SynthConfig.quick(
        n=8,
        num_gen_once=8,
        input_max_new_tokens=200,
        max_input_requests=4,
        max_turns=2,
        agent_max_new_tokens=32,
        env_max_new_tokens=24,
        output_max_new_tokens=32,
        reason_max_new_tokens=32,
        batch_size=8,
        progress=False,
    )
    out = synthesize(
        prompt,
        tmp_path / "run",
        model_backend=embedded_backend,
        generator_backend=embedded_backend,
        config=config,
        print_report=True,
    )
    inputs = read_jsonl(out / "inputs.jsonl")
    assert 1 <= len(inputs) <= 8
    convs = read_jsonl(out / "conversations.jsonl")
    assert sorted(c["id"] for c in convs) == sorted(r["id"] for r in inputs)  # held-out ones too
    for c in convs:
        assert 1 <= c["agent_turns"] <= 2 or c["end_reason"] == "empty_agent"
        assert c["end_reason"] in ("end_token", "max_turns", "empty_agent", "empty_env")
    assert len(load_examples(out)) == len(inputs)
    assert len(read_jsonl(out / "reasons.jsonl")) == len(inputs)
    report = json.loads((out / "report.json").read_text())
    assert report["table4"]["gold_turns"] == 3.0  # AgentBench OS: ls, wc, answer
    assert report["counts"]["conversations"] == len(inputs)
    assert "Table 4" in capsys.readouterr().out
