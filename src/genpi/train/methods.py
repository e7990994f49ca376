"""The training methods: GenPI, its ablations and the paper's baselines, each a small named piece.

A method says which token sequences ("streams") each training item holds, built from one
synthesized example, which loss terms are computed on them, and how the terms are mixed:

- stream ``sft``: the student's view of a conversation (no prompt), labels on assistant turns;
- stream ``pg``: the prompt-generation sample (AS-IS/TO-BE comparison -> prompt and reason);
- stream ``teacher``: the same targets as ``sft`` with the prompt in the input, run through the
  frozen teacher (the same weights with the adapter disabled) for KL terms.

A term is ``(kind, stream)``: ``nll`` on a stream, or ``kl`` between the student on ``sft`` and the
teacher on ``teacher``. Each term is a per-token mean over every micro-batch of an optimizer step.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from genpi.data import Example
from genpi.errors import GenpiError
from genpi.prompt import Message, Prompt
from genpi.train.config import TrainConfig
from genpi.train.datasets import TARGET_KEY, PGLayout, pg_messages

if TYPE_CHECKING:  # torch is imported where losses are computed, not to list the methods
    import torch

Streams = dict[str, list[Message]]
Builder = Callable[[Example, Prompt, TrainConfig], Streams | None]
Mixer = Callable[[dict[str, "torch.Tensor"], TrainConfig], "torch.Tensor"]


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    build: Builder
    terms: dict[str, tuple[str, str]]  # term name -> (nll | kl, stream)
    mix: Mixer
    tuning: str = "lora"  # lora | prompt-tuning; --full switches lora methods that allow it
    allows_full: bool = False
    paper_row: str = ""  # the paper's name for it (listed by `genpi train --help`)
    # Method-specific config fields it reads: `genpi train` warns when one of another method's
    # fields is given, since this method would ignore it.
    flags: tuple[str, ...] = field(default=())
    # Its row in the ablation table of `genpi compare` (the paper's Tables 2-3); None: not an
    # ablation.
    ablation_row: int | None = None
    # Whether its sequences hold the prompt (PG targets, the teacher's view): then the prompt
    # must fit the model's context, which training checks before it tokenizes anything.
    holds_prompt: bool = False

    @property
    def needs_teacher(self) -> bool:
        return any(kind == "kl" for kind, _ in self.terms.values())


# -- builders ----------------------------------------------------------------------------------
def conversation(example: Example, prompt: Prompt, config: TrainConfig) -> Streams | None:
    if not any(t["role"] == "assistant" for t in example.turns):
        return None
    return {"sft": example.student_conversation(prompt)}


def pg_only(layout: PGLayout) -> Builder:
    def build(example: Example, prompt: Prompt, config: TrainConfig) -> Streams | None:
        messages = pg_messages(example, prompt, layout)
        return None if messages is None else {"pg": messages}

    return build


def conversation_and_pg(layout: PGLayout) -> Builder:
    pg = pg_only(layout)

    def build(example: Example, prompt: Prompt, config: TrainConfig) -> Streams | None:
        sft, pg_streams = conversation(example, prompt, config), pg(example, prompt, config)
        return None if sft is None or pg_streams is None else {**sft, **pg_streams}

    return build


def _prompt_as_context(messages: list[Message], prompt: Prompt) -> list[Message]:
    """The teacher's view with the prompt's own turns as context: its demonstrations are not
    targets (only the task's turns are, as in the student's view)."""
    n = len(prompt.messages)
    return [{**m, TARGET_KEY: False} if i < n else m for i, m in enumerate(messages)]  # type: ignore[dict-item]


def prepended(example: Example, prompt: Prompt, config: TrainConfig) -> Streams | None:
    """The conversation with the prompt kept in the input with probability ``prepend_prob``.

    The draw is a pure function of (seed, example id), so a resumed run sees the same data.
    """
    if conversation(example, prompt, config) is None:
        return None
    keep = random.Random(f"{config.seed}:{example.id}").random() < config.prepend_prob
    if keep:
        return {"sft": _prompt_as_context(example.teacher_conversation(prompt), prompt)}
    return {"sft": example.student_conversation(prompt)}


def with_teacher(example: Example, prompt: Prompt, config: TrainConfig) -> Streams | None:
    if conversation(example, prompt, config) is None:
        return None
    return {
        "sft": example.student_conversation(prompt),
        "teacher": _prompt_as_context(example.teacher_conversation(prompt), prompt),
    }


def first_answer(example: Example, prompt: Prompt, config: TrainConfig) -> Streams | None:
    """Sequence-level KD: the teacher's first answer y^T_0 to the input, as the student's target."""
    if not example.teacher_output:
        return None
    answer = [{"role": "assistant", "content": example.teacher_output}]
    return {"sft": prompt.student_messages(example.input) + answer}


def first_answer_with_teacher(
    example: Example, prompt: Prompt, config: TrainConfig
) -> Streams | None:
    if not example.teacher_output:
        return None
    answer = [{"role": "assistant", "content": example.teacher_output}]
    return {
        "sft": prompt.student_messages(example.input) + answer,
        "teacher": _prompt_as_context(prompt.teacher_messages(example.input) + answer, prompt),
    }


# -- mixers ------------------------------------------------------------------------------------
def genpi_mix(terms: dict[str, torch.Tensor], config: TrainConfig) -> torch.Tensor:
    from genpi.train.losses import joint_loss

    return joint_loss(terms["sft"], terms["pg"], config.lam)


def kd_mix(terms: dict[str, torch.Tensor], config: TrainConfig) -> torch.Tensor:
    return config.kd_mix * terms["sft"] + (1 - config.kd_mix) * terms["kl"]


def only(term: str) -> Mixer:
    return lambda terms, config: terms[term]


SFT_PG = {"sft": ("nll", "sft"), "pg": ("nll", "pg")}


def _genpi_variant(
    name: str, summary: str, layout: PGLayout, row: str, ablation_row: int
) -> Method:
    return Method(
        name,
        summary,
        conversation_and_pg(layout),
        SFT_PG,
        genpi_mix,
        paper_row=row,
        flags=("lam",),
        holds_prompt="prompt" in layout.required(),
        ablation_row=ablation_row,
    )


def _one_nll(name: str, summary: str, build: Builder, stream: str = "sft", **fields: Any) -> Method:
    """A method whose loss is the NLL on one stream alone (the term is named after the stream)."""
    return Method(name, summary, build, {stream: ("nll", stream)}, only(stream), **fields)


METHODS: dict[str, Method] = {
    m.name: m
    for m in [
        _genpi_variant(
            "genpi",
            "lam * L_SFT + (1 - lam) * L_PG; PG target = prompt then reason",
            PGLayout(("prompt", "reason")),
            "GenPI",
            0,
        ),
        _one_nll(
            "sft",
            "L_SFT only: the teacher's turns without the prompt",
            conversation,
            paper_row="GenPI w/o L_PG",
            ablation_row=6,
        ),
        _one_nll(
            "pg",
            "L_PG only: generate the prompt and reason from AS-IS/TO-BE",
            pg_only(PGLayout(("prompt", "reason"))),
            "pg",
            paper_row="GenPI w/o L_SFT",
            ablation_row=5,
            holds_prompt=True,
        ),
        _genpi_variant(
            "genpi-no-reason",
            "GenPI; PG target is the prompt alone",
            PGLayout(("prompt",)),
            "Table 2: w/o reason",
            1,
        ),
        _genpi_variant(
            "genpi-no-prompt",
            "GenPI; PG target is the reason alone",
            PGLayout(("reason",)),
            "Table 2: w/o prompt",
            2,
        ),
        _genpi_variant(
            "genpi-r-given-p",
            "GenPI; PG learns P(r | p, x, y): the prompt is in the input",
            PGLayout(("reason",), given=("prompt",)),
            "Table 3: P(r|p,x,y)",
            3,
        ),
        _genpi_variant(
            "genpi-p-given-r",
            "GenPI; PG learns P(p | x, y, r): the reason is in the input",
            PGLayout(("prompt",), given=("reason",)),
            "Table 3: P(p|x,y,r)",
            4,
        ),
        _one_nll(
            "prepend",
            "L_SFT with the prompt kept in the input with probability --prepend-prob",
            prepended,
            paper_row="Prompt Prepending",
            flags=("prepend_prob",),
            holds_prompt=True,
        ),
        Method(
            "kld",
            "token-level KL(teacher || student) on the teacher's turns; teacher = the "
            "same weights, adapter off, prompt given",
            with_teacher,
            {"kl": ("kl", "sft")},
            only("kl"),
            allows_full=True,
            paper_row="KLD",
            flags=("kl_temperature",),
            holds_prompt=True,
        ),
        _one_nll(
            "seqkd",
            "sequence-level KD: NLL of the teacher's first answer y^T_0",
            first_answer,
            allows_full=True,
            paper_row="SeqKD",
        ),
        Method(
            "seqkd-kld",
            "kd_mix * NLL + (1 - kd_mix) * KL on the teacher's first answer",
            first_answer_with_teacher,
            {"sft": ("nll", "sft"), "kl": ("kl", "sft")},
            kd_mix,
            allows_full=True,
            paper_row="SeqKD+KLD",
            flags=("kd_mix", "kl_temperature"),
            holds_prompt=True,
        ),
        _one_nll(
            "soft-prompt",
            "128 trainable virtual tokens (PEFT prompt tuning) in place of the "
            "prompt, trained like sft",
            conversation,
            tuning="prompt-tuning",
            paper_row="embedding compression (ICAE row)",
            flags=("num_virtual_tokens",),
        ),
    ]
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise GenpiError(f"unknown method {name!r}; use one of {', '.join(METHODS)}")
    return METHODS[name]


def ablations() -> list[str]:
    """The methods of the ablation table (the paper's Tables 2-3), in its row order."""
    rows = [m for m in METHODS.values() if m.ablation_row is not None]
    return [m.name for m in sorted(rows, key=lambda m: m.ablation_row or 0)]


def full_tuning_methods() -> list[str]:
    """The methods that ``--full`` (full fine-tuning) applies to."""
    return [m.name for m in METHODS.values() if m.allows_full]
