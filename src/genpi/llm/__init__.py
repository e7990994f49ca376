"""Generation backends behind one interface: ``backend.generate(conversations, params)``.

Backend references (``--model`` / ``--generator``):

- a model reference (``smollm2-135m``, a ``.gguf`` file, a directory, a hub id): local transformers;
- ``http://host:port/v1#MODEL`` (or https): an OpenAI-compatible server, ``MODEL`` its model name
  (API key from ``$GENPI_API_KEY`` or ``$OPENAI_API_KEY``);
- ``vllm:MODEL``: offline vLLM in this process (GPU machines with ``vllm`` installed).

``genpi.llm.refs`` parses them (every verb asks it what a reference names); a new backend is a
module here, a branch in ``parse_backend_ref`` and one in ``load_backend``.
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
from genpi.llm.refs import BackendRef, parse_backend_ref

__all__ = [
    "GREEDY",
    "Backend",
    "BackendError",
    "BackendRef",
    "Conversation",
    "Generation",
    "Message",
    "SamplingParams",
    "continues_reply",
    "cut_at_stop",
    "load_backend",
    "parse_backend_ref",
]


def load_backend(
    ref: str | None = None, *, adapter: str | Path | None = None, **kwargs: Any
) -> Backend:
    """Build the backend a reference names (see the module docstring; parsed by
    ``genpi.llm.refs.parse_backend_ref``)."""
    parsed = parse_backend_ref(ref)
    if parsed.kind == "http":
        from genpi.llm.openai_http import OpenAIBackend

        if not parsed.model:
            raise BackendError(
                f"{ref!r} names no model: append '#MODEL', e.g. http://127.0.0.1:8000/v1#my-model"
            )
        if adapter is not None:
            raise BackendError(
                "an adapter cannot be attached to a remote server; serve it there instead"
            )
        return OpenAIBackend(parsed.base_url, parsed.model, **kwargs)
    if parsed.kind == "vllm":
        from genpi.llm.vllm_offline import VLLMBackend

        return VLLMBackend(parsed.model, adapter=adapter, **kwargs)
    from genpi.llm.local import LocalBackend

    return LocalBackend.from_ref(ref, adapter=adapter, **kwargs)
