"""Routing rules of ``genpi serve``: pure functions, no model."""

from __future__ import annotations

import pytest

from genpi.prompt import Prompt
from genpi.serve.router import RouteTable, read_template_input, route

SHELL = Prompt(
    messages=(
        {"role": "system", "content": "You are a shell agent."},
        {"role": "user", "content": "Task: list files"},
        {"role": "assistant", "content": "Action: run[ls]"},
    ),
    input_template="Task: {input}",
    name="shell",
)
FRENCH = Prompt(
    messages=({"role": "system", "content": "Translate to French."},),
    input_template="English: {input}\nFrench:",
    student_template="{input}",
    name="fr",
)


@pytest.fixture
def table() -> RouteTable:
    return RouteTable(base_names=("base",), prompts={"shell": SHELL, "fr": FRENCH})


@pytest.mark.parametrize(
    ("template", "content", "expected"),
    [
        ("Task: {input}", "Task: count files", "count files"),
        ("Task: {input}", "Task: ", ""),
        ("Task: {input}", "Job: count files", None),
        ("English: {input}\nFrench:", "English: cat\nFrench:", "cat"),
        ("English: {input}\nFrench:", "English: cat\nGerman:", None),
        ("{input}", "anything at all", "anything at all"),
        ("<{input}|{input}>", "<a|a>", "a"),
        ("<{input}|{input}>", "<a|b>", None),
        ("ab{input}ba", "aba", None),  # the text around the slot may not overlap
    ],
)
def test_read_template_input(template, content, expected):
    assert read_template_input(template, content) == expected


def test_prompted_request_goes_to_its_adapter_without_the_prefix(table):
    chosen = route(table, "base", SHELL.teacher_messages("count files in /etc"))
    assert chosen.adapter == "shell" and chosen.reason == "prompt" and chosen.stripped
    assert chosen.stripped_messages == 3  # SHELL's system turn and its example exchange
    assert chosen.prompt_input == "count files in /etc"
    assert chosen.messages == SHELL.student_messages("count files in /etc")


def test_student_template_is_what_the_adapter_sees(table):
    chosen = route(table, "base", FRENCH.teacher_messages("the cat"))
    assert chosen.adapter == "fr"
    assert chosen.messages == [{"role": "user", "content": "the cat"}]


def test_later_turns_are_kept_after_the_student_turn(table):
    later = [
        {"role": "assistant", "content": "Action: run[ls /etc]"},
        {"role": "user", "content": "Output:\nx"},
    ]
    chosen = route(table, "base", SHELL.teacher_messages("count") + later)
    assert chosen.adapter == "shell"
    assert chosen.messages == SHELL.student_messages("count") + later


@pytest.mark.parametrize(
    "edit",
    [
        lambda ms: [{**ms[0], "content": ms[0]["content"] + " "}, *ms[1:]],  # one character off
        lambda ms: ms[1:],  # a message missing
        lambda ms: [{**ms[0], "role": "user"}, *ms[1:]],  # another role
        lambda ms: ms[:-1],  # no input turn after the prefix
        lambda ms: [*ms[:-1], {"role": "user", "content": "Job: count"}],  # off the template
        lambda ms: [*ms[:-1], {"role": "assistant", "content": "Task: count"}],  # not a user turn
    ],
)
def test_anything_else_goes_to_the_base_model_unchanged(table, edit):
    messages = edit(SHELL.teacher_messages("count"))
    chosen = route(table, "base", messages)
    assert chosen.adapter is None and chosen.reason == "base" and not chosen.stripped
    assert chosen.stripped_messages == 0
    assert chosen.messages == messages


def test_naming_an_adapter_routes_to_it_and_strips_only_its_own_prompt(table):
    plain = [{"role": "user", "content": "hello"}]
    assert route(table, "fr", plain).adapter == "fr"
    assert route(table, "fr", plain).messages == plain
    own = route(table, "shell", SHELL.teacher_messages("count"))
    assert own.adapter == "shell" and own.stripped and own.reason == "model"
    assert own.stripped_messages == 3
    other = route(table, "fr", SHELL.teacher_messages("count"))  # the name wins; nothing stripped
    assert other.adapter == "fr" and not other.stripped and other.stripped_messages == 0
    assert other.messages == SHELL.teacher_messages("count")


def test_routing_by_prompt_can_be_turned_off(table):
    chosen = route(table, "base", SHELL.teacher_messages("count"), by_prompt=False)
    assert chosen.adapter is None and chosen.messages == SHELL.teacher_messages("count")


def test_the_longest_matching_prefix_wins():
    longer = Prompt(
        messages=(
            *SHELL.messages,
            {"role": "user", "content": "Task: two"},
            {"role": "assistant", "content": "Action: done[2]"},
        ),
        input_template="Task: {input}",
        name="longer",
    )
    table = RouteTable(base_names=("base",), prompts={"shell": SHELL, "longer": longer})
    assert route(table, "base", longer.teacher_messages("x")).adapter == "longer"
    assert route(table, "base", SHELL.teacher_messages("x")).adapter == "shell"


def test_known_model_names(table):
    assert table.knows("base") and table.knows("shell") and not table.knows("gpt-4")
    assert table.model_names() == ["base", "shell", "fr"]
