"""AgentBench's OS-interaction task: its problem layout, its environment and its scoring rules.

Layout (``--data DIR``): ``DIR/data/<split>.json`` (a list of problems, or JSONL) and
``DIR/scripts/<split>/`` (the files that ``{"file": ...}`` script entries name).

Rules (AgentBench ``src/server/tasks/os_interaction/task.py``, reimplemented from its description):
init scripts run as separate processes, then ``start`` runs in the agent's shell; the agent gets
at most 8 rounds; each bash action's output over 800 characters is cut to 780 plus a marker;
``answer(...)`` or ``finish`` ends the episode. A ``match`` problem passes when the (stripped)
answer equals the expected string (or matches its regex); a ``check`` problem runs each check
script with the answer and every earlier script's output as arguments and passes when all exit 0
(a ``null`` entry runs the example solution).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genpi.bench import core
from genpi.bench.core import Agent, Message, Outcome, Step
from genpi.bench.os.reader import read_action
from genpi.bench.os.sandbox import Sandbox
from genpi.errors import GenpiError

MAX_ROUNDS = 8
OUTPUT_LIMIT = 800
OUTPUT_KEEP = 780
TRUNCATION_MARK = "\n[truncated because the output is too long]"
OUTPUT_PREFIX = "The output of the OS:\n\n"
EMPTY_OUTPUT = "The output of the OS is empty."

Script = tuple[str, str]  # (language, code)


class TaskError(GenpiError, ValueError):
    """A problem file that cannot be read; the message names the problem and the fix."""


@dataclass(frozen=True)
class Problem:
    id: str
    index: int
    description: str
    init: tuple[Script, ...] = ()
    start: Script | None = None
    match: dict[str, Any] | None = None
    check: tuple[Script | None, ...] | None = None
    example: Script | None = None
    labels: tuple[str, ...] = ()

    @property
    def scored_by(self) -> str:
        return "match" if self.match is not None else "check"


def _script(obj: Any, script_dir: Path, where: str) -> Script | None:
    if obj is None:
        return None
    if isinstance(obj, str):
        return ("bash", obj)
    if not isinstance(obj, dict):
        raise TaskError(f"{where}: a script must be a string or an object with 'code' or 'file'")
    language = obj.get("language", "bash")
    if "file" in obj:
        path = script_dir / obj["file"]
        try:
            return (language, path.read_text(encoding="utf-8"))
        except OSError:
            raise TaskError(f"{where}: script file {path} cannot be read; check --data") from None
    if "code" in obj:
        return (language, obj["code"])
    raise TaskError(f"{where}: a script object needs 'code' or 'file'")


def parse_problem(item: dict[str, Any], index: int, script_dir: Path, prefix: str) -> Problem:
    where = f"{prefix}{index}"
    if not isinstance(item, dict) or "description" not in item or "evaluation" not in item:
        raise TaskError(f"problem {where} needs 'description' and 'evaluation'")
    create = item.get("create")
    init: list[Script | None] = []
    # As AgentBench: only an object's "init" counts (a list in "create" carries none).
    if isinstance(create, dict) and "init" in create:
        raw = create["init"] if isinstance(create["init"], list) else [create["init"]]
        init = [_script(s, script_dir, where) for s in raw]
    start = _script(item["start"], script_dir, where) if "start" in item else None
    evaluation = item["evaluation"]
    match = check = example = None
    if "match" in evaluation:
        m = evaluation["match"]
        match = {"answer": m, "strip": True} if isinstance(m, str) else dict(m)
    elif "check" in evaluation:
        raw = (
            evaluation["check"] if isinstance(evaluation["check"], list) else [evaluation["check"]]
        )
        check = tuple(_script(s, script_dir, where) for s in raw)
        if "example" in evaluation:
            example = _script(evaluation["example"], script_dir, where)
        if any(s is None for s in check) and example is None:
            raise TaskError(f"problem {where}: a null check entry needs an 'example' script")
    else:
        raise TaskError(f"problem {where}: 'evaluation' needs 'match' or 'check'")
    return Problem(
        id=f"{prefix}{index:05d}",
        index=index,
        description=item["description"],
        init=tuple(s for s in init if s is not None),
        start=start,
        match=match,
        check=check,
        example=example,
        labels=tuple(item.get("labels", ())),
    )


def load_problems(data_dir: str | Path, split: str | None = None) -> list[Problem]:
    """Every problem under ``data_dir/data/*.json[l]`` (or only ``split``), ids ``<split>-NNNNN``."""
    root = Path(data_dir)
    files = sorted((root / "data").glob("*.json")) + sorted((root / "data").glob("*.jsonl"))
    if split:
        files = [f for f in files if f.stem == split]
    if not files:
        raise TaskError(
            f"no problem files under {root / 'data'}" + (f" for split {split!r}" if split else "")
            + "; point --data at AgentBench's os_interaction directory"
        )  # fmt: skip
    problems: list[Problem] = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        try:
            if path.suffix == ".jsonl":
                items = [json.loads(line) for line in text.splitlines() if line.strip()]
            else:
                loaded = json.loads(text)
                items = loaded if isinstance(loaded, list) else [loaded]
        except json.JSONDecodeError as exc:
            raise TaskError(f"{path} is not valid JSON: {exc}") from None
        script_dir = root / "scripts" / path.stem
        for i, item in enumerate(items):
            problems.append(parse_problem(item, i, script_dir, f"{path.stem}-"))
    return problems


# -- the environment: a sandbox with AgentBench's setup, output and scoring rules --------------


def cut_output(output: str) -> str:
    if len(output) > OUTPUT_LIMIT:
        return output[:OUTPUT_KEEP] + TRUNCATION_MARK
    return output


def os_message(output: str) -> Message:
    return {"role": "user", "content": OUTPUT_PREFIX + output if output else EMPTY_OUTPUT}


def judge(problem: Problem, answer: str | None, sandbox: Sandbox) -> tuple[bool, list[dict]]:
    """Score an answer (None for ``finish``) by the problem's ``match`` or ``check`` rule."""
    if problem.match is not None:
        if isinstance(answer, str) and problem.match.get("strip", True):
            answer = answer.strip()
        if "answer" in problem.match:
            return answer == problem.match["answer"], []
        if "regex" in problem.match:
            return answer is not None and re.search(problem.match["regex"], answer) is not None, []
        return False, []
    params = [str(answer)]  # AgentBench passes str(None) == "None" after `finish`
    trail = []
    for script in problem.check or ():
        if script is None:
            script = problem.example
        assert script is not None  # parse_problem guarantees an example for null entries
        done = sandbox.exec_script(script[0], script[1], params)
        trail.append({"language": script[0], "exit": done.exit_code, "output": done.output[-400:]})
        if done.exit_code != 0:
            return False, trail
        params.append(done.output)
    return True, trail


class OsEnvironment:
    """One problem's machine: ``reset`` runs its setup, ``step`` its bash actions, ``judge`` its
    checks (in the same sandbox, after the agent, as AgentBench)."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    @property
    def startup_seconds(self) -> float:
        return self.sandbox.startup_seconds

    def reset(self, problem: Problem, log: list[dict[str, Any]]) -> None:
        for language, code in problem.init:
            done = self.sandbox.exec_script(language, code)
            log.append({"event": "init", "exit": done.exit_code, "output": done.output[-400:]})
        if problem.start is not None:
            done = self.sandbox.run(problem.start[1])
            log.append({"event": "start", "exit": done.exit_code, "output": done.output[-400:]})

    def step(self, problem: Problem, reply: str, log: list[dict[str, Any]]) -> Step:
        action = read_action(reply)
        if action.kind is None:
            return Step(status="invalid_action")
        if action.kind == "commit":
            return Step(status="completed", answer=action.content)
        done = self.sandbox.run(action.content or "")
        log.append({"event": "bash", "exit": done.exit_code, "timed_out": done.timed_out,
                    "restarted": done.restarted, "seconds": round(done.seconds, 3)})  # fmt: skip
        return Step(observation=os_message(cut_output(done.output)))

    def judge(self, problem: Problem, answer: str | None) -> tuple[bool, list[dict[str, Any]]]:
        return judge(problem, answer, self.sandbox)

    def close(self) -> None:
        self.sandbox.close()


def run_episode(
    problem: Problem,
    agent: Agent,
    sandbox: Sandbox,
    *,
    max_rounds: int = MAX_ROUNDS,
    transcript: list[dict[str, Any]] | None = None,
) -> Outcome:
    """One problem in ``sandbox``: set it up, at most ``max_rounds`` of the agent, the score."""
    env = OsEnvironment(sandbox)
    return core.run_episode(problem, agent, env, max_rounds=max_rounds, transcript=transcript)


def evaluate(
    problems: list[Problem],
    agent: Agent,
    open_sandbox: Callable[[], Sandbox],
    *,
    max_rounds: int = MAX_ROUNDS,
    **options: Any,
) -> dict[str, Any]:
    """:func:`genpi.bench.core.evaluate` with a fresh sandbox per problem (``open_sandbox()``)."""

    def open_env() -> OsEnvironment:
        return OsEnvironment(open_sandbox())

    return core.evaluate(problems, agent, open_env, max_rounds=max_rounds, **options)
