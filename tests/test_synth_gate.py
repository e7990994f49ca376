"""Stage 1's quality: the gate's reasons, the teacher's check, exemplars and focus per request,
the report's input section, and counts that stay right across a SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from genpi.data import read_jsonl
from genpi.prompt import load_prompt, prompt_from_dict
from genpi.synth.config import SynthConfig
from genpi.synth.inputs import (
    DROP_REASONS,
    DemonstrationReplay,
    InputGate,
    demonstration_inputs,
    input_request,
    instruction_aspects,
    parse_list,
    run_inputs,
)
from genpi.synth.pipeline import open_run
from genpi.synth.report import distinct_2, write_report
from genpi.synth.rundir import INPUTS_LOG

sys.path.insert(0, str(Path(__file__).parent))
from synth_scripted import ScriptedBackend  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# Hand-made items and the gate's exact verdict on each, in order (duplicates of earlier ones).
VERDICTS = [
    ("", "empty"),
    ("  ?? ", "empty"),
    ("2", "too_short"),
    ("#1", "too_short"),
    ("SELECTION:", "too_short"),
    ("<instruction_out_of_original_answer_with_deny_reserved_return_params>", "too_short"),
    ("### Linux tasks for beginners", "too_short"),
    ("Disk tasks:", "too_short"),
    ("count the files in /var/tmp and " * 60, "too_long"),
    ("How many lines does /etc/passwd have", "demo_copies"),
    ("Never ask the user a question, never explain outside the Thought line", "echo"),
    (
        "Prefer short, standard commands (ls, wc, grep, find, du, awk, cat, head, tail, sort).",
        "echo",
    ),
    ("stop and give the final answer to the user", "echo"),
    ("count the files in /var/tmp", None),
    ("Count the files in /var/tmp.", "exact_duplicates"),
    ("count all the files in /var/tmp", "near_duplicates"),
    ("which user owns the largest file in /home?", None),
    ("list users", None),
]


def test_gate_gives_each_hand_made_item_its_reason(example_prompt_path):
    gate = InputGate(load_prompt(example_prompt_path))
    assert [(text, gate.offer(text)) for text, _ in VERDICTS] == VERDICTS
    expected = {reason: 0 for reason in gate.counts}
    for _, reason in VERDICTS:
        if reason:
            expected[reason] += 1
    assert gate.counts == expected


def test_gate_limits_follow_the_prompts_own_inputs():
    # Real inputs of one word: a one-word item is not a fragment here.
    words = prompt_from_dict(
        {
            "messages": [
                {"role": "system", "content": "Translate the word into French."},
                {"role": "user", "content": "Word: house"},
                {"role": "assistant", "content": "maison"},
            ],
            "input_template": "Word: {input}",
        }
    )
    gate = InputGate(words)
    assert gate.offer("garden") is None and gate.offer("5") == "too_short"
    # Real inputs of a page: twice the longest is still not too long.
    page = "<div> " + "a product listing with a price " * 100 + "</div>"
    pages = prompt_from_dict(
        {
            "messages": [
                {"role": "user", "content": page},
                {"role": "assistant", "content": "Answer: B."},
            ],
            "action_pattern": r"Answer:\s*([A-Z])",
            "max_turns": 1,
        }
    )
    gate = InputGate(pages)
    assert gate.offer("<div> " + "a catalogue of shoes in many sizes " * 120 + "</div>") is None
    assert gate.offer("xy " * 3 * len(page)) == "too_long"


def test_demonstration_inputs_of_three_prompt_shapes():
    os_like = prompt_from_dict(
        {
            "messages": [
                {"role": "user", "content": "Act as a shell.\n\nNow, my problem is:\n\nlist /etc"},
                {"role": "assistant", "content": "Act: bash"},
                {"role": "user", "content": "The output of the OS:\na b"},
                {"role": "assistant", "content": "Act: answer(2)"},
            ],
            "input_template": "Now, I will start a new problem. My problem is:\n\n{input}",
            "action_pattern": r"Act:\s*(bash|answer\(.*\))",
        }
    )
    assert demonstration_inputs(os_like) == ["list /etc"]
    # Instructions copied out of the turn that holds the demonstration are echoes, not copies.
    assert InputGate(os_like).offer("act as a shell") == "echo"
    shop_like = prompt_from_dict(
        {
            "messages": [
                {"role": "user", "content": "You are web shopping. Use search[..] or click[..]."},
                {"role": "assistant", "content": "Ok."},
                {"role": "user", "content": 'Observation:\n"Instruction: buy soap"\n\nActions: []'},
                {"role": "assistant", "content": "Action:\nsearch[soap]"},
                {"role": "user", "content": "Observation:\nresults page"},
                {"role": "assistant", "content": "Action:\nclick[soap]"},
            ],
            "action_pattern": r"Action: *\n* *((search|click)\[.+?])",
            "max_turns": 10,
        }
    )
    # The preamble is instructions; the later observation is the environment's, not a task.
    assert demonstration_inputs(shop_like) == [
        'Observation:\n"Instruction: buy soap"\n\nActions: []'
    ]
    one_step = prompt_from_dict(
        {
            "messages": [
                {"role": "user", "content": "page 1\n\nTask: book a table"},
                {"role": "assistant", "content": "Answer: C."},
                {"role": "user", "content": "page 2\n\nTask: rent a car"},
                {"role": "assistant", "content": "Answer: A."},
            ],
            "action_pattern": r"Answer:\s*([A-Z])",
            "max_turns": 1,
        }
    )
    assert demonstration_inputs(one_step) == [
        "page 1\n\nTask: book a table",
        "page 2\n\nTask: rent a car",
    ]
    # Inputs with blank lines are shown and asked for between tags, and read back whole.
    request = input_request(one_step, 2, demonstration_inputs(one_step), "1.")
    assert "<input>\npage 1\n\nTask: book a table\n</input>" in request[0]["content"]
    assert request[-1]["content"] == "1. <input>\n"
    assert parse_list("1. <input>\npage 3\n\nTask: x y\n</input>\n2. <input>\nz w\n</input>") == [
        "page 3\n\nTask: x y",
        "z w",
    ]


MANY_DEMOS = prompt_from_dict(
    {
        "messages": [
            {
                "role": "system",
                "content": "You answer questions about files on a Linux machine. Prefer short, "
                "standard commands like ls and wc. Give the final answer in done[...] only.",
            },
            *[
                m
                for i in range(8)
                for m in (
                    {"role": "user", "content": f"Task: count the lines of file number{i}.txt"},
                    {"role": "assistant", "content": f"Action: done[{i}]"},
                )
            ],
        ],
        "input_template": "Task: {input}",
        "action_pattern": r"Action:\s*((run|done)\[.*\])",
    }
)


class Recording(ScriptedBackend):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.requests: list[str] = []

    def _answer(self, conv):
        if "new user inputs for this task" in conv[0]["content"]:
            self.requests.append(conv[0]["content"])
        return super()._answer(conv)


def _stage(tmp_path, prompt, backend, model=None, **kw):
    config = SynthConfig(**{"num_gen_once": 4, "progress": False, "batch_size": 1, **kw})
    run = open_run(prompt, tmp_path / "run", model_name="s", generator_name="s", config=config)
    return run, run_inputs(run, backend, config, model=model)


def test_every_request_shows_other_demonstrations_and_another_focus(tmp_path):
    demos = demonstration_inputs(MANY_DEMOS)
    backend = Recording()
    _stage(tmp_path, MANY_DEMOS, backend, n=12, input_style="describe")
    assert len(backend.requests) == 3
    shown = [frozenset(d for d in demos if f"- {d}\n" in r) for r in backend.requests]
    assert all(len(s) == 5 for s in shown) and len(set(shown)) > 1
    aspects = instruction_aspects(MANY_DEMOS)
    assert aspects == [
        "You answer questions about files on a Linux machine.",
        "Prefer short, standard commands like ls and wc.",
        "Give the final answer in done[...] only.",
    ]
    focus = [next(a for a in aspects if f'matters: "{a}"' in r) for r in backend.requests]
    assert len(set(focus)) > 1


def test_every_continued_list_starts_from_other_demonstrations_and_kept_inputs(tmp_path):
    demos = demonstration_inputs(MANY_DEMOS)

    class Lists(ScriptedBackend):
        listed: list[list[str]] = []

        def _answer(self, conv):
            if conv[-1]["role"] == "assistant":
                self.listed.append(parse_list(conv[-1]["content"] + " x")[:-1])
            return super()._answer(conv)

    backend = Lists()
    run, _ = _stage(tmp_path, MANY_DEMOS, backend, n=12)
    kept = [r["input"] for r in run.read("inputs")]
    assert len(backend.listed) == 3
    assert all(sum(item in demos for item in listed) == 5 for listed in backend.listed)
    assert len({frozenset(listed) for listed in backend.listed}) == 3
    # From the second request on, two inputs kept by the earlier ones are in the list too.
    assert [sum(item in kept for item in listed) for listed in backend.listed] == [0, 2, 2]


def test_too_short_is_a_third_of_the_shortest_real_input():
    ten_words = prompt_from_dict(
        {
            "messages": [
                {
                    "role": "user",
                    "content": "Task: tell me how many files are in the directory /etc",
                },
                {"role": "assistant", "content": "Action: done[220]"},
            ],
            "input_template": "Task: {input}",
        }
    )
    gate = InputGate(ten_words)
    assert gate.min_words == 4
    assert [gate.offer(x) for x in ("Virus scanner.", "Containers in Docker?")] == [
        "too_short",
        "too_short",
    ]
    assert gate.offer("how big is /var/log?") is None
    # One-line real inputs: an item that runs on over more lines is a pasted log, not an input.
    assert gate.offer("[user1] - 12 months ago - a line of food\n[user1] - shoutout") == "too_long"


def test_teacher_check_keeps_what_the_teacher_acts_on_and_stores_its_answer(
    tmp_path, example_prompt_path
):
    prompt = load_prompt(example_prompt_path)
    backend = ScriptedBackend(junk=True, reject_word="weather")
    run, stats = _stage(tmp_path, prompt, backend, model=backend, n=6)
    records = run.read("inputs")
    assert len(records) == 6 and not any("weather" in r["input"] for r in records)
    assert all(r["first_agent_turn"] == "Thought: I will look.\nAction: run[ls]" for r in records)
    assert stats["teacher_check"] == "on" and stats["teacher_rejected"] >= 1
    assert stats["teacher_accepted"] == stats["teacher_checked"] - stats["teacher_rejected"]
    assert stats["teacher_copied"] == 0  # run[ls]: "ls" is the instructions' word, not a copy
    dropped = sum(stats[r] for r in DROP_REASONS)
    assert stats["candidates"] == stats["kept"] + dropped
    assert stats["too_short"] == 3 * stats["responses"] and stats["demo_copies"] >= 1
    # The role-play starts from the stored answer: no agent call for the first turn.
    from genpi.synth.conversations import run_conversations

    backend.calls.clear()
    conv_stats = run_conversations(run, backend, SynthConfig(n=6, progress=False, batch_size=6))
    assert conv_stats["first_turns_reused"] == 6 and backend.calls == [6, 6, 6]
    report, text = write_report(run)
    quality = report["input_quality"]
    assert quality["input_style"] == "continue" and "requests (continue style)" in text
    assert quality["teacher_accepted_pct"] == round(
        100 * stats["teacher_accepted"] / stats["teacher_checked"], 1
    )
    assert quality["dropped"]["teacher_rejected"] == stats["teacher_rejected"]
    assert len(quality["sample"]) == 5 and all(
        s in [r["input"] for r in records] for s in quality["sample"]
    )
    assert "teacher's check:" in text and "5 random kept inputs:" in text


SHOP = prompt_from_dict(
    {
        "messages": [
            {"role": "user", "content": "You are web shopping. Use search[..] or click[..]."},
            {"role": "assistant", "content": "Ok."},
            {"role": "user", "content": 'Page: "Instruction: buy lavender soap" [SEP] Search'},
            {"role": "assistant", "content": "Action:\nsearch[lavender soap]"},
            {"role": "user", "content": "Page: B07XK2 [SEP] Lavender Soap [SEP] $4.99"},
            {"role": "assistant", "content": "Action:\nclick[B07XK2]"},
            {"role": "user", "content": "Page: Lavender Soap [SEP] Buy Now"},
            {"role": "assistant", "content": "Action:\nclick[Buy Now]"},
        ],
        "action_pattern": r"Action: *\n* *((search|click)\[.+?])",
        "max_turns": 10,
    }
)


def test_demonstration_words_are_the_demonstrations_own_values():
    words = DemonstrationReplay.of(SHOP).demonstration_words
    assert {"b07xk2", "buy", "now", "lavender", "soap", "99"} <= words
    # The instructions' words are not a demonstration's: acting with them is no copy.
    assert not {"search", "click", "web", "shopping", "you"} & words
    # One-character words ("4" of $4.99) say nothing of where an action came from.
    assert all(len(w) >= 2 for w in words)


# Hand-made (action, input) pairs and whether the action replays a demonstration.
COPIES = [
    ("click[Buy Now]", 'Page: "Instruction: a red kettle under $30" [SEP] Search', True),
    ("click[B07XK2]", 'Page: "Instruction: a red kettle under $30" [SEP] Search', True),
    ("search[lavender soap]", 'Page: "Instruction: a red kettle under $30" [SEP] Search', True),
    # Built from the input: the goal's words, or a button the page has.
    ("search[red kettle]", 'Page: "Instruction: a red kettle under $30" [SEP] Search', False),
    ("click[Buy Now]", "Page: Red Kettle [SEP] $25 [SEP] Buy Now", False),
    ("search[lavender soap]", 'Page: "Instruction: lavender soap, 2 bars" [SEP] Search', False),
    # Nothing from the input, but nothing a demonstration owns either: a guess, not a copy.
    ("search[cheap things]", 'Page: "Instruction: a red kettle under $30" [SEP] Search', False),
    ("click[Search]", 'Page: "Instruction: a red kettle under $30" [SEP] Search', False),
]


def test_demonstration_replay_gives_each_hand_made_action_its_verdict():
    replay = DemonstrationReplay.of(SHOP)
    assert [(a, x, replay.replays(a, x)) for a, x, _ in COPIES] == COPIES
    # A borrowed command applied to the input's own file is not a copy (the example prompt's
    # demonstration runs "wc -l < /etc/passwd"); its demonstration's answer is.
    shell = load_prompt(ROOT / "examples" / "shell_agent.json")
    shell_replay = DemonstrationReplay.of(shell)
    assert not shell_replay.replays("run[wc -l < notes.txt]", "Task: lines in notes.txt?")
    assert shell_replay.replays("done[/var/log/syslog]", "Task: what time is it?")
    # An action in a language: its keywords are the demonstrations' words, but a query that
    # names the input's table, or writes anything new, is the teacher's own.
    sql = prompt_from_dict(
        {
            "messages": [
                {
                    "role": "system",
                    "content": "Tables: customers(id, city), orders(id, total). "
                    "Reply with Action: sql[QUERY] or Action: final[ANSWER].",
                },
                {"role": "user", "content": "Question: how many products are out of stock?"},
                {"role": "assistant", "content": "Action: sql[SELECT COUNT(*) FROM products]"},
                {"role": "user", "content": "Result: 17"},
                {"role": "assistant", "content": "Action: final[17]"},
            ],
            "input_template": "Question: {input}",
            "action_pattern": r"Action:\s*((sql|final)\[.*\])",
        }
    )
    sql_replay = DemonstrationReplay.of(sql)
    assert sql_replay.action_names == {"action", "sql", "final"}  # \s is no word
    question = "Question: how many customers live in Lyon?"
    assert [
        sql_replay.replays(a, question)
        for a in (
            "sql[SELECT COUNT(*) FROM customers WHERE city = 'Lyon']",
            "sql[SELECT AVG(total) FROM orders]",
            "sql[SELECT COUNT(*) FROM products]",
            "final[17]",
        )
    ] == [False, False, True, True]


class CopyingTeacher(ScriptedBackend):
    """Answers a task holding ``word`` with the example prompt's demonstration's answer."""

    def __init__(self, word: str, **kw):
        super().__init__(**kw)
        self.word = word

    def _answer(self, conv):
        last = conv[-1]["content"]
        if last.startswith("Task: ") and self.word in last:
            return "Thought: The largest file is syslog.\nAction: done[/var/log/syslog]"
        return super()._answer(conv)


def test_teacher_check_drops_an_answer_that_replays_a_demonstration(tmp_path, example_prompt_path):
    prompt = load_prompt(example_prompt_path)
    backend = CopyingTeacher("weather", junk=True)  # the junk lists hold a "weather" task each
    run, stats = _stage(tmp_path, prompt, backend, model=backend, n=6)
    records = run.read("inputs")
    assert len(records) == 6 and not any("weather" in r["input"] for r in records)
    assert stats["teacher_copied"] >= 1 and stats["teacher_rejected"] == 0
    assert stats["teacher_accepted"] == stats["teacher_checked"] - stats["teacher_copied"]
    assert stats["candidates"] == stats["kept"] + sum(stats[r] for r in DROP_REASONS)
    log = list(read_jsonl(run.path / INPUTS_LOG))
    copied = [
        t for line in log for reason, t in line.get("dropped", []) if reason == "teacher_copied"
    ]
    assert len(copied) == stats["teacher_copied"] and all("weather" in t for t in copied)
    report, _ = write_report(run)
    assert report["input_quality"]["dropped"]["teacher_copied"] == stats["teacher_copied"]


def test_teacher_check_off_or_without_action_pattern_keeps_all(tmp_path, example_prompt_path):
    prompt = load_prompt(example_prompt_path)
    backend = ScriptedBackend(reject_word="weather", junk=True)
    run, stats = _stage(tmp_path / "off", prompt, backend, model=backend, n=5, teacher_check=False)
    assert stats["teacher_check"] == "off" and stats["teacher_checked"] == 0
    assert any("weather" in r["input"] for r in run.read("inputs"))
    plain = prompt_from_dict({**prompt.to_dict(), "action_pattern": None})
    run, stats = _stage(tmp_path / "plain", plain, backend, model=backend, n=5)
    assert stats["teacher_check"] == "skipped: the prompt has no action_pattern"
    assert not any("first_agent_turn" in r for r in run.read("inputs"))
    run, stats = _stage(tmp_path / "none", prompt, backend, n=5)
    assert stats["teacher_check"] == "skipped: no target model given"


def test_distinct_2():
    assert distinct_2(["a b c", "a b d"]) == 0.75 and distinct_2(["one"]) is None


def test_sigkill_between_the_log_and_the_records_counts_every_item_once(
    tmp_path, example_prompt_path
):
    out = tmp_path / "run"
    script = ROOT / "tests" / "synth_scripted.py"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, str(script), str(out), str(example_prompt_path), "10", "0"]
    proc = subprocess.Popen([*cmd, "2"], env=env)  # stops after the 2nd line of the log
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out / "paused").exists():
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert (out / "paused").exists(), "the run should stop after the log's second line"
    logged = [r["id"] for line in read_jsonl(out / INPUTS_LOG) for r in line.get("kept", [])]
    on_disk = [r["id"] for r in read_jsonl(out / "inputs.jsonl")]
    assert len(on_disk) < len(logged), "the kill should land between the log and the records"
    subprocess.run([*cmd, "0"], env=env, check=True, timeout=120)
    inputs = read_jsonl(out / "inputs.jsonl")
    ids = [r["id"] for r in inputs]
    assert len(ids) == len(set(ids)) == 10
    lines = read_jsonl(out / INPUTS_LOG)
    logged = [r["id"] for line in lines for r in line.get("kept", [])]
    assert sorted(logged) == sorted(ids)  # every record counted once, every counted one on disk
    stats = json.loads((out / "manifest.json").read_text())["stages"]["inputs"]
    dropped = {
        r: sum(1 for line in lines for d in line.get("dropped", []) if d[0] == r)
        for r in DROP_REASONS
    }
    assert all(stats[r] == dropped[r] for r in DROP_REASONS)
    assert stats["kept"] == stats["total_kept"] == 10
    assert stats["candidates"] == stats["kept"] + sum(dropped.values())
    assert stats["requests"] == sum(line["stats"].get("requests", 0) for line in lines)
    assert stats["teacher_rejected"] >= 1 and stats["too_short"] >= 3
    # The role-play reused the teacher's answers: its first turns are the stored ones.
    first = {r["id"]: r["first_agent_turn"] for r in inputs}
    conversations = read_jsonl(out / "conversations.jsonl")
    assert len(conversations) == 10
    assert all(c["turns"][0]["content"] == first[c["id"]] for c in conversations)
