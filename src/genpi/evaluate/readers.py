"""Action readers: turn an agent's answer into ``(action_type, action_argument)`` or None.

A benchmark's prompt (by name: ``os`` or ``agentbench-os``, ``webshop``, ``mind2web``) is read by
its harness's own reader (``genpi.bench.<name>.reader``, found through the ``genpi.bench``
registry), the same reader its harness scores episodes with. Any other prompt is read with its own
``action_pattern`` (``Prompt.read_action``).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from genpi.bench import harness_for_prompt
from genpi.prompt import Prompt

Action = tuple[str, str]  # (type, argument); the argument is "" when the action has none
Reader = Callable[[str], Action | None]

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


def reader_name(prompt: Prompt) -> str | None:
    """The benchmark harness whose prompt this is (``os``, ``webshop``, ``mind2web``: see
    ``genpi.bench``), "generic" when the prompt has an action_pattern, None when nothing can read
    its actions."""
    harness = harness_for_prompt(prompt.name)
    if harness is not None:
        return harness.name
    return "generic" if prompt.action_pattern else None


def reader_for(prompt: Prompt) -> Reader | None:
    harness = harness_for_prompt(prompt.name)
    if harness is not None:
        return harness.reader()
    return generic_reader(prompt) if prompt.action_pattern else None
