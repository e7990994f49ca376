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
    # A number written again inside the bold or the quotes (a small model nesting its lists).
    assert parse_list('2. **1. buy soap for me**\n3. "5. find a red kettle"') == [
        "buy soap for me",
        "find a red kettle",
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


@pytest.mark.parametrize("style", ["describe", "continue"])
def test_seed_inputs_are_shown_to_the_generator(tmp_path, style):
    from synth_scripted import ScriptedBackend

    class Recording(ScriptedBackend):
        seen: list[list[dict]] = []

        def _answer(self, conv):
            self.seen.append(conv)
            return super()._answer(conv)

    seeds = [f"seed problem number {i}" for i in range(8)]
    backend = Recording()
    _stage(tmp_path, backend, seeds=seeds, n=4, input_style=style)
    request = backend.seen[0]
    if style == "describe":
        assert "Examples of user inputs" in request[0]["content"]
        shown = [s for s in seeds if s in request[0]["content"]]
    else:  # the seeds and the demonstration are the start of the answer's numbered list
        listed = parse_list(request[-1]["content"] + " x")[:-1]
        assert len(listed) == 6 and "how many lines does /etc/passwd have?" in listed
        shown = [s for s in seeds if s in listed]
    assert len(shown) == 5


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

    request = input_request(SHELL, 3, [], "1.")  # the "describe" style
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

    run, _ = _stage(tmp_path, Continuing(), n=3, input_style="describe")
    assert [r["input"] for r in run.read("inputs")] == [
        "list /tmp",
        "count users",
        "show the disk usage of /var",
    ]


def test_continue_style_numbers_new_items_after_the_exemplars_and_reads_only_those(tmp_path):
    from genpi.synth.inputs import continuation_request
    from synth_scripted import ScriptedBackend

    request = continuation_request(3, ["list /tmp", "count users"])
    assert request.conversation[-1] == {
        "role": "assistant",
        "content": "1. list /tmp\n2. count users\n3.",
    }
    assert "3 new user inputs for this task" in request.conversation[0]["content"]
    assert (request.lead, request.last_number) == ("3.", 5)
    # An endpoint that cannot continue a message is shown the list and asked for 3 to 5.
    plain = continuation_request(3, ["list /tmp", "count users"], prefill=False)
    assert len(plain.conversation) == 1 and plain.lead == ""
    assert "1. list /tmp\n2. count users\n" in plain.conversation[0]["content"]
    assert "from 3 to 5" in plain.conversation[0]["content"]
    # Inputs that span paragraphs are listed and continued between tags.
    tagged = continuation_request(2, ["page 1\n\nTask: book a table"])
    assert tagged.conversation[-1]["content"] == (
        "1. <input>\npage 1\n\nTask: book a table\n</input>\n2. <input>\n"
    )

    class Continuing(ScriptedBackend):
        requests: list[list[dict]] = []
        params: list = []

        def generate(self, conversations, params):
            self.params.append(params)
            return super().generate(conversations, params)

        def _answer(self, conv):
            self.requests.append(conv)
            n = len(self.requests)
            if n == 1:  # one item, or a refusal after the prefill's number: not read as a list
                return "I would rather not."
            return f"count files in /opt{n}\n{n + 1}. show /srv{n} usage"

    backend = Continuing()
    run, stats = _stage(tmp_path, backend, n=3, batch_size=1, max_generated_exemplars=1)
    assert [r["input"] for r in run.read("inputs")] == [
        "count files in /opt2",
        "show /srv2 usage",
        "count files in /opt3",
    ]
    assert stats["input_style"] == "continue" and stats["no_list"] == 1
    # The first two requests list the demonstration; the third adds an input kept before it,
    # and its list stops at the number after the ones asked for.
    listed = [parse_list(r[-1]["content"] + " x")[:-1] for r in backend.requests]
    demo = "how many lines does /etc/passwd have?"
    assert listed[:2] == [[demo], [demo]] and demo in listed[2] and len(listed[2]) == 2
    assert set(listed[2]) - {demo} <= {"count files in /opt2", "show /srv2 usage"}
    assert [p.stop[0] for p in backend.params] == ["\n6.", "\n6.", "\n7."]


def test_continue_style_without_exemplars_asks_in_the_describe_style(tmp_path):
    from synth_scripted import ScriptedBackend

    bare = prompt_from_dict({"messages": [{"role": "system", "content": "You run commands."}]})
    from genpi.synth.config import SynthConfig
    from genpi.synth.inputs import run_inputs
    from genpi.synth.pipeline import open_run

    config = SynthConfig(n=2, num_gen_once=4, progress=False)
    run = open_run(bare, tmp_path / "run", model_name="s", generator_name="s", config=config)
    stats = run_inputs(run, ScriptedBackend(), config)
    assert stats["input_style"] == "describe" and stats["kept"] == 2


def test_the_last_item_of_an_answer_cut_off_by_the_token_cap_is_dropped(tmp_path):
    from genpi.llm import Generation
    from synth_scripted import ScriptedBackend

    class CutOff(ScriptedBackend):
        def generate(self, conversations, params):
            self.calls.append(len(conversations))
            return [Generation("list /var/tmp\n3. count the files in /opt and", 9, 9, "length")]

    run, stats = _stage(tmp_path, CutOff(), n=1, batch_size=1)
    assert [r["input"] for r in run.read("inputs")] == ["list /var/tmp"]
    assert stats["cut_off"] == 1 and stats["candidates"] == 2


def test_input_style_is_checked_and_a_run_recorded_before_it_resumes_as_it_was_asked(tmp_path):
    import argparse

    from genpi.synth.cli import add_setting_arguments, build_config
    from genpi.synth.config import SynthConfig

    with pytest.raises(ValueError, match="unknown input_style 'list'"):
        SynthConfig(input_style="list")
    parser = argparse.ArgumentParser()
    add_setting_arguments(parser)
    parser.add_argument("--preset", default=None)
    parser.add_argument("--no-progress", action="store_true")
    with pytest.raises(SystemExit):
        parser.parse_args(["--input-style", "list"])
    args = parser.parse_args([])
    assert build_config(args, {"n": 7}).input_style == "describe"  # recorded before the field
    assert build_config(args, {"n": 7, "input_style": "continue"}).input_style == "continue"
    assert build_config(parser.parse_args(["--preset", "cpu"])).input_style == "continue"
    # The generator's temperature is a flag too, checked.
    assert build_config(parser.parse_args(["--input-temperature", "0.5"])).input_temperature == 0.5
    cpu_at_paper_temperature = parser.parse_args(["--preset", "cpu", "--input-temperature", "1"])
    assert build_config(cpu_at_paper_temperature).input_temperature == 1.0  # over the preset's 0.7
    with pytest.raises(GenpiError, match=r"--input-temperature must be in \[0, 2\], got 3.0"):
        build_config(parser.parse_args(["--input-temperature", "3"]))
    # The request limit (a guard against a generator whose items are all dropped) is a flag.
    cpu = build_config(parser.parse_args(["--preset", "cpu"]))
    assert cpu.max_input_requests is None and cpu.input_request_limit() == 4 * -(-cpu.n // 8)
    raised = build_config(parser.parse_args(["--preset", "cpu", "--max-input-requests", "50"]))
    assert raised.input_request_limit() == 50
    with pytest.raises(GenpiError, match="--max-input-requests must be at least 1, got 0"):
        build_config(parser.parse_args(["--max-input-requests", "0"]))
