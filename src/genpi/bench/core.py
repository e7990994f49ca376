"""The generic agent loop every harness shares: the protocols, one episode, a run over problems.

A harness (``genpi.bench.<name>``) supplies problems, an :class:`Environment` per problem (its
machine or page: ``reset``, ``step``, ``judge``) and agents; this module runs them:

- :func:`run_episode`: set the environment up, let the agent act for at most ``max_rounds``, judge;
- :func:`evaluate`: every problem in a fresh environment, in parallel, with transcripts and resume;
- :func:`summarize`: success rate, raw and normalised by an upper-bound run (GenPI Table 1);
- :class:`LLMAgent`: a model behind any ``genpi.llm`` backend, with or without the prompt.

Output directory layout (``--out``):

- ``run.json``: what was run (agent, data, environment); a re-run with the same settings resumes;
- ``transcripts/<problem id>.jsonl``: one event per line (setup, messages, the environment's
  events), the last line ``{"event": "outcome", ...}``; a problem with that line is not run again;
- ``result.json``: the summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from genpi.data import read_jsonl, write_atomic
from genpi.errors import GenpiError
from genpi.prompt import Prompt

log = logging.getLogger(__name__)

Message = dict[str, str]
MAX_NEW_TOKENS = 384  # an agent's reply budget per round


class Problem(Protocol):
    """What the loop reads of a harness's problem; the rest is the harness's own."""

    @property
    def id(self) -> str: ...

    @property
    def description(self) -> str: ...


class Agent(Protocol):
    name: str

    def begin(self, problem: Any) -> list[Message]:
        """The conversation the episode starts from (prompt, if any, plus the problem)."""

    def act(self, problem: Any, conversation: list[Message]) -> str:
        """The agent's next reply."""


@dataclass(frozen=True)
class Step:
    """What the environment made of one reply: the observation to answer with, or the end.

    ``status`` None: the episode goes on with ``observation``; ``"completed"``: the agent committed
    ``answer`` (None for an answer-less finish); ``"invalid_action"``: nothing readable; a
    harness may end with a status of its own. ``restart``: instead of an observation, a problem
    view (an ``id`` and a ``description``) that the agent's next turn starts afresh on,
    ``agent.begin(restart)`` without the conversation so far (Mind2Web's multiple-choice rounds,
    each asked on its own as AgentBench does).
    """

    status: str | None = None
    answer: str | None = None
    observation: Message | None = None
    restart: Any = None


class Environment(Protocol):
    """One problem's world, fresh for each problem; it logs its own events into ``log``."""

    startup_seconds: float

    def reset(self, problem: Any, log: list[dict[str, Any]]) -> Step | None:
        """Set the problem up before the agent's first turn. None: the agent begins on the
        problem; a Step with ``restart``: it begins on that view instead; with ``status``: the
        episode ends before any turn (a problem the harness scores without asking)."""

    def step(self, problem: Any, reply: str, log: list[dict[str, Any]]) -> Step:
        """Read the agent's reply and carry it out."""

    def judge(self, problem: Any, answer: str | None) -> tuple[bool, list[dict[str, Any]]]:
        """Score a committed answer: (passed, the checks' trail)."""

    def close(self) -> None: ...


@dataclass
class Outcome:
    id: str
    result: bool
    status: str  # completed | invalid_action | round_limit | error | a harness's own (reset)
    answer: str | None = None
    rounds: int = 0
    seconds: float = 0.0
    startup_seconds: float = 0.0
    error: str | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_episode(
    problem: Any,
    agent: Agent,
    env: Environment,
    *,
    max_rounds: int,
    transcript: list[dict[str, Any]] | None = None,
) -> Outcome:
    """Set the environment up, let the agent act for at most ``max_rounds``, and score it."""
    start = time.monotonic()
    events = transcript if transcript is not None else []
    opening = env.reset(problem, events)
    answer: str | None = None
    status = "round_limit"
    rounds = 0
    if opening is not None and opening.status is not None:
        answer, status, max_rounds = opening.answer, opening.status, 0
    # The agent sees `view` (the problem, or the environment's restated round); the environment
    # is always given the problem itself.
    view = opening.restart if opening is not None and opening.restart is not None else problem
    conversation = agent.begin(view) if max_rounds > 0 else []
    events.extend({"event": "message", **m} for m in conversation)
    while rounds < max_rounds:
        rounds += 1
        reply = agent.act(view, conversation)
        conversation.append({"role": "assistant", "content": reply})
        events.append({"event": "message", "role": "assistant", "content": reply})
        step = env.step(problem, reply, events)
        if step.status is not None:
            answer, status = step.answer, step.status
            break
        if step.restart is not None:
            view, fresh = step.restart, agent.begin(step.restart)
            # Only what differs from the last conversation (the prompt's prefix is logged once).
            same = 0
            while same < min(len(fresh), len(conversation)) and fresh[same] == conversation[same]:
                same += 1
            events.append({"event": "restart", "kept": same})
            events.extend({"event": "message", **m} for m in fresh[same:])
            conversation = fresh
        elif step.observation is not None:
            conversation.append(step.observation)
            events.append({"event": "message", **step.observation})
    result, checks = (False, [])
    if status == "completed":
        result, checks = env.judge(problem, answer)
    return Outcome(
        id=problem.id,
        result=result,
        status=status,
        answer=answer,
        rounds=rounds,
        seconds=round(time.monotonic() - start, 3),
        startup_seconds=round(env.startup_seconds, 3),
        checks=checks,
    )


def _finished(path: Path) -> Outcome | None:
    if not path.is_file():
        return None
    rows = read_jsonl(path)
    if not rows or rows[-1].get("event") != "outcome":
        return None
    fields = {k: v for k, v in rows[-1].items() if k != "event"}
    return Outcome(**fields)


def run_problem(
    problem: Any, agent: Agent, open_env: Callable[[], Environment], max_rounds: int
) -> tuple[Outcome, list[dict[str, Any]]]:
    transcript: list[dict[str, Any]] = [
        {"event": "problem", "id": problem.id, "description": problem.description}
    ]
    env = open_env()  # an environment that cannot start stops the run: every problem needs one
    try:
        outcome = run_episode(problem, agent, env, max_rounds=max_rounds, transcript=transcript)
    except Exception as exc:  # the agent is arbitrary code: one problem's crash is its failure
        log.warning("%s: %s", problem.id, exc)
        outcome = Outcome(problem.id, False, "error", error=f"{type(exc).__name__}: {exc}")
        outcome.startup_seconds = round(env.startup_seconds, 3)
    finally:
        env.close()
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
            f"--upper-bound {path} is not a result.json from `genpi eval-agent`; pass one"
        ) from None
    if not isinstance(rate, int | float) or rate <= 0:
        raise GenpiError(f"--upper-bound {path} has success rate {rate!r}; it must be above 0")
    return float(rate)


def evaluate(
    problems: list[Any],
    agent: Agent,
    open_env: Callable[[], Environment],
    *,
    max_rounds: int,
    out_dir: str | Path | None = None,
    concurrency: int = 1,
    upper_bound: float | None = None,
    config: dict[str, Any] | None = None,
    report: Callable[[list[Outcome]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run ``agent`` on every problem, each in a fresh ``open_env()``; resume from ``out_dir``.
    ``report``: a harness's own metrics over all outcomes, added to the summary."""
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
            write_atomic(run_file, json.dumps(config, indent=2) + "\n")
        for problem in problems:
            done = _finished(out / "transcripts" / f"{problem.id}.jsonl")
            if done is not None:
                outcomes[problem.id] = done
    todo = [p for p in problems if p.id not in outcomes]
    start = time.monotonic()

    def one(problem: Any) -> Outcome:
        outcome, transcript = run_problem(problem, agent, open_env, max_rounds)
        if out is not None:
            lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in transcript)
            write_atomic(out / "transcripts" / f"{problem.id}.jsonl", lines)
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
    if report is not None:
        summary.update(report(ordered))
    summary["outcomes"] = [o.to_dict() for o in ordered]
    if out is not None:
        write_atomic(out / "result.json", json.dumps(summary, indent=2) + "\n")
    return summary


class LLMAgent:
    """A model behind any ``genpi.llm`` backend, with the prompt (teacher view) or without it
    (student view: the bare problem, for the base model or an internalized adapter)."""

    def __init__(
        self,
        backend: Any,
        prompt: Prompt,
        *,
        with_prompt: bool = True,
        params: Any = None,
    ) -> None:
        from genpi.llm import SamplingParams

        self.backend = backend
        self.prompt = prompt
        self.with_prompt = with_prompt
        self.params = params or SamplingParams(max_new_tokens=MAX_NEW_TOKENS, temperature=0.0)
        # Which prompt it was given: the grid runs one model with the prompt and with each
        # compressed prompt, and run.json should say which is which.
        given = f" (prompt {prompt.name})" if with_prompt else " (no prompt)"
        self.name = f"{getattr(backend, 'name', 'llm')}{given}"

    def begin(self, problem: Any) -> list[Message]:
        if self.with_prompt:
            return self.prompt.teacher_messages(problem.description)
        return self.prompt.student_messages(problem.description)

    def act(self, problem: Any, conversation: list[Message]) -> str:
        # Problems run in parallel call this from several threads; a local backend serialises
        # them itself, an HTTP one serves them concurrently.
        return self.backend.generate([list(conversation)], self.params)[0].text


# -- the flags every harness's `genpi eval-agent --bench NAME` run shares -----------------------


def add_agent_arguments(parser: argparse.ArgumentParser, prompt_file: str) -> None:
    """Data, agent and run flags; ``prompt_file``: the prompt's default name under prompts/."""
    parser.add_argument("--data", required=True, help="the benchmark's data directory")
    parser.add_argument("--model", default=None, help="backend reference (default: smollm2-135m)")
    parser.add_argument(
        "--prompt",
        default=None,
        help=f"the prompt file (default: prompts/{prompt_file} beside --data, or the adapter's)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--adapter", default=None, help="a GenPI adapter: the model without prompt")
    mode.add_argument("--no-prompt", action="store_true", help="the bare model without prompt")
    mode.add_argument("--oracle", action="store_true", help="the oracle agent (harness check)")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="problems run in parallel (a local model answers their requests in shared batches)",
    )
    parser.add_argument("--out", default=None, help="output directory (transcripts, result.json)")
    parser.add_argument("--upper-bound", default=None, help="result.json of the upper-bound run")
    parser.add_argument("--limit", type=int, default=None, help="only the first N problems")
    parser.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)


def build_llm_agent(args: argparse.Namespace, prompt_file: str) -> LLMAgent:
    """The agent the flags name: the prompted teacher, the bare model, or an adapter."""
    from genpi.llm import SamplingParams, load_backend
    from genpi.llm.coalesce import CoalescingBackend
    from genpi.llm.local import LocalBackend
    from genpi.prompt import load_prompt

    if args.adapter and not args.prompt:
        from genpi.adapter import read_adapter_prompt

        prompt = read_adapter_prompt(args.adapter)
    else:
        path = Path(args.prompt) if args.prompt else None
        if path is None:
            guess = Path(args.data).resolve().parent / "prompts" / prompt_file
            path = guess if guess.is_file() else None
        if path is None:
            raise GenpiError(
                f"no prompt found beside --data (prompts/{prompt_file}): pass --prompt PATH"
            )
        prompt = load_prompt(path)
    with_prompt = not (args.adapter or args.no_prompt)
    if with_prompt:
        from genpi.context import check_model_fits

        # Before the weights load and the environments start: the agent reads the whole prompt.
        check_model_fits(prompt, args.model, reserve=args.max_new_tokens)
    backend = load_backend(args.model, adapter=args.adapter)
    concurrency = getattr(args, "concurrency", 1)
    if concurrency > 1 and isinstance(backend, LocalBackend):
        # One set of weights in this process: the episodes' requests share batches instead of
        # taking turns with batches of one (an HTTP server batches concurrent requests itself).
        # One decoding loop for all of them, not one per batch_size rows.
        backend.batch_size = max(backend.batch_size, concurrency)
        backend = CoalescingBackend(backend, max_batch=concurrency)
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=0.0)
    return LLMAgent(backend, prompt, with_prompt=with_prompt, params=params)


def build_agent(args: argparse.Namespace, prompt_file: str, oracle: Callable[[], Agent]) -> Agent:
    """The harness's ``oracle()`` under --oracle, else the model the flags name."""
    return oracle() if args.oracle else build_llm_agent(args, prompt_file)


def agent_config(args: argparse.Namespace, agent: Agent) -> dict[str, Any]:
    """What of the agent changes an outcome, for ``run.json`` (a harness adds its data's)."""
    config: dict[str, Any] = {"adapter": args.adapter, "no_prompt": args.no_prompt}
    if isinstance(agent, LLMAgent):
        config["prompt"] = agent.prompt.fingerprint
        config["params"] = agent.params.to_dict()
    return config
