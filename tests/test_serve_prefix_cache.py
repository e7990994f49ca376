"""The serve engine's prefix cache: the same answers as without it, bounded with LRU eviction,
and never one adapter's KV for another (tiny fp32 model, greedy)."""

from __future__ import annotations

import threading

import pytest
import torch

from genpi.serve.engine import Finished, GenRequest, PrefixCache

SYSTEM = {"role": "system", "content": "You are a shell agent. Think, then act. " * 8}
USERS = ["hi", "count the files in /etc", "what is the kernel version?"]


def engine_for(tiny_model_dir, tiny_adapter_dir, cache_bytes):
    from genpi.serve.engine import load_engine

    loaded = load_engine(
        str(tiny_model_dir),
        {"shell": tiny_adapter_dir},
        dtype="fp32",
        device="cpu",
        prefix_cache_bytes=cache_bytes,
    )
    return loaded.engine.start()


@pytest.fixture(scope="module")
def cached(tiny_model_dir, tiny_adapter_dir):
    engine = engine_for(tiny_model_dir, tiny_adapter_dir, 64 * 2**20)
    yield engine
    engine.stop()


@pytest.fixture(scope="module")
def uncached(tiny_model_dir, tiny_adapter_dir):
    engine = engine_for(tiny_model_dir, tiny_adapter_dir, 0)
    yield engine
    engine.stop()


def ask(engine, adapter, messages_list, max_tokens=8):
    """Submit every conversation at once (one batch) and return the answers in order."""
    done = [threading.Event() for _ in messages_list]
    results: list[Finished | None] = [None] * len(messages_list)
    for i, messages in enumerate(messages_list):
        ids, prefix_len = engine.encode_request(messages)

        def on_event(event, i=i):
            if isinstance(event, Finished):
                results[i] = event
                done[i].set()

        engine.submit(
            GenRequest(
                adapter=adapter,
                input_ids=ids,
                on_event=on_event,
                max_tokens=max_tokens,
                ignore_eos=True,
                prefix_len=prefix_len,
            )
        )
    for event in done:
        assert event.wait(60)
    return [r.text for r in results]


def conversations(users=USERS):
    return [[SYSTEM, {"role": "user", "content": u}] for u in users]


def test_cached_prefixes_give_the_uncached_answers(cached, uncached):
    first = ask(cached, "shell", conversations())
    # one entry (the prompt); whether the later rows hit it depends on whether they joined the
    # first row's batch or came after its prefill
    assert len(cached.prefix_cache) == 1
    assert cached.prefix_cache.misses >= 1
    assert cached.prefix_cache.hits + cached.prefix_cache.misses == 3
    # now every request runs only its own tokens after the cached prompt
    hits = cached.prefix_cache.hits
    second = ask(cached, "shell", conversations(USERS[::-1]))
    assert cached.prefix_cache.hits == hits + 3
    assert first == ask(uncached, "shell", conversations())
    assert second == ask(uncached, "shell", conversations(USERS[::-1]))
    assert len(set(first)) == 3  # varied answers: the comparison means something


def test_a_later_round_reuses_the_earlier_one(cached, uncached):
    round_one = conversations(["list /tmp"])[0]
    (answer,) = ask(cached, None, [round_one])
    round_two = [*round_one, {"role": "assistant", "content": answer}]
    round_two.append({"role": "user", "content": "The output of the OS: a b c"})
    entries = len(cached.prefix_cache)
    assert ask(cached, None, [round_two]) == ask(uncached, None, [round_two])
    assert len(cached.prefix_cache) == entries + 1  # round two's own prefix is kept too


def test_one_adapters_kv_is_never_served_to_another(cached, uncached):
    convs = conversations(["which shell am I in?"])
    with_adapter = ask(cached, "shell", convs)  # the adapter's entry for SYSTEM exists already
    base_entries = [k for k in cached.prefix_cache._entries if k[0] is None]
    base = ask(cached, None, convs)  # same tokens, other weights: never the adapter's entry
    assert base == ask(uncached, None, convs)
    assert with_adapter == ask(uncached, "shell", convs)
    keys = {adapter for adapter, _ in cached.prefix_cache._entries}
    assert keys == {"shell", None}
    assert len([k for k in cached.prefix_cache._entries if k[0] is None]) >= len(base_entries)


class CountingTokenizer:
    """The engine's tokenizer, counting how often it tokenizes."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.tokenizer(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def test_a_request_is_tokenized_once_and_its_prefix_is_what_came_before_its_last_message(
    cached, uncached, monkeypatch
):
    counting = CountingTokenizer(cached.tokenizer)
    monkeypatch.setattr(cached, "tokenizer", counting)
    one_round = conversations(["list /tmp"])[0]
    two_rounds = [*one_round, {"role": "assistant", "content": "ls /tmp"}]
    two_rounds.append({"role": "user", "content": "The output of the OS: a b c"})
    prefilled = [*one_round, {"role": "assistant", "content": "1."}]
    for messages in (one_round, two_rounds, prefilled):
        calls = counting.calls
        ids, prefix_len = cached.encode_request(messages)
        assert counting.calls == calls + 1
        assert ids == uncached.encode(messages)
        # the tokens it shares with the conversation before its last message, tokenized alone
        before = uncached.encode(messages[:-1])
        shared = 0
        while shared < min(len(before), len(ids)) and before[shared] == ids[shared]:
            shared += 1
        assert prefix_len == min(shared, len(ids) - 1)
        assert 64 <= prefix_len < len(ids)
        assert uncached.encode_request(messages) == (ids, 0)  # the cache is off
    # the earlier round is part of the prefix
    assert cached.encode_request(two_rounds)[1] > cached.encode_request(one_round)[1]
    assert cached.encode_request(one_round[1:])[1] == 0  # a lone message: nothing before it


def kv(tokens: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.zeros(1, 2, tokens, 4), torch.zeros(1, 2, tokens, 4))]  # 2 * 32 * tokens bytes


def test_prefix_cache_lookup_and_lru_eviction():
    cache = PrefixCache(max_bytes=2 * 64 * 10)  # room for 20 tokens of this layout
    cache.store("a", range(5), kv(5))
    cache.store("a", range(8), kv(8))
    assert cache.bytes == 64 * 13
    assert cache.lookup("a", list(range(12))).tokens == tuple(range(8))  # the longest prefix
    assert cache.lookup("a", list(range(8))).tokens == tuple(range(5))  # one token left own
    assert cache.lookup("b", list(range(12))) is None  # another adapter
    assert cache.lookup("a", [9, 9, 9, 9, 9, 9]) is None
    assert (cache.hits, cache.misses) == (2, 2)
    cache.store("a", [7] * 9, kv(9))  # 22 tokens > 20: the least recently used (range(8)) goes
    assert cache.evictions == 1 and cache.bytes <= cache.max_bytes
    assert cache.lookup("a", list(range(12))).tokens == tuple(range(5))
    cache.store("a", [1] * 30, kv(30))  # larger than the whole cache: not kept, nothing evicted
    assert len(cache) == 2 and cache.evictions == 1
