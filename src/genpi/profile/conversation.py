"""The multi-turn conversation to profile, and its token segments under each view.

A conversation is the task input (the first user message, which the prompt's template wraps)
followed by ``turns``: assistant and user messages alternating, starting with the assistant, as in
a run directory's ``conversations.jsonl`` (see ``genpi.data``). It comes from

- a run directory (a role-played conversation synthesized by ``genpi synth``),
- a transcript file: a JSON list of ``{"role", "content"}`` messages (or ``{"messages": [...]}``)
  starting with the user's task input, alternating user / assistant,
- or a synthetic one with given token lengths.

Segments: the rendered chat (the model's chat template) is cut into the pre-cacheable ``prefix``
(everything before the task input: the template's start, and the prompt in the prompted view)
and, per turn, the ``user`` tokens (up to the assistant's header) and the ``assistant`` tokens
the model outputs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genpi.encoding import render
from genpi.errors import GenpiError
from genpi.prompt import Message, Prompt

FILLER = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "seven",
    "bright",
    "stars",
    "watch",
]


class ConversationError(GenpiError):
    pass


@dataclass
class Conversation:
    input: str
    turns: list[Message] = field(default_factory=list)  # assistant, user, assistant, ...
    source: str = "synthetic"

    @property
    def n_turns(self) -> int:
        return sum(1 for m in self.turns if m["role"] == "assistant")

    def truncated(self, turns: int | None) -> Conversation:
        """The first ``turns`` exchanges, ending on the assistant's answer."""
        kept: list[Message] = []
        answers = 0
        for message in self.turns:
            if turns is not None and answers >= turns:
                break
            kept.append(dict(message))
            answers += message["role"] == "assistant"
        while kept and kept[-1]["role"] != "assistant":
            kept.pop()  # a trailing environment message has no answer to profile
        return Conversation(self.input, kept, self.source)


@dataclass
class Segments:
    """Token ids of one view of a conversation, cut where the profile needs them."""

    prefix: list[int]  # pre-cacheable: everything before the first user turn (may be empty)
    user: list[list[int]]  # per turn: the tokens fed before the answer (incl. the answer's header)
    assistant: list[list[int]]  # per turn: the answer's tokens, as the model outputs them

    @property
    def total_tokens(self) -> int:
        return len(self.prefix) + sum(map(len, self.user)) + sum(map(len, self.assistant))


def _check_alternation(turns: list[Message], where: str) -> None:
    for i, message in enumerate(turns):
        expected = "assistant" if i % 2 == 0 else "user"
        if not isinstance(message, dict) or message.get("role") != expected:
            raise ConversationError(
                f"{where}: message {i + 2} must be an {expected!r} message; a conversation "
                "alternates user and assistant messages, starting with the user's task input"
            )
        if not isinstance(message.get("content"), str):
            raise ConversationError(f"{where}: message {i + 2} has no string 'content'")


def load_conversation(path: str | Path, example_id: str | None = None) -> Conversation:
    """A conversation from a run directory or a transcript file (see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        from genpi.data import load_examples

        examples = [e for e in load_examples(path) if e.turns]
        if example_id is not None:
            examples = [e for e in examples if e.id == example_id]
        if not examples:
            which = f"example {example_id!r}" if example_id else "any conversation"
            raise ConversationError(
                f"run directory {str(path)!r} has no {which} in conversations.jsonl: "
                "run `genpi synth` first or pick another --example"
            )
        example = examples[0]
        _check_alternation(example.turns, f"{path}/conversations.jsonl id {example.id}")
        return Conversation(example.input, [dict(t) for t in example.turns], f"{path}#{example.id}")
    if not path.is_file():
        raise ConversationError(
            f"conversation {str(path)!r} does not exist; give a run directory or a JSON transcript"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConversationError(f"transcript {str(path)!r} is not valid JSON: {exc}") from None
    messages = data.get("messages") if isinstance(data, dict) else data
    if not isinstance(messages, list) or not messages:
        raise ConversationError(
            f"transcript {str(path)!r} must be a JSON list of {{role, content}} messages "
            "(or an object with 'messages')"
        )
    first = messages[0]
    if (
        not isinstance(first, dict)
        or first.get("role") != "user"
        or not isinstance(first.get("content"), str)
    ):
        raise ConversationError(
            f"transcript {str(path)!r}: the first message must be the user's task input "
            "(role 'user'); leave the prompt's own messages out, genpi adds them"
        )
    turns = [dict(m) for m in messages[1:]]
    _check_alternation(turns, f"transcript {str(path)!r}")
    return Conversation(first["content"], turns, str(path))


def filler_text(tokenizer: Any, n_tokens: int, offset: int = 0) -> str:
    """Plain words that tokenize (on their own) to exactly ``n_tokens`` tokens."""
    words: list[str] = []
    i = offset
    while len(tokenizer.encode(" ".join(words), add_special_tokens=False)) < n_tokens:
        words.append(FILLER[i % len(FILLER)])
        i += 1
    while words and len(tokenizer.encode(" ".join(words), add_special_tokens=False)) > n_tokens:
        words.pop()
    return " ".join(words)


def synthetic_conversation(
    tokenizer: Any, turns: int, user_tokens: int, assistant_tokens: int
) -> Conversation:
    """``turns`` exchanges of filler text: a ``user_tokens`` input/observation, an answer."""
    if turns < 1 or user_tokens < 1 or assistant_tokens < 1:
        raise ConversationError("--turns, --user-tokens and --assistant-tokens must be positive")
    messages: list[Message] = []
    for t in range(turns):
        if t:
            messages.append({"role": "user", "content": filler_text(tokenizer, user_tokens, 3 * t)})
        messages.append(
            {"role": "assistant", "content": filler_text(tokenizer, assistant_tokens, 3 * t + 1)}
        )
    source = f"synthetic: {turns} turns, {user_tokens} user / {assistant_tokens} assistant tokens"
    return Conversation(filler_text(tokenizer, user_tokens), messages, source)


def segment(
    tokenizer: Any, messages: list[Message], prefix_text: str, first_answer: int
) -> Segments:
    """Cut ``messages`` (rendered by the chat template) into prefix, user and assistant tokens.

    ``prefix_text`` is the pre-cacheable start of the rendering; ``messages[first_answer]`` is
    the first answer to profile (the prompt's own assistant messages come before). Each piece is the text the
    template adds between two boundaries, tokenized on its own (as a server with a prefix cache
    feeds it).
    """

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    done = prefix_text
    user: list[list[int]] = []
    assistant: list[list[int]] = []
    for j in range(first_answer, len(messages)):
        if messages[j]["role"] != "assistant":
            continue
        before = render(tokenizer, messages[:j], add_generation_prompt=True)
        after = render(tokenizer, messages[: j + 1])
        if not before.startswith(done) or not after.startswith(before):
            raise ConversationError(
                "the model's chat template renders a conversation differently as it grows "
                "(it is not prefix-consistent), so per-turn costs are undefined; use another model"
            )
        user.append(encode(before[len(done) :]))
        assistant.append(encode(after[len(before) :]))
        done = after
    if not assistant:
        raise ConversationError(
            "the conversation has no assistant answer to profile; give at least one turn"
        )
    return Segments(encode(prefix_text), user, assistant)


def constant_prefix(tokenizer: Any, view: Callable[[str], list[Message]], task_input: str) -> str:
    """The rendered text before the task input: the same for every input, so it is cached once.

    Found as the common start of the renderings of two inputs that differ in their first character.
    """
    other = "1" if task_input.startswith("0") else "0"
    first = render(tokenizer, view(task_input), add_generation_prompt=True)
    second = render(tokenizer, view(other), add_generation_prompt=True)
    n = 0
    while n < min(len(first), len(second)) and first[n] == second[n]:
        n += 1
    return first[:n]


def teacher_segments(tokenizer: Any, prompt: Prompt, conversation: Conversation) -> Segments:
    """The prompted view: everything before the task input (the prompt) is pre-cacheable."""
    start = prompt.teacher_messages(conversation.input)
    messages = start + [dict(t) for t in conversation.turns]
    prefix = constant_prefix(tokenizer, prompt.teacher_messages, conversation.input)
    return segment(tokenizer, messages, prefix, len(start))


def student_segments(tokenizer: Any, prompt: Prompt, conversation: Conversation) -> Segments:
    """The view without the prompt (adapter, floor): only the template's own start is pre-cacheable."""
    start = prompt.student_messages(conversation.input)
    messages = start + [dict(t) for t in conversation.turns]
    prefix = constant_prefix(tokenizer, prompt.student_messages, conversation.input)
    return segment(tokenizer, messages, prefix, len(start))
