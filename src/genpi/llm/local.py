"""Local transformers backend: batched, left-padded generation with the KV cache, running a
prefix that every conversation of a call shares (the prompt) once.

A soft-prompt adapter (PEFT prompt tuning) is run as such a prefix: its virtual tokens, then the
shared tokens, go into the KV cache once, and the causal LM under the PEFT wrapper continues from
there (``genpi.adapter.soft_prompt`` says why PEFT's own ``generate`` is not used).
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genpi.adapter import SoftPrompt, soft_prompt
from genpi.encoding import encode_chat
from genpi.llm.base import (
    GREEDY,
    BackendError,
    Conversation,
    Generation,
    SamplingParams,
    cut_at_stop,
)

# Below this many common tokens the extra forward pass for the prefix is not worth it.
SHARED_PREFIX_MIN_TOKENS = 64


class LocalBackend:
    """Generate with a transformers model (optionally with a PEFT adapter) in this process."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str = "local",
        batch_size: int = 16,
        min_shared_prefix: int | None = SHARED_PREFIX_MIN_TOKENS,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.batch_size = batch_size
        # Conversations that start with the same tokens (one prompt, many inputs) run those
        # tokens once per call; None turns it off (the benchmark's baseline).
        self.min_shared_prefix = min_shared_prefix
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
            from genpi.adapter import AdapterError, attach_adapter, refuse_foreign_adapter

            weights_sha = model.genpi_ref.provenance.get("weights_sha256")
            refuse_foreign_adapter(adapter, name, weights_sha)
            try:
                model = attach_adapter(model, adapter)
            except AdapterError as exc:  # not an adapter at all: this backend cannot be built
                raise BackendError(str(exc)) from None
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
        results: list[Generation | None] = [None] * len(encoded)
        if params.seed is not None:
            torch.manual_seed(params.seed)
        soft = soft_prompt(self.model)
        for rows, prefix in self._prefix_groups(encoded, soft):
            rows.sort(key=lambda i: len(encoded[i]))  # less padding per batch
            for start in range(0, len(rows), self.batch_size):
                idx = rows[start : start + self.batch_size]
                batch = [encoded[i] for i in idx]
                for i, gen in zip(idx, self._generate_batch(batch, params, prefix), strict=True):
                    results[i] = gen
        return [r for r in results if r is not None]

    def _prefix_groups(
        self, encoded: list[list[int]], soft: SoftPrompt | None = None
    ) -> Iterator[tuple[list[int], SharedPrefix | None]]:
        """Rows grouped by the prompt they start with, each group with its shared prefix run
        once (None where no prefix is worth it: a lone row, short sequences, sharing off).
        With a soft prompt every group has a prefix: the virtual tokens, then any shared tokens."""

        def prefix(tokens: list[int]) -> SharedPrefix | None:
            if soft is not None:
                return SharedPrefix.after_soft_prompt(soft, tokens)
            return SharedPrefix.compute(self.model, tokens) if tokens else None

        if self.min_shared_prefix is None:
            yield list(range(len(encoded))), prefix([])
            return
        key_len = self.min_shared_prefix
        groups: dict[tuple[int, ...] | None, list[int]] = {}
        for i, ids in enumerate(encoded):
            key = tuple(ids[:key_len]) if len(ids) > key_len else None
            groups.setdefault(key, []).append(i)
        unshared = groups.pop(None, [])
        for rows in groups.values():
            if len(rows) < 2:  # rows of a group share key_len tokens at least
                unshared.extend(rows)
                continue
            length = shared_prefix_length([encoded[i] for i in rows])
            yield rows, prefix(encoded[rows[0]][:length])
        if unshared:
            yield unshared, prefix([])

    def _generate_batch(
        self, batch: list[list[int]], params: SamplingParams, prefix: SharedPrefix | None = None
    ) -> list[Generation]:
        import torch

        virtual = prefix.virtual if prefix is not None else 0
        # A soft prompt's virtual tokens are in the prefix's cache: the causal LM under the PEFT
        # wrapper continues it (the wrapper's generate would insert them again).
        model = self.model.get_base_model() if virtual else self.model
        tok = self.tokenizer
        pad = tok.pad_token_id
        device = next(model.parameters()).device
        shared = prefix.tokens if prefix is not None else []
        # Layout per row: [virtual tokens][shared prefix][padding][own suffix]. The prefix
        # (virtual tokens included) is in the cache, so its ids are never read: the virtual
        # tokens' are placeholders. The attention mask hides the padding and generate's
        # positions (cumsum of the mask) continue from the prefix, so each row sees exactly its
        # own sequence at its own positions.
        head = [pad] * virtual + shared
        suffixes = [ids[len(shared) :] for ids in batch]
        width = len(head) + max(len(s) for s in suffixes)
        input_ids = torch.tensor(
            [head + [pad] * (width - len(head) - len(s)) + s for s in suffixes]
        )
        attention = torch.tensor(
            [[1] * len(head) + [0] * (width - len(head) - len(s)) + [1] * len(s) for s in suffixes]
        )
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
        if prefix is not None:
            kwargs["cache"] = prefix.cache_for(len(batch))
        with torch.inference_mode():
            out = model.generate(
                input_ids=input_ids.to(device), attention_mask=attention.to(device), **kwargs
            )
        end_ids = eos_ids(model, tok)
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


def shared_prefix_length(encoded: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix all sequences share, leaving every sequence at least one token
    of its own (generation needs a last position to continue from)."""
    if not encoded:
        return 0
    limit = min(len(ids) for ids in encoded) - 1
    first = encoded[0]
    n = 0
    while n < limit and all(ids[n] == first[n] for ids in encoded):
        n += 1
    return n


@dataclass
class SharedPrefix:
    """A token prefix's KV cache, computed once and copied for each batch that starts with it."""

    tokens: list[int]
    cache: Any
    virtual: int = 0  # a soft prompt's virtual tokens before ``tokens`` (in the cache too)

    @classmethod
    def compute(cls, model: Any, tokens: list[int]) -> SharedPrefix:
        import torch

        device = next(model.parameters()).device
        with torch.inference_mode():
            out = model(input_ids=torch.tensor([tokens], device=device), use_cache=True)
        return cls(tokens=list(tokens), cache=out.cache)

    @classmethod
    def after_soft_prompt(cls, soft: SoftPrompt, tokens: list[int]) -> SharedPrefix:
        """The cache of a soft prompt's virtual tokens followed by ``tokens`` (maybe none), run
        on the causal LM at positions from 0: what PEFT's forward computes for them."""
        import torch

        lm = soft.lm
        embeds = soft.embeds
        if tokens:
            ids = torch.tensor([tokens], device=embeds.device)
            embeds = torch.cat([embeds, lm.get_input_embeddings()(ids)], dim=1)
        with torch.inference_mode():
            out = lm(inputs_embeds=embeds, use_cache=True)
        return cls(tokens=list(tokens), cache=out.cache, virtual=soft.embeds.shape[1])

    def cache_for(self, rows: int) -> Any:
        """A fresh cache of ``rows`` copies of the prefix: generate extends it in place, and
        the next batch needs the prefix alone."""
        cache = copy.deepcopy(self.cache)
        cache.batch_repeat_interleave(rows)
        return cache


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
