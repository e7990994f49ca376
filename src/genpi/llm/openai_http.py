"""OpenAI-compatible HTTP backend: vLLM's server, llama.cpp's server, TGI, or a hosted API."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from genpi.llm.base import (
    GREEDY,
    BackendError,
    Conversation,
    Generation,
    SamplingParams,
    continues_reply,
    cut_at_stop,
)

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
API_KEY_ENV = ("GENPI_API_KEY", "OPENAI_API_KEY")


class OpenAIBackend:
    """``POST {base_url}/chat/completions`` for each conversation, a bounded number at a time."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        concurrency: int = 8,
        timeout: float = 120.0,
        max_retries: int = 4,
        backoff: float = 1.0,
        api_key: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = f"{model}@{self.base_url}"
        self.concurrency = max(1, concurrency)
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        key = api_key or next((os.environ[k] for k in API_KEY_ENV if os.environ.get(k)), None)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout))

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIBackend(base_url={self.base_url!r}, model={self.model!r})"

    def close(self) -> None:
        self._client.close()

    def generate(
        self, conversations: Sequence[Conversation], params: SamplingParams = GREEDY
    ) -> list[Generation]:
        if len(conversations) <= 1 or self.concurrency == 1:
            return [self._one(c, params, i) for i, c in enumerate(conversations)]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(conversations))) as pool:
            return list(
                pool.map(lambda ic: self._one(ic[1], params, ic[0]), enumerate(conversations))
            )

    def _payload(
        self, conversation: Conversation, params: SamplingParams, index: int
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": conversation,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.seed is not None:
            body["seed"] = params.seed + index  # distinct but reproducible per conversation
        if params.stop:
            body["stop"] = list(params.stop)
        if continues_reply(conversation):
            # Continue the assistant's prefill (vLLM's and SGLang's chat extensions).
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
        return body

    def _one(self, conversation: Conversation, params: SamplingParams, index: int) -> Generation:
        url = f"{self.base_url}/chat/completions"
        body = self._payload(conversation, params, index)
        last_error = ""
        for attempt in range(self.max_retries + 1):
            try:
                response = self._client.post(url, json=body)
            except httpx.TimeoutException:
                last_error = f"no answer within {self.timeout:g} s"
            except httpx.TransportError as exc:
                last_error = f"connection failed ({type(exc).__name__}: {exc})"
            else:
                if response.status_code == 200:
                    return _parse(response, params)
                last_error = f"HTTP {response.status_code}: {response.text[:200]}"
                if response.status_code not in RETRY_STATUS:
                    break
            if attempt < self.max_retries:
                time.sleep(self.backoff * 2**attempt * (0.5 + random.random() / 2))
        raise BackendError(f"{self.base_url} failed after {attempt + 1} attempt(s): {last_error}")


def _parse(response: httpx.Response, params: SamplingParams) -> Generation:
    try:
        data = response.json()
        choice = data["choices"][0]
        text = choice["message"]["content"] or ""
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise BackendError(
            f"unexpected response from the server ({exc}): {response.text[:200]}"
        ) from None
    usage = data.get("usage") or {}
    text, stopped = cut_at_stop(text, params.stop)
    finish = choice.get("finish_reason") or "stop"
    return Generation(
        text=text.strip(),
        prompt_tokens=int(usage.get("prompt_tokens", 0)),
        completion_tokens=int(usage.get("completion_tokens", 0)),
        finish_reason="stop" if stopped else ("length" if finish == "length" else "stop"),
    )
