"""Run an agent over problems, one fresh sandbox each, in parallel; transcripts and the score.

Output directory layout:

- ``run.json``: what was run (agent, data, sandbox); a re-run with the same settings resumes;
- ``transcripts/<problem id>.jsonl``: one event per line (setup, messages, bash results), the last
  line ``{"event": "outcome", ...}``; a problem with that line is not run again;
- ``result.json``: success rate, raw and normalised by an upper-bound run (GenPI Table 1).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from genpi.data import read_jsonl
from genpi.errors import GenpiError
from genpi.osbench.sandbox import Sandbox
from genpi.osbench.task import MAX_ROUNDS, Agent, Outcome, Problem, run_episode

log = logging.getLogger(__name__)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _finished(path: Path) -> Outcome | None:
    if not path.is_file():
        return None
    rows = read_jsonl(path)
    if not rows or rows[-1].get("event") != "outcome":
        return None
    fields = {k: v for k, v in rows[-1].items() if k != "event"}
    return Outcome(**fields)


def run_problem(
    problem: Problem, agent: Agent, open_sandbox: Callable[[], Sandbox], max_rounds: int
) -> tuple[Outcome, list[dict[str, Any]]]:
    transcript: list[dict[str, Any]] = [
        {"event": "problem", "id": problem.id, "description": problem.description}
    ]
    sandbox = open_sandbox()  # a sandbox that cannot start stops the run: every problem needs one
    try:
        outcome = run_episode(problem, agent, sandbox, max_rounds=max_rounds, transcript=transcript)
    except Exception as exc:  # the agent is arbitrary code: one problem's crash is its failure
        log.warning("%s: %s", problem.id, exc)
        outcome = Outcome(problem.id, False, "error", error=f"{type(exc).__name__}: {exc}")
        outcome.startup_seconds = round(sandbox.startup_seconds, 3)
    finally:
        sandbox.close()
    transcript.append({"event": "outcome", **outcome.to_dict()})
    return outcome, transcript


def summarize(outcomes: list[Outcome], upper_bound: float | None = None) -> dict[str, Any]:
    total = len(outcomes)
    passed = sum(o.result for o in outcomes)
    rate = passed / total if total else 0.0
    return {
        "total": total,
        "pass": passed,
        "success_rate": rate,
        "upper_bound": upper_bound,
        "normalized": (rate / upper_bound) if upper_bound else None,
        "failed": [o.id for o in outcomes if not o.result],
    }


def read_upper_bound(path: str | Path) -> float:
    """The success rate of an earlier ``result.json`` (the prompted teacher's run)."""
    try:
        rate = json.loads(Path(path).read_text())["success_rate"]
    except (OSError, ValueError, KeyError, TypeError):
        raise GenpiError(
            f"--upper-bound {path} is not a result.json from `genpi eval-os`; pass one"
        ) from None
    if not isinstance(rate, int | float) or rate <= 0:
        raise GenpiError(f"--upper-bound {path} has success rate {rate!r}; it must be above 0")
    return float(rate)


def evaluate(
    problems: list[Problem],
    agent: Agent,
    open_sandbox: Callable[[], Sandbox],
    *,
    out_dir: str | Path | None = None,
    concurrency: int = 1,
    max_rounds: int = MAX_ROUNDS,
    upper_bound: float | None = None,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    out = Path(out_dir) if out_dir else None
    outcomes: dict[str, Outcome] = {}
    if out is not None:
        (out / "transcripts").mkdir(parents=True, exist_ok=True)
        config = {"agent": agent.name, "max_rounds": max_rounds, **(config or {})}
        run_file = out / "run.json"
        if run_file.is_file():
            old = json.loads(run_file.read_text())
            if old != json.loads(json.dumps(config)):
                raise GenpiError(
                    f"{out} holds a run with other settings ({run_file}); use another --out"
                )
        else:
            _write_atomic(run_file, json.dumps(config, indent=2) + "\n")
        for problem in problems:
            done = _finished(out / "transcripts" / f"{problem.id}.jsonl")
            if done is not None:
                outcomes[problem.id] = done
    todo = [p for p in problems if p.id not in outcomes]
    start = time.monotonic()

    def one(problem: Problem) -> Outcome:
        outcome, transcript = run_problem(problem, agent, open_sandbox, max_rounds)
        if out is not None:
            lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in transcript)
            _write_atomic(out / "transcripts" / f"{problem.id}.jsonl", lines)
        log.info("%s: %s (%s)", problem.id, "pass" if outcome.result else "fail", outcome.status)
        return outcome

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for outcome in pool.map(one, todo):
            outcomes[outcome.id] = outcome
    ordered = [outcomes[p.id] for p in problems if p.id in outcomes]
    summary = summarize(ordered, upper_bound)
    summary["seconds"] = round(time.monotonic() - start, 2)
    summary["problems_per_minute"] = (
        round(60 * len(todo) / summary["seconds"], 2) if todo and summary["seconds"] else None
    )
    summary["outcomes"] = [o.to_dict() for o in ordered]
    if out is not None:
        _write_atomic(out / "result.json", json.dumps(summary, indent=2) + "\n")
    return summary
