"""Local transformers backend: batched, left-padded generation with the KV cache."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from genpi.llm.base import (
    GREEDY,
    BackendError,
    Conversation,
    Generation,
    SamplingParams,
    continues_reply,
    cut_at_stop,
)


class LocalBackend:
    """Generate with a transformers model (optionally with a PEFT adapter) in this process."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str = "local",
        batch_size: int = 16,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.batch_size = batch_size
        # One set of weights: callers on several threads (eval-os --concurrency) take turns.
        self._lock = threading.Lock()
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token

    @classmethod
    def from_ref(
        cls,
        ref: str | None = None,
        *,
        adapter: str | Path | None = None,
        dtype: str | None = "auto",
        device: str | None = None,
        batch_size: int = 16,
    ) -> LocalBackend:
        from genpi.models import load_model

        model, tokenizer = load_model(ref, dtype=dtype, device=device)
        name = ref or "smollm2-135m"
        if adapter is not None:
            _refuse_foreign_adapter(adapter, name, model.genpi_ref)
            model = attach_adapter(model, adapter)
            name = f"{name}+{Path(adapter).name}"
        return cls(model, tokenizer, name=name, batch_size=batch_size)

    @property
    def has_adapter(self) -> bool:
        return hasattr(self.model, "disable_adapter")

    @contextlib.contextmanager
    def adapter_disabled(self) -> Iterator[None]:
        """Run the same weights without the adapter (the teacher of KLD, the base model)."""
        if not self.has_adapter:
            yield
            return
        with self.model.disable_adapter():
            yield

    def encode(self, conversation: Conversation) -> list[int]:
        return encode_chat(self.tokenizer, conversation)

    def generate(
        self, conversations: Sequence[Conversation], params: SamplingParams = GREEDY
    ) -> list[Generation]:
        with self._lock:
            return self._generate_all(conversations, params)

    def _generate_all(
        self, conversations: Sequence[Conversation], params: SamplingParams
    ) -> list[Generation]:
        import torch

        encoded = [self.encode(c) for c in conversations]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # less padding per batch
        results: list[Generation | None] = [None] * len(encoded)
        if params.seed is not None:
            torch.manual_seed(params.seed)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            for i, gen in zip(
                idx, self._generate_batch([encoded[i] for i in idx], params), strict=True
            ):
                results[i] = gen
        return [r for r in results if r is not None]

    def _generate_batch(self, batch: list[list[int]], params: SamplingParams) -> list[Generation]:
        import torch

        tok = self.tokenizer
        width = max(len(ids) for ids in batch)
        pad = tok.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in batch])
        attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch])
        device = next(self.model.parameters()).device
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "pad_token_id": pad,
            "do_sample": not params.greedy,
        }
        if params.greedy:
            # Clear sampling defaults a model's generation_config may carry.
            kwargs.update(temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=tok)
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids.to(device), attention_mask=attention.to(device), **kwargs
            )
        end_ids = eos_ids(self.model, tok)
        generations = []
        for row, ids in zip(out[:, width:].tolist(), batch, strict=True):
            n = len(row)
            ended = False
            for j, t in enumerate(row):
                if t in end_ids:
                    n, ended = j, True
                    break
            text, stopped = cut_at_stop(tok.decode(row[:n], skip_special_tokens=True), params.stop)
            finish = "stop" if ended or stopped else "length"
            generations.append(Generation(text.strip(), len(ids), n, finish))
        return generations


def encode_chat(tokenizer: Any, conversation: Conversation) -> list[int]:
    """Token ids of a conversation as the model continues it: with the generation prompt, or
    after a final assistant message's text (``continues_reply``)."""
    prefill = continues_reply(conversation)
    text = tokenizer.apply_chat_template(
        conversation,
        tokenize=False,
        add_generation_prompt=not prefill,
        continue_final_message=prefill,
    )
    # The chat template already holds the special tokens; adding more would shift training/inference.
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """Every token id that ends a reply: the tokenizer's EOS and the generation config's."""
    ids = {tokenizer.eos_token_id}
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(gen_eos, int):
        ids.add(gen_eos)
    elif isinstance(gen_eos, list):
        ids.update(gen_eos)
    ids.discard(None)
    return ids  # type: ignore[return-value]


def _refuse_foreign_adapter(adapter: str | Path, ref: str, resolved: Any) -> None:
    """A genpi adapter trained on other base weights is refused; plain PEFT adapters pass."""
    from genpi.adapter import INFO_FILE, check_adapter

    if (Path(adapter) / INFO_FILE).exists():
        check_adapter(
            adapter, base_model=ref, base_weights_sha256=resolved.provenance.get("weights_sha256")
        )


def attach_adapter(model: Any, adapter: str | Path) -> Any:
    """Wrap ``model`` with a PEFT adapter from a directory, with a clear error if it is not one."""
    adapter = Path(adapter)
    if not (adapter / "adapter_config.json").exists():
        raise BackendError(f"{str(adapter)!r} is not an adapter directory (no adapter_config.json)")
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter)).eval()
