"""genpi profile: counted FLOPs against the analytic formula, per-turn accounting, settings."""

from __future__ import annotations

import json

import pytest

from genpi.profile.conversation import (
    Conversation,
    ConversationError,
    load_conversation,
    student_segments,
    synthetic_conversation,
    teacher_segments,
)
from genpi.profile.flops import ModelShape, counting_flops, lora_flops_per_token
from genpi.profile.measure import cached_plan, profile, recompute_plan
from genpi.prompt import Prompt

PROMPT = Prompt(
    messages=(
        {
            "role": "user",
            "content": "You are a shell agent. Answer with Act: bash or Act: finish. " * 6,
        },
        {"role": "assistant", "content": "OK."},
    ),
    input_template="Task:\n{input}",
    name="test-prompt",
)


@pytest.fixture(scope="module")
def odd_model():
    """A tiny Llama whose head size is not hidden/heads, with grouped-query attention."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=101,
        hidden_size=48,
        intermediate_size=80,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=256,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    model.set_attn_implementation("eager")
    return model


def _count(model, ids, cache=None):
    import torch

    with torch.inference_mode(), counting_flops() as counter:
        out = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
    return counter.get_total_flops(), out.past_key_values


def test_one_forward_pass_counts_exactly_the_analytic_flops(odd_model):
    import torch

    L, d, f, H, Hkv, dh, V = 3, 48, 80, 4, 2, 16, 101  # the config above, written out
    per_token = L * 2 * (d * H * dh + 2 * d * Hkv * dh + H * dh * d + 3 * d * f)

    n = 7
    flops, cache = _count(odd_model, torch.arange(1, n + 1)[None])
    assert flops == n * per_token + L * 4 * H * dh * n * n + 2 * d * V
    assert flops == ModelShape.from_config(odd_model.config).forward_flops(n)

    # one decode step over the 7 cached tokens: attention spans 8 keys
    flops, _ = _count(odd_model, torch.tensor([[5]]), cache)
    assert flops == per_token + L * 4 * H * dh * 1 * (n + 1) + 2 * d * V
    assert flops == ModelShape.from_config(odd_model.config).forward_flops(1, n)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from genpi.models import load_model

    return load_model(str(tiny_model_dir), dtype="fp32", device="cpu")


@pytest.fixture(scope="module")
def conversation(tokenizer):
    return synthetic_conversation(tokenizer, turns=3, user_tokens=12, assistant_tokens=5)


def test_synthetic_conversation_has_the_asked_lengths(tokenizer, conversation):
    assert conversation.n_turns == 3
    assert len(tokenizer.encode(conversation.input, add_special_tokens=False)) == 12
    answers = [m["content"] for m in conversation.turns if m["role"] == "assistant"]
    assert [len(tokenizer.encode(a, add_special_tokens=False)) for a in answers] == [5, 5, 5]


def test_segments_rebuild_the_rendered_conversation(tokenizer, conversation):
    for segments, messages in (
        (
            teacher_segments(tokenizer, PROMPT, conversation),
            PROMPT.teacher_messages(conversation.input),
        ),
        (
            student_segments(tokenizer, PROMPT, conversation),
            PROMPT.student_messages(conversation.input),
        ),
    ):
        ids = list(segments.prefix)
        for user, answer in zip(segments.user, segments.assistant, strict=True):
            ids += user + answer
        full = tokenizer.apply_chat_template(messages + conversation.turns, tokenize=False)
        assert tokenizer.decode(ids) == full
    teacher = teacher_segments(tokenizer, PROMPT, conversation)
    student = student_segments(tokenizer, PROMPT, conversation)
    # the prompt is pre-cached; what follows the task input is the same in both views
    assert len(teacher.prefix) > len(student.prefix) + 50
    assert teacher.user == student.user and teacher.assistant == student.assistant


def test_plans_feed_every_token_once_or_recompute_the_history(tokenizer, conversation):
    segments = teacher_segments(tokenizer, PROMPT, conversation)
    cached = cached_plan(segments)
    assert cached[0].kind == "precache" and cached[0].fresh
    fed = [t for step in cached for t in step.tokens]
    # every token but the last answer's last one (never fed: nothing comes after it)
    assert len(fed) == segments.total_tokens - 1
    recomputed = recompute_plan(segments)
    prefills = [s for s in recomputed if s.kind == "prefill"]
    assert all(s.fresh for s in prefills)
    assert [len(s.tokens) for s in prefills][1:] == [
        len(segments.prefix)
        + sum(map(len, segments.user[: t + 1]))
        + sum(map(len, segments.assistant[:t]))
        for t in range(1, 3)
    ]


@pytest.fixture(scope="module")
def report(tiny, conversation, tiny_adapter_dir):
    model, tokenizer = tiny
    return profile(
        PROMPT,
        conversation,
        model,
        tokenizer,
        adapter=str(tiny_adapter_dir),
        repeats=0,
        settings=[
            "prompted_no_cache",
            "prompted_cache",
            "adapter_unmerged",
            "adapter_merged",
            "no_prompt",
        ],
    )


def test_every_counted_pass_matches_the_analytic_count(report):
    for name, setting in report["settings"].items():
        # Every pass was counted: an uncounted one would fall back to the analytic figure and
        # make the comparison below hold trivially.
        assert setting["flops_source"] == "counted", name
        assert setting["analytic_mismatched_passes"] == 0, name
        assert setting["analytic_matches_counted"], name
        assert setting["total"]["flops"] == setting["total"]["flops_analytic"]


def test_analytic_only_profile_equals_the_counted_one(report, tiny, conversation, tiny_adapter_dir):
    model, tokenizer = tiny
    analytic = profile(
        PROMPT,
        conversation,
        model,
        tokenizer,
        adapter=str(tiny_adapter_dir),
        repeats=0,
        settings=list(report["settings"]),
        count=False,
    )
    for name, setting in analytic["settings"].items():
        assert setting["flops_source"] == "analytic"
        assert setting["turns"] == report["settings"][name]["turns"]
        assert setting["precache"] == report["settings"][name]["precache"]


def test_cached_turns_exceed_the_floor_by_exactly_attention_over_the_prompt(report, tiny):
    model, _ = tiny
    cfg = model.config
    attention_per_token_per_key = (
        cfg.num_hidden_layers
        * 4
        * cfg.num_attention_heads
        * (cfg.hidden_size // cfg.num_attention_heads)
    )
    prompt_tokens = report["conversation"]["prompt_tokens"]
    assert prompt_tokens > 50
    prompted, floor = report["settings"]["prompted_cache"], report["settings"]["no_prompt"]
    for with_prompt, without in zip(prompted["turns"], floor["turns"], strict=True):
        assert with_prompt["new_tokens"] == without["new_tokens"]
        extra = with_prompt["flops"] - without["flops"]
        assert extra == attention_per_token_per_key * prompt_tokens * with_prompt["new_tokens"]
    assert prompted["total"]["flops"] > floor["total"]["flops"]
    assert report["comparison"]["no_prompt"]["flops_saved"] > 0


def test_merged_adapter_costs_the_floor_and_unmerged_adds_the_lora_matmuls(report, tiny):
    model, _ = tiny
    cfg = model.config
    d, f, H, Hkv = (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
    )
    dh = d // H
    r = 4  # the tiny_adapter_dir fixture's rank, on all linear layers
    io = [(d, H * dh), (d, Hkv * dh), (d, Hkv * dh), (H * dh, d), (d, f), (d, f), (f, d)]
    lora_per_token = cfg.num_hidden_layers * sum(2 * r * (i + o) for i, o in io)

    merged = report["settings"]["adapter_merged"]
    unmerged = report["settings"]["adapter_unmerged"]
    floor = report["settings"]["no_prompt"]
    assert unmerged["lora_flops_per_token"] == lora_per_token
    for m, u, fl in zip(merged["turns"], unmerged["turns"], floor["turns"], strict=True):
        assert m["flops"] == fl["flops"]
        assert u["flops"] - fl["flops"] == lora_per_token * u["new_tokens"]
    assert report["comparison"]["adapter_merged"]["flops_over_floor"] == 0


def test_kv_bytes_are_those_of_the_cached_tokens(report):
    for setting in report["settings"].values():
        for turn in setting["turns"]:
            assert turn["kv_bytes"] == turn["kv_bytes_analytic"] > 0
    prompted = report["settings"]["prompted_cache"]["total"]["kv_bytes_peak"]
    assert prompted > report["settings"]["adapter_merged"]["total"]["kv_bytes_peak"]


def test_lora_flops_are_zero_once_merged(tiny_model_dir, tiny_adapter_dir):
    from transformers import AutoModelForCausalLM

    from genpi.adapter import attach_adapter

    model = attach_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tiny_adapter_dir)
    assert lora_flops_per_token(model) > 0
    assert lora_flops_per_token(model.merge_and_unload()) == 0


def test_compressed_prompt_costs_less_and_reports_its_compression(tiny, conversation):
    model, tokenizer = tiny

    def every_other_word(text: str) -> str:
        return " ".join(text.split()[::2])

    result = profile(
        PROMPT,
        conversation,
        model,
        tokenizer,
        compressor=every_other_word,
        repeats=0,
        settings=["prompted_cache", "compressed_cache"],
    )
    compressed = result["settings"]["compressed_cache"]
    assert compressed["compression"]["compressor"] == "every_other_word"
    assert (
        compressed["compression"]["prefix_tokens"]
        < result["conversation"]["prefix_tokens_prompted"]
    )
    assert compressed["total"]["flops"] < result["settings"]["prompted_cache"]["total"]["flops"]
    assert (
        compressed["total"]["flops_with_compression"] >= compressed["total"]["flops_with_precache"]
    )


def test_profile_compresses_the_prompt_as_the_evaluation_baseline_does():
    """One LLMLingua baseline: profile costs the same messages genpi eval scores (the whole
    prompt compressed as one text, then the final user turn), not a message-by-message variant."""
    from genpi.evaluate.compression import compressed_messages, prompt_document
    from genpi.profile.measure import compress_prompt

    seen: list[str] = []

    def shorter(text: str) -> str:
        seen.append(text)
        return text[: len(text) // 2]

    compressed = compress_prompt(PROMPT, shorter)
    assert seen == [prompt_document(PROMPT)]
    expected = compressed_messages(shorter(prompt_document(PROMPT)), PROMPT, "ls")
    assert compressed.teacher_messages("ls") == expected


def test_transcript_and_run_directory_conversations(tmp_path):
    transcript = tmp_path / "t.json"
    transcript.write_text(
        json.dumps(
            [
                {"role": "user", "content": "list files"},
                {"role": "assistant", "content": "Act: bash ls"},
                {"role": "user", "content": "a b c"},
                {"role": "assistant", "content": "Act: finish"},
                {"role": "user", "content": "trailing observation"},
            ]
        )
    )
    conv = load_conversation(transcript)
    assert conv.input == "list files" and conv.n_turns == 2
    assert conv.truncated(1).turns == [{"role": "assistant", "content": "Act: bash ls"}]
    assert conv.truncated(5).turns[-1]["role"] == "assistant"

    run = tmp_path / "run"
    run.mkdir()
    record = {
        "id": "x1",
        "input": "list files",
        "turns": [{"role": "assistant", "content": "Act: finish"}],
    }
    (run / "conversations.jsonl").write_text(json.dumps(record) + "\n")
    assert load_conversation(run).turns == record["turns"]
    with pytest.raises(ConversationError, match="no example 'nope'"):
        load_conversation(run, "nope")

    transcript.write_text(json.dumps([{"role": "assistant", "content": "hi"}]))
    with pytest.raises(ConversationError, match="task input"):
        load_conversation(transcript)
    transcript.write_text(
        json.dumps([{"role": "user", "content": "x"}, {"role": "user", "content": "y"}])
    )
    with pytest.raises(ConversationError, match="must be an 'assistant' message"):
        load_conversation(transcript)
    with pytest.raises(ConversationError, match="does not exist"):
        load_conversation(tmp_path / "missing.json")


def test_conversation_without_an_answer_is_refused(tokenizer):
    with pytest.raises(ConversationError, match="no assistant answer"):
        teacher_segments(tokenizer, PROMPT, Conversation("x", []))


def test_cli_writes_json_and_plots(tmp_path, tiny_model_dir, example_prompt_path):
    from genpi.cli import main

    out = tmp_path / "out"
    rc = main(
        [
            "profile",
            "--prompt",
            str(example_prompt_path),
            "--model",
            str(tiny_model_dir),
            "--dtype",
            "fp32",
            "--turns",
            "2",
            "--user-tokens",
            "8",
            "--assistant-tokens",
            "3",
            "--repeats",
            "1",
            "--settings",
            "prompted_no_cache,prompted_cache,adapter_merged,no_prompt",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    report = json.loads((out / "profile.json").read_text())
    assert set(report["settings"]) == {
        "prompted_no_cache",
        "prompted_cache",
        "adapter_merged",
        "no_prompt",
    }
    turn = report["settings"]["prompted_cache"]["turns"][0]
    assert turn["ttft_s"] > 0 and turn["per_output_token_s"] > 0
    assert report["comparison"]["adapter_merged"]["latency_ratio"] > 0
    assert (out / "profile_per_turn.png").stat().st_size > 0
    assert (out / "profile_cumulative.png").stat().st_size > 0


def test_cli_rejects_an_unknown_setting(tmp_path, tiny_model_dir, example_prompt_path, capsys):
    from genpi.cli import main

    rc = main(
        [
            "profile",
            "--prompt",
            str(example_prompt_path),
            "--model",
            str(tiny_model_dir),
            "--turns",
            "1",
            "--repeats",
            "0",
            "--settings",
            "fastest",
        ]
    )
    assert rc == 2
    assert "unknown settings ['fastest']" in capsys.readouterr().err


@pytest.mark.integration
@pytest.mark.slow  # counting every pass of the real model with a 534-token prompt: ~1-10 min on CPU
def test_embedded_model_counts_match_the_formula_on_the_os_prompt(embedded_backend, os_prompt_path):
    from genpi.prompt import load_prompt

    model, tokenizer = embedded_backend.model, embedded_backend.tokenizer
    conversation = synthetic_conversation(tokenizer, turns=1, user_tokens=6, assistant_tokens=3)
    attention = model.config._attn_implementation
    result = profile(
        load_prompt(os_prompt_path),
        conversation,
        model,
        tokenizer,
        repeats=0,
        settings=["prompted_cache", "adapter_unmerged", "adapter_merged", "no_prompt"],
    )
    settings = result["settings"]
    assert all(s["analytic_matches_counted"] for s in settings.values())
    assert settings["adapter_merged"]["total"]["flops"] == settings["no_prompt"]["total"]["flops"]
    assert settings["adapter_unmerged"]["total"]["flops"] > settings["no_prompt"]["total"]["flops"]
    assert result["conversation"]["prompt_tokens"] > 400
    assert model.config._attn_implementation == attention  # the shared model is left as it was
