"""The batching engine alone: requests that join a running batch, and fairness between adapters."""

from __future__ import annotations

import threading

import pytest

from genpi.llm import SamplingParams
from genpi.serve.engine import Delta, Finished, GenRequest


@pytest.fixture(scope="module")
def engine(tiny_model_dir, tiny_adapter_dir):
    from genpi.serve.engine import load_engine

    loaded = load_engine(
        str(tiny_model_dir), {"shell": tiny_adapter_dir}, dtype="fp32", device="cpu"
    )
    loaded.engine.start()
    yield loaded.engine
    loaded.engine.stop()


@pytest.fixture(scope="module")
def shell_backend(tiny_model_dir, tiny_adapter_dir):
    from genpi.llm.local import LocalBackend

    return LocalBackend.from_ref(str(tiny_model_dir), adapter=tiny_adapter_dir, dtype="fp32")


class Collector:
    def __init__(self, on_first_delta=None):
        self.done = threading.Event()
        self.result: Finished | None = None
        self.on_first_delta = on_first_delta

    def __call__(self, event):
        if isinstance(event, Delta) and self.on_first_delta is not None:
            hook, self.on_first_delta = self.on_first_delta, None
            hook()  # runs on the worker thread, mid-batch
        elif isinstance(event, Finished):
            self.result = event
            self.done.set()


def request(engine, adapter, text, collector, max_tokens):
    ids = engine.encode([{"role": "user", "content": text}])
    return GenRequest(
        adapter=adapter, input_ids=ids, on_event=collector, max_tokens=max_tokens, ignore_eos=True
    )


def test_a_request_joins_a_running_batch_and_both_answers_are_exact(engine, shell_backend):
    late = Collector()
    long_text = "a much longer question that makes the late request's prompt the longer one " * 3
    first = Collector(
        on_first_delta=lambda: engine.submit(request(engine, "shell", long_text, late, 6))
    )
    joined_before = engine.rows_joined
    engine.submit(request(engine, "shell", "short", first, 12))
    assert first.done.wait(60) and late.done.wait(60)
    assert engine.rows_joined == joined_before + 1
    for collector, text, n in ((first, "short", 12), (late, long_text, 6)):
        (want,) = shell_backend.generate(
            [[{"role": "user", "content": text}]], SamplingParams(max_new_tokens=n)
        )
        assert collector.result.text.strip() == want.text
        assert collector.result.completion_tokens == n


def test_a_request_for_another_adapter_that_came_first_stops_the_joining(engine, shell_backend):
    other, same = Collector(), Collector()

    def queue_both():
        engine.submit(request(engine, None, "for the base model", other, 4))
        engine.submit(request(engine, "shell", "same adapter, but later", same, 4))

    first = Collector(on_first_delta=queue_both)
    joined_before = engine.rows_joined
    engine.submit(request(engine, "shell", "first", first, 8))
    assert first.done.wait(60) and other.done.wait(60) and same.done.wait(60)
    assert engine.rows_joined == joined_before  # the shell request waited behind the base one
    (want,) = shell_backend.generate(
        [[{"role": "user", "content": "same adapter, but later"}]], SamplingParams(max_new_tokens=4)
    )
    assert same.result.text.strip() == want.text
