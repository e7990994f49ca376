"""``genpi eval RUN --prompt OTHER``: refused before any work, so the run's cached teacher
answers (``eval/<set>/upper_bound.json``) stay those of the run's prompt."""

from __future__ import annotations

import json

import pytest

from genpi.cli import main
from genpi.prompt import load_prompt


class Reached(Exception):
    """Raised where evaluation would load the model: the refusal must come before it."""


@pytest.fixture
def no_model(monkeypatch):
    from genpi.evaluate import systems

    def load(*args, **kwargs):
        raise Reached

    monkeypatch.setattr(systems.ModelHost, "load", load)


def _run(tmp_path, example_prompt_path, *, manifest: bool):
    """A run directory for the example prompt, with held-out inputs and a cached eval answer."""
    run = tmp_path / "run"
    run.mkdir()
    prompt = load_prompt(example_prompt_path)
    prompt.save(run / "prompt.json")
    if manifest:
        (run / "manifest.json").write_text(
            json.dumps({"prompt_name": prompt.name, "prompt_fingerprint": prompt.fingerprint})
        )
    rows = [{"id": "a", "input": "how many users are there?", "split": "heldout"}]
    (run / "inputs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    turns = [{"role": "assistant", "content": "Thought: count.\nAction: run[wc -l /etc/passwd]"}]
    (run / "conversations.jsonl").write_text(
        "".join(json.dumps({**r, "turns": turns}) + "\n" for r in rows)
    )
    cached = run / "eval" / "heldout" / "upper_bound.json"
    cached.parent.mkdir(parents=True)
    cached.write_text('{"key": "the run prompt", "records": []}\n')
    return run, cached


@pytest.mark.parametrize("manifest", [True, False], ids=["manifest", "prompt-json-only"])
def test_eval_refuses_a_prompt_that_is_not_the_runs(
    tmp_path, example_prompt_path, tiny_model_dir, no_model, capsys, manifest
):
    run, cached = _run(tmp_path, example_prompt_path, manifest=manifest)
    before = cached.read_bytes(), cached.stat().st_mtime_ns
    other = tmp_path / "pirate.txt"
    other.write_text("You are a pirate.")
    code = main(["eval", str(run), "--prompt", str(other), "--model", str(tiny_model_dir)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("genpi: error: run directory") and err.count("\n") == 1
    assert "made for another prompt (prompt 'shell-agent'" in err and "not 'pirate'" in err
    assert "drop --prompt" in err
    assert (cached.read_bytes(), cached.stat().st_mtime_ns) == before
    assert sorted(p.name for p in (run / "eval").iterdir()) == ["heldout"]


def test_eval_accepts_the_runs_own_prompt_given_again(
    tmp_path, example_prompt_path, tiny_model_dir, no_model
):
    run, _ = _run(tmp_path, example_prompt_path, manifest=True)
    with pytest.raises(Reached):  # past the check, at the model load
        main(
            ["eval", str(run), "--prompt", str(example_prompt_path), "--model", str(tiny_model_dir)]
        )


def test_synth_and_eval_share_the_prompt_check(example_prompt_path):
    from genpi.synth.rundir import prompt_mismatch

    prompt = load_prompt(example_prompt_path)
    recorded = {"prompt_name": prompt.name, "prompt_fingerprint": prompt.fingerprint}
    assert prompt_mismatch(recorded, prompt) is None
    other = {"prompt_name": "pirate", "prompt_fingerprint": "f" * 64}
    assert prompt_mismatch(other, prompt) == (
        f"prompt 'pirate' (ffffffffffff), not 'shell-agent' ({prompt.fingerprint[:12]})"
    )
