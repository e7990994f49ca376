"""The run directory: resume after a torn line or SIGKILL, refusal of a foreign run, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from genpi.data import load_examples, read_jsonl
from genpi.errors import GenpiError
from genpi.prompt import load_prompt, prompt_from_dict
from genpi.synth import SynthConfig, synthesize
from genpi.synth.common import StageAborted
from genpi.synth.inputs import run_inputs
from genpi.synth.pipeline import open_run
from genpi.synth.rundir import RunDirError, cut_torn_tail

sys.path.insert(0, str(Path(__file__).parent))
from synth_scripted import ScriptedBackend  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _config(**kw) -> SynthConfig:
    return SynthConfig(**{"n": 6, "num_gen_once": 4, "progress": False, "max_turns": 3, **kw})


def _synth(prompt, out, backend=None, **kw):
    backend = backend or ScriptedBackend()
    force = kw.pop("force", False)
    return synthesize(
        prompt,
        out,
        model_backend=backend,
        generator_backend=backend,
        config=_config(**kw),
        force=force,
    )


def test_end_to_end_layout_is_what_training_reads(tmp_path, example_prompt_path):
    prompt = load_prompt(example_prompt_path)
    out = _synth(prompt, tmp_path / "run", heldout_fraction=0.5)
    for name in ("inputs", "conversations", "outputs", "reasons"):
        records = read_jsonl(out / f"{name}.jsonl")
        assert len(records) == 6 and len({r["id"] for r in records}) == 6
        assert all(
            r["prompt_fingerprint"] == prompt.fingerprint and "settings" in r for r in records
        )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"inputs": 6, "conversations": 6, "outputs": 6, "reasons": 6}
    assert manifest["models"] == {"model": "scripted", "generator": "scripted"}
    assert load_prompt(out / "prompt.json").fingerprint == prompt.fingerprint
    examples = load_examples(out)
    assert len(examples) == 6
    ex = examples[0]
    assert ex.teacher_output == ex.turns[0]["content"] and ex.student_output and ex.reason
    splits = {r["id"]: r["split"] for r in read_jsonl(out / "inputs.jsonl")}
    assert {e.split for e in examples} == set(splits.values())
    report = json.loads((out / "report.json").read_text())
    assert report["table4"]["gold_turns"] == 2.0
    assert report["table4"]["avg_turns_generated"] == 2.0
    assert report["table4"]["pct_no_termination_token"] == 0.0
    assert report["table4"]["pct_final_answer_not_matching_action_pattern"] == 0.0


def test_resume_after_a_torn_line_drops_it_and_duplicates_nothing(tmp_path, example_prompt_path):
    prompt = load_prompt(example_prompt_path)
    # Without stage 1's teacher check, stage 2 generates every agent turn (the count below);
    # with it, see test_resume_reuses_the_stored_first_turn.
    out = _synth(prompt, tmp_path / "run", teacher_check=False)
    convs = out / "conversations.jsonl"
    lines = convs.read_text().splitlines(keepends=True)
    torn = lines[-1][: len(lines[-1]) // 2]  # the last record cut off mid-write
    convs.write_text("".join(lines[:-1]) + torn)
    assert len(read_jsonl(convs)) == 5
    backend = ScriptedBackend()
    _synth(prompt, out, backend, teacher_check=False)
    records = read_jsonl(convs)
    assert len(records) == 6 and len({r["id"] for r in records}) == 6
    assert convs.read_text().endswith("\n")
    assert sum(backend.calls) == 2 * 2  # only the lost conversation is redone (2 agent + 2 env)


def test_resume_reuses_the_stored_first_turn(tmp_path, example_prompt_path):
    prompt = load_prompt(example_prompt_path)
    out = _synth(prompt, tmp_path / "run")
    inputs = {r["id"]: r for r in read_jsonl(out / "inputs.jsonl")}
    convs = out / "conversations.jsonl"
    lines = convs.read_text().splitlines(keepends=True)
    lost = json.loads(lines[-1])
    convs.write_text("".join(lines[:-1]))
    backend = ScriptedBackend()
    _synth(prompt, out, backend)
    redone = {r["id"]: r for r in read_jsonl(convs)}[lost["id"]]
    assert redone == lost and lost["turns"][0]["content"] == inputs[lost["id"]]["first_agent_turn"]
    assert sum(backend.calls) == 1 + 2  # the first turn comes from inputs.jsonl: 1 agent + 2 env


def test_cut_torn_tail(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"id": 1}\n{"id": 2}\n{"id"')
    assert cut_torn_tail(path) and path.read_text() == '{"id": 1}\n{"id": 2}\n'
    assert not cut_torn_tail(path)
    path.write_text('{"id"')
    assert cut_torn_tail(path) and path.read_text() == ""


def test_sigkill_mid_stage_loses_only_records_in_flight(tmp_path, example_prompt_path):
    out = tmp_path / "run"
    script = ROOT / "tests" / "synth_scripted.py"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, str(script), str(out), str(example_prompt_path), "8"]
    proc = subprocess.Popen([*cmd, "0.05"], env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(read_jsonl(out / "conversations.jsonl")) < 2:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    partial = read_jsonl(out / "conversations.jsonl")
    assert 2 <= len(partial) < 8, "the kill should land mid-stage"
    subprocess.run([*cmd, "0"], env=env, check=True, timeout=60)
    for name in ("inputs", "conversations", "outputs", "reasons"):
        ids = [r["id"] for r in read_jsonl(out / f"{name}.jsonl")]
        assert len(ids) == len(set(ids)) == 8, name
    finished = {r["id"]: r for r in partial}
    resumed = {r["id"]: r for r in read_jsonl(out / "conversations.jsonl")}
    assert all(resumed[i] == finished[i] for i in finished)  # kept as written, not redone


def test_a_run_dir_for_another_prompt_or_model_is_refused(tmp_path, example_prompt_path):
    prompt = load_prompt(example_prompt_path)
    out = _synth(prompt, tmp_path / "run", n=2)
    other = prompt_from_dict({"messages": [{"role": "system", "content": "Be brief."}]})
    with pytest.raises(RunDirError, match="another run.*--force"):
        _synth(other, out, n=2)

    class Other(ScriptedBackend):
        name = "other-model"

    with pytest.raises(RunDirError, match="model 'scripted', not 'other-model'"):
        _synth(prompt, out, Other(), n=2)
    _synth(other, out, n=2, force=True)  # moves the old files aside, keeps them
    assert (
        json.loads((out / "manifest.json").read_text())["prompt_fingerprint"] == other.fingerprint
    )
    aside = [p for p in out.iterdir() if p.name.startswith("replaced-")]
    assert len(aside) == 1 and len(read_jsonl(aside[0] / "inputs.jsonl")) == 2


def test_generator_without_a_list_is_counted_and_bounded(tmp_path, example_prompt_path):
    prompt = load_prompt(example_prompt_path)
    backend = ScriptedBackend(list_text="I would rather not.")
    config = _config(n=4, max_input_requests=5)
    run = open_run(prompt, tmp_path / "run", model_name="s", generator_name="s", config=config)
    stats = run_inputs(run, backend, config)
    assert stats["no_list"] == 5 and stats["requests"] == 5 and stats["exhausted"]
    assert run.read("inputs") == []


def test_endpoint_down_stops_the_stage_and_keeps_finished_records(tmp_path, example_prompt_path):
    prompt = load_prompt(example_prompt_path)
    backend = ScriptedBackend()
    backend.fail_calls = {2, 3, 4}
    config = _config(n=12, batch_size=1)
    run = open_run(prompt, tmp_path / "run", model_name="s", generator_name="s", config=config)
    with pytest.raises(StageAborted, match="3 failed backend calls in a row.*re-run"):
        run_inputs(run, backend, config)
    assert len(run.read("inputs")) == 4  # the first call's list
    assert run.stage_stats("inputs")["backend_errors"] == 3
    assert isinstance(StageAborted("x"), GenpiError)
    run_inputs(run, backend, config)  # resumes
    assert len(run.read("inputs")) == 12


def test_cli_stage_alone_and_errors(tmp_path, example_prompt_path, capsys):
    from genpi.cli import main

    out = tmp_path / "run"
    code = main(
        [
            "synth",
            "conversations",
            "--prompt",
            str(example_prompt_path),
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 2
    assert "no inputs yet: run `genpi synth inputs` first" in capsys.readouterr().err
    assert main(["synth", "--out", str(tmp_path / "nothing")]) == 2
    assert "pass --prompt FILE" in capsys.readouterr().err
    assert main(["synth", "--prompt", str(example_prompt_path), "--out", str(out), "--n", "0"]) == 2
    assert "--n must be at least 1" in capsys.readouterr().err


def test_cli_reuses_the_run_dirs_recorded_settings(tmp_path, example_prompt_path):
    import argparse

    from genpi.synth.cli import add_arguments, build_config

    prompt = load_prompt(example_prompt_path)
    out = _synth(prompt, tmp_path / "run", n=5)
    recorded = json.loads((out / "manifest.json").read_text())["settings"]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = build_config(parser.parse_args(["reasons", "--out", str(out)]), recorded)
    assert (config.n, config.max_turns, config.num_gen_once) == (5, 3, 4)
    config = build_config(parser.parse_args(["--out", str(out), "--n", "9"]), recorded)
    assert (config.n, config.max_turns) == (9, 3)
    config = build_config(parser.parse_args(["--out", str(out), "--preset", "quick"]), recorded)
    assert config.n == 16  # an explicit preset wins over the recorded settings
    config = build_config(parser.parse_args(["--out", str(out), "--max-new-tokens", "7"]), recorded)
    assert (config.agent_max_new_tokens, config.reason_max_new_tokens, config.n) == (7, 7, 5)


def test_the_runs_model_is_read_from_its_manifest_when_loadable():
    from genpi.data import model_from_manifest

    assert model_from_manifest({"models": {"model": "smollm2-135m"}}) == "smollm2-135m"
    assert model_from_manifest({"models": {"model": "vllm:org/m"}}) == "org/m"
    assert model_from_manifest({"models": {"model": "m@http://h/v1"}}) is None  # an endpoint
    assert model_from_manifest({}) is None
