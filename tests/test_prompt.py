import json

import pytest

from genpi.prompt import Prompt, PromptError, load_prompt, prompt_from_dict


def test_agentbench_prompts_load_as_they_are(agentbench_dir):
    for name in ("os", "webshop", "mind2web"):
        prompt = load_prompt(agentbench_dir / "prompts" / f"{name}.json")
        assert prompt.messages and "{input}" in prompt.input_template
        assert prompt.action_pattern and prompt.max_turns
    os_prompt = load_prompt(agentbench_dir / "prompts" / "os.json")
    assert os_prompt.read_action(os_prompt.messages[1]["content"]) == "bash"


def test_teacher_and_student_views(example_prompt_path):
    prompt = load_prompt(example_prompt_path)
    teacher = prompt.teacher_messages("count files")
    student = prompt.student_messages("count files")
    assert teacher[:-1] == [dict(m) for m in prompt.messages]
    assert teacher[-1] == {"role": "user", "content": "Task: count files"}
    assert student == [teacher[-1]]


def test_student_template_and_braces_in_input():
    prompt = prompt_from_dict(
        {
            "messages": [{"role": "system", "content": "be brief"}],
            "input_template": "Q: {input}",
            "student_template": "Question for you: {input}",
        }
    )
    assert prompt.teacher_messages("{x}")[-1]["content"] == "Q: {x}"
    assert prompt.student_messages("a {b}")[-1]["content"] == "Question for you: a {b}"


def test_plain_text_prompt_is_a_system_message(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("You are a pirate.\n")
    prompt = load_prompt(path)
    assert prompt.messages == ({"role": "system", "content": "You are a pirate."},)
    assert prompt.teacher_messages("hi")[-1] == {"role": "user", "content": "hi"}
    assert prompt.name == "p"


def test_yaml_prompt(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        "messages:\n  - role: system\n    content: rules\ninput_template: 'Task: {input}'\n"
        "action_pattern: 'Action: (\\w+)'\nmax_turns: 3\n"
    )
    prompt = load_prompt(path)
    assert prompt.max_turns == 3
    assert prompt.read_action("Action: run") == "run"
    assert prompt.read_action("no action here") is None


def test_fingerprint_is_stable_and_content_sensitive(tmp_path, example_prompt_path):
    a = load_prompt(example_prompt_path)
    data = json.loads(example_prompt_path.read_text())
    copy = tmp_path / "copy.json"
    copy.write_text(json.dumps(data, indent=0, sort_keys=True))  # other formatting, same content
    assert load_prompt(copy).fingerprint == a.fingerprint
    data["messages"][0]["content"] += " "
    copy.write_text(json.dumps(data))
    assert load_prompt(copy).fingerprint != a.fingerprint
    # a round trip through save keeps the identity
    a.save(tmp_path / "saved.json")
    assert load_prompt(tmp_path / "saved.json").fingerprint == a.fingerprint


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"messages": []}, "is empty"),
        ({"messages": [{"role": "system", "content": "  "}]}, "is empty"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "unknown role 'robot'"),
        (
            {"messages": [{"role": "user", "content": "x"}], "input_template": "no slot"},
            "no {input} slot",
        ),
        (
            {"messages": [{"role": "user", "content": "x"}], "action_pattern": "(unclosed"},
            "not a valid regex",
        ),
        ({"messages": [{"role": "user", "content": "x"}], "max_turns": 0}, "positive integer"),
        ({"messages": [{"role": "user", "content": "x"}], "temperature": 1}, "unknown keys"),
        ({"messages": [{"content": "x"}]}, "'role' and 'content'"),
    ],
)
def test_validation_errors_name_the_problem(data, message):
    with pytest.raises(PromptError, match=message):
        prompt_from_dict(data)


def test_file_errors(tmp_path):
    with pytest.raises(PromptError, match="does not exist"):
        load_prompt(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(PromptError, match="not valid JSON"):
        load_prompt(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(PromptError, match="is empty"):
        load_prompt(empty)


def test_prompt_longer_than_context_reports_both_lengths(tokenizer, example_prompt_path):
    prompt = load_prompt(example_prompt_path)
    n = prompt.check_fits(tokenizer, 8192)
    assert 300 < n < 8192
    with pytest.raises(
        PromptError, match=rf"is {n} tokens, longer than the model's context of 100"
    ):
        prompt.check_fits(tokenizer, 100)


def test_prompt_is_frozen(example_prompt_path):
    prompt = load_prompt(example_prompt_path)
    with pytest.raises(AttributeError):
        prompt.name = "other"  # type: ignore[misc]
    assert isinstance(prompt, Prompt)
