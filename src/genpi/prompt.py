"""The fixed prompt to internalize: loading, validation, fingerprint, teacher/student views.

A prompt file is either plain text (used as one system message) or JSON/YAML with:

- ``messages``: the chat prefix (system/user/assistant turns, few-shot demonstrations included);
- ``input_template``: the final user turn, with ``{input}`` where the task input goes;
- optional ``action_pattern`` (regex that reads an action from an answer), ``max_turns``,
  ``student_template`` (what the student sees instead; default: ``input_template``), ``name``.

AgentBench's prompts (``../shared/agentbench/prompts/*.json``) are in this shape.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from genpi.errors import GenpiError

Message = dict[str, str]
ROLES = ("system", "user", "assistant")
INPUT_SLOT = "{input}"
# Limits on a prompt file: far above any real prompt (a 4 MiB prompt is ~1M tokens, beyond every
# model's context), low enough that a hostile or broken file cannot exhaust memory downstream.
MAX_PROMPT_BYTES = 4 << 20
MAX_NAME_CHARS = 200
MAX_TURNS_LIMIT = 1000


class PromptError(GenpiError, ValueError):
    """A prompt file that cannot be used; the message names the problem and the fix."""


@dataclass(frozen=True)
class Prompt:
    messages: tuple[Message, ...]
    input_template: str = INPUT_SLOT
    student_template: str | None = None
    action_pattern: str | None = None
    max_turns: int | None = None
    name: str = "prompt"
    source: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        _validate(self)

    # -- views ------------------------------------------------------------------------------
    def fill(self, x: str, *, student: bool = False) -> str:
        template = (
            (self.student_template or self.input_template) if student else self.input_template
        )
        # str.replace, not str.format: templates hold code with literal braces.
        return template.replace(INPUT_SLOT, x)

    def teacher_messages(self, x: str) -> list[Message]:
        """The prompt's prefix plus the final user turn: what the teacher sees."""
        return [dict(m) for m in self.messages] + [{"role": "user", "content": self.fill(x)}]

    def student_messages(self, x: str) -> list[Message]:
        """The final user turn only: what the student (and the internalized adapter) sees."""
        return [{"role": "user", "content": self.fill(x, student=True)}]

    @property
    def text(self) -> str:
        """The prompt as one document (what the PG loss learns to generate)."""
        parts = [f"{m['role'].upper()}: {m['content']}" for m in self.messages]
        parts.append(f"USER: {self.input_template}")
        return "\n\n".join(parts)

    def read_action(self, answer: str) -> str | None:
        """The action the prompt's ``action_pattern`` reads from ``answer``, or None."""
        if not self.action_pattern:
            return None
        match = re.search(self.action_pattern, answer)
        if match is None:
            return None
        return match.group(1) if match.groups() else match.group(0)

    # -- identity ---------------------------------------------------------------------------
    def canonical(self) -> dict[str, Any]:
        return {
            "messages": [{"role": m["role"], "content": m["content"]} for m in self.messages],
            "input_template": self.input_template,
            "student_template": self.student_template,
            "action_pattern": self.action_pattern,
            "max_turns": self.max_turns,
        }

    @property
    def fingerprint(self) -> str:
        blob = json.dumps(
            self.canonical(), sort_keys=True, ensure_ascii=False, separators=(",", ":")
        )
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.canonical()}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")

    def check_fits(self, tokenizer: Any, max_context: int, *, reserve: int = 0) -> int:
        """Token length of the teacher's prefix; raise if it and ``reserve`` reply tokens do not
        fit the context (the check every verb runs: ``genpi.context``)."""
        from genpi.context import check_prompt_fits

        return check_prompt_fits(self, tokenizer, max_context, reserve=reserve)


def _kind(value: Any) -> str:
    """A value's type as a prompt file's author knows it (never its repr, which may be huge)."""
    return {
        bool: "a boolean",
        str: "a string",
        int: "a number",
        float: "a number",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def _validate(p: Prompt) -> None:
    # Types first: every later check (and every user of the prompt) assumes them.
    where = f"prompt {p.source!r}" if p.source else "prompt"
    if not isinstance(p.name, str) or not p.name.strip():
        raise PromptError(f"{where}: name must be a non-empty string, not {_kind(p.name)}")
    if len(p.name) > MAX_NAME_CHARS or "\n" in p.name:
        raise PromptError(
            f"{where}: name must be one line of at most {MAX_NAME_CHARS} characters; shorten it"
        )
    where = f"prompt {p.source or p.name!r}"
    if not isinstance(p.messages, tuple | list):
        raise PromptError(
            f"{where}: messages must be a list of {{role, content}} objects, not {_kind(p.messages)}"
        )
    for key in ("input_template", "student_template", "action_pattern"):
        value = getattr(p, key)
        if value is not None and not isinstance(value, str):
            raise PromptError(f"{where}: {key} must be a string, not {_kind(value)}")
    if p.input_template is None:
        raise PromptError(f"{where}: input_template must be a string with {INPUT_SLOT}, not null")
    # bool is an int in Python, but `max_turns: true` is a mistake, not 1 turn.
    if p.max_turns is not None and (
        isinstance(p.max_turns, bool)
        or not isinstance(p.max_turns, int)
        or not 1 <= p.max_turns <= MAX_TURNS_LIMIT
    ):
        shown = repr(p.max_turns) if isinstance(p.max_turns, int | float) else _kind(p.max_turns)
        raise PromptError(
            f"{where}: max_turns must be a positive integer (at most {MAX_TURNS_LIMIT}), "
            f"got {shown}"
        )
    if not p.messages and p.input_template.strip() == INPUT_SLOT:
        raise PromptError(f"{where} is empty: give it at least one message or some text")
    for i, m in enumerate(p.messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise PromptError(f"{where}: message {i} must be an object with 'role' and 'content'")
        if not isinstance(m["role"], str) or m["role"] not in ROLES:
            shown = repr(m["role"]) if isinstance(m["role"], str) else _kind(m["role"])
            raise PromptError(
                f"{where}: message {i} has unknown role {shown}; use one of {', '.join(ROLES)}"
            )
        if not isinstance(m["content"], str):
            raise PromptError(
                f"{where}: message {i} content must be a string, not {_kind(m['content'])}"
            )
    if not any(m["content"].strip() for m in p.messages) and p.input_template.strip() == INPUT_SLOT:
        raise PromptError(f"{where} is empty: every message is blank")
    for key in ("input_template", "student_template"):
        template = getattr(p, key)
        if template is not None and INPUT_SLOT not in template:
            raise PromptError(
                f"{where}: {key} has no {INPUT_SLOT} slot; add {INPUT_SLOT} where the task input goes"
            )
    if p.action_pattern is not None:
        try:
            re.compile(p.action_pattern)
        except re.error as exc:
            raise PromptError(f"{where}: action_pattern is not a valid regex ({exc})") from None


class _YamlAliasError(yaml.YAMLError):
    pass


class _NoAliasLoader(yaml.SafeLoader):
    """YAML's safe loader without aliases (``*name``): a few lines of nested aliases expand to
    billions of values (a "billion laughs" bomb) once serialized, and no prompt needs them."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            line = event.start_mark.line + 1 if event.start_mark else "?"
            raise _YamlAliasError(f"*{event.anchor} (line {line})")
        return super().compose_node(parent, index)


def prompt_from_dict(data: dict[str, Any], *, source: str | None = None) -> Prompt:
    known = {
        "name",
        "messages",
        "input_template",
        "student_template",
        "action_pattern",
        "max_turns",
    }
    where = source or "prompt"
    if not isinstance(data, dict):
        raise PromptError(f"{where} must hold an object with 'messages', not {_kind(data)}")
    unknown = sorted(str(k) for k in set(data) - known)
    if unknown:
        raise PromptError(f"{where}: unknown keys {unknown}; known keys are {sorted(known)}")
    messages = data.get("messages") or []
    if not isinstance(messages, list):
        raise PromptError(
            f"{where}: 'messages' must be a list of {{role, content}} objects, not {_kind(messages)}"
        )
    default_name = Path(source).stem if source else "prompt"
    return Prompt(
        messages=tuple(dict(m) if isinstance(m, dict) else m for m in messages),
        input_template=data.get("input_template", INPUT_SLOT),
        student_template=data.get("student_template"),
        action_pattern=data.get("action_pattern"),
        max_turns=data.get("max_turns"),
        # An absent or empty name takes the file's; any other value is checked by _validate.
        name=data.get("name") if data.get("name") not in (None, "") else default_name,
        source=source,
    )


def load_prompt(path: str | Path) -> Prompt:
    """Load a prompt file (.json / .yaml / .yml, anything else is plain text)."""
    path = Path(path)
    try:
        # The size before the read: a huge file is refused without being held in memory.
        size = path.stat().st_size
        if size > MAX_PROMPT_BYTES:
            raise PromptError(
                f"prompt file {str(path)!r} is {size} bytes, over the {MAX_PROMPT_BYTES} byte "
                "limit: no model's context holds a prompt this long; shorten it"
            )
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PromptError(f"prompt file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PromptError(f"prompt file {str(path)!r} cannot be read: {exc}") from None
    suffix = path.suffix.lower()
    if suffix in (".json", ".yaml", ".yml"):
        kind = suffix[1:].upper()
        try:
            data = json.loads(raw) if suffix == ".json" else yaml.load(raw, Loader=_NoAliasLoader)
        except _YamlAliasError as exc:
            raise PromptError(
                f"prompt file {str(path)!r} uses the YAML alias {exc}: aliases are refused "
                "because they can expand without bound; write the value out in full"
            ) from None
        except (json.JSONDecodeError, yaml.YAMLError) as exc:
            raise PromptError(f"prompt file {str(path)!r} is not valid {kind}: {exc}") from None
        except RecursionError:
            raise PromptError(
                f"prompt file {str(path)!r} nests too deeply to be a prompt: "
                "give an object with 'messages' (a flat list of {role, content})"
            ) from None
        if not isinstance(data, dict):
            raise PromptError(f"prompt file {str(path)!r} must hold an object with 'messages'")
        return prompt_from_dict(data, source=str(path))
    if not raw.strip():
        raise PromptError(f"prompt file {str(path)!r} is empty")
    return Prompt(
        messages=({"role": "system", "content": raw.strip()},), name=path.stem, source=str(path)
    )
