"""Generation backends behind one interface: ``backend.generate(conversations, params)``.

Backend references (``--model`` / ``--generator``):

- a model reference (``smollm2-135m``, a ``.gguf`` file, a directory, a hub id): local transformers;
- ``http://host:port/v1#MODEL`` (or https): an OpenAI-compatible server, ``MODEL`` its model name
  (API key from ``$GENPI_API_KEY`` or ``$OPENAI_API_KEY``);
- ``vllm:MODEL``: offline vLLM in this process (GPU machines with ``vllm`` installed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from genpi.llm.base import (
    GREEDY,
    Backend,
    BackendError,
    Conversation,
    Generation,
    Message,
    SamplingParams,
    continues_reply,
    cut_at_stop,
)

__all__ = [
    "GREEDY",
    "Backend",
    "BackendError",
    "Conversation",
    "Generation",
    "Message",
    "SamplingParams",
    "continues_reply",
    "cut_at_stop",
    "load_backend",
]


def load_backend(
    ref: str | None = None, *, adapter: str | Path | None = None, **kwargs: Any
) -> Backend:
    """Build the backend a reference names (see the module docstring)."""
    if ref and ref.startswith(("http://", "https://")):
        from genpi.llm.openai_http import OpenAIBackend

        base_url, _, model = ref.partition("#")
        if not model:
            raise BackendError(
                f"{ref!r} names no model: append '#MODEL', e.g. http://127.0.0.1:8000/v1#my-model"
            )
        if adapter is not None:
            raise BackendError(
                "an adapter cannot be attached to a remote server; serve it there instead"
            )
        return OpenAIBackend(base_url, model, **kwargs)
    if ref and ref.startswith("vllm:"):
        from genpi.llm.vllm_offline import VLLMBackend

        return VLLMBackend(ref.removeprefix("vllm:"), adapter=adapter, **kwargs)
    from genpi.llm.local import LocalBackend

    return LocalBackend.from_ref(ref, adapter=adapter, **kwargs)
