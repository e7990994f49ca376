"""A prompt longer than the model's context is refused by every verb, in one line, before any work.

The model here is the tiny random Llama with a 64-position context; the example prompt is a few
hundred tokens. Loading weights is made to fail the test, so "before any work" is checked, not
assumed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import genpi
from genpi.cli import main
from genpi.errors import GenpiError
from genpi.prompt import PromptError, load_prompt
from test_train_rundir import make_run_dir

CONTEXT = 64
FIX = "shorten the prompt or use a model with a longer context"
# A subprocess runs the genpi this test imported, not whichever one the venv installed.
ENV = {**os.environ, "PYTHONPATH": str(Path(genpi.__file__).resolve().parents[1])}


@pytest.fixture(scope="module")
def short_model_dir(tmp_path_factory, tokenizer) -> Path:
    """A 1-layer random Llama whose config holds only 64 positions (the tokenizer says 8192)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=CONTEXT,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("short-llama")
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture
def no_weights(monkeypatch):
    """Fail the test if any verb loads model weights: the check must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("model weights were loaded before the context check")

    monkeypatch.setattr("genpi.models.load_model", refuse)


def prompt_length(tokenizer, path: Path) -> int:
    """The prompt's teacher view with an empty input, as the model reads it."""
    text = tokenizer.apply_chat_template(
        load_prompt(path).teacher_messages(""), tokenize=False, add_generation_prompt=True
    )
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def assert_refused(code: int, err: str, n: int) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("genpi: error: prompt"), err
    assert f"is {n} tokens" in err and f"context of {CONTEXT} tokens" in err
    assert FIX in err and "Traceback" not in err


# -- the check itself --------------------------------------------------------------------------
def test_context_comes_from_the_config_then_a_sane_tokenizer_limit(tokenizer):
    from genpi.context import context_length

    assert context_length({"max_position_embeddings": 64}, tokenizer) == 64
    assert context_length({"n_positions": 1024}) == 1024  # GPT-2's name for it

    class Tok:
        model_max_length = int(1e30)  # transformers' "unknown"

    assert context_length({}, Tok()) is None
    Tok.model_max_length = 2048
    assert context_length({}, Tok()) == 2048


def test_the_reply_needs_room_too(tokenizer, example_prompt_path):
    from genpi.context import check_prompt_fits

    prompt = load_prompt(example_prompt_path)
    n = prompt_length(tokenizer, example_prompt_path)
    assert check_prompt_fits(prompt, tokenizer, n + 10, reserve=10) == n
    with pytest.raises(PromptError, match=rf"is {n} tokens and the reply needs up to 11 more"):
        check_prompt_fits(prompt, tokenizer, n + 10, reserve=11)
    with pytest.raises(PromptError, match=rf"is {n} tokens, longer than .* context of {n} tokens"):
        check_prompt_fits(prompt, tokenizer, {"max_position_embeddings": n})


def test_max_length_over_the_context_is_refused_not_capped(tokenizer):
    from genpi.train.datasets import build_items

    with pytest.raises(GenpiError, match="--max-length 128 is longer than the model's context"):
        build_items([], lambda ex: None, tokenizer, max_length=128, model_context=64)


# -- every verb --------------------------------------------------------------------------------
def test_chat_refuses_before_loading_the_model(
    short_model_dir, example_prompt_path, tokenizer, no_weights, capsys
):
    n = prompt_length(tokenizer, example_prompt_path)
    assert n > CONTEXT
    for mode in ([], ["--compare"]):
        code = main(
            ["chat", "--prompt", str(example_prompt_path), "--model", str(short_model_dir)]
            + mode
            + ["--input", "count the files"]
        )
        assert_refused(code, capsys.readouterr().err, n)


def test_chat_without_the_prompt_is_not_refused(short_model_dir, example_prompt_path):
    # The student's view (no prompt) fits the 64 positions: the check is about the prompt.
    result = subprocess.run(
        [sys.executable, "-m", "genpi", "chat", "--prompt", str(example_prompt_path)]
        + ["--model", str(short_model_dir), "--no-prompt", "--input", "hi"]
        + ["--max-new-tokens", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )
    assert result.returncode == 0, result.stderr


def test_chat_exits_2_in_one_line_as_a_command(short_model_dir, example_prompt_path, tokenizer):
    result = subprocess.run(
        [sys.executable, "-m", "genpi", "chat", "--prompt", str(example_prompt_path)]
        + ["--model", str(short_model_dir), "--input", "x"],
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )
    assert_refused(result.returncode, result.stderr, prompt_length(tokenizer, example_prompt_path))
    assert result.stdout == ""


def test_synth_refuses_before_touching_the_run_directory(
    short_model_dir, example_prompt_path, tokenizer, no_weights, tmp_path, capsys
):
    out = tmp_path / "run"
    code = main(
        ["synth", "--prompt", str(example_prompt_path), "--out", str(out)]
        + ["--model", str(short_model_dir), "--preset", "quick", "--no-progress"]
    )
    assert_refused(code, capsys.readouterr().err, prompt_length(tokenizer, example_prompt_path))
    assert not out.exists()


def test_synth_checks_a_local_generator_too(
    short_model_dir, tiny_model_dir, example_prompt_path, no_weights, tmp_path, capsys
):
    # The target model (4096 positions) holds the prompt; the generator (64) does not.
    out = tmp_path / "run"
    code = main(
        ["synth", "inputs", "--prompt", str(example_prompt_path), "--out", str(out)]
        + ["--model", str(tiny_model_dir), "--generator", str(short_model_dir)]
        + ["--preset", "quick", "--no-progress"]
    )
    err = capsys.readouterr().err
    assert code == 2 and str(short_model_dir) in err and FIX in err, err
    assert not out.exists()


def test_train_refuses_before_tokenizing_or_writing(
    short_model_dir, example_prompt_path, tokenizer, no_weights, tmp_path, capsys
):
    run = make_run_dir(tmp_path / "run", load_prompt(example_prompt_path), n=2)
    code = main(["train", str(run), "--method", "genpi", "--model", str(short_model_dir)])
    assert_refused(code, capsys.readouterr().err, prompt_length(tokenizer, example_prompt_path))
    assert not (run / "adapters").exists()


def test_train_drops_nothing_silently_for_a_method_without_the_prompt(
    short_model_dir, example_prompt_path, no_weights, tmp_path, capsys
):
    # sft never shows the prompt, so it is not refused for it; its conversations are still longer
    # than 64 tokens, and the error says the model's context is why, not --max-length.
    run = make_run_dir(tmp_path / "run", load_prompt(example_prompt_path), n=2)
    code = main(["train", str(run), "--method", "sft", "--model", str(short_model_dir)])
    captured = capsys.readouterr()
    assert code == 2
    assert "longer than the model's context" in captured.err, captured.err
    assert f"LONGER than the model's context of {CONTEXT}" in captured.out


def test_eval_refuses_before_loading_or_writing(
    short_model_dir, example_prompt_path, tokenizer, no_weights, tmp_path, capsys
):
    run = make_run_dir(tmp_path / "run", load_prompt(example_prompt_path), n=2)
    code = main(["eval", str(run), "--model", str(short_model_dir), "--adapters", "none"])
    assert_refused(code, capsys.readouterr().err, prompt_length(tokenizer, example_prompt_path))
    assert not (run / "eval").exists()


def test_profile_and_internalize_refuse_too(
    short_model_dir, example_prompt_path, tokenizer, no_weights, tmp_path, capsys
):
    n = prompt_length(tokenizer, example_prompt_path)
    code = main(["profile", "--prompt", str(example_prompt_path), "--model", str(short_model_dir)])
    assert_refused(code, capsys.readouterr().err, n)
    out = tmp_path / "run"
    code = main(
        ["internalize", str(example_prompt_path), "--out", str(out)]
        + ["--model", str(short_model_dir), "--preset", "quick"]
    )
    captured = capsys.readouterr()
    assert_refused(code, captured.err, n)
    assert not out.exists() and not re.search(r"2/4 training", captured.out)
