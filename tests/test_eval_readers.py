"""Action readers on AgentBench-style answers (the prompts' own demonstrations as positives)."""

from __future__ import annotations

import json

import pytest

from genpi.bench.mind2web.reader import read_eval_action as read_mind2web_action
from genpi.bench.os.reader import read_eval_action as read_os_action
from genpi.bench.webshop.reader import read_eval_action as read_webshop_action
from genpi.evaluate.readers import reader_for, reader_name, split_action
from genpi.prompt import load_prompt


def _demonstrations(agentbench_dir, name):
    data = json.loads((agentbench_dir / "prompts" / f"{name}.json").read_text())
    return [m["content"] for m in data["messages"] if m["role"] == "assistant"]


def test_os_reader_reads_every_demonstration(agentbench_dir):
    answers = _demonstrations(agentbench_dir, "os")
    actions = [read_os_action(a) for a in answers]
    assert actions == [("bash", "ls /etc"), ("bash", "ls -1 /etc | wc -l"), ("answer", "220")]
    assert reader_for(load_prompt(agentbench_dir / "prompts" / "os.json")) is read_os_action


def test_os_reader_rules():
    assert read_os_action("Think: done.\n\nAct: finish") == ("finish", "")
    assert read_os_action("Act: bash\n```bash\nls\n```\n```bash\npwd\n```") == ("bash", "ls\n\npwd")
    assert read_os_action("Act: bash") == ("bash", "")  # AgentBench runs an empty command
    # The last Act line that parses wins; an answer without parentheses is skipped.
    assert read_os_action("Act: answer(1)\nAct: answer 2") == ("answer", "1")
    assert read_os_action("Sure! Here is how to list files: ls -l") is None
    assert read_os_action("Action: bash") is None


def test_webshop_reader_reads_every_acting_demonstration(agentbench_dir):
    answers = [a for a in _demonstrations(agentbench_dir, "webshop") if "Action" in a]
    actions = [read_webshop_action(a) for a in answers]
    assert len(actions) >= 2 and all(a is not None for a in actions)
    assert actions[0][0] == "search"
    assert ("click", "Buy Now") in actions
    assert read_webshop_action("Ok.") is None
    assert read_webshop_action("Action: buy[it]") is None


def test_mind2web_reader(agentbench_dir):
    answers = _demonstrations(agentbench_dir, "mind2web")
    actions = [read_mind2web_action(a) for a in answers]
    assert all(a is not None for a in actions)
    assert ("SELECT", "C Pickup") in actions
    assert ("NONE", "A") in actions
    assert ("CLICK", "D") in actions
    assert read_mind2web_action("Answer: B.\nAction: TYPE\nValue: new york") == (
        "TYPE",
        "B new york",
    )
    assert read_mind2web_action("Answer: B.") == ("ANSWER", "B")
    assert read_mind2web_action("I would click the button.") is None


def test_generic_reader_uses_the_prompts_action_pattern(example_prompt_path):
    prompt = load_prompt(example_prompt_path)
    assert reader_name(prompt) == "generic"
    read = reader_for(prompt)
    assert read("Thought: count.\nAction: run[wc -l < /etc/passwd]") == (
        "run",
        "wc -l < /etc/passwd",
    )
    assert read("Thought: done.\nAction: done[27]") == ("done", "27")
    assert read("The answer is 27.") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("run[ls -l]", ("run", "ls -l")),
        ("bash", ("bash", "")),
        ("answer(3)", ("answer", "3")),
        ("B.", ("B.", "B.")),
    ],
)
def test_split_action(text, expected):
    assert split_action(text) == expected


def test_no_reader_without_an_action_pattern():
    from genpi.prompt import Prompt

    prompt = Prompt(messages=({"role": "system", "content": "Be terse."},), name="terse")
    assert reader_name(prompt) is None and reader_for(prompt) is None


def test_eval_reads_os_answers_as_the_harness_does():
    """One reader: eval's (type, argument) is the harness's action, named by the prompt's verbs."""
    from genpi.bench.os.reader import read_action

    cases = {
        "Act: finish": ("commit", None, ("finish", "")),
        "Act: answer( 220 )": ("commit", " 220 ", ("answer", "220")),
        "Act: bash\n```bash\n ls\n```": ("bash", " ls", ("bash", "ls")),
        "Act: answer 4": (None, None, None),
        # AgentBench does not check that ")" follows "(": the answer is the empty string (which
        # fails its check); eval used to skip such a line, the harness did not.
        "Act: answer)(": ("commit", "", ("answer", "")),
        "Act: bash\n```bash\nls\n```\nAct: answer)(": ("commit", "", ("answer", "")),
    }
    for text, (kind, content, eval_action) in cases.items():
        action = read_action(text)
        assert (action.kind, action.content) == (kind, content), text
        assert read_os_action(text) == eval_action, text
