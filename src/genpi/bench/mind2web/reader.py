"""AgentBench Mind2Web's action reader: ``Answer: X`` (a letter A to F; A means none of the
elements), ``Action: CLICK|SELECT|TYPE`` and ``Value: ...``.

The rules are AgentBench's (``postprocess_action_llm`` in its ``mind2web/task.py``): each part is
the first match anywhere in the reply, case-sensitive, with exactly one space after the colon; the
value is the rest of its line. The harness (``task.py``) reads every reply with :func:`read_choice`;
``genpi eval`` reads with :func:`read_eval_action`, the same rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ANSWER = re.compile(r"Answer: (A|B|C|D|E|F)")
_OPERATION = re.compile(r"Action: (CLICK|SELECT|TYPE)")
_VALUE = re.compile(r"Value: (.*)$", re.MULTILINE)


@dataclass(frozen=True)
class Choice:
    """One reply read: ``letter`` (None when the reply names none: the harness takes it as A, as
    AgentBench does), ``operation`` and ``value`` ("" when absent)."""

    letter: str | None
    operation: str
    value: str

    @property
    def action(self) -> str:
        """``"OP value"``, the string operation F1 compares (AgentBench's predicted action)."""
        return f"{self.operation} {self.value}".strip()


def read_choice(reply: str) -> Choice:
    text = reply.strip()
    letter = _ANSWER.search(text)
    operation = _OPERATION.search(text)
    value = _VALUE.search(text)
    return Choice(
        letter=letter.group(1) if letter else None,
        operation=operation.group(1).strip() if operation else "",
        value=value.group(1).strip() if value else "",
    )


def read_eval_action(answer: str) -> tuple[str, str] | None:
    """Type = the operation (CLICK/SELECT/TYPE), NONE for answer A, ANSWER for an element without
    an operation; argument = the letter plus any value. None when no ``Answer:`` letter is read."""
    choice = read_choice(answer)
    if choice.letter is None:
        return None
    if choice.letter == "A":
        return "NONE", "A"
    if not choice.operation:
        return "ANSWER", choice.letter
    argument = f"{choice.letter} {choice.value}" if choice.value else choice.letter
    return choice.operation, argument
