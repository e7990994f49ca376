"""The one interface every generation backend implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

from genpi.errors import GenpiError

Message = dict[str, str]
Conversation = list[Message]


class BackendError(GenpiError, RuntimeError):
    """A backend that cannot be built or cannot answer; the message says why and what to do."""


class SamplingError(GenpiError, ValueError):
    """Sampling settings out of range: one line naming the setting (a ValueError for callers
    that validate user input by catching ValueError)."""


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. ``temperature == 0`` means greedy decoding."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # bool is an int: `max_new_tokens=True` is a caller's mistake, not one token.
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int):
            raise SamplingError(
                f"max_new_tokens must be an integer, got {type(self.max_new_tokens).__name__}"
            )
        if self.max_new_tokens < 1:
            raise SamplingError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        # `not x >= 0` rather than `x < 0`: NaN fails every comparison and must be refused too.
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, int | float):
            raise SamplingError(
                f"temperature must be a number, got {type(self.temperature).__name__}"
            )
        if not 0 <= self.temperature < float("inf"):
            raise SamplingError(f"temperature must be >= 0 and finite, got {self.temperature}")
        if isinstance(self.top_p, bool) or not isinstance(self.top_p, int | float):
            raise SamplingError(f"top_p must be a number, got {type(self.top_p).__name__}")
        if not 0 < self.top_p <= 1:
            raise SamplingError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d


GREEDY = SamplingParams()


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (EOS or a stop string) or "length"


@runtime_checkable
class Backend(Protocol):
    """Generate one reply for each conversation in a batch."""

    name: str

    def generate(
        self, conversations: Sequence[Conversation], params: SamplingParams = GREEDY
    ) -> list[Generation]: ...


def continues_reply(conversation: Conversation) -> bool:
    """A conversation that ends with an assistant message asks to continue that message (a
    prefill, e.g. "1." to start a list) rather than to answer it with a new one."""
    return bool(conversation) and conversation[-1]["role"] == "assistant"


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` at the first stop string; return the text and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
