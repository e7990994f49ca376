"""Prompt files that are hostile or mistyped: refused with one PromptError naming the field."""

from __future__ import annotations

import json
import time

import pytest

from genpi import prompt as prompt_module
from genpi.prompt import PromptError, load_prompt, prompt_from_dict

OK = {"messages": [{"role": "system", "content": "be brief"}], "input_template": "Q: {input}"}


def _yaml_bomb(levels: int) -> str:
    """A "billion laughs" bomb in ``name``: each level holds ten aliases of the one before.
    Small enough (10**levels strings) that even a loader that expands it stays harmless here."""
    lines = ['l0: &l0 "lol"']
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]")
    return "\n".join(lines) + f"\nname: *l{levels}\nmessages: [{{role: system, content: hi}}]\n"


def test_yaml_alias_bomb_is_refused_before_it_expands(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(_yaml_bomb(5))
    start = time.perf_counter()
    with pytest.raises(PromptError, match=r"YAML alias \*l0 \(line 2\).*write the value out"):
        load_prompt(path)
    assert time.perf_counter() - start < 2


def test_any_yaml_alias_is_refused_even_a_harmless_one(tmp_path):
    path = tmp_path / "alias.yaml"
    path.write_text(
        "messages:\n  - &m {role: system, content: rules}\n  - *m\ninput_template: 'T: {input}'\n"
    )
    with pytest.raises(PromptError, match=r"alias\.yaml' uses the YAML alias \*m \(line 3\)"):
        load_prompt(path)


def test_oversized_prompt_file_is_refused_without_parsing(tmp_path):
    path = tmp_path / "huge.json"
    limit = getattr(prompt_module, "MAX_PROMPT_BYTES", 4 << 20)
    path.write_text(json.dumps({**OK, "name": "x" * (limit + 1)}))
    with pytest.raises(PromptError, match=r"bytes, over the \d+ byte limit.*shorten it"):
        load_prompt(path)


def test_deeply_nested_json_is_a_prompt_error_not_a_recursion_error(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('{"name": ' + "[" * 200_000 + "]" * 200_000 + "}")
    with pytest.raises(PromptError, match="nests too deeply"):
        load_prompt(path)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", ["a", "b"], "name must be a non-empty string, not a list"),
        ("name", {"a": 1}, "name must be a non-empty string, not an object"),
        ("name", 7, "name must be a non-empty string, not a number"),
        ("name", "x" * 500, "name must be one line of at most 200 characters"),
        ("name", "two\nlines", "name must be one line"),
        ("max_turns", True, "max_turns must be a positive integer .*got True"),
        ("max_turns", 2.5, "max_turns must be a positive integer .*got 2.5"),
        ("max_turns", "5", "max_turns must be a positive integer .*got a string"),
        ("max_turns", 10**9, "max_turns must be a positive integer \\(at most 1000\\)"),
        ("action_pattern", 5, "action_pattern must be a string, not a number"),
        ("action_pattern", ["(a)"], "action_pattern must be a string, not a list"),
        ("input_template", 5, "input_template must be a string, not a number"),
        ("input_template", {"x": "{input}"}, "input_template must be a string, not an object"),
        ("input_template", None, "input_template must be a string with \\{input\\}, not null"),
        ("student_template", ["{input}"], "student_template must be a string, not a list"),
        ("messages", "hello", "'messages' must be a list .*not a string"),
        ("messages", [{"role": ["system"], "content": "x"}], "unknown role a list"),
        ("messages", [{"role": "user", "content": 3}], "content must be a string, not a number"),
    ],
)
def test_every_field_type_is_checked(tmp_path, field, value, message):
    data = {**OK, field: value}
    with pytest.raises(PromptError, match=message):
        prompt_from_dict(data, source="p.json")
    # The same through a YAML file: the error names the file, with no traceback-only types.
    import yaml

    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(PromptError, match=message):
        load_prompt(path)


def test_a_non_object_prompt_is_refused_by_prompt_from_dict():
    with pytest.raises(PromptError, match="must hold an object with 'messages', not a list"):
        prompt_from_dict([OK])  # type: ignore[arg-type]


def test_valid_fields_still_load(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(
        "name: shell\nmessages:\n  - {role: system, content: rules}\n"
        "input_template: 'T: {input}'\nstudent_template: 'S: {input}'\n"
        "action_pattern: 'Action: (\\w+)'\nmax_turns: 1000\n"
    )
    prompt = load_prompt(path)
    assert (prompt.name, prompt.max_turns) == ("shell", 1000)
    assert load_prompt(path).fingerprint == prompt.fingerprint
    # No name: the file's stem, as before.
    (tmp_path / "noname.json").write_text(json.dumps(OK))
    assert load_prompt(tmp_path / "noname.json").name == "noname"


def test_cli_gives_one_line_for_a_mistyped_prompt(tmp_path, capsys):
    from genpi.cli import main

    path = tmp_path / "bad.yaml"
    path.write_text("messages: [{role: system, content: x}]\naction_pattern: 5\n")
    assert main(["chat", "--prompt", str(path), "--input", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("genpi: error: prompt") and "action_pattern must be a string" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_atomic_json_write_leaves_no_empty_tmp_when_serialising_fails(tmp_path):
    from genpi.data import write_json_atomic

    path = tmp_path / "manifest.json"
    write_json_atomic(path, {"stage": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"stage": object()})  # not JSON-serialisable
    assert not (tmp_path / "manifest.json.tmp").exists()
    assert json.loads(path.read_text()) == {"stage": 1}  # the previous manifest is intact
