"""The OS task's one action reader, used by the harness (``eval-agent --bench os``) and by
``genpi eval`` (action type and argument agreement), so both read an answer the same way.

AgentBench's rule (``src/server/tasks/os_interaction/task.py``, ``extract_action``): the last
``Act:`` line that names ``bash``, ``finish`` or ``answer(...)`` wins; ``bash`` runs the content of
every ```` ```bash ```` block joined by a blank line; ``finish`` commits no answer; ``answer``
commits the text between the first ``(`` and the last ``)``, and an answer without either is
skipped for an earlier line. AgentBench does not check that ``)`` comes after ``(``: such an answer
commits the empty string (and fails its check), and so does this reader.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_THINK_LINE = re.compile(r"Think:\s*(.+)")
_ACT_LINE = re.compile(r"Act:\s*(.+)")
_BASH_BLOCK = re.compile(r"```bash\n(.*?)\n```", re.DOTALL)


@dataclass(frozen=True)
class Action:
    kind: str | None  # "bash", "commit" (finish or answer) or None (nothing readable)
    content: str | None = None  # the command, the answer, or None after `finish`
    thought: str = ""


def read_action(raw: str) -> Action:
    """AgentBench's reader, content as AgentBench passes it on (the answer's check sees it raw)."""
    thought = "\n".join(_THINK_LINE.findall(raw))
    for act in reversed(_ACT_LINE.findall(raw)):
        head = act.lower()
        if head.startswith("bash"):
            return Action("bash", "\n\n".join(_BASH_BLOCK.findall(raw)), thought)
        if head.startswith("finish"):
            return Action("commit", None, thought)
        if head.startswith("answer"):
            rest = act[len("answer") :].strip()
            left, right = rest.find("("), rest.rfind(")")
            if left == -1 or right == -1:
                continue  # an unreadable answer: look at an earlier Act: line
            return Action("commit", rest[left + 1 : right], thought)
    return Action(None, None, thought)


def read_eval_action(answer: str) -> tuple[str, str] | None:
    """The same reading as ``genpi eval``'s ``(type, argument)``: the prompt's own action names
    (bash, finish, answer), the argument stripped so that spacing does not count as a difference."""
    action = read_action(answer)
    if action.kind is None:
        return None
    if action.kind == "bash":
        return "bash", (action.content or "").strip()
    if action.content is None:
        return "finish", ""
    return "answer", action.content.strip()
