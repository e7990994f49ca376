"""Tokenized training samples: assistant-only masks, the PG sample's layouts, length reports."""

from __future__ import annotations

import pytest

from genpi.data import Example
from genpi.encoding import IGNORE, encode_conversation
from genpi.errors import GenpiError
from genpi.prompt import Prompt
from genpi.train.datasets import Collator, PGLayout, build_items, pg_messages

PROMPT = Prompt(
    messages=({"role": "system", "content": "Answer with Thought: and Action: lines."},),
    name="tiny",
)


def labelled_runs(tokenizer, sample) -> list[str]:
    """The decoded text of each maximal run of labelled tokens."""
    runs, current = [], []
    for token, label in zip(sample.input_ids, sample.labels, strict=True):
        if label != IGNORE:
            assert label == token
            current.append(token)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    if current:
        runs.append(tokenizer.decode(current))
    return runs


def test_mask_covers_exactly_the_assistant_turns(tokenizer):
    messages = [
        {"role": "user", "content": "how many files are in /tmp?"},
        {"role": "assistant", "content": "Thought: count them.\nAction: run[ls /tmp | wc -l]"},
        {"role": "user", "content": "Output:\n3"},
        {"role": "assistant", "content": "Thought: done.\nAction: done[3]"},
    ]
    sample = encode_conversation(tokenizer, messages)
    end = tokenizer.eos_token  # <|im_end|>: the model must learn to stop
    assert labelled_runs(tokenizer, sample) == [
        messages[1]["content"] + end,
        messages[3]["content"] + end,
    ]
    # The ids are the chat template's own tokenization of the whole conversation.
    expected = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)
    assert sample.input_ids == list(expected["input_ids"])


def test_mask_with_a_system_prompt_and_leading_space(tokenizer):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": " hello there"},
    ]
    sample = encode_conversation(tokenizer, messages)
    assert labelled_runs(tokenizer, sample) == [" hello there" + tokenizer.eos_token]
    assert sample.target_tokens == sum(1 for t in sample.labels if t != IGNORE)


def example(**kw) -> Example:
    base = dict(
        id="a",
        input="count files in /tmp",
        student_output="Use ls.",
        teacher_output="Action: run[ls]",
        reason="The prompt wants actions.",
        turns=[{"role": "assistant", "content": "Action: run[ls]"}],
    )
    return Example(**{**base, **kw})


@pytest.mark.parametrize(
    ("layout", "target_has", "input_has"),
    [
        (PGLayout(("prompt", "reason")), ["Thought: and Action:", "wants actions"], []),
        (PGLayout(("prompt",)), ["Thought: and Action:"], []),
        (PGLayout(("reason",)), ["wants actions"], []),
        (PGLayout(("reason",), given=("prompt",)), ["wants actions"], ["Thought: and Action:"]),
        (PGLayout(("prompt",), given=("reason",)), ["Thought: and Action:"], ["wants actions"]),
    ],
)
def test_pg_layouts_place_prompt_and_reason(layout, target_has, input_has):
    user, assistant = pg_messages(example(), PROMPT, layout)
    assert "count files in /tmp" in user["content"]
    assert "### AS-IS\nUse ls." in user["content"]
    assert "### TO-BE\nAction: run[ls]" in user["content"]
    for text in target_has:
        assert text in assistant["content"] and text not in user["content"]
    for text in input_has:
        assert text in user["content"] and text not in assistant["content"]
    if layout.target == ("prompt",):
        assert assistant["content"] == PROMPT.text  # the prompt verbatim, nothing added


def test_pg_target_orders_prompt_before_reason():
    _, assistant = pg_messages(example(), PROMPT, PGLayout(("prompt", "reason")))
    assert assistant["content"].index("Thought: and Action:") < assistant["content"].index(
        "wants actions"
    )


def test_pg_needs_outputs_and_a_reason_only_when_used():
    assert pg_messages(example(reason=None), PROMPT, PGLayout(("prompt", "reason"))) is None
    assert pg_messages(example(reason=None), PROMPT, PGLayout(("prompt",))) is not None
    assert pg_messages(example(teacher_output=None), PROMPT, PGLayout(("prompt",))) is None


def conversations_of(ex: Example):
    return {"sft": ex.student_conversation(PROMPT), "pg": pg_messages(ex, PROMPT)}


def test_default_max_length_keeps_everything_and_reports_the_longest(tokenizer):
    examples = [example(id=str(i), input="x " * (5 * i + 1)) for i in range(4)]
    dataset, report = build_items(
        examples, conversations_of, tokenizer, max_length=None, model_context=None
    )
    assert len(dataset) == 4 and report["dropped_overlong"] == 0
    longest_pg = max(len(item["pg"].input_ids) for item in dataset.items)
    assert report["max_length"] == longest_pg == report["streams"]["pg"]["longest"]


def test_overlong_sequences_are_counted_and_dropped_or_refused(tokenizer):
    examples = [example(id=str(i), input="word " * (40 * i + 1)) for i in range(3)]
    _, full = build_items(
        examples, conversations_of, tokenizer, max_length=None, model_context=None
    )
    lengths = sorted(s["longest"] for s in full["streams"].values())
    limit = full["streams"]["pg"]["longest"] - 1  # exactly one PG sequence is too long
    dataset, report = build_items(
        examples, conversations_of, tokenizer, max_length=limit, model_context=None
    )
    assert report["streams"]["pg"]["overlong"] == 1
    assert report["dropped_overlong"] == 1 and len(dataset) == 2
    assert all(len(s.input_ids) <= limit for item in dataset.items for s in item.values())
    assert lengths  # both streams were measured
    with pytest.raises(GenpiError, match="longer than --max-length"):
        build_items(
            examples,
            conversations_of,
            tokenizer,
            max_length=limit,
            model_context=None,
            overlong="error",
        )


def test_model_context_caps_the_default_length(tokenizer):
    examples = [example(id=str(i), input="word " * 300) for i in range(2)]
    dataset, report = build_items(
        examples, conversations_of, tokenizer, max_length=None, model_context=128
    )
    assert report["max_length"] == 128 and len(dataset) == 0
    assert report["streams"]["pg"]["overlong"] == 2


def test_examples_missing_data_are_counted(tokenizer):
    examples = [example(id="a"), example(id="b", teacher_output=None)]
    dataset, report = build_items(
        examples,
        lambda ex: None if ex.teacher_output is None else conversations_of(ex),
        tokenizer,
        max_length=None,
        model_context=None,
    )
    assert len(dataset) == 1 and report["skipped_missing_data"] == 1


def test_collator_pads_each_stream_and_masks_padding(tokenizer):
    examples = [example(id="a", input="short"), example(id="b", input="a much longer input " * 5)]
    dataset, _ = build_items(
        examples, conversations_of, tokenizer, max_length=None, model_context=None
    )
    batch = Collator(tokenizer.pad_token_id)([dataset[0], dataset[1]])
    for stream in ("sft", "pg"):
        ids, mask, labels = (
            batch[f"{stream}_{k}"] for k in ("input_ids", "attention_mask", "labels")
        )
        assert ids.shape == mask.shape == labels.shape
        assert (labels[mask == 0] == IGNORE).all()
        assert int(mask[0].sum()) == len(dataset[0][stream].input_ids)


def test_the_prompts_demonstrations_are_context_in_the_teachers_view(tokenizer):
    """A prompt with a demonstration turn: teacher-side streams train on the task's turns only,
    so the teacher's targets are the student's (KLD pairs them token by token)."""
    from genpi.train.config import make_config
    from genpi.train.methods import first_answer_with_teacher, prepended, with_teacher

    demo = Prompt(
        messages=(
            {"role": "system", "content": "Answer with Thought: and Action: lines."},
            {"role": "user", "content": "count files in /etc"},
            {"role": "assistant", "content": "Thought: count.\nAction: run[ls /etc | wc -l]"},
        ),
        name="with-demo",
    )
    ex = example()
    config = make_config(prepend_prob=1.0)
    for streams in (
        with_teacher(ex, demo, config),
        first_answer_with_teacher(ex, demo, config),
        {"teacher": prepended(ex, demo, config)["sft"]},
    ):
        teacher = encode_conversation(tokenizer, streams["teacher"])
        assert labelled_runs(tokenizer, teacher) == ["Action: run[ls]" + tokenizer.eos_token]
        if "sft" in streams:
            student = encode_conversation(tokenizer, streams["sft"])
            assert student.target_tokens == teacher.target_tokens
    # Unmarked, the same demonstration is a target (the student view of a plain conversation).
    plain = encode_conversation(tokenizer, ex.teacher_conversation(demo))
    assert len(labelled_runs(tokenizer, plain)) == 2
