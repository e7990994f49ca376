"""What every stage shares: guarded backend calls, progress bars, token counting."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from genpi.errors import GenpiError
from genpi.llm import Backend, BackendError, Conversation, Generation, SamplingParams

if TYPE_CHECKING:
    from genpi.synth.config import SynthConfig
    from genpi.synth.rundir import RunDir

log = logging.getLogger("genpi.synth")


class StageAborted(GenpiError):
    """A stage stopped after repeated backend failures; finished records are kept on disk."""


class GuardedBackend:
    """Call a backend, count failures instead of raising, and give up after too many in a row.

    A failed call returns None: the caller leaves those records unwritten, so a rerun retries them.
    """

    def __init__(self, backend: Backend, stage: str, *, max_consecutive_failures: int) -> None:
        self.backend = backend
        self.stage = stage
        self.max_consecutive_failures = max_consecutive_failures
        self.failed_calls = 0
        self.consecutive = 0
        self.calls = 0
        self.completion_tokens = 0
        self.seconds = 0.0
        self.last_error: str | None = None

    def generate(
        self, conversations: Sequence[Conversation], params: SamplingParams
    ) -> list[Generation] | None:
        if not conversations:
            return []
        self.calls += 1
        start = time.perf_counter()
        try:
            out = self.backend.generate(list(conversations), params)
        except BackendError as exc:
            self.failed_calls += 1
            self.consecutive += 1
            self.last_error = str(exc)
            log.warning("%s: backend call failed (%s)", self.stage, exc)
            if self.consecutive >= self.max_consecutive_failures:
                raise StageAborted(
                    f"stage {self.stage!r} stopped after {self.consecutive} failed backend calls in a "
                    f"row (last: {exc}); finished records are kept: fix the backend and re-run the "
                    "same command to resume"
                ) from None
            return None
        finally:
            self.seconds += time.perf_counter() - start
        if len(out) != len(conversations):
            raise BackendError(
                f"backend {getattr(self.backend, 'name', '?')!r} returned {len(out)} answers "
                f"for {len(conversations)} conversations"
            )
        self.consecutive = 0
        self.completion_tokens += sum(g.completion_tokens for g in out)
        return out

    def stats(self) -> dict[str, Any]:
        return {
            "backend_calls": self.calls,
            "backend_errors": self.failed_calls,
            "last_backend_error": self.last_error,
            "completion_tokens": self.completion_tokens,
            "generate_seconds": round(self.seconds, 3),
        }


def progress(total: int, desc: str, *, enabled: bool, unit: str = "rec") -> Any:
    """A tqdm bar with rate and ETA (on stderr); a no-op object when disabled."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True)


Record = dict[str, Any]


def write_batches(
    run: RunDir,
    stage: str,
    pending: Sequence[Record],
    records_of: Callable[[int, list[Record]], list[Record] | None],
    guard: GuardedBackend,
    new: dict[str, Any],
    config: SynthConfig,
) -> dict[str, Any]:
    """Write one record per pending item of ``stage``, a batch of ``config.batch_size`` at a time.

    ``records_of(start, batch)`` makes a batch's records (``start``: its offset in ``pending``),
    or returns None when the backend failed: those items stay unwritten, so a rerun retries them,
    and count as ``dropped_by_backend_errors``. ``new`` holds this run's counters (the caller adds
    its own as it goes); the stage's statistics, with earlier runs' added, are recorded after each
    batch and when the loop stops (on an error too), and returned.
    """
    stats = run.stage_stats(stage)
    bar = progress(len(pending), stage, enabled=config.progress)
    try:
        with run.writer(stage) as writer:
            for start in range(0, len(pending), config.batch_size):
                batch = list(pending[start : start + config.batch_size])
                records = records_of(start, batch)
                if records is None:
                    new["dropped_by_backend_errors"] += len(batch)
                    continue
                new["written"] += writer.write(records)
                bar.update(len(records))
                run.update_manifest(stage, add_stats(stats, {**new, **guard.stats()}))
    finally:
        bar.close()
        total = add_stats(stats, {**new, **guard.stats()})
        run.update_manifest(stage, total)
    return total


def add_stats(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Accumulate counters across resumed runs of a stage (numbers add, anything else is replaced)."""
    out = dict(old)
    for key, value in new.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key in out:
            prev = out[key]
            out[key] = prev + value if isinstance(prev, (int, float)) else value
        else:
            out[key] = value
    return out
