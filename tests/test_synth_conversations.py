"""Stage 2: role swapping, termination, the turn limit, batching, empty answers, backend errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from genpi.prompt import load_prompt, prompt_from_dict
from genpi.synth.config import END_TOKEN, SynthConfig
from genpi.synth.conversations import (
    agent_conversation,
    environment_conversation,
    environment_prefix,
    episode_ends,
    find_end_token,
    run_conversations,
)
from genpi.synth.pipeline import open_run

sys.path.insert(0, str(Path(__file__).parent))
from synth_scripted import ScriptedBackend  # noqa: E402

SHELL = prompt_from_dict(
    {
        "messages": [
            {"role": "system", "content": "You run shell commands."},
            {"role": "user", "content": "Task: how many lines does /etc/passwd have?"},
            {"role": "assistant", "content": "Action: run[wc -l /etc/passwd]"},
            {"role": "user", "content": "Output:\n27"},
            {"role": "assistant", "content": "Action: done[27]"},
            {"role": "user", "content": "Task: which file in /var/log is largest?"},
            {"role": "assistant", "content": "Action: done[syslog]"},
        ],
        "input_template": "Task: {input}",
        "action_pattern": r"Action:\s*((run|done)\[.*\])",
        "max_turns": 5,
    }
)


def test_episode_ends_are_final_actions():
    assert episode_ends(SHELL) == [4, 6]


def test_environment_prefix_swaps_roles_and_marks_episode_ends():
    env = environment_prefix(SHELL, END_TOKEN)
    assert env[0]["role"] == "system" and END_TOKEN in env[0]["content"]
    assert "You run shell commands." in env[0]["content"]  # the agent's system prompt, as context
    roles_contents = [(m["role"], m["content"]) for m in env[1:]]
    assert roles_contents == [
        ("assistant", "Task: how many lines does /etc/passwd have?"),
        ("user", "Action: run[wc -l /etc/passwd]"),
        ("assistant", "Output:\n27"),
        ("user", "Action: done[27]"),
        ("assistant", END_TOKEN),
        ("assistant", "Task: which file in /var/log is largest?"),
        ("user", "Action: done[syslog]"),
        ("assistant", END_TOKEN),
    ]


def test_environment_conversation_makes_agent_turns_its_user_turns():
    turns = [
        {"role": "assistant", "content": "Action: run[ls]"},
        {"role": "user", "content": "Output:\na b"},
        {"role": "assistant", "content": "Action: done[2]"},
    ]
    env = environment_conversation(SHELL, "count files", turns, END_TOKEN)
    # Strictly alternating after the system turn (neighbouring turns of one role are joined).
    roles = [m["role"] for m in env[1:]]
    assert all(a != b for a, b in zip(roles, roles[1:], strict=False))
    assert env[-1] == {"role": "user", "content": "Action: done[2]"}
    assert env[-2] == {"role": "assistant", "content": "Output:\na b"}
    assert env[-4]["content"].endswith("Task: count files")  # the environment posed the task
    assert env[-4]["role"] == "assistant"
    agent = agent_conversation(SHELL, "count files", turns)
    assert agent[-4:] == [{"role": "user", "content": "Task: count files"}, *turns]


def test_os_prompt_role_swap(os_prompt_path):
    prompt = load_prompt(os_prompt_path)
    env = environment_prefix(prompt, END_TOKEN)
    assert [m["role"] for m in env] == ["system"] + ["assistant", "user"] * 3 + ["assistant"]
    assert env[1]["content"] == prompt.messages[0]["content"]
    assert env[-1]["content"] == END_TOKEN


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("[END_CONVERSATION]", 0),
        ("ok\n[end_conversation]", 3),
        ("END_CONVERSATION", 0),
        ("Output: 3", -1),
    ],
)
def test_find_end_token(text, found):
    assert find_end_token(text, END_TOKEN) == found


def _run(tmp_path, backend, *, n=5, **config):
    config = SynthConfig(n=n, num_gen_once=4, progress=False, **config)
    run = open_run(
        SHELL, tmp_path / "run", model_name="scripted", generator_name="scripted", config=config
    )
    from genpi.synth.inputs import run_inputs

    run_inputs(run, backend, config)
    backend.calls.clear()
    stats = run_conversations(run, backend, config)
    return run, stats


def test_conversations_end_at_the_token_and_are_batched(tmp_path):
    backend = ScriptedBackend(agent_turns=2)
    run, stats = _run(tmp_path, backend, n=5, batch_size=4)
    convs = run.read("conversations")
    assert sorted(c["id"] for c in convs) == sorted(r["id"] for r in run.read("inputs"))
    assert {c["end_reason"] for c in convs} == {"end_token"}
    for c in convs:
        assert [t["role"] for t in c["turns"]] == ["assistant", "user", "assistant"]
        assert c["final_action"] == "done[42]" and c["agent_turns"] == 2
        assert c["prompt_fingerprint"] == SHELL.fingerprint and c["settings"]["max_turns"] == 5
    # Two waves (4 + 1), each advanced with one agent and one environment call per turn.
    assert backend.calls == [4, 4, 4, 4, 1, 1, 1, 1]
    assert stats["end_token"] == 5 and stats["written"] == 5


def test_max_turns_stops_a_model_that_never_ends(tmp_path):
    backend = ScriptedBackend(agent_turns=99, never_end=True)
    run, stats = _run(tmp_path, backend, n=3, max_turns=3)
    convs = run.read("conversations")
    assert {c["end_reason"] for c in convs} == {"max_turns"}
    assert all(c["agent_turns"] == 3 and c["turns"][-1]["role"] == "assistant" for c in convs)
    assert stats["max_turns"] == 3


def test_empty_agent_answers_are_recorded(tmp_path):
    class Mute(ScriptedBackend):
        def _answer(self, conv):
            text = super()._answer(conv)
            return "" if text.startswith("Thought") else text

    run, stats = _run(tmp_path, Mute(), n=2)
    assert {c["end_reason"] for c in run.read("conversations")} == {"empty_agent"}
    assert stats["empty_agent"] == 2


def test_empty_second_turn_keeps_the_first_turns_action(tmp_path):
    class MuteLater(ScriptedBackend):
        def _answer(self, conv):
            text = super()._answer(conv)
            return "" if "done[" in text else text

    run, _ = _run(tmp_path, MuteLater(agent_turns=2), n=2)
    for c in run.read("conversations"):
        assert c["end_reason"] == "empty_agent"
        assert [t["role"] for t in c["turns"]] == ["assistant", "user"]
        assert c["final_action"] == "run[ls]"  # from the agent's last turn, not the environment's


def test_a_failing_backend_loses_only_the_wave_in_flight(tmp_path):
    backend = ScriptedBackend(agent_turns=1)
    config = SynthConfig(n=4, num_gen_once=4, progress=False, batch_size=2)
    run = open_run(
        SHELL, tmp_path / "run", model_name="scripted", generator_name="scripted", config=config
    )
    from genpi.synth.inputs import run_inputs

    run_inputs(run, backend, config)
    backend.calls.clear()
    backend.fail_calls = {len(backend.calls) + 3}  # the second wave's first call
    stats = run_conversations(run, backend, config)
    assert len(run.read("conversations")) == 2
    assert stats["backend_errors"] == 1 and stats["dropped_by_backend_errors"] == 2
    backend.fail_calls = set()
    run_conversations(run, backend, config)  # the rerun fills the gap, no duplicates
    ids = [c["id"] for c in run.read("conversations")]
    assert len(ids) == len(set(ids)) == 4
