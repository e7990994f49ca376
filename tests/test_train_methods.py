"""Every training method on a tiny model: the loss goes down, the adapter reloads and changes outputs.

Each run is a few full-batch optimizer steps on four hand-made examples (so every step sees the
same data and the first and last logged losses are comparable).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from genpi.adapter import AdapterError, AdapterInfo, check_adapter, read_adapter_info
from genpi.data import Example
from genpi.models import resolve_model
from genpi.prompt import Prompt
from genpi.train.config import make_config
from genpi.train.methods import METHODS, prepended
from genpi.train.trainer import train, weights_sha256
from test_train_rundir import make_run_dir

PROMPT = Prompt(
    messages=(
        {
            "role": "system",
            "content": "You are ShellPilot. Reply with a Thought: line and "
            "an Action: line, run[COMMAND] or done[ANSWER].",
        },
    ),
    input_template="Task: {input}",
    name="tiny-shell",
)


def tiny_config(**overrides):
    values = dict(
        max_steps=2,
        per_device_batch=4,
        effective_batch=4,
        learning_rate=1e-2,
        dtype="fp32",
        save_steps=100,
        lora_dropout=0.0,
        num_virtual_tokens=8,
    )
    return make_config("quick", **{**values, **overrides})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run_dir(tmp_path_factory.mktemp("train") / "run", PROMPT, n=4)


def losses(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "loss.jsonl").read_text().splitlines()]


def first_logits(model, tokenizer) -> torch.Tensor:
    ids = tokenizer.apply_chat_template(
        PROMPT.student_messages("print the kernel version."),
        tokenize=True,
        add_generation_prompt=True,
        return_dict=True,
    )
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids["input_ids"]])).logits[0, -1].float()


@pytest.fixture(scope="module")
def base_logits(tiny_backend):
    return first_logits(tiny_backend.model, tiny_backend.tokenizer)


# The random tiny model barely depends on the prompt, so KL starts near 0: smaller steps.
GENTLE = {"kld": {"learning_rate": 1e-3}, "seqkd-kld": {"learning_rate": 1e-3}}
CASES = [(name, GENTLE.get(name, {})) for name in METHODS] + [
    ("prepend", {"prepend_prob": 0.5}),
    ("seqkd", {"full": True, "learning_rate": 1e-3}),
    ("seqkd-kld", {"full": True, "learning_rate": 1e-4}),
]


@pytest.mark.parametrize(
    ("method", "overrides"),
    CASES,
    ids=[m + ("-" + "-".join(f"{k}={v}" for k, v in o.items()) if o else "") for m, o in CASES],
)
def test_method_lowers_its_loss_and_writes_a_loadable_adapter(
    method, overrides, run_dir, tiny_model_dir, tmp_path, base_logits
):
    from genpi.llm.local import LocalBackend

    out = train(
        run_dir,
        method,
        tiny_config(**overrides),
        model_ref=str(tiny_model_dir),
        out_dir=tmp_path / method,
        echo=lambda _: None,
    )
    rows = losses(out)
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[-1]["loss"] < rows[0]["loss"]
    for term in METHODS[method].terms:  # each term is logged on its own
        assert all(f"{term}_loss" in r and r[f"{term}_tokens"] > 0 for r in rows)
    assert (out / "loss.png").stat().st_size > 0
    # A full fine-tune is a model directory, not an adapter: read its record directly.
    info = AdapterInfo(**json.loads((out / "genpi_adapter.json").read_text()))
    if not overrides.get("full"):
        assert read_adapter_info(out) == info
    assert info.method == method and info.prompt_fingerprint == PROMPT.fingerprint
    assert info.base_model == str(tiny_model_dir)
    assert info.base_weights_sha256 == weights_sha256(resolve_model(str(tiny_model_dir)))
    assert info.data_fingerprint and info.chat_template
    assert info.config["lam"] == 0.7 and info.config["lora_r"] == 16
    assert not (out / "checkpoints").exists()
    if overrides.get("full"):  # a whole model, not an adapter
        assert (out / "config.json").exists() and not (out / "adapter_config.json").exists()
        backend = LocalBackend.from_ref(str(out), dtype="fp32")
    else:
        adapter_config = json.loads((out / "adapter_config.json").read_text())
        assert adapter_config["base_model_name_or_path"] == str(tiny_model_dir)
        assert not adapter_config.get("modules_to_save")
        assert (out / "adapter_model.safetensors").exists()
        backend = LocalBackend.from_ref(str(tiny_model_dir), adapter=out, dtype="fp32")
    changed = first_logits(backend.model, backend.tokenizer)
    assert (changed - base_logits).abs().max() > 1e-3


def test_genpi_loss_is_the_lambda_mix_of_the_logged_terms_under_accumulation(
    run_dir, tiny_model_dir, tmp_path
):
    # Two micro-batches of 2 per step: each term is normalised by the step's total tokens.
    config = tiny_config(per_device_batch=2, effective_batch=4, lam=0.6, max_steps=2)
    out = train(
        run_dir,
        "genpi",
        config,
        model_ref=str(tiny_model_dir),
        out_dir=tmp_path / "g",
        echo=lambda _: None,
    )
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["grad_accum"] == 2
    for row in losses(out):
        assert row["loss"] == pytest.approx(0.6 * row["sft_loss"] + 0.4 * row["pg_loss"], rel=1e-4)
    assert summary["tokens_by_stream"]["pg"] > 0 and summary["tokens_by_stream"]["sft"] > 0


def test_prepend_probability_decides_who_sees_the_prompt():
    def sees_prompt(prob: float) -> list[bool]:
        config = make_config(prepend_prob=prob)
        flags = []
        for i in range(40):
            ex = Example(id=f"e{i}", input="x", turns=[{"role": "assistant", "content": "ok"}])
            flags.append(prepended(ex, PROMPT, config)["sft"][0]["role"] == "system")
        return flags

    assert all(sees_prompt(1.0))
    half = sees_prompt(0.5)
    assert 5 < sum(half) < 35 and sees_prompt(0.5) == half  # a mix, the same on every run
    assert random.Random(0).random() != 0  # (the draw is seeded per example, not global)


def test_interrupted_run_resumes_from_its_last_checkpoint(run_dir, tiny_model_dir, tmp_path):
    from transformers import TrainerCallback

    class Interrupt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt

    config = tiny_config(max_steps=4, save_steps=2)
    out_dir = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        train(
            run_dir,
            "sft",
            config,
            model_ref=str(tiny_model_dir),
            out_dir=out_dir,
            callbacks=[Interrupt()],
            echo=lambda _: None,
        )
    assert (out_dir / "checkpoints" / "checkpoint-2").is_dir()
    assert not (out_dir / "adapter_model.safetensors").exists()
    messages: list[str] = []
    train(
        run_dir, "sft", config, model_ref=str(tiny_model_dir), out_dir=out_dir, echo=messages.append
    )
    assert any("resuming from" in m and "checkpoint-2" in m for m in messages)
    assert [r["step"] for r in losses(out_dir)] == [1, 2, 3, 4]  # step 3 logged once
    summary = json.loads((out_dir / "train_summary.json").read_text())
    assert summary["global_steps"] == 4 and summary["steps_this_run"] == 2
    # Same flags again: the finished adapter is kept; other flags are refused.
    again: list[str] = []
    train(run_dir, "sft", config, model_ref=str(tiny_model_dir), out_dir=out_dir, echo=again.append)
    assert any("already trained" in m for m in again)
    from genpi.errors import GenpiError

    with pytest.raises(GenpiError, match="--overwrite"):
        train(
            run_dir,
            "sft",
            tiny_config(max_steps=5),
            model_ref=str(tiny_model_dir),
            out_dir=out_dir,
            echo=lambda _: None,
        )


@pytest.fixture(scope="module")
def sft_adapter(run_dir, tiny_model_dir, tmp_path_factory) -> Path:
    return train(
        run_dir,
        "sft",
        tiny_config(max_steps=1),
        model_ref=str(tiny_model_dir),
        out_dir=tmp_path_factory.mktemp("sft") / "a",
        echo=lambda _: None,
    )


def test_adapter_refuses_another_base_model_or_prompt(sft_adapter, tiny_model_dir, tmp_path):
    from genpi.models import resolve_model
    from genpi.train.merge import merge

    right = weights_sha256(resolve_model(str(tiny_model_dir)))
    check_adapter(
        sft_adapter, base_model=str(tiny_model_dir), base_weights_sha256=right, prompt=PROMPT
    )
    with pytest.raises(AdapterError, match="other weights"):
        check_adapter(sft_adapter, base_model="other", base_weights_sha256="0" * 64)
    other_prompt = Prompt(messages=({"role": "system", "content": "Be a pirate."},), name="pirate")
    with pytest.raises(AdapterError, match="internalizes prompt"):
        check_adapter(sft_adapter, prompt=other_prompt)
    with pytest.raises(AdapterError, match="other weights"):
        merge(sft_adapter, tmp_path / "m", model_ref="smollm2-135m")


def test_merge_writes_a_model_equal_to_base_plus_adapter(sft_adapter, tiny_model_dir, tmp_path):
    from genpi.llm.local import LocalBackend
    from genpi.train.merge import merge

    merged_dir = merge(sft_adapter, tmp_path / "merged")
    merged = LocalBackend.from_ref(str(merged_dir), dtype="fp32")
    adapted = LocalBackend.from_ref(str(tiny_model_dir), adapter=sft_adapter, dtype="fp32")
    torch.testing.assert_close(
        first_logits(merged.model, merged.tokenizer),
        first_logits(adapted.model, adapted.tokenizer),
        atol=1e-4,
        rtol=1e-4,
    )
    assert (merged_dir / "genpi_adapter.json").exists() and (
        merged_dir / "tokenizer_config.json"
    ).exists()


def test_cli_trains_and_reports_errors_in_one_line(run_dir, tiny_model_dir, tmp_path, capsys):
    from genpi.cli import main

    out = tmp_path / "cli"
    argv = [
        "train",
        str(run_dir),
        "--method",
        "pg",
        "--preset",
        "quick",
        "--max-steps",
        "1",
        "--model",
        str(tiny_model_dir),
        "--dtype",
        "fp32",
        "--out",
        str(out),
        "--lora-r",
        "4",
    ]
    assert main(argv) == 0
    assert json.loads((out / "train_config.json").read_text())["lora_r"] == 4
    assert "pg: 1 sequences" not in capsys.readouterr().err
    assert main(["train", str(tmp_path / "nowhere")]) == 2
    assert "no prompt.json" in capsys.readouterr().err
    assert main(["train", str(run_dir), "--method", "sft", "--full"]) == 2
    assert main(["train", str(run_dir), "--lam", "1.5"]) == 2


# The hidden-state path (labelled positions projected in chunks, the KL teacher's prompt prefix
# from a cache) must train exactly as the full-logits path: same losses step by step, in the same
# data order (grouping by length off, as it changes the order).
@pytest.mark.parametrize(
    ("method", "overrides"),
    [
        ("genpi", {"per_device_batch": 2, "effective_batch": 4}),
        ("sft", {}),
        ("kld", {"learning_rate": 1e-2}),
        ("seqkd-kld", {"per_device_batch": 2, "effective_batch": 4}),
        ("seqkd-kld", {"full": True, "learning_rate": 1e-3}),  # trained output layer, own teacher
    ],
)
def test_hidden_state_path_trains_like_the_full_logits_path(
    method, overrides, run_dir, tiny_model_dir, tmp_path, monkeypatch
):
    from genpi.train.hidden import FULL_LOGITS_ENV

    config = tiny_config(max_steps=3, group_by_length=False, **overrides)
    runs = {}
    for path, forced in (("hidden", "0"), ("full-logits", "1")):
        monkeypatch.setenv(FULL_LOGITS_ENV, forced)
        out = train(
            run_dir,
            method,
            config,
            model_ref=str(tiny_model_dir),
            out_dir=tmp_path / path,
            echo=lambda _: None,
        )
        summary = json.loads((out / "train_summary.json").read_text())
        assert summary["loss_path"] == path
        if path == "hidden" and METHODS[method].needs_teacher:
            assert summary["teacher_prefix_tokens"] > 20  # the system prompt, run once
        runs[path] = losses(out)
    terms = ["loss", *(f"{t}_loss" for t in METHODS[method].terms)]
    for new, old in zip(runs["hidden"], runs["full-logits"], strict=True):
        for term in terms:
            assert new[term] == pytest.approx(old[term], rel=1e-5, abs=1e-6), (new, old)
    # The weights moved (lr 1e-2), so later steps compare trained models, not only step 1.
    assert runs["hidden"][-1]["loss"] != pytest.approx(runs["hidden"][0]["loss"], rel=1e-3)


def test_soft_prompt_keeps_the_full_logits_path(run_dir, tiny_model_dir, tmp_path):
    out = train(
        run_dir,
        "soft-prompt",
        tiny_config(max_steps=1),
        model_ref=str(tiny_model_dir),
        out_dir=tmp_path / "soft",
        echo=lambda _: None,
    )
    assert json.loads((out / "train_summary.json").read_text())["loss_path"] == "full-logits"
