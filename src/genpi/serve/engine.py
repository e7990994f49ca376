"""A local batching engine: one base model, several LoRA adapters, one worker thread.

Requests wait in a queue; the worker takes the oldest one and every other queued request for
the same adapter (up to ``max_batch_size``), switches the model to that adapter (or disables
adapters for the base model), and decodes the batch step by step with the KV cache, left-padded.
Each row keeps its own sampling parameters, token budget and stop strings, streams its text as
deltas, and leaves the batch as soon as it ends or its client goes away. Only the worker thread
touches the model, and one batch runs at a time, so no request ever sees another adapter's weights.

A prefix cache keeps the KV of conversation prefixes (everything before a request's last message:
a prompt sent with every request, the earlier rounds of an agent's episode) per adapter, bounded
in bytes with least-recently-used eviction, so a later request that starts with one runs only the
rest of its tokens.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genpi.llm.base import cut_at_stop
from genpi.llm.local import eos_ids as reply_end_ids

log = logging.getLogger(__name__)


@dataclass
class Delta:
    text: str


@dataclass
class Finished:
    text: str
    completion_tokens: int
    finish_reason: str  # "stop" or "length"


@dataclass
class Failed:
    message: str


Event = Delta | Finished | Failed
_ids = itertools.count()
# Below this a temperature decodes greedily (vLLM's convention): dividing the logits by 1e-300
# overflows float32 (the scalar becomes 0, the logits inf, the probabilities NaN), and for any
# temperature this small the sample is the argmax anyway.
MIN_TEMPERATURE = 1e-5


@dataclass
class GenRequest:
    """One conversation to answer, already tokenized; events go to ``on_event`` (worker thread)."""

    adapter: str | None
    input_ids: list[int]
    on_event: Callable[[Event], None]
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    # Leading tokens worth keeping in the prefix cache (the conversation before its last message).
    prefix_len: int = 0
    cancelled: threading.Event = field(default_factory=threading.Event)
    id: int = field(default_factory=lambda: next(_ids))

    def cancel(self) -> None:
        self.cancelled.set()


class EngineClosed(RuntimeError):
    pass


def _stop_holdback(text: str, stop: Sequence[str]) -> int:
    """How many trailing characters of ``text`` could still begin a stop string."""
    hold = 0
    for s in stop:
        for k in range(min(len(s) - 1, len(text)), hold, -1):
            if text.endswith(s[:k]):
                hold = k
                break
    return hold


class _Row:
    """A request's decoding state inside a batch."""

    def __init__(self, request: GenRequest, eos_ids: set[int]) -> None:
        import torch

        self.request = request
        self.eos_ids = set() if request.ignore_eos else eos_ids
        self.tokens: list[int] = []
        self.sent = ""  # text already streamed
        self.generator = None
        if request.temperature >= MIN_TEMPERATURE:
            seed = request.seed if request.seed is not None else random.getrandbits(63)
            # Raises on a seed out of 64 bits: the engine fails this row alone (see _start_rows).
            self.generator = torch.Generator().manual_seed(seed)

    def choose(self, logits: Any) -> int:
        import torch

        if self.generator is None:
            return int(torch.argmax(logits))
        logits = logits / self.request.temperature
        probs = torch.softmax(logits, dim=-1)
        if not bool(torch.isfinite(probs).all()):
            raise ValueError(
                f"the token probabilities at temperature {self.request.temperature} are not finite"
            )
        if self.request.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < self.request.top_p
            # The most likely token always stays: a top_p that float32 rounds to 0 (1e-300)
            # would otherwise keep none, and sampling from all zeros raises.
            keep[0] = True
            sorted_probs = torch.where(keep, sorted_probs, torch.zeros_like(sorted_probs))
            pick = torch.multinomial(sorted_probs, 1, generator=self.generator)
            return int(order[pick])
        return int(torch.multinomial(probs, 1, generator=self.generator))

    def step(self, token: int, tokenizer: Any) -> Finished | None:
        """Take one token; stream what is safe to show; return the end when the row is done."""
        req = self.request
        if token in self.eos_ids:
            return self._finish(tokenizer, "stop")
        self.tokens.append(token)
        text = tokenizer.decode(self.tokens, skip_special_tokens=True)
        if req.stop:
            cut, stopped = cut_at_stop(text, req.stop)
            if stopped:
                self._emit(cut)
                return Finished(cut, len(self.tokens), "stop")
        if len(self.tokens) >= req.max_tokens:
            return self._finish(tokenizer, "length")
        if not text.endswith("\ufffd"):  # an unfinished multi-byte character waits for more bytes
            self._emit(text[: len(text) - _stop_holdback(text, req.stop)])
        return None

    def _finish(self, tokenizer: Any, reason: str) -> Finished:
        text = tokenizer.decode(self.tokens, skip_special_tokens=True)
        self._emit(text)
        return Finished(text, len(self.tokens), reason)

    def _emit(self, text: str) -> None:
        if len(text) > len(self.sent) and text.startswith(self.sent):
            self.request.on_event(Delta(text[len(self.sent) :]))
            self.sent = text


# Shorter shared prefixes are not worth an entry (the chat template's header alone is ~20 tokens).
MIN_CACHED_PREFIX = 64


@dataclass
class _Entry:
    tokens: tuple[int, ...]
    layers: list[tuple[Any, Any]]  # per layer (keys, values), each [1, kv_heads, tokens, dim]
    nbytes: int


class PrefixCache:
    """KV caches of token prefixes, keyed by adapter and tokens, at most ``max_bytes`` in all."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[tuple[str | None, tuple[int, ...]], _Entry] = OrderedDict()
        self.hits = self.misses = self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, adapter: str | None, ids: Sequence[int]) -> _Entry | None:
        """The longest cached prefix of ``ids`` for this adapter that leaves ``ids`` a token of
        its own (the last position's logits are needed)."""
        best: tuple[str | None, tuple[int, ...]] | None = None
        for key in self._entries:
            name, tokens = key
            if name != adapter or len(tokens) >= len(ids):
                continue
            if (best is None or len(tokens) > len(best[1])) and tuple(ids[: len(tokens)]) == tokens:
                best = key
        if best is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(best)
        return self._entries[best]

    def store(
        self, adapter: str | None, tokens: Sequence[int], layers: list[tuple[Any, Any]]
    ) -> None:
        key = (adapter, tuple(tokens))
        if key in self._entries:
            self._entries.move_to_end(key)
            return
        nbytes = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in layers)
        if nbytes > self.max_bytes:
            return  # larger than the whole cache: not kept
        while self.bytes + nbytes > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            self.bytes -= old.nbytes
            self.evictions += 1
        self._entries[key] = _Entry(key[1], layers, nbytes)
        self.bytes += nbytes


def _worth_caching(prefix_len: int) -> int:
    return prefix_len if prefix_len >= MIN_CACHED_PREFIX else 0


def _common_prefix_length(a: str, b: str) -> int:
    """Length of the longest common prefix, by halving (string comparisons run in C: a request
    of megabytes is compared in milliseconds, where a loop over its characters takes seconds)."""
    low, high = 0, min(len(a), len(b))
    while low < high:  # a[:low] == b[:low]; none longer than high is shared
        mid = (low + high + 1) // 2
        if a[:mid] == b[:mid]:
            low = mid
        else:
            high = mid - 1
    return low


class Engine:
    """Serve one base model and its adapters from a queue, in batches per adapter."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        adapters: Sequence[str] = (),
        max_batch_size: int = 8,
        max_context: int | None = None,
        prefix_cache_bytes: int = 0,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.adapters = tuple(adapters)
        self.max_batch_size = max_batch_size
        config = getattr(model, "config", None)
        self.max_context = max_context or getattr(config, "max_position_embeddings", None) or 2048
        self._eos_ids = reply_end_ids(model, tokenizer)
        self._pending: deque[GenRequest] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._running_rows = 0
        self._tokenizer_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.batches_run = 0
        self.rows_cancelled = 0  # rows dropped mid-batch because their client went away
        self.rows_joined = 0  # requests that joined a batch already decoding
        self.device = next(model.parameters()).device
        self.prefix_cache = PrefixCache(prefix_cache_bytes) if prefix_cache_bytes > 0 else None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> Engine:
        self._thread = threading.Thread(target=self._work, name="genpi-engine", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Finish every queued and running request, then stop the worker."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def queued(self) -> int:
        return len(self._pending)

    @property
    def running(self) -> int:
        return self._running_rows

    # -- requests -----------------------------------------------------------------------------
    def encode(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of a conversation, as LocalBackend encodes it (``genpi.encoding``)."""
        from genpi.encoding import encode_chat

        with self._tokenizer_lock:
            return encode_chat(self.tokenizer, messages)

    def encode_request(self, messages: list[dict[str, str]]) -> tuple[list[int], int]:
        """The token ids of a request, and how many leading ones are worth caching: those of the
        conversation before its last message (the prompt, earlier rounds), what a later request
        is likely to start with; 0 when that is too short to cache, or the cache is off.

        The request is tokenized once: the prefix is where its text and the text of the
        conversation before its last message part, found through the tokens' character offsets.
        """
        from genpi.encoding import chat_text
        from genpi.llm.local import shared_prefix_length

        def tokenize(text: str, **kwargs: Any) -> Any:
            return self.tokenizer(text, add_special_tokens=False, **kwargs)  # as encode_chat does

        with self._tokenizer_lock:
            text = chat_text(self.tokenizer, messages)
            if self.prefix_cache is None or len(messages) < 2:
                return tokenize(text)["input_ids"], 0
            before = chat_text(self.tokenizer, messages[:-1])
            if not getattr(self.tokenizer, "is_fast", False):  # no offsets: tokenize both
                ids = tokenize(text)["input_ids"]
                return ids, _worth_caching(
                    shared_prefix_length([tokenize(before)["input_ids"], ids])
                )
            enc = tokenize(text, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        shared = _common_prefix_length(text, before)
        n = next((i for i, (_, end) in enumerate(enc["offset_mapping"]) if end > shared), len(ids))
        return ids, _worth_caching(min(n, len(ids) - 1))  # the last token is left to run

    def submit(self, request: GenRequest) -> None:
        if request.adapter is not None and request.adapter not in self.adapters:
            raise KeyError(f"unknown adapter {request.adapter!r}")
        with self._cond:
            if self._closing:
                raise EngineClosed("the engine is shutting down")
            self._pending.append(request)
            self._cond.notify()

    # -- worker -------------------------------------------------------------------------------
    def _next_batch(self) -> list[GenRequest] | None:
        with self._cond:
            while True:
                while self._pending and self._pending[0].cancelled.is_set():
                    self._pending.popleft()
                if self._pending:
                    break
                if self._closing:
                    return None
                self._cond.wait()
            adapter = self._pending[0].adapter
            batch: list[GenRequest] = []
            rest: deque[GenRequest] = deque()
            for req in self._pending:
                if req.cancelled.is_set():
                    continue
                if req.adapter == adapter and len(batch) < self.max_batch_size:
                    batch.append(req)
                else:
                    rest.append(req)
            self._pending = rest
            self._running_rows = len(batch)
            return batch

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                self._run_batch(batch)
            except Exception as exc:  # one bad batch must not stop the server
                log.exception("batch failed")
                for req in batch:
                    _deliver(req, Failed(f"generation failed: {exc}"))
            finally:
                self._running_rows = 0
                self.batches_run += 1

    def _weights(self, adapter: str | None) -> contextlib.AbstractContextManager[Any]:
        if adapter is not None:
            self.model.set_adapter(adapter)
            return contextlib.nullcontext()
        if hasattr(self.model, "disable_adapter"):
            return self.model.disable_adapter()
        return contextlib.nullcontext()

    def _take_joiners(self, adapter: str | None, room: int) -> list[GenRequest]:
        """Queued requests for ``adapter`` at the head of the queue, to join the running batch.

        Only the head: a request for another adapter that came first stops the joining, so the
        batch drains and that adapter gets its turn (no adapter starves).
        """
        joiners: list[GenRequest] = []
        with self._cond:
            while self._pending and len(joiners) < room:
                head = self._pending[0]
                if head.cancelled.is_set():
                    self._pending.popleft()
                elif head.adapter == adapter:
                    joiners.append(self._pending.popleft())
                else:
                    break
        return joiners

    def _forward(self, ids: Any, mask: Any, positions: Any, cache: Any) -> Any:
        out = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=positions.to(self.device),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[:, -1, :].float().cpu()

    def _start_rows(self, requests: list[GenRequest]) -> list[_Row]:
        """A row per request; a request whose row cannot start (a seed out of range) fails alone."""
        rows = []
        for request in requests:
            try:
                rows.append(_Row(request, self._eos_ids))
            except Exception as exc:
                log.warning("request %s failed to start: %s", request.id, exc)
                _deliver(request, Failed(f"generation failed for this request: {exc}"))
        return rows

    def _prefill(self, requests: list[GenRequest]) -> _Batch:
        """Read the prompts into a fresh KV cache: the state before the first token. Rows that
        start with a cached prefix run only their own tokens after it."""
        from transformers import DynamicCache

        rows = self._start_rows(requests)
        if not rows:
            return _Batch([], DynamicCache(), None, None)
        if self.prefix_cache is None:
            return self._prefill_rows(rows)
        adapter = rows[0].request.adapter
        groups: dict[tuple[int, ...] | None, tuple[_Entry | None, list[_Row]]] = {}
        for row in rows:
            entry = self.prefix_cache.lookup(adapter, row.request.input_ids)
            key = entry.tokens if entry is not None else None
            groups.setdefault(key, (entry, []))[1].append(row)
        states = [self._prefill_rows(group, entry) for entry, group in groups.values()]
        state = states[0]
        for other in states[1:]:
            state = _merge(state, other)
        return state

    def _prefill_rows(self, rows: list[_Row], entry: _Entry | None = None) -> _Batch:
        """Left-padded prefill of ``rows``; after a cached ``entry`` the layout of a row is
        [entry][padding][own tokens], positions continuing from the entry. The rows' cacheable
        prefixes that the cache lacks are stored."""
        import torch
        from transformers import DynamicCache

        requests = [row.request for row in rows]
        pad = self.tokenizer.pad_token_id
        start = len(entry.tokens) if entry is not None else 0
        tails = [r.input_ids[start:] for r in requests]
        width = max(len(t) for t in tails)
        ids = torch.tensor([[pad] * (width - len(t)) + t for t in tails])
        own = torch.tensor([[0] * (width - len(t)) + [1] * len(t) for t in tails])
        positions = (own.cumsum(-1) - 1).clamp(min=0) + start
        cache = DynamicCache()
        if entry is not None:
            for i, (keys, values) in enumerate(entry.layers):
                cache.update(
                    keys.expand(len(rows), -1, -1, -1).contiguous(),
                    values.expand(len(rows), -1, -1, -1).contiguous(),
                    i,
                )
        mask = torch.cat([torch.ones(len(rows), start, dtype=own.dtype), own], dim=1)
        logits = self._forward(ids, mask, positions, cache)
        if self.prefix_cache is not None:
            self._store_prefixes(requests, cache, start, width)
        return _Batch(rows, cache, mask, positions[:, -1:], logits)

    def _store_prefixes(
        self, requests: list[GenRequest], cache: Any, start: int, width: int
    ) -> None:
        """Copy each request's cacheable prefix out of a prefill's cache, whose row layout is
        [``start`` cached tokens][left padding][the row's own tokens, ``width`` with padding]."""
        import torch

        assert self.prefix_cache is not None
        for i, request in enumerate(requests):
            n = request.prefix_len
            if n <= start or n < MIN_CACHED_PREFIX or n >= len(request.input_ids):
                continue  # nothing beyond what is cached already, or too short to keep
            own = start + width - (len(request.input_ids) - start)  # where its own tokens begin
            take = n - start

            def cut(t: Any, own: int = own, take: int = take, i: int = i) -> Any:
                return torch.cat([t[i : i + 1, :, :start], t[i : i + 1, :, own : own + take]], 2)

            layers = [
                (cut(layer.keys).clone(), cut(layer.values).clone()) for layer in cache.layers
            ]
            self.prefix_cache.store(request.adapter, request.input_ids[:n], layers)

    def _advance(self, state: _Batch) -> _Batch:
        """Choose each row's next token; drop the rows that ended or whose client left."""
        import torch

        keep: list[int] = []
        next_tokens: list[int] = []
        for i, row in enumerate(state.rows):
            if row.request.cancelled.is_set():
                self.rows_cancelled += 1
                continue  # the client left: its slot is freed right away
            try:
                token = row.choose(state.logits[i])
                end = row.step(token, self.tokenizer)
            except Exception as exc:
                # This row alone fails (its sampling, its text or its receiver broke): it leaves
                # the batch like a cancelled row, and the other rows keep decoding.
                log.exception("request %s failed mid-batch", row.request.id)
                _deliver(row.request, Failed(f"generation failed for this request: {exc}"))
                continue
            if end is not None:
                _deliver(row.request, end)
            else:
                keep.append(i)
                next_tokens.append(token)
        if len(keep) < len(state.rows) and keep:
            index = torch.tensor(keep)
            state.cache.batch_select_indices(index.to(self.device))
            state.mask, state.last_positions = state.mask[index], state.last_positions[index]
        state.rows = [state.rows[i] for i in keep]
        state.next_tokens = next_tokens
        return state

    def _run_batch(self, batch: list[GenRequest]) -> None:
        import torch

        adapter = batch[0].adapter
        with self._weights(adapter), torch.inference_mode():
            state = self._advance(self._prefill(batch))
            while True:
                room = self.max_batch_size - len(state.rows)
                joiners = (
                    self._take_joiners(adapter, room) if room > 0 and _mergeable(state) else []
                )
                if joiners:
                    self.rows_joined += len(joiners)
                    batch.extend(joiners)  # so that a failure is reported to them too
                    joined = self._advance(self._prefill(joiners))
                    if not state.rows:
                        state = joined
                    elif joined.rows:
                        state = _merge(state, joined)
                if not state.rows:
                    return
                with self._cond:
                    self._running_rows = len(state.rows)
                ids = torch.tensor(state.next_tokens).unsqueeze(1)
                ones = torch.ones(len(state.rows), 1, dtype=state.mask.dtype)
                state.mask = torch.cat([state.mask, ones], dim=1)
                state.last_positions = state.last_positions + 1
                state.logits = self._forward(ids, state.mask, state.last_positions, state.cache)
                state = self._advance(state)


@dataclass
class _Batch:
    """The decoding state of a batch between two forward passes."""

    rows: list[_Row]
    cache: Any  # DynamicCache, as long as ``mask``
    mask: Any  # [rows, length], 0 on left padding
    last_positions: Any  # [rows, 1], the position of each row's last token
    logits: Any = None  # [rows, vocab], for each row's next token
    next_tokens: list[int] = field(default_factory=list)


def _mergeable(state: _Batch) -> bool:
    """Whether rows can join this cache (plain per-layer key/value tensors, no sliding window)."""
    layers = getattr(state.cache, "layers", None)
    return bool(layers) and all(type(layer).__name__ == "DynamicLayer" for layer in layers)


def _merge(a: _Batch, b: _Batch) -> _Batch:
    """One batch from two, left-padding the shorter KV cache (the padding is masked out)."""
    import torch
    import torch.nn.functional as F

    width = max(a.mask.shape[1], b.mask.shape[1])

    def left_pad(t: Any, axis_from_end: int) -> Any:
        missing = width - t.shape[-axis_from_end]
        if missing == 0:
            return t
        return F.pad(t, (0, 0) * (axis_from_end - 1) + (missing, 0))

    for layer_a, layer_b in zip(a.cache.layers, b.cache.layers, strict=True):
        layer_a.keys = torch.cat([left_pad(layer_a.keys, 2), left_pad(layer_b.keys, 2)])
        layer_a.values = torch.cat([left_pad(layer_a.values, 2), left_pad(layer_b.values, 2)])
    return _Batch(
        rows=a.rows + b.rows,
        cache=a.cache,
        mask=torch.cat([left_pad(a.mask, 1), left_pad(b.mask, 1)]),
        last_positions=torch.cat([a.last_positions, b.last_positions]),
        logits=None if a.logits is None else torch.cat([a.logits, b.logits]),
        next_tokens=a.next_tokens + b.next_tokens,
    )


def _deliver(request: GenRequest, event: Event) -> None:
    try:
        request.on_event(event)
    except Exception:  # a receiver that is gone (closed event loop) must not stop the worker
        log.debug("request %s: event dropped", request.id, exc_info=True)


@dataclass
class LoadedModel:
    """What ``load_engine`` built: the engine plus what the server shows about it."""

    engine: Engine
    base_ref: str
    base_path: str
    adapter_dirs: dict[str, Path]
    prompts: dict[str, Any]  # adapter name -> Prompt


def load_engine(
    model_ref: str,
    adapters: dict[str, Path],
    *,
    dtype: str | None = "auto",
    device: str | None = None,
    max_batch_size: int = 8,
    max_context: int | None = None,
    prefix_cache_bytes: int = 0,
) -> LoadedModel:
    """Load the base model once and every adapter onto it, refusing adapters of another base."""
    from genpi.adapter import attach_adapter, check_adapter, read_adapter_prompt, require_lora
    from genpi.models import load_model, resolve_model

    resolved = resolve_model(model_ref)
    weights_sha = resolved.provenance.get("weights_sha256")
    prompts = {}
    for name, directory in adapters.items():
        prompt = read_adapter_prompt(directory)
        check_adapter(
            directory,
            base_model=model_ref,
            base_weights_sha256=weights_sha,
            prompt=prompt,
        )
        require_lora(directory, "genpi serve")
        prompts[name] = prompt
    t0 = time.perf_counter()
    model, tokenizer = load_model(model_ref, dtype=dtype, device=device)
    for name, directory in adapters.items():
        model = attach_adapter(model, directory, name=name)
    log.info(
        "loaded %s and %d adapters in %.1fs", model_ref, len(adapters), time.perf_counter() - t0
    )
    engine = Engine(
        model,
        tokenizer,
        adapters=list(adapters),
        max_batch_size=max_batch_size,
        max_context=max_context,
        prefix_cache_bytes=prefix_cache_bytes,
    )
    return LoadedModel(engine, model_ref, resolved.path, dict(adapters), prompts)
