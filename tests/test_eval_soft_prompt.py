"""A soft-prompt (PEFT prompt tuning) adapter beside a LoRA adapter: ``genpi eval`` runs both in
one call, and the soft prompt's answers and NLL equal a hand computation on the base model with
the virtual tokens in front (issue #16). ``genpi chat --adapter`` and the local backend too.

The soft prompt is trained by ``genpi train --method soft-prompt`` (one step on the tiny model):
the adapter on disk is exactly what a run writes. The hand computations read its virtual tokens
from the safetensors file and run the plain causal LM on ``[virtual tokens; token embeddings]``,
with no PEFT and no genpi code between (only genpi's chat encoding, which is not under test).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genpi.adapter import make_random_adapter
from genpi.encoding import IGNORE, encode_chat, encode_reply
from genpi.evaluate.compare import compare
from genpi.evaluate.run import evaluate
from genpi.train.trainer import train
from test_train_methods import PROMPT, tiny_config
from test_train_rundir import make_run_dir

VIRTUAL = 8  # tiny_config's num_virtual_tokens
NEW_TOKENS = 6
QUESTIONS = [
    "how many users are there?",
    "what is the largest file in /tmp? answer with its full path and its size in bytes",
    "count the lines of /etc/hosts",
]


@pytest.fixture(scope="module")
def soft_run(tmp_path_factory, tiny_model_dir) -> Path:
    """A run directory with a trained soft prompt (adapters/soft-prompt) and a random LoRA
    (adapters/lora) for the same prompt and base model."""
    run = make_run_dir(tmp_path_factory.mktemp("soft") / "run", PROMPT, n=4)
    train(
        run,
        "soft-prompt",
        tiny_config(max_steps=1),
        model_ref=str(tiny_model_dir),
        out_dir=run / "adapters" / "soft-prompt",
        echo=lambda _: None,
    )
    make_random_adapter(str(tiny_model_dir), PROMPT, run / "adapters" / "lora", seed=1, rank=4)
    (run / "questions.jsonl").write_text(
        "".join(json.dumps({"input": q}) + "\n" for q in QUESTIONS)
    )
    return run


@pytest.fixture(scope="module")
def plain(tiny_model_dir):
    """The tiny causal LM and tokenizer, loaded fresh (no adapter ever touches it)."""
    from genpi.models import load_model

    return load_model(str(tiny_model_dir), dtype="fp32", device="cpu")


def virtual_tokens(adapter: Path) -> torch.Tensor:
    """The soft prompt's virtual tokens [1, n, H], straight from the adapter's weights file."""
    (embeds,) = load_file(adapter / "adapter_model.safetensors").values()
    assert embeds.shape[0] == VIRTUAL
    return embeds[None].float()


def hand_logits(lm, soft: torch.Tensor, ids: list[int]) -> torch.Tensor:
    """Logits [len(ids), V] of the input tokens, the causal LM run on the virtual tokens followed
    by the tokens' embeddings (the virtual positions' logits dropped)."""
    embeds = lm.get_input_embeddings()(torch.tensor([ids]))
    with torch.no_grad():
        logits = lm(inputs_embeds=torch.cat([soft, embeds], dim=1)).logits
    return logits[0, soft.shape[1] :]


def hand_nll(lm, tokenizer, soft: torch.Tensor, conversation, answer: str) -> float:
    sample = encode_reply(tokenizer, conversation, answer)
    logp = torch.log_softmax(hand_logits(lm, soft, sample.input_ids).double(), dim=-1)
    terms = [
        -logp[t - 1, label].item() for t, label in enumerate(sample.labels) if t and label != IGNORE
    ]
    return sum(terms) / len(terms)


def hand_greedy(lm, tokenizer, soft: torch.Tensor, conversation, n: int) -> str:
    """Greedy decoding by full forward passes (no cache), cut at the end of the turn."""
    ids = encode_chat(tokenizer, conversation)
    new: list[int] = []
    for _ in range(n):
        token = int(hand_logits(lm, soft, ids + new)[-1].argmax())
        if token == tokenizer.eos_token_id:
            break
        new.append(token)
    return tokenizer.decode(new, skip_special_tokens=True).strip()


def test_eval_runs_a_soft_prompt_and_a_lora_in_one_call(soft_run, tiny_model_dir, plain):
    lm, tokenizer = plain
    summaries = evaluate(
        soft_run,
        model=str(tiny_model_dir),
        inputs=soft_run / "questions.jsonl",
        max_new_tokens=NEW_TOKENS,
        batch_size=4,
        dtype="fp32",
        progress=False,
    )
    (summary,) = summaries
    entries = {e["name"]: e for e in summary["systems"]}
    assert list(entries) == ["upper_bound", "base", "lora", "soft-prompt"]
    assert entries["soft-prompt"]["method"] == "soft-prompt"
    assert entries["lora"]["method"] == "random"
    rows = [
        json.loads(line)
        for line in (soft_run / "eval" / "questions.answers.jsonl").read_text().splitlines()
    ]
    by_system: dict[str, list[dict]] = {}
    for row in rows:
        by_system.setdefault(row["system"], []).append(row)
    soft = virtual_tokens(soft_run / "adapters" / "soft-prompt")
    for row in by_system["soft-prompt"]:
        conversation = PROMPT.student_messages(row["input"])
        # The NLL of the teacher's answer: the virtual tokens' positions trimmed, nothing else.
        expected = hand_nll(lm, tokenizer, soft, conversation, row["reference"])
        assert row["nll"] == pytest.approx(expected, rel=1e-5)
        # The answer: greedy with the virtual tokens before every step's input (and LoRA off).
        assert row["answer"] == hand_greedy(lm, tokenizer, soft, conversation, NEW_TOKENS)
    # Without the virtual tokens the same hand computation gives the base model's NLL.
    no_soft = soft[:, :0]
    for row in by_system["base"]:
        expected = hand_nll(
            lm, tokenizer, no_soft, PROMPT.student_messages(row["input"]), row["reference"]
        )
        assert row["nll"] == pytest.approx(expected, rel=1e-5)
    nlls = {name: entry["scores"]["nll"] for name, entry in entries.items()}
    assert len({nlls["base"], nlls["lora"], nlls["soft-prompt"]}) == 3

    markdown = compare(soft_run, png=False)
    assert "| soft-prompt |" in markdown and "| lora |" in markdown


SYSTEM = (
    "You are ShellPilot, a careful assistant for Linux shell tasks. Think about what the task "
    "asks, then reply with one Thought: line that says what you will do and one Action: line, "
    "either run[COMMAND] to run a shell command or done[ANSWER] to answer. Never run commands "
    "that change the system; never guess an answer you could find out by running a command."
)


def long_conversations() -> list[list[dict[str, str]]]:
    """Conversations sharing a long system message (more than the backend's sharing threshold)."""
    return [
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}] for q in QUESTIONS
    ]


@pytest.fixture(scope="module")
def soft_backend(soft_run, tiny_model_dir):
    from genpi.llm.local import LocalBackend

    return LocalBackend.from_ref(
        str(tiny_model_dir), adapter=soft_run / "adapters" / "soft-prompt", dtype="fp32"
    )


@pytest.mark.parametrize("sharing", [True, False])
def test_local_backend_generates_with_a_soft_prompt(
    soft_run, soft_backend, plain, monkeypatch, sharing
):
    """Batched greedy generation with the soft prompt, with and without a shared token prefix
    after the virtual tokens, equals the hand decoding; the adapter disabled, the base model's."""
    from genpi.llm import SamplingParams
    from genpi.llm.local import SHARED_PREFIX_MIN_TOKENS, SharedPrefix

    lm, tokenizer = plain
    soft = virtual_tokens(soft_run / "adapters" / "soft-prompt")
    shared: list[int] = []
    original = SharedPrefix.after_soft_prompt.__func__

    def spied(cls, soft_prompt, tokens):
        shared.append(len(tokens))
        return original(cls, soft_prompt, tokens)

    monkeypatch.setattr(SharedPrefix, "after_soft_prompt", classmethod(spied))
    monkeypatch.setattr(
        soft_backend, "min_shared_prefix", SHARED_PREFIX_MIN_TOKENS if sharing else None
    )
    conversations = long_conversations()
    params = SamplingParams(max_new_tokens=NEW_TOKENS)
    answers = [g.text for g in soft_backend.generate(conversations, params)]
    # The virtual tokens were run once as a prefix, with the system message after them or not.
    assert len(shared) == 1 and (shared[0] > SHARED_PREFIX_MIN_TOKENS) == sharing
    assert answers == [hand_greedy(lm, tokenizer, soft, c, NEW_TOKENS) for c in conversations]
    with soft_backend.adapter_disabled():
        plain_answers = [g.text for g in soft_backend.generate(conversations, params)]
    assert plain_answers == [
        hand_greedy(lm, tokenizer, soft[:, :0], c, NEW_TOKENS) for c in conversations
    ]
    assert plain_answers != answers


def test_nll_of_conversations_sharing_a_prefix_under_a_soft_prompt(
    soft_run, soft_backend, plain, prefix_runs
):
    """The contexts share a long prefix, but the soft prompt's NLL is not computed after a cached
    prefix (PEFT would put the virtual tokens after it): each equals the hand computation."""
    from genpi.evaluate.metrics import teacher_forced_nlls

    lm, tokenizer = plain
    soft = virtual_tokens(soft_run / "adapters" / "soft-prompt")
    conversations = long_conversations()
    answers = ["Thought: I will look.\nAction: run[ls]", "Action: done[42]", ""]
    nlls = teacher_forced_nlls(soft_backend.model, tokenizer, conversations, answers)
    assert nlls == pytest.approx(
        [hand_nll(lm, tokenizer, soft, c, a) for c, a in zip(conversations, answers, strict=True)],
        rel=1e-5,
    )
    assert prefix_runs == []
    # The same contexts without the soft prompt do share their prefix.
    with soft_backend.adapter_disabled():
        base = teacher_forced_nlls(soft_backend.model, tokenizer, conversations, answers)
    assert len(prefix_runs) == 1
    assert base == pytest.approx(
        [
            hand_nll(lm, tokenizer, soft[:, :0], c, a)
            for c, a in zip(conversations, answers, strict=True)
        ],
        rel=1e-5,
    )


def test_chat_with_a_soft_prompt_adapter(soft_run, tiny_model_dir, plain, capsys):
    from genpi.cli import main as genpi_main

    lm, tokenizer = plain
    adapter = soft_run / "adapters" / "soft-prompt"
    question = QUESTIONS[0]
    code = genpi_main(
        [
            "chat",
            "--prompt",
            str(adapter / "prompt.json"),
            "--model",
            str(tiny_model_dir),
            "--adapter",
            str(adapter),
            "--input",
            question,
            "--max-new-tokens",
            str(NEW_TOKENS),
        ]
    )
    assert code == 0
    expected = hand_greedy(
        lm, tokenizer, virtual_tokens(adapter), PROMPT.student_messages(question), NEW_TOKENS
    )
    assert capsys.readouterr().out == expected + "\n"


def test_a_soft_prompt_is_not_added_to_a_lora_peft_model(soft_run, tiny_model_dir):
    from genpi.adapter import AdapterError, adapter_type, attach_adapter
    from genpi.models import load_model

    soft, lora = soft_run / "adapters" / "soft-prompt", soft_run / "adapters" / "lora"
    assert (adapter_type(soft), adapter_type(lora)) == ("PROMPT_TUNING", "LORA")
    model, _ = load_model(str(tiny_model_dir), dtype="fp32", device="cpu")
    peft = attach_adapter(model, lora, name="lora")
    with pytest.raises(AdapterError, match="is a PROMPT_TUNING adapter .* here LORA: attach it"):
        attach_adapter(peft, soft, name="soft")


def test_token_logits_drops_the_virtual_positions():
    from genpi.adapter import token_logits

    logits = torch.arange(2 * 5 * 3).reshape(2, 5, 3)
    assert torch.equal(token_logits(logits, 3), logits[:, 2:])
    assert torch.equal(token_logits(logits, 5), logits)
    with pytest.raises(ValueError, match="5 positions of logits for 6 input tokens"):
        token_logits(logits, 6)
