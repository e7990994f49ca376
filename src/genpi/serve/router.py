"""Which weights answer a chat request, and with which messages: pure functions, no model.

A request is routed to an internalized prompt's adapter when

- its ``model`` names the adapter (vLLM's convention), or
- its leading messages are exactly the prompt's prefix (same roles, same text) and the next
  message is a user turn that fits the prompt's ``input_template`` (the template's text around
  ``{input}``); the server then drops the prefix and sends the adapter what the student saw in
  training, ``prompt.student_messages(x)``, followed by any later turns.

Anything else goes to the base model with its messages unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from genpi.prompt import INPUT_SLOT, Prompt

Message = dict[str, str]


@dataclass(frozen=True)
class Route:
    adapter: str | None  # None: the base model
    messages: list[Message]  # what the chosen weights see
    reason: str  # "prompt", "model" or "base"
    prompt_input: str | None = None  # the task input read from the template, when stripped
    stripped: bool = False  # whether the prompt's prefix was removed
    stripped_messages: int = 0  # how many leading request messages were the removed prefix


@dataclass
class RouteTable:
    """The adapters a server holds, each with the prompt it internalizes."""

    base_names: tuple[str, ...]  # every name that means the base model
    prompts: dict[str, Prompt] = field(default_factory=dict)  # adapter name -> prompt

    def model_names(self) -> list[str]:
        return [*self.base_names, *self.prompts]

    def knows(self, model: str | None) -> bool:
        return not model or model in self.base_names or model in self.prompts


def read_template_input(template: str, content: str) -> str | None:
    """The ``{input}`` that turns ``template`` into ``content``, or None when it cannot.

    The template's text around the slot must match exactly; a template with the slot more than
    once must repeat the same input in each place.
    """
    parts = template.split(INPUT_SLOT)
    if len(parts) == 2:
        before, after = parts
        if len(content) < len(before) + len(after):
            return None
        if content.startswith(before) and content.endswith(after):
            return content[len(before) : len(content) - len(after)]
        return None
    pattern = "(.*?)".join(re.escape(p) for p in parts[:2])
    pattern += "".join(r"\1" + re.escape(p) for p in parts[2:])
    match = re.fullmatch(pattern, content, flags=re.DOTALL)
    return match.group(1) if match else None


def _same_message(a: Message, b: Message) -> bool:
    return a.get("role") == b.get("role") and a.get("content") == b.get("content")


def match_prompt(prompt: Prompt, messages: list[Message]) -> tuple[str, list[Message]] | None:
    """If ``messages`` start with ``prompt``'s prefix and input turn: (input, later turns)."""
    prefix = prompt.messages
    if len(messages) < len(prefix) + 1:
        return None
    if not all(_same_message(m, p) for m, p in zip(messages, prefix, strict=False)):
        return None
    turn = messages[len(prefix)]
    if turn.get("role") != "user":
        return None
    x = read_template_input(prompt.input_template, turn.get("content", ""))
    if x is None:
        return None
    return x, list(messages[len(prefix) + 1 :])


def strip_prompt(prompt: Prompt, messages: list[Message]) -> tuple[str, list[Message]] | None:
    """The adapter's view of a prompted conversation, or None if it is not this prompt's."""
    found = match_prompt(prompt, messages)
    if found is None:
        return None
    x, later = found
    return x, prompt.student_messages(x) + later


def route(
    table: RouteTable, model: str | None, messages: list[Message], *, by_prompt: bool = True
) -> Route:
    """Choose the weights for a request (``model`` must be one ``table.knows``)."""
    if model in table.prompts:
        stripped = strip_prompt(table.prompts[model], messages)
        if stripped is not None:
            x, view = stripped
            n = len(table.prompts[model].messages)
            return Route(model, view, "model", prompt_input=x, stripped=True, stripped_messages=n)
        return Route(model, list(messages), "model")
    if by_prompt:
        # The longest prefix wins when one prompt's prefix starts another's.
        order = sorted(table.prompts.items(), key=lambda kv: -len(kv[1].messages))
        for name, prompt in order:
            stripped = strip_prompt(prompt, messages)
            if stripped is not None:
                x, view = stripped
                n = len(prompt.messages)
                return Route(
                    name, view, "prompt", prompt_input=x, stripped=True, stripped_messages=n
                )
    return Route(None, list(messages), "base")
