"""The run directory's training example: what synthesis writes and training reads.

A run directory (``genpi synth --out RUN_DIR``) holds one JSONL file per stage:

- ``inputs.jsonl``        {"id", "input", "split", ...}; ``split`` is "train" or "heldout" (never
  trained on; ``genpi eval`` uses it), fixed per id by ``split_of``.
- ``conversations.jsonl`` {"id", "input", "turns": [{"role", "content"}, ...], "end_reason", ...}
  ``turns`` come after the first user message: assistant (the teacher agent) and user (the
  role-played environment) alternating, starting with the assistant.
- ``outputs.jsonl``       {"id", "input", "student_output", "teacher_output", ...}
- ``reasons.jsonl``       {"id", "reason", ...}
- ``manifest.json``       models, settings, counts, the prompt fingerprint; ``prompt.json`` beside.

Records are joined by ``id`` (one id per pseudo input).

``genpi.synth.rundir`` writes a run directory; everything else reads it through this module
(``load_examples``, ``read_manifest``, ``read_run_prompt``). Every whole-file write in genpi goes
through ``write_atomic``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genpi.errors import GenpiError
from genpi.prompt import Message, Prompt

MANIFEST = "manifest.json"
PROMPT_FILE = "prompt.json"


class RunDirError(GenpiError):
    """A run directory that cannot be used as asked; the message says why and what to do."""


def split_of(record_id: str, heldout_fraction: float) -> str:
    """ "train" or "heldout", a pure function of the id so every stage and rerun agrees."""
    bucket = int(hashlib.sha256(record_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "heldout" if bucket < heldout_fraction else "train"


@dataclass
class Example:
    id: str
    input: str
    split: str = "train"
    turns: list[Message] = field(default_factory=list)  # teacher/environment turns after the input
    student_output: str | None = None  # y^S_0: the model's first answer without the prompt
    teacher_output: str | None = None  # y^T_0: the model's first answer with the prompt
    reason: str | None = None  # r: why the output changes given the prompt

    def student_conversation(self, prompt: Prompt) -> list[Message]:
        """The role-played conversation as the student sees it (no prompt)."""
        return prompt.student_messages(self.input) + [dict(t) for t in self.turns]

    def teacher_conversation(self, prompt: Prompt) -> list[Message]:
        """The same conversation as the teacher saw it (prompt prefix included)."""
        return prompt.teacher_messages(self.input) + [dict(t) for t in self.turns]


def model_from_manifest(manifest: dict[str, Any]) -> str | None:
    """The model a run's data was synthesized with (``manifest.json``'s ``models.model``), when
    it is one this process can load: not an HTTP endpoint; a ``vllm:`` prefix dropped."""
    from genpi.llm.refs import parse_backend_ref

    ref = (manifest.get("models") or {}).get("model")
    # A server is recorded as MODEL@URL (``BackendRef.name``): nothing to load here.
    if not isinstance(ref, str) or "://" in ref:
        return None
    return parse_backend_ref(ref).local_model


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` through a temporary file, fsync and a rename, so a crash never leaves half a
    file (readers see the old content or the new, never a mix); the parent is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # an interrupted write must not leave a stray ``.tmp`` behind
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, data: Any) -> None:
    """``write_atomic`` of ``data`` as indented JSON."""
    # Serialised before the temporary file exists: data that cannot be written (or that runs out
    # of memory) must not leave an empty ``.tmp`` behind.
    write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_manifest(
    run_dir: str | Path, *, remedy: str = "fix or restore it"
) -> dict[str, Any] | None:
    """A run directory's ``manifest.json`` (None when there is none); a file that is not a JSON
    object is a ``RunDirError`` that ends with ``remedy`` (what the caller's user can do)."""
    path = Path(run_dir) / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):  # JSONDecodeError is a ValueError
        manifest = None
    if not isinstance(manifest, dict):
        raise RunDirError(f"{str(path)!r} is not valid JSON: {remedy}")
    return manifest


def read_run_prompt(run_dir: str | Path) -> Prompt | None:
    """The prompt a run directory was made for (its ``prompt.json``), None when it has none."""
    path = Path(run_dir) / PROMPT_FILE
    if not path.exists():
        return None
    from genpi.prompt import load_prompt

    return load_prompt(path)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL file, dropping a torn last line (a write cut off by a crash)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1 and not line.endswith("\n"):
                break  # torn last line: the record in flight when the process died
            raise ValueError(f"{path}:{i + 1} is not valid JSON") from None
    return records


def load_examples(run_dir: str | Path, split: str | None = None) -> list[Example]:
    """Join a run directory's stage files into examples (only ids with a conversation).

    ``split`` keeps only "train" or "heldout" examples; None keeps all.
    """
    run_dir = Path(run_dir)
    splits = {rec["id"]: rec.get("split", "train") for rec in read_jsonl(run_dir / "inputs.jsonl")}
    by_id: dict[str, Example] = {}
    for rec in read_jsonl(run_dir / "conversations.jsonl"):
        rec_split = splits.get(rec["id"], "train")
        if split is not None and rec_split != split:
            continue
        by_id[rec["id"]] = Example(
            id=rec["id"], input=rec["input"], split=rec_split, turns=list(rec.get("turns", []))
        )
    for rec in read_jsonl(run_dir / "outputs.jsonl"):
        if rec["id"] in by_id:
            by_id[rec["id"]].student_output = rec.get("student_output")
            by_id[rec["id"]].teacher_output = rec.get("teacher_output")
    for rec in read_jsonl(run_dir / "reasons.jsonl"):
        if rec["id"] in by_id:
            by_id[rec["id"]].reason = rec.get("reason")
    return list(by_id.values())
