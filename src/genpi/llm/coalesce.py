"""Requests from many threads answered in shared batches: ``CoalescingBackend``.

A benchmark run with ``--concurrency N`` plays N episodes on N threads, each asking for one reply
at a time. A local backend holds one set of weights and serves one call at a time, so without
this the threads take turns with batches of one: N times the decoding steps of one batched call
(on a CPU a batch of 26 short rows costs little more per step than a batch of one). Here the
first caller to find no batch running leads: it waits up to ``window_s`` for the others (or until
``max_batch`` requests are pending), runs every pending request of the same sampling settings as
one ``generate`` call, hands each caller its own replies, and leads again until its own request is
answered; then another waiting caller takes over.

A batch that fails is retried request by request, so one bad request fails alone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from genpi.llm.base import GREEDY, Conversation, Generation, SamplingParams

# Long enough for the other episodes to finish their environment step (a shell command) and ask
# again; short against a batch's generation, which takes seconds.
WINDOW_S = 0.5


@dataclass
class _Request:
    conversations: list[Conversation]
    params: SamplingParams
    result: list[Generation] | None = None
    error: BaseException | None = None
    done: bool = False


class CoalescingBackend:
    """Wraps a backend (see the module docstring); ``calls`` counts its ``generate`` calls."""

    def __init__(self, backend: Any, *, max_batch: int, window_s: float = WINDOW_S) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.backend = backend
        self.name = getattr(backend, "name", "llm")
        self.max_batch = max_batch
        self.window_s = window_s
        self.calls = 0
        self._pending: list[_Request] = []
        self._leading = False
        self._cond = threading.Condition()

    def __getattr__(self, name: str) -> Any:
        # Everything else (tokenizer, model, encode, ...) is the wrapped backend's.
        return getattr(self.backend, name)

    def generate(
        self, conversations: Sequence[Conversation], params: SamplingParams = GREEDY
    ) -> list[Generation]:
        request = _Request([list(c) for c in conversations], params)
        with self._cond:
            self._pending.append(request)
            self._cond.notify_all()  # a leader gathering a batch may now have enough
            while not request.done and self._leading:
                self._cond.wait()
            lead = not request.done
            if lead:
                self._leading = True
        if lead:
            try:
                while not request.done:
                    self._run_batch(self._gather())
            finally:
                with self._cond:
                    self._leading = False
                    self._cond.notify_all()  # a waiting caller with no answer yet leads next
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def _gather(self) -> list[_Request]:
        """The requests to run next: after the window (or once ``max_batch`` rows wait), the
        oldest pending request's sampling settings and every pending request that shares them."""
        deadline = time.monotonic() + self.window_s
        with self._cond:
            while sum(len(r.conversations) for r in self._pending) < self.max_batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            params = self._pending[0].params
            batch = [r for r in self._pending if r.params == params]
            self._pending = [r for r in self._pending if r.params != params]
        return batch

    def _run_batch(self, batch: list[_Request]) -> None:
        rows = [c for r in batch for c in r.conversations]
        try:
            self.calls += 1
            replies = self.backend.generate(rows, batch[0].params)
        except Exception as exc:
            if len(batch) == 1:
                self._finish(batch[0], error=exc)
                return
            for request in batch:  # find the request that fails: the others still get answers
                self._run_batch([request])
            return
        start = 0
        for request in batch:
            request.result = replies[start : start + len(request.conversations)]
            start += len(request.conversations)
            self._finish(request)

    def _finish(self, request: _Request, *, error: BaseException | None = None) -> None:
        request.error = error
        with self._cond:
            request.done = True
            self._cond.notify_all()
