"""What ``genpi eval`` evaluates on, read from a run directory: the items (an inputs file, the
held-out synthesized inputs or role-played conversations), the run's adapters, and its default
model and prompt (with the refusal of another prompt)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genpi.errors import GenpiError
from genpi.prompt import Message, Prompt


class EvalError(GenpiError):
    pass


@dataclass
class Item:
    """One thing to answer: an input, the conversation so far, and (multi-turn) the teacher's turn."""

    id: str
    input: str
    context: list[Message] = field(default_factory=list)
    reference: str | None = None
    turn: int = 0


# -- inputs --------------------------------------------------------------------------------------


def read_inputs(path: str | Path) -> list[Item]:
    """A user file of inputs: AgentBench's ``data/*.json`` (items with "description"), JSON or
    JSONL with "input"/"description" (or plain strings), or plain text with one input a line."""
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"inputs file {str(path)!r} does not exist")
    raw = path.read_text(encoding="utf-8")
    entries: list[Any]
    try:
        if path.suffix == ".json":
            entries = json.loads(raw)
            if not isinstance(entries, list):
                raise EvalError(f"{path}: a .json inputs file must hold a list")
        elif path.suffix == ".jsonl":
            entries = [json.loads(line) for line in raw.splitlines() if line.strip()]
        else:
            entries = [line for line in raw.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise EvalError(
            f"{path} is not valid JSON ({exc}): give JSON, JSONL or one input a line"
        ) from None
    items = []
    for i, entry in enumerate(entries):
        text = entry.get("input", entry.get("description")) if isinstance(entry, dict) else entry
        if not isinstance(text, str) or not text.strip():
            raise EvalError(
                f"{path}: entry {i} has no input: give a string or an object with 'input' or 'description'"
            )
        items.append(Item(id=f"{path.stem}-{i}", input=text))
    if not items:
        raise EvalError(f"inputs file {str(path)!r} holds no inputs")
    return items


def heldout_items(run_dir: Path, *, multi_turn: bool) -> list[Item]:
    from genpi.data import load_examples

    examples = load_examples(run_dir, split="heldout")
    if not multi_turn:
        return [Item(id=ex.id, input=ex.input) for ex in examples]
    items = []
    for ex in examples:
        for k, turn in enumerate(ex.turns):
            if turn.get("role") == "assistant" and turn.get("content", "").strip():
                items.append(
                    Item(
                        id=f"{ex.id}#{k}",
                        input=ex.input,
                        context=ex.turns[:k],
                        reference=turn["content"],
                        turn=k,
                    )
                )
    return items


# -- run-directory defaults ----------------------------------------------------------------------


def find_adapters(run_dir: Path) -> list[Path]:
    root = run_dir / "adapters"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / "adapter_config.json").exists())


def default_model(run_dir: Path, adapters: Sequence[Path]) -> str:
    from genpi.adapter import read_adapter_info
    from genpi.models import DEFAULT_MODEL

    for adapter in adapters:
        try:
            return read_adapter_info(adapter).base_model
        except GenpiError:
            continue
    from genpi.data import model_from_manifest, read_manifest

    return model_from_manifest(read_manifest(run_dir) or {}) or DEFAULT_MODEL


def default_prompt(run_dir: Path, adapters: Sequence[Path]) -> Prompt:
    from genpi.adapter import read_adapter_prompt
    from genpi.data import read_run_prompt

    own = read_run_prompt(run_dir)
    if own is not None:
        return own
    for adapter in adapters:
        try:
            return read_adapter_prompt(adapter)
        except GenpiError:
            continue
    raise EvalError(f"no prompt: {run_dir}/prompt.json does not exist; give one with --prompt FILE")


def refuse_another_prompt(run_dir: Path, prompt: Prompt) -> None:
    """Refuse a --prompt that is not the run's, as synth does: the run's cached teacher answers
    (``eval/<set>/upper_bound.json``) and its adapters belong to the run's prompt."""
    from genpi.data import read_manifest, read_run_prompt
    from genpi.synth.rundir import prompt_mismatch

    recorded = read_manifest(
        run_dir, remedy="fix or restore it, or evaluate into another run directory"
    )
    if not recorded or not recorded.get("prompt_fingerprint"):
        recorded = {}
        own = read_run_prompt(run_dir)  # a run made by hand: prompt.json is its prompt
        if own is not None:
            recorded = {"prompt_name": own.name, "prompt_fingerprint": own.fingerprint}
    mismatch = prompt_mismatch(recorded, prompt) if recorded else None
    if mismatch is not None:
        raise EvalError(
            f"run directory {str(run_dir)!r} was made for another prompt ({mismatch}): drop "
            "--prompt to evaluate the run's prompt, or give another RUN_DIR for this prompt"
        )
