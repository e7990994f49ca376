"""Action readers: turn an agent's answer into ``(action_type, action_argument)`` or None.

AgentBench's prompts get readers written from AgentBench's own rules (its task code):

- OS interaction: ``Act: bash`` (the command is the content of the ```bash blocks),
  ``Act: finish``, ``Act: answer(...)``; the last ``Act:`` line that parses wins.
- WebShop: ``Action: search[...]`` or ``Action: click[...]``.
- Mind2Web: ``Answer: X`` (a letter; A means none of the elements), then optionally
  ``Action: CLICK|SELECT|TYPE`` and ``Value: ...``.

Any other prompt is read with its own ``action_pattern`` (``Prompt.read_action``).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from genpi.prompt import Prompt

Action = tuple[str, str]  # (type, argument); the argument is "" when the action has none
Reader = Callable[[str], Action | None]

_ACT_LINE = re.compile(r"Act:\s*(.+)")
_BASH_BLOCK = re.compile(r"```bash\n(.*?)\n```", re.DOTALL)


def read_os_action(answer: str) -> Action | None:
    """AgentBench OS: bash (argument: the ```bash blocks' code), finish, or answer(...)."""
    for act in reversed(_ACT_LINE.findall(answer)):
        word = act.strip().lower()
        if word.startswith("bash"):
            return "bash", "\n\n".join(_BASH_BLOCK.findall(answer)).strip()
        if word.startswith("finish"):
            return "finish", ""
        if word.startswith("answer"):
            rest = act.strip()[len("answer") :]
            left, right = rest.find("("), rest.rfind(")")
            if left == -1 or right == -1 or right < left:
                continue  # AgentBench skips an answer without its parentheses
            return "answer", rest[left + 1 : right].strip()
    return None


_WEBSHOP_ACTION = re.compile(r"[Aa]ction: *\n* *((search|click)\[(.+?)\])")


def read_webshop_action(answer: str) -> Action | None:
    """AgentBench WebShop: search[query] or click[element]."""
    match = _WEBSHOP_ACTION.search(answer)
    if match is None:
        return None
    return match.group(2), match.group(3).strip()


_M2W_ANSWER = re.compile(r"Answer:\s*([A-Z])\b")
_M2W_OPERATION = re.compile(r"Action:\s*(CLICK|SELECT|TYPE)\b", re.IGNORECASE)
_M2W_VALUE = re.compile(r"Value:\s*(.*)")


def read_mind2web_action(answer: str) -> Action | None:
    """AgentBench Mind2Web: type = the operation (CLICK/SELECT/TYPE), NONE for answer A,
    ANSWER for an element without an operation; argument = the letter plus any value."""
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


_CALL = re.compile(r"\s*([A-Za-z_][\w-]*)\s*(?:[\[(](.*)[\])])?\s*\Z", re.DOTALL)


def split_action(action: str) -> Action:
    """``run[ls -l]`` -> ("run", "ls -l"); ``bash`` -> ("bash", ""); anything else -> (text, text)."""
    match = _CALL.match(action)
    if match is None:
        text = action.strip()
        return text, text
    return match.group(1), (match.group(2) or "").strip()


def generic_reader(prompt: Prompt) -> Reader:
    """Read actions with the prompt's own ``action_pattern``."""

    def read(answer: str) -> Action | None:
        action = prompt.read_action(answer)
        return None if action is None else split_action(action)

    return read


AGENTBENCH_READERS: dict[str, Reader] = {
    "os": read_os_action,
    "webshop": read_webshop_action,
    "mind2web": read_mind2web_action,
}


def reader_name(prompt: Prompt) -> str | None:
    """ "os" / "webshop" / "mind2web" for AgentBench's prompts (by name), "generic" when the prompt
    has an action_pattern, None when nothing can read its actions."""
    name = prompt.name.lower().removeprefix("agentbench-").replace("_", "-")
    if name in AGENTBENCH_READERS:
        return name
    return "generic" if prompt.action_pattern else None


def reader_for(prompt: Prompt) -> Reader | None:
    name = reader_name(prompt)
    if name is None:
        return None
    return AGENTBENCH_READERS.get(name) or generic_reader(prompt)
