"""Training samples: the PG (prompt generation) conversation, batching and length reports.

Conversations become token ids and labels in ``genpi.encoding`` (shared with evaluation and
generation); this module builds the conversations a method trains on and tokenizes them.

The PG (prompt generation) sample's user turn shows the input x, the answer without the prompt
(y^S_0, AS-IS) and the answer with it (y^T_0, TO-BE); its assistant turn is the prompt's text and
the reason, in an order given by the method (``pg_messages``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from genpi.data import Example
from genpi.encoding import IGNORE, Sample, encode_conversation
from genpi.encoding import TARGET_KEY as TARGET_KEY  # re-exported: the methods mark context turns
from genpi.errors import GenpiError
from genpi.prompt import Message, Prompt

# -- the PG sample ----------------------------------------------------------------------------
PG_INSTRUCTION = (
    "Below is a task input, the answer an assistant gave without its instructions (AS-IS) and "
    "the answer it gave with them (TO-BE). {ask}"
)
PG_ASK = {
    ("prompt", "reason"): "Write the instructions (the prompt) that turn the AS-IS answer into "
    "the TO-BE answer, then the reason the answer changes.",
    (
        "prompt",
    ): "Write the instructions (the prompt) that turn the AS-IS answer into the TO-BE answer.",
    ("reason",): "Explain the reason the answer changes from AS-IS to TO-BE.",
}
PART_TITLES = {"prompt": "Prompt", "reason": "Reason"}


@dataclass(frozen=True)
class PGLayout:
    """Which parts (``prompt``, ``reason``) the PG sample generates and which it is given."""

    target: tuple[str, ...] = ("prompt", "reason")
    given: tuple[str, ...] = ()

    def required(self) -> set[str]:
        return set(self.target) | set(self.given)


def _part(example: Example, prompt: Prompt, name: str) -> str:
    return prompt.text if name == "prompt" else (example.reason or "")


def pg_messages(
    example: Example, prompt: Prompt, layout: PGLayout = PGLayout()
) -> list[Message] | None:
    """The PG conversation for one example, or None when the example lacks a part it needs."""
    if not example.student_output or not example.teacher_output:
        return None
    if "reason" in layout.required() and not (example.reason or "").strip():
        return None
    sections = [
        f"### Input\n{example.input}",
        f"### AS-IS\n{example.student_output}",
        f"### TO-BE\n{example.teacher_output}",
    ]
    sections += [f"### {PART_TITLES[g]}\n{_part(example, prompt, g)}" for g in layout.given]
    user = PG_INSTRUCTION.format(ask=PG_ASK[layout.target]) + "\n\n" + "\n\n".join(sections)
    if len(layout.target) == 1:
        target = _part(example, prompt, layout.target[0])
    else:
        target = "\n\n".join(
            f"### {PART_TITLES[t]}\n{_part(example, prompt, t)}" for t in layout.target
        )
    return [{"role": "user", "content": user}, {"role": "assistant", "content": target}]


# -- a dataset of items, each a few named samples ----------------------------------------------
class ItemDataset:
    """A list of items; an item maps stream names (``sft``, ``pg``, ``teacher``) to samples."""

    def __init__(self, items: list[dict[str, Sample]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Sample]:
        return self.items[i]


class Collator:
    """Right-pads each stream of a batch of items into ``{stream}_input_ids/_attention_mask/_labels``."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, items: list[dict[str, Sample]]) -> dict[str, Any]:
        import torch

        batch: dict[str, Any] = {}
        for stream in items[0]:
            samples = [item[stream] for item in items]
            width = max(len(s.input_ids) for s in samples)
            ids, mask, labels = [], [], []
            for s in samples:
                pad = width - len(s.input_ids)
                ids.append(s.input_ids + [self.pad_token_id] * pad)
                mask.append([1] * len(s.input_ids) + [0] * pad)
                labels.append(s.labels + [IGNORE] * pad)
            batch[f"{stream}_input_ids"] = torch.tensor(ids)
            batch[f"{stream}_attention_mask"] = torch.tensor(mask)
            batch[f"{stream}_labels"] = torch.tensor(labels)
        return batch


@dataclass
class StreamReport:
    sequences: int = 0
    overlong: int = 0
    longest: int = 0
    tokens: int = 0
    target_tokens: int = 0


def build_items(
    examples: Sequence[Example],
    conversations_of: Any,
    tokenizer: Any,
    *,
    max_length: int | None,
    model_context: int | None,
    overlong: str = "drop",
) -> tuple[ItemDataset, dict[str, Any]]:
    """Tokenize every example's conversations and report lengths; nothing is cut silently.

    ``conversations_of(example)`` returns {stream: messages} or None (the example lacks data the
    method needs: counted as skipped). ``max_length`` None means the longest sequence of the run,
    capped by the model's context; a ``max_length`` over the context is refused (the model cannot
    read past it). Items with a sequence over the limit are dropped and counted
    (``overlong="drop"``) or refused (``"error"``).
    """
    if max_length is not None and model_context is not None and max_length > model_context:
        raise GenpiError(
            f"--max-length {max_length} is longer than the model's context of {model_context} "
            f"tokens: give at most {model_context}, or use a model with a longer context"
        )
    encoded: list[dict[str, Sample]] = []
    skipped = 0
    for example in examples:
        conversations = conversations_of(example)
        if conversations is None:
            skipped += 1
            continue
        encoded.append({s: encode_conversation(tokenizer, m) for s, m in conversations.items()})
    longest = max((len(s.input_ids) for item in encoded for s in item.values()), default=0)
    limit = max_length if max_length is not None else longest
    if model_context is not None and limit > model_context:
        limit = model_context
    streams: dict[str, StreamReport] = {}
    kept: list[dict[str, Sample]] = []
    for item in encoded:
        fits = True
        for stream, sample in item.items():
            rep = streams.setdefault(stream, StreamReport())
            rep.sequences += 1
            rep.longest = max(rep.longest, len(sample.input_ids))
            if len(sample.input_ids) > limit:
                rep.overlong += 1
                fits = False
        if fits:
            kept.append(item)
            for stream, sample in item.items():
                streams[stream].tokens += len(sample.input_ids)
                streams[stream].target_tokens += sample.target_tokens
    report = {
        "examples": len(examples),
        "skipped_missing_data": skipped,
        "items": len(kept),
        "dropped_overlong": len(encoded) - len(kept),
        "max_length": limit,
        "model_context": model_context,
        "streams": {s: r.__dict__ for s, r in streams.items()},
    }
    over = {s: r for s, r in streams.items() if r.overlong}
    if over and overlong == "error":
        detail = ", ".join(f"{r.overlong} {s} (longest {r.longest})" for s, r in over.items())
        if limit == model_context:
            raise GenpiError(
                f"{detail} sequences are longer than the model's context of {limit} tokens: "
                "shorten the prompt or use a model with a longer context, or pass --overlong drop "
                "to train without them"
            )
        raise GenpiError(
            f"{detail} sequences are longer than --max-length {limit}: raise --max-length "
            "or pass --overlong drop to train without them"
        )
    return ItemDataset(kept), report


def describe_report(report: dict[str, Any]) -> str:
    lines = [
        f"{report['items']} training items from {report['examples']} examples "
        f"(max length {report['max_length']} tokens)"
    ]
    if report["skipped_missing_data"]:
        lines.append(
            f"  {report['skipped_missing_data']} examples skipped: they lack outputs or a reason "
            "this method needs (run every genpi synth stage)"
        )
    for stream, r in report["streams"].items():
        line = (
            f"  {stream}: {r['sequences']} sequences, longest {r['longest']} tokens, "
            f"{r['target_tokens']} target tokens"
        )
        if r["overlong"] and report["max_length"] == report.get("model_context"):
            line += (
                f"; {r['overlong']} LONGER than the model's context of {report['max_length']} "
                "were dropped (shorten them or use a model with a longer context)"
            )
        elif r["overlong"]:
            line += f"; {r['overlong']} LONGER than {report['max_length']} were dropped (raise --max-length)"
        lines.append(line)
    return "\n".join(lines)
