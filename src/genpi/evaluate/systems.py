"""The systems evaluated against the teacher, and one model host that runs them all.

- ``upper_bound``: the model with the prompt (the teacher; its scores normalise the others);
- ``base``: the model without the prompt;
- one system per adapter, without the prompt;
- ``compressed-<rate>``: the model with the LLMLingua-compressed prompt in place of the prompt.

``ModelHost`` loads the base model once. PEFT holds one adapter type per ``PeftModel``, so it
keeps one per type, each wrapping the same base model: the LoRA adapters in one, switched by name
with ``set_adapter``, the soft prompts (prompt tuning) in another. LoRA layers live inside the base
model's modules, so every system but a LoRA one runs with them disabled: the base model, the
upper bound and a soft prompt see the base weights.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genpi.evaluate.compression import compressed_messages
from genpi.prompt import Message, Prompt

UPPER_BOUND = "upper_bound"
BASE = "base"


@dataclass(frozen=True)
class System:
    name: str
    kind: str  # "upper_bound" | "base" | "adapter" | "compressed"
    adapter: str | None = None
    method: str | None = None  # the adapter's training method (genpi, sft, ...)
    compressed_text: str | None = None
    rate: float | None = None
    # The adapter's training seed and setting (genpi.train.config.setting_key): adapters of one
    # setting that differ in seed are pooled into one row by `genpi compare`.
    seed: int | None = None
    setting: str | None = None

    def conversation(self, prompt: Prompt, x: str, context: list[Message]) -> list[Message]:
        """What this system sees for input ``x`` after the conversation so far (``context``)."""
        if self.kind == "upper_bound":
            head = prompt.teacher_messages(x)
        elif self.kind == "compressed":
            head = compressed_messages(self.compressed_text or "", prompt, x)
        else:
            head = prompt.student_messages(x)
        return head + [dict(m) for m in context]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "adapter": self.adapter,
            "method": self.method,
            "rate": self.rate,
        }

    def labels(self) -> dict[str, Any]:
        """What the results record beside ``describe()``. Kept out of ``describe()``, which keys
        the cached answers: adding these fields must not make every run generate again."""
        return {"seed": self.seed, "setting": self.setting}


def upper_bound() -> System:
    return System(UPPER_BOUND, "upper_bound")


def base() -> System:
    return System(BASE, "base")


def adapter_system(
    adapter_dir: str | Path,
    method: str | None = None,
    *,
    seed: int | None = None,
    setting: str | None = None,
) -> System:
    return System(
        Path(adapter_dir).name,
        "adapter",
        adapter=str(adapter_dir),
        method=method,
        seed=seed,
        setting=setting,
    )


def compressed_system(rate: float, text: str) -> System:
    return System(f"compressed-{rate:g}", "compressed", compressed_text=text, rate=rate)


class ModelHost:
    """One base model in memory, serving every system in turn."""

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int = 8) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.pefts: dict[str, Any] = {}  # adapter type -> its PEFT wrapper of ``model``
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token

    @classmethod
    def load(
        cls,
        ref: str | None,
        *,
        dtype: str | None = "auto",
        device: str | None = None,
        batch_size: int = 8,
    ) -> ModelHost:
        from genpi.models import load_model

        model, tokenizer = load_model(ref, dtype=dtype, device=device)
        return cls(model, tokenizer, batch_size=batch_size)

    @staticmethod
    def adapter_name(system: System) -> str:
        return re.sub(r"\W", "_", system.name)  # PEFT adapter names become module attribute names

    @contextlib.contextmanager
    def active(self, system: System) -> Iterator[Any]:
        """A ``LocalBackend`` that runs ``system`` (its adapter on, or every adapter off)."""
        from genpi.llm.local import LocalBackend

        model = self.model
        if system.adapter is not None:
            name = self.adapter_name(system)
            held = [p for p in self.pefts.values() if name in p.peft_config]
            model = held[0] if held else self._attach(system.adapter, name)
            model.set_adapter(name)
            model.eval()
        with contextlib.ExitStack() as stack:
            for peft in self.pefts.values():
                if peft is not model and not peft.active_peft_config.is_prompt_learning:
                    stack.enter_context(peft.disable_adapter())
            yield LocalBackend(model, self.tokenizer, name=system.name, batch_size=self.batch_size)

    def _attach(self, adapter: str, name: str) -> Any:
        """The PEFT model of the adapter's type, with the adapter added under ``name``."""
        from genpi.adapter import adapter_type, attach_adapter, check_adapter_files

        check_adapter_files(adapter)  # before its config is read for the type
        kind = adapter_type(adapter)
        # The first adapter of a type wraps the base model; the next ones join it.
        self.pefts[kind] = attach_adapter(self.pefts.get(kind, self.model), adapter, name=name)
        return self.pefts[kind]
