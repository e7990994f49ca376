"""The OS task's rules without a sandbox: problem loading, the action reader, truncation, the loop
and the scoring, against a recording stand-in for the machine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from genpi.bench.core import Outcome, read_upper_bound, summarize
from genpi.bench.os.agents import OracleAgent
from genpi.bench.os.reader import read_action
from genpi.bench.os.sandbox import CommandResult
from genpi.bench.os.task import (
    EMPTY_OUTPUT,
    OUTPUT_PREFIX,
    TRUNCATION_MARK,
    TaskError,
    cut_output,
    evaluate,
    load_problems,
    parse_problem,
    run_episode,
)


class RecordingSandbox:
    """Answers shell commands from a table and check scripts by exit codes; records everything."""

    def __init__(self, shell: dict[str, str] | None = None, exits: list[int] | None = None):
        self.shell = shell or {}
        self.exits = list(exits or [])
        self.ran: list[str] = []
        self.scripts: list[tuple[str, str, list[str]]] = []
        self.startup_seconds = 0.0
        self.closed = False

    def run(self, command, timeout=None):
        self.ran.append(command)
        return CommandResult(self.shell.get(command, ""), 0)

    def exec_script(self, language, code, args=(), timeout=None):
        self.scripts.append((language, code, list(args)))
        code_ = self.exits.pop(0) if self.exits else 0
        return CommandResult(f"out{len(self.scripts)}\n", code_)

    def close(self):
        self.closed = True


class ScriptedAgent:
    name = "scripted"

    def __init__(self, replies):
        self.replies = list(replies)

    def begin(self, problem):
        return [{"role": "user", "content": problem.description}]

    def act(self, problem, conversation):
        return self.replies.pop(0)


def _problem(**evaluation):
    item = {"description": "q?", "evaluation": evaluation}
    return parse_problem(item, 3, Path("."), "t-")


def test_read_action_kinds():
    assert read_action("Think: x\n\nAct: bash\n\n```bash\nls -1\n```").content == "ls -1"
    two = read_action("Act: bash\n```bash\na\n```\n```bash\nb\n```")
    assert (two.kind, two.content) == ("bash", "a\n\nb")
    assert read_action("Act: finish").kind == "commit"
    answer = read_action("Think: ok\nAct: answer(f(x) = (2))")
    assert (answer.kind, answer.content, answer.thought) == ("commit", "f(x) = (2)", "ok")
    assert read_action("Act: answer 42").kind is None  # no parentheses: unreadable
    # the last readable Act: line wins, an unreadable answer falls back to an earlier line
    assert read_action("Act: finish\nAct: answer(3)").content == "3"
    assert read_action("Act: answer(3)\nAct: answer 4").content == "3"
    assert read_action("I think the answer is 3").kind is None


def test_cut_output_at_800():
    assert cut_output("x" * 800) == "x" * 800
    cut = cut_output("y" * 801)
    assert cut == "y" * 780 + TRUNCATION_MARK


def test_load_dev_split(agentbench_dir):
    problems = load_problems(agentbench_dir / "os_interaction")
    assert len(problems) == 26
    assert sum(p.scored_by == "match" for p in problems) == 5
    assert sum(p.start is not None for p in problems) == 4
    # a string init, a list "create" (no init), file scripts resolved under scripts/dev/
    assert problems[21].init[0][0] == "bash" and "helloworld" in problems[21].init[0][1]
    assert problems[10].init == ()
    assert problems[25].init[0][1].startswith("#!/bin/bash")
    assert problems[3].check[0][1].startswith("#!/bin/bash")
    assert problems[6].check[0] is None and problems[6].check[1][0] == "python"
    assert [p.id for p in problems[:2]] == ["dev-00000", "dev-00001"]


def test_bad_layout_errors(tmp_path):
    with pytest.raises(TaskError, match="no problem files"):
        load_problems(tmp_path)
    with pytest.raises(TaskError, match="needs 'match' or 'check'"):
        _problem(other=1)
    with pytest.raises(TaskError, match="null check entry"):
        _problem(check=[None])


def test_match_episode_strips_answer():
    problem = _problem(match="log")
    box = RecordingSandbox()
    outcome = run_episode(problem, ScriptedAgent(["Act: answer(  log )"]), box)
    assert (outcome.result, outcome.status, outcome.rounds) == (True, "completed", 1)
    wrong = run_episode(problem, ScriptedAgent(["Act: answer(logs)"]), RecordingSandbox())
    assert not wrong.result and wrong.status == "completed"


def test_check_chain_passes_answer_and_outputs():
    problem = _problem(check=[None, {"language": "python", "code": "CHECK"}], example="EXAMPLE")
    box = RecordingSandbox()
    outcome = run_episode(problem, ScriptedAgent(["Act: answer(7)"]), box)
    assert outcome.result
    assert box.scripts == [("bash", "EXAMPLE", ["7"]), ("python", "CHECK", ["7", "out1\n"])]
    failing = RecordingSandbox(exits=[0, 1])
    assert not run_episode(problem, ScriptedAgent(["Act: answer(7)"]), failing).result
    finish = RecordingSandbox()
    run_episode(problem, ScriptedAgent(["Act: finish"]), finish)
    assert finish.scripts[0][2] == ["None"]  # AgentBench passes str(None) after finish


def test_loop_feeds_outputs_and_stops_at_round_limit():
    problem = _problem(match="1")
    long_output = "z" * 900
    box = RecordingSandbox(shell={"big": long_output, "none": ""})
    replies = ["Act: bash\n```bash\nbig\n```", "Act: bash\n```bash\nnone\n```"] * 5
    transcript = []
    outcome = run_episode(problem, ScriptedAgent(replies), box, max_rounds=3, transcript=transcript)
    assert (outcome.status, outcome.rounds, outcome.result) == ("round_limit", 3, False)
    assert box.ran == ["big", "none", "big"]
    users = [e["content"] for e in transcript if e.get("role") == "user"]
    assert users[1] == OUTPUT_PREFIX + "z" * 780 + TRUNCATION_MARK
    assert users[2] == EMPTY_OUTPUT
    invalid = run_episode(problem, ScriptedAgent(["no action here"]), RecordingSandbox())
    assert invalid.status == "invalid_action" and not invalid.result


def test_setup_runs_init_then_start_in_the_shell():
    item = {
        "description": "d",
        "create": {"init": [{"code": "INIT1"}, "INIT2"]},
        "start": "START &",
        "evaluation": {"match": "x"},
    }
    problem = parse_problem(item, 0, Path("."), "s-")
    box = RecordingSandbox()
    run_episode(problem, ScriptedAgent(["Act: answer(x)"]), box)
    assert [s[1] for s in box.scripts] == ["INIT1", "INIT2"]
    assert box.ran == ["START &"]


def test_oracle_runs_example_then_answers_its_output():
    problem = _problem(check=[None, {"language": "python", "code": "C"}], example="nproc")
    box = RecordingSandbox(shell={"nproc": "4\n"})
    outcome = run_episode(problem, OracleAgent(), box)
    assert box.ran == ["nproc"] and outcome.answer == "4" and outcome.rounds == 2


def test_evaluate_writes_transcripts_and_resumes(tmp_path):
    problems = [
        _problem(match="1"),
        parse_problem({"description": "b", "evaluation": {"match": "2"}}, 4, Path("."), "t-"),
    ]
    boxes = []

    def open_box():
        boxes.append(RecordingSandbox())
        return boxes[-1]

    summary = evaluate(problems, OracleAgent(), open_box, out_dir=tmp_path, upper_bound=0.5)
    assert (summary["pass"], summary["total"], summary["normalized"]) == (2, 2, 2.0)
    assert all(b.closed for b in boxes) and len(boxes) == 2
    rows = [
        json.loads(x) for x in (tmp_path / "transcripts" / "t-00003.jsonl").read_text().splitlines()
    ]
    assert rows[0]["event"] == "problem" and rows[-1]["event"] == "outcome" and rows[-1]["result"]
    again = evaluate(problems, OracleAgent(), open_box, out_dir=tmp_path)
    assert len(boxes) == 2 and again["pass"] == 2  # finished problems are not run again
    assert read_upper_bound(tmp_path / "result.json") == 1.0


def test_summarize_and_bad_upper_bound(tmp_path):
    outcomes = [Outcome("a", True, "completed"), Outcome("b", False, "round_limit")]
    assert summarize(outcomes, 0.8)["normalized"] == pytest.approx(0.625)
    bad = tmp_path / "r.json"
    bad.write_text("{}")
    with pytest.raises(Exception, match="not a result.json"):
        read_upper_bound(bad)


def test_llm_agent_views_and_loop(tiny_backend, os_prompt_path):
    from genpi.bench.core import LLMAgent
    from genpi.llm import SamplingParams
    from genpi.prompt import load_prompt

    prompt = load_prompt(os_prompt_path)
    problem = _problem(match="1")
    params = SamplingParams(max_new_tokens=8)
    teacher = LLMAgent(tiny_backend, prompt, params=params)
    student = LLMAgent(tiny_backend, prompt, with_prompt=False, params=params)
    assert teacher.name.endswith(f" (prompt {prompt.name})")  # which prompt, in result.json
    assert student.name.endswith(" (no prompt)")
    assert teacher.begin(problem) == prompt.teacher_messages("q?")
    assert student.begin(problem) == [{"role": "user", "content": prompt.fill("q?", student=True)}]
    transcript = []
    outcome = run_episode(problem, teacher, RecordingSandbox(), max_rounds=2, transcript=transcript)
    shots = sum(m["role"] == "assistant" for m in prompt.messages)  # the prompt's own examples
    replies = [e for e in transcript if e.get("role") == "assistant"][shots:]
    assert 1 <= len(replies) <= 2 and outcome.rounds == len(replies)
    assert outcome.status in ("invalid_action", "round_limit", "completed")


def test_cli_errors_are_one_line(tmp_path, capsys):
    from genpi.cli import main

    assert main(["eval-os", "--data", str(tmp_path), "--oracle"]) == 2
    assert "no problem files" in capsys.readouterr().err


def test_a_crashing_agent_fails_only_its_problem():
    class Crashing(ScriptedAgent):
        def act(self, problem, conversation):
            if problem.id == "t-00003":
                raise ValueError("context too long")
            return "Act: answer(2)"

    problems = [
        _problem(match="1"),
        parse_problem({"description": "b", "evaluation": {"match": "2"}}, 4, Path("."), "t-"),
    ]
    boxes = []
    summary = evaluate(
        problems, Crashing([]), lambda: boxes.append(RecordingSandbox()) or boxes[-1]
    )
    statuses = {o["id"]: (o["status"], o["result"]) for o in summary["outcomes"]}
    assert statuses == {"t-00003": ("error", False), "t-00004": ("completed", True)}
    assert "context too long" in summary["outcomes"][0]["error"]
    assert all(b.closed for b in boxes)


def test_adapter_agent_uses_the_adapters_prompt_without_it(
    tiny_model_dir, tiny_adapter_dir, tmp_path
):
    import argparse

    from genpi.adapter import read_adapter_prompt
    from genpi.bench.core import build_agent
    from genpi.bench.os.agents import OracleAgent
    from genpi.bench.os.cli import PROMPT_FILE

    args = argparse.Namespace(
        oracle=False, adapter=str(tiny_adapter_dir), prompt=None, data=str(tmp_path),
        model=str(tiny_model_dir), no_prompt=False, max_new_tokens=4,
    )  # fmt: skip
    agent = build_agent(args, PROMPT_FILE, OracleAgent)
    prompt = read_adapter_prompt(tiny_adapter_dir)
    assert not agent.with_prompt and agent.prompt.fingerprint == prompt.fingerprint
    assert agent.begin(_problem(match="1")) == prompt.student_messages("q?")
    assert agent.backend.has_adapter


def test_concurrent_problems_share_batches_on_a_local_model(tiny_model_dir, tmp_path):
    """--concurrency N on a local model: the agent's backend coalesces the N episodes' requests
    into shared batches, one decoding loop for all of them (one at a time without it)."""
    import argparse

    from genpi.bench.core import build_agent
    from genpi.bench.os.agents import OracleAgent
    from genpi.bench.os.cli import PROMPT_FILE
    from genpi.llm.coalesce import CoalescingBackend
    from genpi.llm.local import LocalBackend

    def agent_with(concurrency):
        args = argparse.Namespace(
            oracle=False, adapter=None, prompt=None, data=str(tmp_path / "data"), no_prompt=True,
            model=str(tiny_model_dir), max_new_tokens=4, concurrency=concurrency,
        )  # fmt: skip
        return build_agent(args, PROMPT_FILE, OracleAgent)

    (tmp_path / "prompts").mkdir()
    prompt = Path(__file__).resolve().parents[1] / "examples" / "shell_agent.json"
    (tmp_path / "prompts" / PROMPT_FILE).write_text(prompt.read_text())  # beside --data
    shared = agent_with(26).backend
    assert isinstance(shared, CoalescingBackend) and shared.max_batch == 26
    assert shared.backend.batch_size == 26
    assert isinstance(agent_with(1).backend, LocalBackend)
