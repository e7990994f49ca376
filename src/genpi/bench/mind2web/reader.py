"""AgentBench Mind2Web's action reader: ``Answer: X`` (a letter; A means none of the elements),
then optionally ``Action: CLICK|SELECT|TYPE`` and ``Value: ...``."""

from __future__ import annotations

import re

_M2W_ANSWER = re.compile(r"Answer:\s*([A-Z])\b")
_M2W_OPERATION = re.compile(r"Action:\s*(CLICK|SELECT|TYPE)\b", re.IGNORECASE)
_M2W_VALUE = re.compile(r"Value:\s*(.*)")


def read_eval_action(answer: str) -> tuple[str, str] | None:
    """Type = the operation (CLICK/SELECT/TYPE), NONE for answer A, ANSWER for an element without
    an operation; argument = the letter plus any value."""
    choice = _M2W_ANSWER.search(answer)
    if choice is None:
        return None
    letter = choice.group(1)
    rest = answer[choice.end() :]
    operation = _M2W_OPERATION.search(rest)
    if letter == "A":
        return "NONE", "A"
    if operation is None:
        return "ANSWER", letter
    value = _M2W_VALUE.search(rest[operation.end() :])
    argument = (
        letter
        if value is None or not value.group(1).strip()
        else f"{letter} {value.group(1).strip()}"
    )
    return operation.group(1).upper(), argument
