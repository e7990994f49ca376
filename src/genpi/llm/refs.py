"""Backend references, parsed in one place: what ``--model`` / ``--generator`` strings mean.

- a model reference (``smollm2-135m``, a ``.gguf`` file, a directory, a hub id): local transformers;
- ``http://host:port/v1#MODEL`` (or https): an OpenAI-compatible server, ``MODEL`` its model name;
- ``vllm:MODEL``: offline vLLM in this process.

A new backend kind is one more branch in ``parse_backend_ref`` and one in ``genpi.llm.load_backend``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

HTTP_SCHEMES = ("http://", "https://")
VLLM_PREFIX = "vllm:"

Kind = Literal["local", "http", "vllm"]


@dataclass(frozen=True)
class BackendRef:
    kind: Kind
    # local/vllm: the model reference (None: the default model); http: the server's model name
    # ("" when the reference names none, which ``load_backend`` refuses).
    model: str | None
    base_url: str | None = None  # http only

    @property
    def remote(self) -> bool:
        """Whether the model runs elsewhere (its context, weights and time are not this host's)."""
        return self.kind == "http"

    @property
    def local_model(self) -> str | None:
        """The model reference this process loads its tokenizer and config from (not for http)."""
        if self.remote:
            raise ValueError("a remote server's model is not loadable here")
        return self.model

    @property
    def name(self) -> str:
        """The name a run directory records for this backend (``MODEL@URL`` for a server)."""
        from genpi.models import DEFAULT_MODEL

        if self.kind == "http":
            return f"{self.model}@{(self.base_url or '').rstrip('/')}"
        if self.kind == "vllm":
            return f"{VLLM_PREFIX}{self.model}"
        return self.model or DEFAULT_MODEL


def parse_backend_ref(ref: str | None) -> BackendRef:
    """What a ``--model`` / ``--generator`` string names (None or "" is the default local model)."""
    if ref and ref.startswith(HTTP_SCHEMES):
        base_url, _, model = ref.partition("#")
        return BackendRef("http", model, base_url)
    if ref and ref.startswith(VLLM_PREFIX):
        return BackendRef("vllm", ref.removeprefix(VLLM_PREFIX))
    return BackendRef("local", ref or None)
