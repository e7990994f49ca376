"""Structured inputs: the frame around the part that varies, found from the exemplars alone, and
stage 1 asking for that part only."""

from __future__ import annotations

import sys
from pathlib import Path

from genpi.prompt import prompt_from_dict
from genpi.synth.config import SynthConfig
from genpi.synth.frames import Frame, input_frame
from genpi.synth.inputs import parse_list, run_inputs
from genpi.synth.pipeline import open_run

sys.path.insert(0, str(Path(__file__).parent))
from synth_scripted import ScriptedBackend  # noqa: E402

PAGE = 'Observation:\n"Shop [SEP] Instruction: [SEP] {goal} [SEP] Search"\n\nActions:\n["search"]'


def test_one_exemplar_frames_its_longest_run_of_prose():
    page = PAGE.format(goal="i need a blue steel end table under 40 dollars")
    frame = input_frame([page])
    assert frame == Frame(
        'Observation:\n"Shop [SEP] Instruction: [SEP] ', ' [SEP] Search"\n\nActions:\n["search"]'
    )
    assert frame.slot_of(page) == "i need a blue steel end table under 40 dollars"
    assert frame.fill("a red lamp for my desk") == PAGE.format(goal="a red lamp for my desk")
    # Not in the frame: another page, a goal over two lines.
    assert frame.slot_of("Observation:\nsomething else") is None
    assert frame.slot_of(PAGE.format(goal="two\nlines")) is None


def test_one_exemplar_whose_rest_repeats_the_slots_words_has_no_frame():
    # The entity line names what the question names: it varies with the question, so the input
    # is continued whole (as a frame, every new question would get Austria and Hungary).
    task = "which rivers flow through both Austria and Hungary?\nEntities: [Austria, Hungary]"
    assert input_frame([task]) is None
    # Entities the question does not name, or only short words in common: a frame as before.
    other = "which rivers flow through both of these two countries?\nEntities: [Austria, Hungary]"
    assert input_frame([other]) == Frame("", "\nEntities: [Austria, Hungary]")
    page = PAGE.format(goal="i need a shop search bar for the kitchen")  # "search" in both
    assert input_frame([page]) is None
    assert input_frame([PAGE.format(goal="i need a bar of soap for the kitchen")]) is not None


def test_several_exemplars_frame_what_they_share_and_give_shared_first_words_to_the_slot():
    pages = [PAGE.format(goal=g) for g in ("i need soap", "i want a large red kettle")]
    frame = input_frame(pages)
    assert frame is not None and [frame.slot_of(p) for p in pages] == [
        "i need soap",
        "i want a large red kettle",
    ]


def test_no_frame_for_one_line_inputs_unlike_pages_or_prose_too_short():
    assert input_frame(["how many files are in /etc?", "list users"]) is None
    assert input_frame(["<html>\na\nb</html>", "<html>\nc\nd</html>"]) is None  # two lines vary
    assert input_frame(["Page:\n[SEP] buy soap [SEP]"]) is None  # 2 words: not a goal
    assert input_frame([]) is None


SHOP = prompt_from_dict(
    {
        "messages": [
            {"role": "user", "content": "You shop on the web. Use search[..] or click[..]."},
            {"role": "assistant", "content": "Ok."},
            {"role": "user", "content": PAGE.format(goal="i need a long lasting bottle of soap")},
            {"role": "assistant", "content": "Action:\nsearch[soap]"},
        ],
        "action_pattern": r"Action: *\n* *((search|click)\[.+?])",
        "max_turns": 10,
    }
)


def test_stage_one_asks_for_goals_and_keeps_whole_pages(tmp_path):
    class Goals(ScriptedBackend):
        listed: list[list[str]] = []

        def _answer(self, conv):
            if conv[-1]["role"] == "assistant":  # the generator, continuing the list of goals
                self.listed.append(parse_list(conv[-1]["content"] + " x")[:-1])
                n = len(self.listed)
                return f"i want {n} green mugs for tea\n3. a desk lamp number {n} with a dimmer"
            return "Action:\nsearch[mugs]"  # the teacher

    backend = Goals()
    config = SynthConfig(n=3, num_gen_once=4, batch_size=1, progress=False)
    run = open_run(SHOP, tmp_path / "run", model_name="s", generator_name="s", config=config)
    stats = run_inputs(run, backend, config, model=backend)
    inputs = [r["input"] for r in run.read("inputs")]
    assert inputs == [
        PAGE.format(goal="i want 1 green mugs for tea"),
        PAGE.format(goal="a desk lamp number 1 with a dimmer"),
        PAGE.format(goal="i want 2 green mugs for tea"),
    ]
    assert stats["input_frame"] == [
        'Observation:\n"Shop [SEP] Instruction: [SEP] ',
        ' [SEP] Search"\n\nActions:\n["search"]',
    ]
    assert stats["teacher_accepted"] == 3
    # The generator saw goals, never pages; the second list also holds a goal kept before.
    assert backend.listed[0] == ["i need a long lasting bottle of soap"]
    assert len(backend.listed[1]) == 3 and "i want 1 green mugs for tea" in backend.listed[1]
    # The report's variety is the goals', not the pages' (whose frame repeats).
    from genpi.synth.report import distinct_2, write_report

    goals = [
        r["input"][len('Observation:\n"Shop [SEP] Instruction: [SEP] ') :]
        for r in run.read("inputs")
    ]
    goals = [g[: g.index(" [SEP] Search")] for g in goals]
    report, _ = write_report(run)
    assert report["input_quality"]["distinct_2"] == distinct_2(goals)
    assert distinct_2(goals) != distinct_2(inputs)
    # Resumed for more: the inputs on disk are offered again as goals, and are not repeated.
    more = SynthConfig(n=5, num_gen_once=4, batch_size=1, progress=False)
    run_inputs(run, backend, more, model=backend)
    inputs = [r["input"] for r in run.read("inputs")]
    assert len(inputs) == len(set(inputs)) == 5
    assert all("\n" not in item for listed in backend.listed for item in listed)
    assert sum(goal.startswith("i want") for goal in backend.listed[-1]) >= 1
