"""Offline vLLM backend, for GPU machines where ``vllm`` is installed."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from genpi.llm.base import (
    GREEDY,
    BackendError,
    Conversation,
    Generation,
    SamplingParams,
    continues_reply,
)


class VLLMBackend:
    def __init__(
        self, model: str, *, adapter: str | Path | None = None, **engine_kwargs: Any
    ) -> None:
        if importlib.util.find_spec("vllm") is None:
            raise BackendError(
                "the vllm backend needs the vllm package, which runs on GPU machines: "
                "`pip install vllm`, or use a local model or an OpenAI-compatible URL instead"
            )
        from vllm import LLM

        from genpi.models import resolve_model

        resolved = resolve_model(model)
        self.name = f"vllm:{model}"
        self._llm = LLM(model=resolved.path, enable_lora=adapter is not None, **engine_kwargs)
        self._lora = None
        if adapter is not None:
            from vllm.lora.request import LoRARequest

            self._lora = LoRARequest(Path(adapter).name, 1, str(adapter))

    def generate(
        self, conversations: Sequence[Conversation], params: SamplingParams = GREEDY
    ) -> list[Generation]:
        from vllm import SamplingParams as VSampling

        sampling = VSampling(
            max_tokens=params.max_new_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=params.seed,
            stop=list(params.stop) or None,
        )
        # vLLM takes the continue/answer choice per call: one call per kind, answers in order.
        results: list[Generation | None] = [None] * len(conversations)
        for prefill in (False, True):
            idx = [i for i, c in enumerate(conversations) if continues_reply(c) == prefill]
            if not idx:
                continue
            outputs = self._llm.chat(
                [conversations[i] for i in idx],
                sampling,
                lora_request=self._lora,
                use_tqdm=False,
                add_generation_prompt=not prefill,
                continue_final_message=prefill,
            )
            for i, out in zip(idx, outputs, strict=True):
                completion = out.outputs[0]
                results[i] = Generation(
                    text=completion.text.strip(),
                    prompt_tokens=len(out.prompt_token_ids or []),
                    completion_tokens=len(completion.token_ids),
                    finish_reason="length" if completion.finish_reason == "length" else "stop",
                )
        return [r for r in results if r is not None]
