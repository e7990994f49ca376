"""The Mind2Web task's oracle agent: proves the harness right (LLM agents:
``genpi.bench.core.LLMAgent``)."""

from __future__ import annotations

from genpi.bench.core import Message
from genpi.bench.mind2web.task import LETTERS, Round


def gold_reply(round_: Round) -> str:
    """The reply that names the round's first positive candidate with the gold operation, or
    ``Answer: A.`` when the round shows none."""
    step = round_.step
    for letter, node_id in zip(LETTERS, round_.choices, strict=False):
        if node_id in step.positives:
            reply = f"Answer: {letter}.\nAction: {step.operation}"
            return reply if step.operation == "CLICK" else f"{reply}\nValue: {step.value}"
    return "Answer: A."


class OracleAgent:
    """Answers every round with :func:`gold_reply`, through the same loop and reader: it scores
    1 on every step whose ranking kept a positive candidate among two or more."""

    name = "oracle"

    def begin(self, round_: Round) -> list[Message]:
        return [{"role": "user", "content": round_.description}]

    def act(self, round_: Round, conversation: list[Message]) -> str:
        return gold_reply(round_)
