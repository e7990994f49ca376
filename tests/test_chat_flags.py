"""``genpi chat`` sampling flags out of range: one line, before any model loads; and the same
checks in SamplingParams for every other caller."""

from __future__ import annotations

import math

import pytest

from genpi.cli import main
from genpi.errors import GenpiError
from genpi.llm.base import SamplingParams


@pytest.fixture
def no_model(monkeypatch):
    import genpi.llm
    import genpi.models

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the flags were checked")

    monkeypatch.setattr(genpi.llm, "load_backend", refuse)
    monkeypatch.setattr(genpi.models, "load_model", refuse)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--max-new-tokens", "-5"], "max_new_tokens must be >= 1, got -5"),
        (["--max-new-tokens", "0"], "max_new_tokens must be >= 1, got 0"),
        (["--temperature", "-1"], "temperature must be >= 0 and finite, got -1.0"),
        (["--temperature", "nan"], "temperature must be >= 0 and finite, got nan"),
        (["--temperature", "inf"], "temperature must be >= 0 and finite, got inf"),
    ],
)
def test_chat_refuses_bad_sampling_flags_in_one_line(
    flags, message, example_prompt_path, tiny_model_dir, no_model, capsys
):
    argv = ["chat", "--prompt", str(example_prompt_path), "--model", str(tiny_model_dir)]
    assert main([*argv, "--input", "x", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"genpi: error: {message}: give --max-new-tokens 1 or more"), err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_new_tokens": -5},
        {"max_new_tokens": True},
        {"max_new_tokens": 2.5},
        {"temperature": -1.0},
        {"temperature": math.nan},
        {"temperature": math.inf},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"top_p": math.nan},
    ],
)
def test_sampling_params_errors_are_genpi_errors_and_value_errors(kwargs):
    with pytest.raises(GenpiError) as info:
        SamplingParams(**kwargs)
    assert isinstance(info.value, ValueError)  # callers that catch ValueError keep working
    assert next(iter(kwargs)) in str(info.value)


def test_valid_sampling_params_pass():
    assert SamplingParams(max_new_tokens=1, temperature=0.0, top_p=1.0).greedy
    assert not SamplingParams(temperature=0.7, top_p=0.9).greedy
