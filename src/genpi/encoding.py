"""Chat encoding and label masks: the one place a conversation becomes token ids and labels.

Training (``genpi.train.datasets``), evaluation's teacher-forced NLL (``genpi.evaluate.metrics``),
generation (``genpi.llm.local``, ``genpi.serve.engine``) and the profiler
(``genpi.profile.conversation``) all encode through here, so the NLL eval reports is the training
NLL on the same tokens. It lives at the top of the package, not under ``train/``, because the
backends and the server need it without training's dependencies.

Labels are aligned with ``input_ids`` (the Hugging Face convention, as ``genpi.train.losses``
reads them): a position's label is its own token where it is a target, ``IGNORE`` elsewhere; the
loss shifts them. Targets are the assistant turns, located by rendering the conversation's
prefixes with the chat template (the text before an assistant turn ends where the rendering of
the prefix with a generation prompt ends), so any template that renders prefixes as prefixes
works, default system messages included. A turn's target runs through the template's end-of-turn
token (the model must learn to stop) but not the newline after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from genpi.errors import GenpiError
from genpi.llm.base import continues_reply
from genpi.prompt import Message

IGNORE = -100  # the label the losses skip (losses.IGNORE; kept here so tokenizing needs no torch)
# A message with this key set to False is context: an assistant turn that is not a target (the
# prompt's demonstrations in the teacher's view). The key is removed before rendering.
TARGET_KEY = "target"


class TemplateError(GenpiError):
    pass


@dataclass
class Sample:
    input_ids: list[int]
    labels: list[int]

    @property
    def target_tokens(self) -> int:
        return sum(1 for t in self.labels[1:] if t != IGNORE)  # the first label is never predicted


def render(
    tokenizer: Any, messages: Sequence[Message], *, add_generation_prompt: bool = False
) -> str:
    return tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
    )


def assistant_char_spans(
    tokenizer: Any, messages: Sequence[Message]
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character span of each assistant turn in it.

    A span runs from the end of the prefix rendered with a generation prompt to the end of the
    prefix rendered with the turn, trailing whitespace dropped (the template's newline after the
    end-of-turn token is not something the model must generate). When a template renders a
    prefix differently from the whole (some hide earlier reasoning), the turn's text is searched
    for instead.
    """
    full = render(tokenizer, messages)
    spans: list[tuple[int, int]] = []
    cursor = 0
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render(tokenizer, messages[:i], add_generation_prompt=True) if i else ""
        through = render(tokenizer, messages[: i + 1])
        if full.startswith(through) and through.startswith(before) and len(before) >= cursor:
            start, end = len(before), len(through.rstrip())
        else:
            content = message["content"]
            start = full.find(content, cursor)
            if start < 0 or not content:
                raise TemplateError(
                    f"cannot locate assistant turn {i} in the chat template's rendering: "
                    "use a model whose chat template renders each turn's text verbatim"
                )
            end = start + len(content)
        spans.append((start, end))
        cursor = end
    return full, spans


def encode_conversation(tokenizer: Any, messages: Sequence[Message]) -> Sample:
    """Token ids of the rendered conversation, labels on the assistant turns' tokens only.

    Assistant turns marked ``{TARGET_KEY: False}`` are context and get no labels.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise TemplateError("training needs a fast (Rust) tokenizer for character offsets")
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]
    full, all_spans = assistant_char_spans(tokenizer, plain)
    targets = [m.get(TARGET_KEY, True) is not False for m in messages if m["role"] == "assistant"]
    spans = [span for span, target in zip(all_spans, targets, strict=True) if target]
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    labels = []
    for token, (a, b) in zip(enc["input_ids"], enc["offset_mapping"], strict=True):
        inside = b > a and any(a < end and b > start for start, end in spans)
        labels.append(token if inside else IGNORE)
    return Sample(list(enc["input_ids"]), labels)


def encode_reply(tokenizer: Any, conversation: Sequence[Message], answer: str) -> Sample:
    """``conversation`` followed by ``answer`` as the assistant's reply, labels on the reply only
    (its end-of-turn token included; earlier assistant turns are context): what evaluation's
    teacher-forced NLL scores."""
    context = [{**m, TARGET_KEY: False} if m["role"] == "assistant" else m for m in conversation]
    return encode_conversation(tokenizer, [*context, {"role": "assistant", "content": answer}])


def first_target(sample: Sample) -> int:
    """Index of the sample's first labelled token (its length when none is)."""
    return next((i for i, t in enumerate(sample.labels) if t != IGNORE), len(sample.labels))


def chat_text(tokenizer: Any, conversation: Sequence[Message]) -> str:
    """The text of a conversation as the model continues it: with the generation prompt, or
    after a final assistant message's text (``continues_reply``: a prefill)."""
    prefill = continues_reply(conversation)
    return tokenizer.apply_chat_template(
        list(conversation),
        tokenize=False,
        add_generation_prompt=not prefill,
        continue_final_message=prefill,
    )


def encode_chat(tokenizer: Any, conversation: Sequence[Message]) -> list[int]:
    """Token ids of ``chat_text``."""
    # The chat template already holds the special tokens; adding more would shift training/inference.
    return tokenizer(chat_text(tokenizer, conversation), add_special_tokens=False)["input_ids"]
