"""End to end on the embedded model with AgentBench's OS prompt: ``--n 8``, kept short.

The 135M embedded model rarely writes a usable numbered list (the paper's generator is a 70B
model), so six inputs are given and the generator is asked, once, for the rest: every stage
still runs on the real model.
"""

from __future__ import annotations

import json

import pytest

from genpi.data import load_examples, read_jsonl
from genpi.prompt import load_prompt
from genpi.synth import SynthConfig, synthesize

pytestmark = pytest.mark.integration

GIVEN = [
    "how many files are in /var/log?",
    "what is the size of /etc/hosts in bytes?",
    "how many users have bash as their login shell?",
    "create a directory /tmp/work and tell me when done.",
    "which is the largest file in /usr/bin?",
    "how many lines of /etc/passwd contain the word root?",
]


def test_synth_end_to_end_on_the_embedded_model(tmp_path, os_prompt_path, embedded_backend, capsys):
    prompt = load_prompt(os_prompt_path)
    config = SynthConfig.quick(
        n=8,
        num_gen_once=2,
        input_max_new_tokens=48,
        max_input_requests=1,
        max_turns=2,
        agent_max_new_tokens=32,
        env_max_new_tokens=16,
        output_max_new_tokens=24,
        reason_max_new_tokens=24,
        batch_size=8,
        progress=False,
    )
    out = synthesize(
        prompt,
        tmp_path / "run",
        model_backend=embedded_backend,
        generator_backend=embedded_backend,
        config=config,
        given_inputs=GIVEN,
        print_report=True,
    )
    inputs = read_jsonl(out / "inputs.jsonl")
    assert [r["input"] for r in inputs[:6]] == GIVEN and len(inputs) <= 8
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["inputs"]["requests"] == 1
    convs = read_jsonl(out / "conversations.jsonl")
    assert sorted(c["id"] for c in convs) == sorted(r["id"] for r in inputs)  # held-out ones too
    for c in convs:
        assert c["end_reason"] in ("end_token", "max_turns", "empty_agent", "empty_env")
        assert c["agent_turns"] <= 2
        roles = [t["role"] for t in c["turns"]]
        assert roles == ["assistant", "user", "assistant"][: len(roles)]
    assert len(load_examples(out)) == len(inputs)
    assert len(read_jsonl(out / "reasons.jsonl")) == len(inputs)
    report = json.loads((out / "report.json").read_text())
    assert report["table4"]["gold_turns"] == 3.0  # AgentBench OS: ls, wc, answer
    assert report["counts"]["conversations"] == len(inputs)
    assert "Table 4" in capsys.readouterr().out
