"""Shared-prefix generation: the prompt runs once per call and every row still gets exactly what
one-at-a-time generation gives it (tiny fp32 model, where float noise cannot flip a token)."""

from __future__ import annotations

import pytest

from genpi.llm import SamplingParams
from genpi.llm.local import LocalBackend, shared_prefix_length

SYSTEM = "You are a shell agent. Answer with Act: bash or Act: finish, one action per turn."
USERS = ["hi", "list the files in /etc that end with .conf " * 3, "what is two plus two?", "x"]
# Two rows under one prompt with mixed suffix lengths, and one row with another prompt (the
# template's default system message), which shares no prefix worth running once.
CONVERSATIONS = [
    [{"role": "system", "content": SYSTEM}, {"role": "user", "content": u}] for u in USERS
] + [[{"role": "user", "content": "a row without the prompt"}]]


def sharing(backend: LocalBackend, **kw) -> LocalBackend:
    # A short threshold: the test prompt is ~30 tokens, not an agent prompt's 500.
    return LocalBackend(backend.model, backend.tokenizer, min_shared_prefix=8, **kw)


def one_at_a_time(backend: LocalBackend, params: SamplingParams) -> list:
    alone = LocalBackend(backend.model, backend.tokenizer, min_shared_prefix=None)
    return [alone.generate([c], params)[0] for c in CONVERSATIONS]


def assert_same(shared: list, single: list) -> None:
    assert [g.text for g in shared] == [g.text for g in single]
    assert [g.completion_tokens for g in shared] == [g.completion_tokens for g in single]
    assert [g.prompt_tokens for g in shared] == [g.prompt_tokens for g in single]
    assert [g.finish_reason for g in shared] == [g.finish_reason for g in single]


def test_shared_prefix_length():
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    # every row keeps at least one token of its own
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2
    assert shared_prefix_length([[1, 2, 3], [4, 2, 3]]) == 0
    assert shared_prefix_length([[7]]) == 0
    assert shared_prefix_length([]) == 0


@pytest.mark.parametrize("batch_size", [16, 2])
def test_shared_prefix_greedy_equals_one_at_a_time(tiny_backend, prefix_runs, batch_size):
    params = SamplingParams(max_new_tokens=12)
    shared = sharing(tiny_backend, batch_size=batch_size).generate(CONVERSATIONS, params)
    assert len(prefix_runs) == 1  # once per call, however many batches reuse it
    assert prefix_runs[0] >= 8
    single = one_at_a_time(tiny_backend, params)
    assert len({g.text for g in single}) == len(CONVERSATIONS)  # varied replies: a real check
    assert_same(shared, single)


def test_shared_prefix_with_an_adapter_on_and_off(tiny_model_dir, tiny_adapter_dir, prefix_runs):
    adapted = LocalBackend.from_ref(str(tiny_model_dir), adapter=tiny_adapter_dir, dtype="fp32")
    params = SamplingParams(max_new_tokens=10)
    backend = sharing(adapted)
    with_adapter = backend.generate(CONVERSATIONS, params)
    assert_same(with_adapter, one_at_a_time(adapted, params))
    with adapted.adapter_disabled():
        without = backend.generate(CONVERSATIONS, params)
        assert_same(without, one_at_a_time(adapted, params))
    assert [g.text for g in with_adapter] != [g.text for g in without]
    assert len(prefix_runs) == 2  # one per sharing call; the one-at-a-time calls run none


def test_shared_prefix_sampling_is_reproducible(tiny_backend, prefix_runs):
    backend = sharing(tiny_backend)
    params = SamplingParams(max_new_tokens=10, temperature=1.0, top_p=0.9, seed=7)
    first = [g.text for g in backend.generate(CONVERSATIONS, params)]
    again = [g.text for g in backend.generate(CONVERSATIONS, params)]
    other = backend.generate(CONVERSATIONS, SamplingParams(**{**params.to_dict(), "seed": 8}))
    assert first == again
    assert first != [g.text for g in other]
    assert len(prefix_runs) == 3


def test_shared_prefix_stop_strings(tiny_backend, prefix_runs):
    backend = sharing(tiny_backend)
    free = backend.generate(CONVERSATIONS, SamplingParams(max_new_tokens=16))
    stop = free[1].text[3:6]
    cut = backend.generate(CONVERSATIONS, SamplingParams(max_new_tokens=16, stop=(stop,)))
    assert stop not in cut[1].text
    assert free[1].text.startswith(cut[1].text)
    assert cut[1].finish_reason == "stop"
    assert len(prefix_runs) == 2


def test_no_prefix_worth_sharing_falls_back(tiny_backend, prefix_runs):
    params = SamplingParams(max_new_tokens=6)
    backend = LocalBackend(tiny_backend.model, tiny_backend.tokenizer, min_shared_prefix=10_000)
    assert_same(backend.generate(CONVERSATIONS, params), one_at_a_time(tiny_backend, params))
    assert prefix_runs == []
