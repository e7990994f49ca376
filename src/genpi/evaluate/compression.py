"""The text-compression baseline: the prompt compressed with LLMLingua, given in place of the prompt.

The one implementation of the baseline, used by ``genpi eval`` (``compress_prompt``: scores) and
``genpi profile`` (``llmlingua_compressor`` + ``compressed_prompt``: cost). As in the paper, the
prompt is compressed as a whole (``prompt_document``: every message of it, as one text) and given
as one system message before the prompt's final user turn.

LLMLingua-2 needs a token-classification model from the hub, which genpi never downloads at run
time, so this uses the original LLMLingua (token pruning by a causal LM's perplexity) with the
evaluated model itself as the compressor (by default the embedded SmolLM2-135M).

Offline shim: ``llmlingua.PromptCompressor.__init__`` calls ``tiktoken.encoding_for_model(
"gpt-3.5-turbo")``, which downloads tiktoken's ``cl100k_base`` file from the internet on first use
(tiktoken ships no encodings; ``TIKTOKEN_CACHE_DIR`` only helps where someone already put the file
there), only to count tokens. ``_OfflineCompressor`` sets the same fields itself and
counts tokens with the compressor's own tokenizer instead, so ``rate`` is measured in the
evaluated model's tokens. A second shim, ``_LegacyCacheModel``, converts
between the list-of-(key, value) KV cache llmlingua slices and transformers' ``DynamicCache``
(transformers 5 no longer accepts or returns the list form). Written against llmlingua 0.2.2.

Compressed prompts are cached in ``RUN_DIR/eval/compressed/<fingerprint>-<rate>.json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from genpi.errors import GenpiError
from genpi.prompt import Prompt

COMPRESSOR = "llmlingua (original, causal-LM perplexity pruning; LLMLingua-2 needs a hub model)"


class CompressionError(GenpiError):
    pass


def prompt_document(prompt: Prompt) -> str:
    """The prompt's messages as one text (the final user turn with the input stays separate)."""
    return "\n\n".join(f"{m['role'].upper()}: {m['content']}" for m in prompt.messages)


class _HFTokenCounter:
    """The one method llmlingua calls on its tiktoken encoding: ``encode(text) -> ids``."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def encode(self, text: str, **_: Any) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids: list[int], **_: Any) -> str:
        return self.tokenizer.decode(ids)


class _LegacyCacheModel:
    """Calls the model with a ``DynamicCache`` built from llmlingua's [[k, v], ...] list, and
    hands back the cache as that list (llmlingua crops it with tensor slices)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def __call__(self, *args: Any, past_key_values: Any = None, **kwargs: Any) -> Any:
        from transformers import DynamicCache

        if past_key_values is not None and not isinstance(past_key_values, DynamicCache):
            past_key_values = DynamicCache([(k, v) for k, v in past_key_values])
        out = self.model(*args, past_key_values=past_key_values, **kwargs)
        cache = getattr(out, "past_key_values", None)
        if cache is not None and hasattr(cache, "layers"):
            out.past_key_values = [[layer.keys, layer.values] for layer in cache.layers]
        return out


def _offline_compressor(model_dir: str, device: str = "cpu") -> Any:
    try:
        from llmlingua import PromptCompressor
    except ImportError:
        raise CompressionError(
            "the compression baseline needs llmlingua: `pip install llmlingua==0.2.2`, "
            "or leave out --compression"
        ) from None

    class _OfflineCompressor(PromptCompressor):
        def __init__(self, model_name: str) -> None:  # noqa: D401 - mirrors the parent's fields
            # The parent's __init__ minus tiktoken (a download); see the module docstring.
            self.model_name = model_name
            self.use_llmlingua2 = False
            self.retrieval_model = None
            self.retrieval_model_name = None
            self.open_api_config = {}
            self.cache_bos_num = 10
            self.prefix_bos_num = 100
            self.load_model(model_name, device, {"trust_remote_code": False})
            self.oai_tokenizer = _HFTokenCounter(self.tokenizer)
            self.model = _LegacyCacheModel(self.model)

    return _OfflineCompressor(model_dir)


def llmlingua_compressor(model_dir: str, rate: float, device: str = "cpu") -> Callable[[str], str]:
    """A text -> compressed text function: LLMLingua at ``rate`` (share of tokens kept), with the
    model in ``model_dir`` as its small language model, offline (see the module docstring)."""
    compressor = _offline_compressor(model_dir, device)

    def compress(text: str) -> str:
        return compressor.compress_prompt([text], rate=rate)["compressed_prompt"]

    return compress


def compress_prompt(
    prompt: Prompt,
    rates: list[float],
    *,
    model_dir: str,
    cache_dir: str | Path | None = None,
) -> dict[float, dict[str, Any]]:
    """{rate: {"text", "origin_tokens", "compressed_tokens", "compressor", ...}} for each rate.

    ``rate`` is LLMLingua's: the share of tokens kept (0.3 keeps about 30%).
    """
    for rate in rates:
        if not 0 < rate <= 1:
            raise CompressionError(
                f"compression rate {rate} is not in (0, 1]: give e.g. 0.9,0.7,0.3"
            )
    results: dict[float, dict[str, Any]] = {}
    missing = []
    for rate in rates:
        path = cache_path(cache_dir, prompt, rate) if cache_dir else None
        if path is not None and path.exists():
            results[rate] = json.loads(path.read_text())
        else:
            missing.append(rate)
    if not missing:
        return results
    compressor = _offline_compressor(model_dir)
    document = prompt_document(prompt)
    for rate in missing:
        out = compressor.compress_prompt([document], rate=rate)
        record = {
            "rate": rate,
            "text": out["compressed_prompt"],
            "origin_tokens": out["origin_tokens"],
            "compressed_tokens": out["compressed_tokens"],
            "compressor": COMPRESSOR,
            "compressor_model": model_dir,
            "prompt_fingerprint": prompt.fingerprint,
        }
        results[rate] = record
        if cache_dir:
            from genpi.data import write_json_atomic

            write_json_atomic(cache_path(cache_dir, prompt, rate), record)
    return results


def run_cache_dir(run_dir: str | Path) -> Path:
    """A run's cache of compressed prompts (``genpi eval``'s, read again by ``genpi grid``)."""
    return Path(run_dir) / "eval" / "compressed"


def cache_path(cache_dir: str | Path, prompt: Prompt, rate: float) -> Path:
    """Where ``compress_prompt`` keeps the prompt's compression at ``rate``."""
    return Path(cache_dir) / f"{prompt.fingerprint[:16]}-{rate:g}.json"


def compressed_prompt(compressed_text: str, prompt: Prompt) -> Prompt:
    """``prompt`` with its messages replaced by the compressed text as one system message (its
    final user turn, templates and reader kept)."""
    return Prompt(
        messages=({"role": "system", "content": compressed_text},),
        input_template=prompt.input_template,
        student_template=prompt.student_template,
        action_pattern=prompt.action_pattern,
        max_turns=prompt.max_turns,
        name=f"{prompt.name}-compressed",
    )


def compressed_messages(compressed_text: str, prompt: Prompt, x: str) -> list[dict[str, str]]:
    """The compressed prompt as a system message, then the prompt's final user turn."""
    return compressed_prompt(compressed_text, prompt).teacher_messages(x)
