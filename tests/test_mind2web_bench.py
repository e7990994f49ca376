"""The Mind2Web harness on a hand-made file in Mind2Web's format (tests/data/mind2web_tiny.json):
loading, the page each round shows, AgentBench's reading and rounds, the metrics, the CLI."""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import pytest

from genpi.bench.core import LLMAgent
from genpi.bench.mind2web import dom
from genpi.bench.mind2web.agents import OracleAgent
from genpi.bench.mind2web.data import DataError, load_steps
from genpi.bench.mind2web.metrics import (
    StepScore,
    aggregate,
    gold_action,
    operation_f1,
    score_step,
)
from genpi.bench.mind2web.reader import read_choice, read_eval_action
from genpi.bench.mind2web.task import LETTERS, Mind2WebEnvironment, Round, evaluate
from genpi.prompt import Prompt

DATA = Path(__file__).parent / "data" / "mind2web_tiny.json"
CABIN_ROUND = """'''
<html><form><label>Cabin</label><select id=0 cabin><option economy>Economy</option><option business>Business</option></select><button id=1 submit>Search flights</button></form></html>
'''

Based on the HTML webpage above, try to complete the following task:
Task: Search one-way economy flights
Previous actions:
[radio]  One-way -> CLICK
What should be the next action? Please select from the following choices (If the correct action is not in the page above, please select A. 'None of the above'):

A. None of the above
B. <select id=0 cabin><option economy>Economy</option><option business>Business</option></select>
C. <button id=1 submit>Search flights</button>
"""


@pytest.fixture(scope="module")
def steps():
    return {s.id: s for s in load_steps(DATA)}


class PolicyAgent:
    """Answers each round with ``policy(round)``; records every conversation it was given."""

    def __init__(self, policy, name="policy"):
        self.policy = policy
        self.name = name
        self.seen: list[list[dict]] = []

    def begin(self, round_):
        return [{"role": "user", "content": round_.description}]

    def act(self, round_, conversation):
        self.seen.append(list(conversation))
        return self.policy(round_)


class ScriptedAgent(PolicyAgent):
    def __init__(self, replies):
        self.replies = list(replies)
        super().__init__(lambda round_: self.replies.pop(0), "scripted")


def _letter(round_: Round, pick) -> str:
    """The letter of the first option ``pick(node_id)`` accepts, else A."""
    for letter, node_id in zip(LETTERS, round_.choices, strict=False):
        if pick(node_id):
            return letter
    return "A"


def _sloppy(round_: Round) -> str:
    """The right element, the operation slightly off (exact F1 values worked out by hand)."""
    letter = _letter(round_, lambda n: n in round_.step.positives)
    action = {
        "TYPE": "Action: TYPE\nValue: Dune",  # {TYPE, Dune} vs {TYPE, dune}: F1 1/2
        "CLICK": "Action: CLICK\nValue: one-way",  # vs {CLICK}: P 1/2, R 1, F1 2/3
        "SELECT": "Action: SELECT\nValue: Economy class",  # vs {SELECT, Economy}: F1 4/5
    }[round_.step.operation]
    return f"Answer: {letter}.\n{action}"


def _wrong_element(round_: Round) -> str:
    """A negative candidate with the gold operation."""
    step = round_.step
    letter = _letter(round_, lambda n: n not in step.positives)
    value = "" if step.operation == "CLICK" else f"\nValue: {step.value}"
    return f"Answer: {letter}.\nAction: {step.operation}{value}"


# -- loading ------------------------------------------------------------------------------------


def test_load_reads_steps_ranks_under_k_and_the_gold_history(steps):
    assert list(steps) == [
        "task-book_a1", "task-book_a2", "task-book_a3", "task-flight_b1", "task-flight_b2",
    ]  # fmt: skip
    a1, a2, a3 = steps["task-book_a1"], steps["task-book_a2"], steps["task-book_a3"]
    assert (a1.task_id, a1.website, a1.operation, a1.value) == (
        "task-book",
        "bookshop",
        "TYPE",
        "dune",
    )
    assert a1.positives == ("10",)
    assert sorted(a1.pool) == ["10", "11", "12", "13", "14", "15"]  # 16 has rank 12 >= 10
    assert a1.pool == ("13", "10", "11", "15", "14", "12")  # the seeded order, fixed per step
    assert a1.previous == ()
    assert a3.previous == ("[searchbox]  Search books -> TYPE: dune", "[link]  Paperback -> CLICK")
    assert a2.pool == ("21",)  # negatives ranked 11 and 14
    assert a3.positives == () and a3.pool == ("32", "33")  # the positive has rank 10 = k
    assert steps["task-flight_b1"].positives == ("51", "52")
    wide = {s.id: s for s in load_steps(DATA, top_k=50, seed=7)}
    assert sorted(wide["task-book_a1"].pool) == ["10", "11", "12", "13", "14", "15", "16"]
    assert wide["task-book_a3"].positives == ("31",)
    assert [s.pool for s in load_steps(DATA)] == [s.pool for s in steps.values()]


def _without_ranks(tmp_path: Path) -> tuple[Path, dict]:
    tasks = json.loads(DATA.read_text())
    table = {}
    for task in tasks:
        for action in task["actions"]:
            ranks = table.setdefault(f"{task['annotation_id']}_{action['action_uid']}", {})
            for c in action["pos_candidates"] + action["neg_candidates"]:
                ranks[c["backend_node_id"]] = c.pop("rank")
    path = tmp_path / "unranked.json"
    path.write_text(json.dumps(tasks))
    return path, table


def test_ranks_from_mind2web_ranking_file_json_and_pickle(tmp_path, steps):
    import numpy as np

    data, table = _without_ranks(tmp_path)
    with pytest.raises(DataError, match="has no 'rank': pass --ranks"):
        load_steps(data)
    as_json = tmp_path / "ranks.json"
    as_json.write_text(json.dumps({"ranks": table, "scores": {}}))
    as_pickle = tmp_path / "scores_all_data.pkl"
    numpy_table = {k: {c: np.int64(r) for c, r in v.items()} for k, v in table.items()}
    scores = {k: {c: np.float32(0.5) for c in v} for k, v in table.items()}
    as_pickle.write_bytes(pickle.dumps({"scores": scores, "ranks": numpy_table}))
    expected = [(s.id, s.positives, s.pool) for s in steps.values()]
    for ranks in (as_json, as_pickle):
        loaded = load_steps(data, ranks=ranks)
        assert [(s.id, s.positives, s.pool) for s in loaded] == expected
    del table["task-flight_b2"]
    as_json.write_text(json.dumps({"ranks": table}))
    with pytest.raises(DataError, match="task-flight_b2 is not in --ranks"):
        load_steps(data, ranks=as_json)


class _Hostile:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_a_hostile_ranking_pickle_runs_nothing(tmp_path):
    target = tmp_path / "pwned"
    bad = tmp_path / "scores_all_data.pkl"
    bad.write_bytes(pickle.dumps({"ranks": {"x": _Hostile(str(target))}}))
    with pytest.raises(DataError, match="neither JSON nor a plain-data pickle"):
        load_steps(DATA, ranks=bad)
    assert not target.exists()


def test_data_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="no Mind2Web task files"):
        load_steps(tmp_path)
    tasks = json.loads(DATA.read_text())
    del tasks[1]["actions"][0]["operation"]
    (tmp_path / "t.json").write_text(json.dumps(tasks))
    with pytest.raises(DataError, match="t.json task 1 action 0 has no 'operation'"):
        load_steps(tmp_path)
    tasks[1]["actions"][0]["operation"] = {"op": "CLICK", "value": ""}
    tasks[1]["annotation_id"] = "../escape"
    (tmp_path / "t.json").write_text(json.dumps(tasks))
    with pytest.raises(DataError, match="not file-name safe"):
        load_steps(tmp_path / "t.json")


# -- the page -----------------------------------------------------------------------------------


def test_round_shows_the_pruned_page_and_agentbench_options(steps):
    env = Mind2WebEnvironment()
    opening = env.reset(steps["task-flight_b2"], [])
    assert opening.restart.description == CABIN_ROUND
    assert opening.restart.choices == ("41", "42")  # page order: B is the select


def test_prune_keeps_candidates_ancestors_three_siblings_and_unwraps():
    siblings = "".join(
        f'<li backend_node_id="{i}"><text>item {i}</text></li>' for i in range(10, 19)
    )
    page = dom.parse(
        f'<html backend_node_id="1"><div backend_node_id="2"><ul backend_node_id="3">{siblings}'
        f'</ul></div><p backend_node_id="4" title="Far away">gone</p></html>'
    )
    shown = dom.view(page, ["14"])
    # siblings 11..17 kept (3 each side of 14); the div (no attributes left, one child) unwrapped;
    # the paragraph pruned; only the candidate keeps a number
    assert shown.html == (
        "<html><ul><li>item 11</li><li>item 12</li><li>item 13</li><li id=0>item 14</li>"
        "<li>item 15</li><li>item 16</li><li>item 17</li></ul></html>"
    )
    assert shown.choices == (("14", "<li id=0>item 14</li>"),)


def test_view_writes_salient_values_and_cuts_options_at_ten_words():
    page = dom.parse(
        '<html backend_node_id="1"><button backend_node_id="2" type="submit" '
        'aria_label="Search  ALL the flights" class="btn" data-x="dropped" '
        'title="https://x.example/a"><text>one two three four five six seven eight nine ten'
        " eleven</text></button></html>"
    )
    shown = dom.view(page, ["2"])
    assert shown.html == (
        "<html><button id=0 submit search all the flights btn>one two three four five six "
        "seven eight nine ten eleven</button></html>"
    )
    assert shown.choices[0][1] == "<button id=0 submit search all the flights btn>one two three"
    with pytest.raises(dom.PageError, match="candidate 99 is not in the step's cleaned_html"):
        dom.view(page, ["99"])


# -- reading ------------------------------------------------------------------------------------


def test_reader_follows_agentbench():
    choice = read_choice("Thought: type it.\nAnswer: C.\nAction: TYPE\nValue: new york ")
    assert (choice.letter, choice.action) == ("C", "TYPE new york")
    # first match anywhere, one space after the colon, case-sensitive, letters A to F only
    assert read_choice("Value: x\nAnswer: B\nAnswer: C").letter == "B"
    assert read_choice("Value: early\nAnswer: B\nAction: CLICK").action == "CLICK early"
    assert read_choice("Answer:B").letter is None
    assert read_choice("answer: B").letter is None
    assert read_choice("Answer: G").letter is None
    assert read_choice("Answer: B\nAction: click").action == ""
    assert read_eval_action("Answer: A.") == ("NONE", "A")
    assert read_eval_action("Answer: D.\nAction: SELECT\nValue: Pickup") == ("SELECT", "D Pickup")
    assert read_eval_action("Answer: D.") == ("ANSWER", "D")
    assert read_eval_action("the third one") is None


# -- metrics ------------------------------------------------------------------------------------


def test_operation_f1_and_gold_action():
    assert operation_f1("TYPE Dune", "TYPE dune") == 0.5
    assert operation_f1("CLICK one-way", "CLICK") == pytest.approx(2 / 3)
    assert operation_f1("SELECT Economy class", "SELECT Economy") == pytest.approx(0.8)
    assert operation_f1("TYPE new new york", "TYPE new york") == 1.0  # token sets
    assert operation_f1("", "") == 1.0
    assert operation_f1("", "CLICK") == 0.0
    assert operation_f1("TYPE x", "CLICK") == 0.0
    assert gold_action("CLICK", "ignored") == "CLICK"
    assert gold_action("TYPE", "new york\nsecond line") == "TYPE new york"
    assert gold_action("HOVER", "menu") == "menu"


def test_step_scores_and_aggregates_micro_macro_task():
    assert score_step("t", None, ["1"], "CLICK") == StepScore("t", False, 0.0)
    assert score_step("t", ("1", "CLICK"), [], "CLICK") == StepScore("t", False, 0.0)
    assert score_step("t", ("2", "CLICK"), ["1", "2"], "CLICK").success
    assert not score_step("t", ("3", "CLICK"), ["1", "2"], "CLICK").success
    assert not StepScore("t", True, 0.99).success
    scores = [
        StepScore("a", True, 1.0),
        StepScore("a", True, 0.5),
        StepScore("a", False, 1.0),
        StepScore("b", True, 1.0),
    ]
    result = aggregate(scores)
    assert (result["steps"], result["tasks"]) == (4, 2)
    assert result["micro"] == {"element_acc": 0.75, "op_f1": 0.875, "step_sr": 0.5}
    assert result["macro"]["element_acc"] == pytest.approx((2 / 3 + 1) / 2)
    assert result["macro"]["op_f1"] == pytest.approx((2.5 / 3 + 1) / 2)
    assert result["macro"]["step_sr"] == pytest.approx((1 / 3 + 1) / 2)
    assert result["task_sr"] == 0.5
    assert aggregate([])["micro"] == {"element_acc": 0.0, "op_f1": 0.0, "step_sr": 0.0}


# -- episodes -----------------------------------------------------------------------------------


def _run(steps, agent, **options):
    return evaluate(list(steps.values()), agent, **options)


def test_oracle_scores_every_step_the_ranking_allows(steps):
    summary = _run(steps, OracleAgent())
    statuses = {o["id"]: o["status"] for o in summary["outcomes"]}
    assert statuses == {
        "task-book_a1": "completed",
        "task-book_a2": "one_candidate",  # AgentBench asks nothing with a single candidate
        "task-book_a3": "gold_not_ranked",
        "task-flight_b1": "completed",
        "task-flight_b2": "completed",
    }
    assert (summary["total"], summary["pass"], summary["success_rate"]) == (5, 3, 0.6)
    m = summary["mind2web"]
    assert m["micro"] == {"element_acc": 0.6, "op_f1": 0.6, "step_sr": 0.6}
    assert m["macro"]["element_acc"] == pytest.approx(2 / 3)
    assert m["macro"]["step_sr"] == pytest.approx(2 / 3)
    assert m["task_sr"] == 0.5  # the flight task: every step right


def test_right_element_with_a_sloppy_operation(steps):
    summary = _run(steps, PolicyAgent(_sloppy))
    m = summary["mind2web"]
    assert summary["pass"] == 0
    assert m["micro"]["element_acc"] == 0.6
    assert m["micro"]["op_f1"] == pytest.approx((0.5 + 2 / 3 + 0.8) / 5)
    assert m["macro"]["op_f1"] == pytest.approx((0.5 / 3 + (2 / 3 + 0.8) / 2) / 2)
    assert (m["micro"]["step_sr"], m["task_sr"]) == (0.0, 0.0)


def test_wrong_element_with_the_right_operation(steps):
    summary = _run(steps, PolicyAgent(_wrong_element))
    m = summary["mind2web"]
    # a1: round 1 shows 11 10 13 14 15 -> 11 (B); round 2 shows 11 (page order) and 12 -> 11
    assert [o["answer"] for o in summary["outcomes"]] == [
        "11: TYPE dune", None, None, "53: CLICK", "42: SELECT Economy",
    ]  # fmt: skip
    assert m["micro"] == {"element_acc": 0.0, "op_f1": 0.6, "step_sr": 0.0}


def test_malformed_replies_choose_nothing(steps):
    agent = PolicyAgent(lambda round_: "I would type dune into the search box.")
    summary = _run(steps, agent)
    outcomes = {o["id"]: o for o in summary["outcomes"]}
    assert [o["status"] for o in outcomes.values()] == [
        "invalid_action", "one_candidate", "gold_not_ranked", "invalid_action", "invalid_action",
    ]  # fmt: skip
    # a1: the first round of 5 names nothing, one candidate is left: no prediction, no more rounds
    assert outcomes["task-book_a1"]["rounds"] == 1
    assert summary["mind2web"]["micro"] == {"element_acc": 0.0, "op_f1": 0.0, "step_sr": 0.0}
    assert len(agent.seen) == 3  # steps scored without asking never reach the agent


def test_rounds_winner_requeued_each_round_asked_afresh(steps):
    a1 = {"a1": steps["task-book_a1"]}
    # round 1: candidates 13 10 11 15 14, shown in page order 11 10 13 14 15 (B..F);
    # D = 13 goes back to the queue behind 12; round 2 shows 12 (B) and 13 (C)
    agent = ScriptedAgent(["Answer: D.", "Answer: C.\nAction: TYPE\nValue: dune"])
    summary = evaluate(list(a1.values()), agent)
    outcome = summary["outcomes"][0]
    assert (outcome["status"], outcome["rounds"], outcome["answer"]) == (
        "completed",
        2,
        "13: TYPE dune",
    )
    assert outcome["checks"][0]["element_correct"] is False
    assert outcome["checks"][0]["op_f1"] == 1.0
    first, second = agent.seen
    assert len(first) == len(second) == 1  # each round a fresh conversation
    assert "F. <a id=4 gift cards>Gifts</a>\n" in first[0]["content"]
    assert second[0]["content"].endswith(
        "A. None of the above\nB. <button id=0 submit>Go</button>\nC. <a id=1>Fiction</a>\n"
    )
    # a letter past the options in the last round empties the queue: no prediction survives
    late = ScriptedAgent(["Answer: D.\nAction: CLICK", "Answer: F."])
    outcome = evaluate(list(a1.values()), late)["outcomes"][0]
    assert (outcome["status"], outcome["answer"]) == ("invalid_action", None)


def test_transcripts_result_and_resume(steps, tmp_path):
    out = tmp_path / "run"
    first = _run(steps, OracleAgent(), out_dir=out, config={"data": "tiny"})
    result = json.loads((out / "result.json").read_text())
    assert result["mind2web"]["task_sr"] == 0.5 and result["pass"] == 3
    events = [json.loads(line) for line in (out / "transcripts" / "task-book_a1.jsonl").open()]
    kinds = [e["event"] for e in events]
    assert kinds[:3] == ["problem", "round", "message"] and kinds[-1] == "outcome"
    assert kinds.count("round") == kinds.count("choice") == 2
    assert kinds.count("restart") == 1

    class Refuses(OracleAgent):
        def act(self, round_, conversation):
            raise AssertionError("a finished step was asked again")

    again = _run(steps, Refuses(), out_dir=out, config={"data": "tiny"})
    assert again["mind2web"] == first["mind2web"]


@dataclass
class _Generated:
    text: str


class _FakeBackend:
    """Always answers B with a CLICK; records the conversations it was given."""

    name = "fake"

    def __init__(self):
        self.conversations = []

    def generate(self, conversations, params):
        self.conversations.extend(conversations)
        return [
            _Generated("Thought: the first one.\nAnswer: B.\nAction: CLICK") for _ in conversations
        ]


def test_llm_agent_gets_the_prompt_then_each_round_alone(steps):
    prompt = Prompt(
        messages=(
            {"role": "user", "content": "Example page"},
            {"role": "assistant", "content": "Answer: A."},
        ),
        name="agentbench-mind2web",
    )
    b1 = steps["task-flight_b1"]  # one round; B is the radio button 51, a positive
    for with_prompt, prefix in ((True, list(prompt.messages)), (False, [])):
        backend = _FakeBackend()
        summary = evaluate([b1], LLMAgent(backend, prompt, with_prompt=with_prompt))
        assert summary["pass"] == 1
        (seen,) = backend.conversations
        assert seen[:-1] == prefix
        assert seen[-1]["content"].startswith(
            "'''\n<html><fieldset><input id=0 radio trip oneway />"
        )


# -- the command --------------------------------------------------------------------------------


def test_cli_runs_mind2web_with_the_oracle(tmp_path, capsys):
    from genpi.cli import main

    out = tmp_path / "m2w"
    assert (
        main(
            [
                "eval-agent",
                "--bench",
                "mind2web",
                "--data",
                str(DATA),
                "--oracle",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (line["total"], line["pass"], line["tasks"], line["task_sr"]) == (5, 3, 2, 0.5)
    assert line["micro"]["step_sr"] == 0.6
    assert json.loads((out / "run.json").read_text())["top_k"] == 10
    assert main(["eval-agent", "--bench", "mind2web", "--data", str(DATA), "--oracle", "--out",
                 str(out), "--top-k", "50"]) == 2  # fmt: skip
    assert "other settings" in capsys.readouterr().err
    assert main(["eval-agent", "--bench", "mind2web", "--data", str(tmp_path / "none.json"),
                 "--oracle"]) == 2  # fmt: skip
    assert "no Mind2Web task files" in capsys.readouterr().err


def test_cli_runs_a_model_with_the_agentbench_prompt(
    agentbench_dir, tiny_model_dir, tmp_path, capsys
):
    from genpi.cli import main

    prompt = agentbench_dir / "prompts" / "mind2web.json"
    for mode in ([], ["--no-prompt"]):
        out = tmp_path / f"run{len(mode)}"
        argv = ["eval-agent", "--bench", "mind2web", "--data", str(DATA), "--model",
                str(tiny_model_dir), "--prompt", str(prompt), "--limit", "1",
                "--max-new-tokens", "4", "--out", str(out), *mode]  # fmt: skip
        assert main(argv) == 0
        line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert line["total"] == 1
        events = [json.loads(x) for x in (out / "transcripts" / "task-book_a1.jsonl").open()]
        first = next(e for e in events if e["event"] == "message")
        if mode:  # the round alone
            assert first["content"].startswith("'''\n<html><body><div><a id=0 home>")
        else:  # AgentBench's first demonstration
            assert first["content"].startswith("'''\n<html> <div> <div> <a tock home page />")
