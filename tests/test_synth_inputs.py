"""Stage 1: list parsing, duplicate and demonstration-copy removal, seed files, the stage's loop."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from genpi.errors import GenpiError
from genpi.prompt import prompt_from_dict
from genpi.synth.inputs import InputFilter, demonstration_inputs, parse_list, read_seed_inputs

sys.path.insert(0, str(Path(__file__).parent))

SHELL = prompt_from_dict(
    {
        "messages": [
            {"role": "system", "content": "You run shell commands."},
            {"role": "user", "content": "Task: how many lines does /etc/passwd have?"},
            {"role": "assistant", "content": "Action: done[27]"},
        ],
        "input_template": "Task: {input}",
    }
)
# AgentBench OS style: the demonstration's problem sits inside a long instruction turn.
OS_LIKE = prompt_from_dict(
    {
        "messages": [
            {
                "role": "user",
                "content": 'You act on a linux OS. Now, my problem is:\n\ntell me how many files are in the directory "/etc"?',
            },
            {"role": "assistant", "content": "Act: answer(220)"},
        ],
        "input_template": "Now, I will start a new problem in a new OS. My problem is:\n\n{input}",
    }
)


def test_parse_dot_and_paren_numbering_with_chatter():
    text = "Here are some tasks:\n\n1. list the files in /tmp\n2) count users\n(3) show disk usage\n\nI hope these help!"
    assert parse_list(text) == ["list the files in /tmp", "count users", "show disk usage"]


def test_parse_multiline_items_and_indented_continuation():
    text = "1. find the largest file\n   under /var/log\n2. print the kernel\nversion\n\n    and its build date\n3. count users"
    assert parse_list(text) == [
        "find the largest file\nunder /var/log",
        "print the kernel\nversion\nand its build date",
        "count users",
    ]


def test_parse_strips_labels_quotes_and_markdown():
    text = '1. **Task:** "how big is /home?"\n2. Problem: `uname -r` output\n**3.** which shell am I using'
    assert parse_list(text) == [
        "how big is /home?",
        "`uname -r` output",
        "which shell am I using",
    ]


def test_parse_bullets_only_when_nothing_is_numbered():
    assert parse_list("Ideas:\n- count files\n- list users") == ["count files", "list users"]
    assert parse_list("1. count files\n- a detail\n2. list users") == [
        "count files\n- a detail",
        "list users",
    ]


@pytest.mark.parametrize(
    "text", ["", "I cannot help with that.", "Sure! Here is one: count the files."]
)
def test_parse_no_list(text):
    assert parse_list(text) == []


def test_filter_drops_exact_and_near_duplicates_and_empties():
    filt = InputFilter(SHELL, threshold=0.8)
    assert filt.offer("count the files in /etc")
    assert not filt.offer("Count the files in /etc.")  # exact after normalization
    assert not filt.offer("count all the files in /etc")  # near: Jaccard 5/6
    assert filt.offer("count the files in /var")  # different directory: kept
    assert not filt.offer("  ?? ")
    assert filt.counts == {
        "empty": 1,
        "exact_duplicates": 1,
        "near_duplicates": 1,
        "demo_copies": 0,
    }


def test_filter_drops_copies_of_the_prompts_demonstrations():
    assert demonstration_inputs(SHELL) == ["how many lines does /etc/passwd have?"]
    filt = InputFilter(SHELL)
    assert not filt.offer("How many lines does /etc/passwd have")
    os_filter = InputFilter(OS_LIKE)
    assert not os_filter.offer('tell me how many files are in the directory "/etc"?')
    assert os_filter.offer("how many users are in the group sudo?")
    assert filt.counts["demo_copies"] == 1 and os_filter.counts["demo_copies"] == 1


def test_seed_inputs_lines_and_jsonl(tmp_path):
    plain = tmp_path / "seeds.txt"
    plain.write_text("count files\n\nlist users\n")
    assert read_seed_inputs(plain) == ["count files", "list users"]
    jsonl = tmp_path / "seeds.jsonl"
    jsonl.write_text('{"input": "count files"}\n"list users"\n')
    assert read_seed_inputs(jsonl) == ["count files", "list users"]
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(GenpiError, match="holds no inputs"):
        read_seed_inputs(empty)
    with pytest.raises(GenpiError, match="cannot be read"):
        read_seed_inputs(tmp_path / "missing.txt")


def _stage(tmp_path, backend, seeds=None, **kw):
    from genpi.synth.config import SynthConfig
    from genpi.synth.inputs import run_inputs
    from genpi.synth.pipeline import open_run

    config = SynthConfig(**{"num_gen_once": 4, "progress": False, **kw})
    run = open_run(SHELL, tmp_path / "run", model_name="s", generator_name="s", config=config)
    return run, run_inputs(run, backend, config, seed_inputs=seeds)


def test_stage_stops_at_n_and_counts_duplicates_across_requests(tmp_path):
    from synth_scripted import ScriptedBackend

    repeated = (
        "1. list /tmp\n2. count users\n3. list /tmp\n4. how many lines does /etc/passwd have?"
    )
    run, stats = _stage(
        tmp_path, ScriptedBackend(list_text=repeated), n=5, max_input_requests=3, batch_size=1
    )
    assert [r["input"] for r in run.read("inputs")] == ["list /tmp", "count users"]
    assert stats["exact_duplicates"] == 1 + 2 * 3 and stats["demo_copies"] == 3
    assert stats["exhausted"] and stats["requests"] == 3
    run, stats = _stage(tmp_path / "b", ScriptedBackend(), n=5)  # 4 fresh items per request
    records = run.read("inputs")
    assert len(records) == 5 and stats["surplus"] == 3
    assert all(r["split"] in ("train", "heldout") for r in records)


def test_seed_inputs_are_shown_to_the_generator(tmp_path):
    from synth_scripted import ScriptedBackend

    class Recording(ScriptedBackend):
        seen: list[str] = []

        def _answer(self, conv):
            self.seen.append(conv[0]["content"])
            return super()._answer(conv)

    seeds = [f"seed problem number {i}" for i in range(8)]
    backend = Recording()
    _stage(tmp_path, backend, seeds=seeds, n=4)
    shown = [s for s in seeds if s in backend.seen[0]]
    assert len(shown) == 5 and "Examples of user inputs" in backend.seen[0]


def test_given_inputs_come_first_and_the_generator_tops_up(tmp_path):
    from genpi.synth.config import SynthConfig
    from genpi.synth.inputs import import_inputs
    from genpi.synth.pipeline import open_run
    from synth_scripted import ScriptedBackend

    config = SynthConfig(n=6, num_gen_once=4, progress=False)
    run = open_run(SHELL, tmp_path / "run", model_name="s", generator_name="s", config=config)
    given = ["list /tmp", "list /tmp", "how many lines does /etc/passwd have?", "count users"]
    assert import_inputs(run, given, config)["given_kept"] == 2
    assert import_inputs(run, given, config)["given_kept"] == 0  # a rerun adds nothing twice
    from genpi.synth.inputs import run_inputs

    run_inputs(run, ScriptedBackend(), config)
    records = run.read("inputs")
    assert [r["input"] for r in records[:2]] == ["list /tmp", "count users"]
    assert len(records) == 6 and len({r["id"] for r in records}) == 6


def test_request_ends_with_the_prefill_and_the_answer_is_read_after_it(tmp_path):
    from genpi.synth.inputs import continued, input_request
    from synth_scripted import ScriptedBackend

    request = input_request(SHELL, 3, [], "1.")
    assert request[-1] == {"role": "assistant", "content": "1."}
    assert input_request(SHELL, 3, [])[-1]["role"] == "user"
    # The generator continues after "1."; an endpoint that ignored the prefill starts over.
    assert continued("1.", "list /tmp\n2. count users") == "1. list /tmp\n2. count users"
    assert continued("1.", "1. list /tmp") == "1. list /tmp"
    assert continued("", "list /tmp") == "list /tmp"

    class Continuing(ScriptedBackend):
        def _answer(self, conv):
            assert conv[-1] == {"role": "assistant", "content": "1."}
            return "list /tmp\n2. #2. count users\n3. show the disk usage of /var"

    run, _ = _stage(tmp_path, Continuing(), n=3)
    assert [r["input"] for r in run.read("inputs")] == [
        "list /tmp",
        "count users",
        "show the disk usage of /var",
    ]
