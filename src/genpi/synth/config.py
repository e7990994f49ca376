"""Every setting of ``genpi synth`` in one dataclass, with the paper's defaults and named presets.

A preset is a few fields changed from the defaults (``PRESETS``, the one place presets are
defined); ``genpi synth --preset NAME`` and ``genpi internalize`` (which names one preset per
stage) both read it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

END_TOKEN = "[END_CONVERSATION]"
DEFAULT_MAX_TURNS = 8  # used when neither the prompt file nor --max-turns sets one
INPUT_STYLES = ("continue", "describe")  # how stage 1 asks the generator (SynthConfig.input_style)


@dataclass
class SynthConfig:
    # Stage 1: pseudo user inputs (paper: nucleus sampling, top-p 0.9, T 1.0).
    n: int = 1000
    num_gen_once: int = 10  # problems asked for per generator request
    input_temperature: float = 1.0
    input_top_p: float = 0.9
    input_max_new_tokens: int = 1024
    # How the generator is asked. "continue": it continues a numbered list of exemplars (the
    # prompt's demonstration inputs, --seed-inputs and inputs kept so far) without the prompt's
    # text; measured on the embedded 135M generator, the long prompt in the request derails it
    # into fragments and chatter, while a list of real inputs is continued with inputs of their
    # shape. "describe": the paper's request, the whole prompt and a focus sentence from it,
    # then a numbered list (for a large generator). "continue" without any exemplar falls back
    # to "describe" (the stage's statistics say which ran).
    input_style: str = "continue"
    # The generator's answer is started with this text, so a small model writes the list instead
    # of chatting about the prompt ("" for an endpoint without continue_final_message; then the
    # "continue" style shows its list in the request and reads the whole answer).
    input_prefill: str = "1."
    # Exemplars shown per request: up to this many of the prompt's demonstration inputs, and as
    # many of --seed-inputs, a different random subset every request.
    max_seed_demos: int = 5
    # "continue" style: also up to this many inputs kept by earlier requests (Self-Instruct's
    # mix), so that a prompt with one demonstration does not get the same list every time.
    max_generated_exemplars: int = 2
    near_duplicate_jaccard: float = 0.8  # token-set Jaccard at or above which two inputs are one
    max_input_chars: int = 1500  # longer is "too_long" (or twice the longest exemplar, if more)
    # Keep an input only when the target model with the prompt answers it with an action the
    # prompt's action_pattern reads (skipped for a prompt without one); the answer is reused as
    # the first agent turn of stage 2.
    teacher_check: bool = True
    max_input_requests: int | None = None  # None: 4 requests per ceil(n / num_gen_once), at least 8
    heldout_fraction: float = 0.1
    seed: int = 0
    # Stage 2: Self Role-Playing Conversation (greedy).
    max_turns: int | None = None  # None: the prompt's max_turns, else DEFAULT_MAX_TURNS
    end_token: str = END_TOKEN
    agent_max_new_tokens: int = 512
    env_max_new_tokens: int = 256
    # Stage 3: outputs (the student's first answer, greedy).
    output_max_new_tokens: int = 512
    # Stage 4: reasons (paper: top-p 0.9, T 0.7).
    reason_temperature: float = 0.7
    reason_top_p: float = 0.9
    reason_max_new_tokens: int = 384
    # Execution.
    batch_size: int = 16  # conversations per generate call (and per durable write)
    max_consecutive_failures: int = 3  # failed backend calls in a row before a stage gives up
    progress: bool = True

    @classmethod
    def quick(cls, **overrides: Any) -> SynthConfig:
        """The ``quick`` preset (a CPU demo), with ``overrides`` on top."""
        return cls.preset("quick", **overrides)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> SynthConfig:
        """A named preset of ``PRESETS`` (the paper's defaults with a few fields changed), with
        ``overrides`` on top."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; use one of {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def turn_limit(self, prompt_max_turns: int | None) -> int:
        return self.max_turns or prompt_max_turns or DEFAULT_MAX_TURNS

    def __post_init__(self) -> None:
        if self.input_style not in INPUT_STYLES:
            raise ValueError(
                f"unknown input_style {self.input_style!r}; use one of {', '.join(INPUT_STYLES)}"
            )

    def input_request_limit(self) -> int:
        if self.max_input_requests is not None:
            return self.max_input_requests
        return max(8, 4 * -(-self.n // self.num_gen_once))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("progress")
        return d


# A CPU demo: few inputs, short generations, short conversations. On a CPU the generator is the
# embedded 135M model, and at the paper's T 1.0 (set for a 70B generator) it writes fragments:
# by a reading of 40 random kept inputs, OS 3-6 and WebShop goals 9-12 at T 1.0 against 0 and
# 2-4 at T 0.7 (README, "The quality table across prompts"); the price is fewer distinct items.
_QUICK: dict[str, Any] = {
    "n": 16,
    "num_gen_once": 8,
    "input_temperature": 0.7,
    "input_max_new_tokens": 384,
    "max_turns": 3,
    "agent_max_new_tokens": 96,
    "env_max_new_tokens": 64,
    "output_max_new_tokens": 96,
    "reason_max_new_tokens": 128,
}

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "quick": _QUICK,
    # `genpi internalize --preset quick` (make demo): quick with two turns, 64-token caps and a
    # quarter held out, so that all four stages fit ~15 minutes on 2 cores (README's demo figures).
    "demo": {
        **_QUICK,
        "heldout_fraction": 0.25,
        "max_turns": 2,
        "agent_max_new_tokens": 64,
        "env_max_new_tokens": 48,
        "output_max_new_tokens": 64,
        "reason_max_new_tokens": 64,
    },
    # `genpi internalize --preset cpu`: between quick and paper, for one prompt in about an hour
    # on 2 cores (README's cross-prompt table): 64 inputs, two agent turns, 96-token caps.
    "cpu": {
        **_QUICK,
        "n": 64,
        "heldout_fraction": 0.25,
        "max_turns": 2,
        "agent_max_new_tokens": 96,
        "env_max_new_tokens": 64,
        "output_max_new_tokens": 96,
        "reason_max_new_tokens": 96,
    },
}
