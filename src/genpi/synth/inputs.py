"""Stage 1: pseudo user inputs, written by the generator from the prompt alone.

The generator writes numbered lists of new user inputs, sampled with top-p 0.9 and T 1.0, in
one of two styles (``SynthConfig.input_style``). "continue" (the default): it continues a
numbered list of exemplars in their exact shape — a random subset of the prompt's own
demonstration inputs, ``--seed-inputs`` and inputs kept by earlier requests — without the
prompt's text, which derails a small generator. "describe" (the paper's): it reads the prompt as
a document, with a random subset of the exemplars and a focus sentence drawn from the prompt's
instructions, and writes a list. Either way every request shows other exemplars, so that the
lists do not repeat one another. Structured inputs (a page with a goal in it) are asked for, in
the "continue" style, by the part that varies between tasks, put back into the exemplars'
frame afterwards (``genpi.synth.frames``).

Every parsed item passes a quality gate, with a counted reason for every drop: empty, too short
to be a task (a number, a bare label, a heading, a markup fragment), too long, an echo of the
prompt's own text, a copy of a demonstration, an exact or near duplicate. Then the teacher's
check (``teacher_check``, where the prompt has an ``action_pattern``): the target model *with*
the prompt answers the input, and the input is kept only when that answer holds an action the
prompt's reader reads, and that action is not a demonstration's replayed (nothing of the input
in it, a demonstration's own value instead: ``DemonstrationReplay``). The answer is stored with
the input and reused as the first agent turn of the role-play (stage 2), so the check costs no
extra generation.

Counts live in ``inputs.log.jsonl``, one line per batch, written before the batch's records: a
run killed between the two writes is repaired from the log on resume, so nothing is counted twice
or lost from the counts.

Run as: genpi synth inputs --prompt examples/shell_agent.json --out runs/shell --n 100
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genpi.data import read_jsonl, split_of
from genpi.errors import GenpiError
from genpi.llm import Backend, SamplingParams
from genpi.prompt import INPUT_SLOT, Prompt
from genpi.synth.common import GuardedBackend, StageAborted, add_stats, progress
from genpi.synth.config import SynthConfig
from genpi.synth.frames import input_frame
from genpi.synth.rundir import INPUTS_LOG, RunDir, StageWriter

# "1. x", "1) x", "(1) x", "**1.** x", "#1: x"; a bullet ("- x", "* x") only when nothing is numbered.
_NUMBERED = re.compile(r"^\s*(?:\*\*|__)?[#(]?(\d{1,3})(?:[.):]|\s*-)(?:\*\*|__)?\s+(\S.*)$")
# A number written again inside an item ("1. #2. Check ..."), as small generators do.
_ECHOED_NUMBER = re.compile(r"^#?\d{1,3}[.)]\s+")
_BULLET = re.compile(r"^\s*[-*\u2022]\s+(\S.*)$")
_LABEL = re.compile(
    r"^(?:\*\*)?(?:task|problem|question|input|user input|request)\s*\d*\s*:(?:\*\*)?\s*", re.I
)
# Inputs that span paragraphs are asked for between these tags (a numbered list cannot hold them).
OPEN_TAG, CLOSE_TAG = "<input>", "</input>"
_TAGGED = re.compile(r"<input>[ \t]*\n?(.*?)</input>", re.S | re.I)

# Why an item is dropped: the gate's reasons (in the order they are checked), then the teacher's.
GATE_REASONS = (
    "empty",
    "too_short",
    "too_long",
    "demo_copies",
    "echo",
    "exact_duplicates",
    "near_duplicates",
)
# "teacher_copied": the teacher acted, but by replaying a demonstration (``DemonstrationReplay``).
TEACHER_REASONS = ("teacher_rejected", "teacher_copied", "teacher_unchecked")
# "cut_off": the last item of an answer that hit the generator's token cap (it ends mid-sentence).
DROP_REASONS = ("cut_off", *GATE_REASONS, *TEACHER_REASONS, "surplus")
# Stage totals that describe the run as a whole, not a batch (never summed from the log).
_RUN_KEYS = (
    "target",
    "total_kept",
    "exhausted",
    "teacher_check",
    "items_per_request",
    "input_style",
    "input_frame",
)


# -- parsing -----------------------------------------------------------------------------------
def parse_list(text: str) -> list[str]:
    """The items of the numbered (else bulleted) list in ``text``; [] when it holds no list.

    An item runs on over the lines that follow it directly (or indented after a blank line);
    a blank line followed by unindented text ends it, so trailing chatter is not kept. Items
    written between ``<input>`` and ``</input>`` are taken as written, blank lines included.
    """
    if OPEN_TAG in text.lower():
        tagged = [block.strip() for block in _TAGGED.findall(text)]
        if any(tagged):
            return [block for block in tagged if block]
    lines = text.replace("\r\n", "\n").split("\n")
    items = _collect(lines, _NUMBERED, group=2)
    if not items:
        items = _collect(lines, _BULLET, group=1)
    return [cleaned for cleaned in (clean_item(i) for i in items) if cleaned]


def _collect(lines: list[str], marker: re.Pattern[str], *, group: int) -> list[str]:
    items: list[list[str]] = []
    open_item = False
    blank_before = False
    for line in lines:
        match = marker.match(line)
        if match:
            items.append([match.group(group)])
            open_item, blank_before = True, False
        elif not line.strip():
            blank_before = True
        elif open_item and (not blank_before or line[:1].isspace()):
            items[-1].append(line.strip())
            blank_before = False
        else:
            open_item = False  # chatter between or after the items
    return ["\n".join(parts) for parts in items]


def clean_item(item: str) -> str:
    item = item.strip()
    item = _ECHOED_NUMBER.sub("", item)
    item = _LABEL.sub("", item).strip()
    if len(item) >= 2 and item[0] == item[-1] and item[0] in "\"'`":
        item = item[1:-1].strip()
    # A number can also sit inside the bold or the quotes just taken off ("**1. Buy soap**").
    return _ECHOED_NUMBER.sub("", item.strip("*_ ").strip()).strip()


# -- duplicates --------------------------------------------------------------------------------
def normalize(text: str) -> str:
    return " ".join(text.lower().split()).strip(" .?!:;\"'`")


def tokens(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"[a-z0-9]+", text.lower()))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


# -- the prompt's own inputs -------------------------------------------------------------------
def demonstration_inputs(prompt: Prompt) -> list[str]:
    """The task inputs of the prompt's demonstrations: user turns that fit ``input_template``.

    A turn that does not fit exactly may still hold an input after the end of the template's
    text (AgentBench OS: "... Now, my problem is:\\n\\n<input>" for "... My problem is:\\n\\n{input}").
    With a bare ``{input}`` template every user turn fits, so episodes are told apart by the
    prompt's own signals: a first turn answered without an action is a preamble (instructions,
    answered "Ok."); in a multi-turn agent prompt the later user turns of the one episode are the
    environment's, and only with ``max_turns: 1`` is every user turn a new task.
    """
    prefix, _, suffix = prompt.input_template.partition(INPUT_SLOT)
    prefix, suffix = prefix.strip(), suffix.strip()
    users = [i for i, m in enumerate(prompt.messages) if m["role"] == "user"]
    if prefix or suffix:
        pattern = re.compile(re.escape(prefix) + r"\s*(.+?)\s*" + re.escape(suffix), re.S)
        found = []
        for i in users:
            content = prompt.messages[i]["content"].strip()
            match = pattern.fullmatch(content)
            text = match.group(1).strip() if match else _after_anchor(content, prefix, suffix)
            if text:
                found.append(text)
        return found
    turns = [prompt.messages[i]["content"].strip() for i in users]
    if users and prompt.action_pattern and _is_preamble(prompt, users[0]):
        turns = turns[1:]
    turns = [t for t in turns if t]
    if prompt.action_pattern and prompt.max_turns != 1:
        return turns[:1]
    return turns


def _is_preamble(prompt: Prompt, index: int) -> bool:
    """A first user turn answered without an action: instructions, not a task."""
    reply = next(
        (m["content"] for m in prompt.messages[index + 1 :] if m["role"] == "assistant"), None
    )
    return reply is not None and prompt.read_action(reply) is None


def _after_anchor(content: str, prefix: str, suffix: str) -> str:
    """The text after the longest ending of ``prefix`` (2+ words) found in ``content``, else ""."""
    words = prefix.split()
    lowered = content.lower()
    for start in range(max(0, len(words) - 12), len(words) - 1):
        anchor = " ".join(words[start:])
        if len(anchor) < 8:
            continue
        at = lowered.rfind(anchor.lower())
        if at < 0:
            continue
        text = content[at + len(anchor) :]
        if suffix:
            end = text.rfind(suffix)
            if end < 0:
                return ""
            text = text[:end]
        return text.strip()
    return ""


def instruction_texts(prompt: Prompt) -> list[str]:
    """The prompt's instructions: its system turns and a leading user turn, the demonstration
    inputs (which a leading user turn may end with) left out."""
    texts = [m["content"] for m in prompt.messages if m["role"] == "system"]
    first = next((m for m in prompt.messages if m["role"] != "system"), None)
    if first is not None and first["role"] == "user":
        text = first["content"]
        for demo in demonstration_inputs(prompt):
            text = text.replace(demo, "\n")
        texts.append(text)
    return texts


def instruction_aspects(prompt: Prompt) -> list[str]:
    """Sentences of the prompt's instructions (system turns, a leading user turn), to vary the
    focus of the input requests with; the demonstration inputs are left out."""
    aspects = []
    for text in instruction_texts(prompt):
        for sentence in re.split(r"(?<=[.!?])\s+|\n+", text):
            sentence = sentence.strip(" -*#\t")
            words = _words(sentence)
            if 5 <= len(words) <= 40 and INPUT_SLOT not in sentence and sentence not in aspects:
                aspects.append(sentence)
    return aspects


@dataclass(frozen=True)
class DemonstrationReplay:
    """Tells an action that replays a demonstration from one that acts on the input.

    A small teacher that does not know what to do with an input clicks the demonstration's
    product or gives the demonstration's answer ("click[Buy Now]" on a page without that
    button); such an answer says the input is not the prompt's task, and training on it teaches
    the student to emit values it will never see. An action replays a demonstration when, past
    the action's name (the words of ``action_pattern``), nothing in it comes from the input,
    every word of it comes from the prompt, and some of it is a demonstration's own value (a
    product id, a file name, an answer: a word the instructions never use). An action that
    takes anything from the input ("run[wc -l notes.txt]" for "count the lines of notes.txt"),
    or writes something new ("sql[SELECT AVG(total) FROM orders]"), is no replay, even where it
    borrows a demonstration's command.
    """

    # Words of two characters or more that the demonstrations use and the instructions never do.
    demonstration_words: frozenset[str]
    prompt_words: frozenset[str]
    action_names: frozenset[str]

    @classmethod
    def of(cls, prompt: Prompt) -> DemonstrationReplay:
        everything = tokens("\n".join(m["content"] for m in prompt.messages))
        instructions = tokens("\n".join(instruction_texts(prompt)))
        own = frozenset(w for w in everything - instructions if len(w) >= 2)
        # The pattern's literal words ("search", "click"), its escapes (\s, \d) left out.
        names = tokens(re.sub(r"\\[A-Za-z]", " ", prompt.action_pattern or ""))
        return cls(own, everything, names)

    def replays(self, action: str, x: str) -> bool:
        words = tokens(action) - self.action_names
        return (
            bool(words & self.demonstration_words)
            and words <= self.prompt_words
            and not words & tokens(x)
        )


# -- the quality gate --------------------------------------------------------------------------
_MARKUP = re.compile(r"<[^<>]{0,200}>")


def _words(text: str) -> list[str]:
    """Whitespace-separated words with two letters or more, markup tags left out."""
    return [w for w in _MARKUP.sub(" ", text).split() if len(re.findall(r"[^\W\d_]", w)) >= 2]


def _token_list(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _trigrams(toks: list[str]) -> set[tuple[str, ...]]:
    return {tuple(toks[i : i + 3]) for i in range(len(toks) - 2)}


@dataclass
class InputFilter:
    """Keeps an input unless it is empty, a duplicate (exact or near), or a demonstration's copy."""

    prompt: Prompt
    threshold: float = 0.8
    # The inputs a copy is judged against (default: the prompt's demonstration inputs).
    demos: list[str] | None = None
    kept_norm: set[str] = field(default_factory=set)
    kept_tokens: list[frozenset[str]] = field(default_factory=list)
    counts: dict[str, int] = field(
        default_factory=lambda: {
            "empty": 0,
            "exact_duplicates": 0,
            "near_duplicates": 0,
            "demo_copies": 0,
        }
    )

    def __post_init__(self) -> None:
        demos = demonstration_inputs(self.prompt) if self.demos is None else self.demos
        self._demo_tokens = [tokens(d) for d in demos]
        self._demo_norm = {normalize(d) for d in demos}
        # Inputs can sit inside a longer demonstration turn (AgentBench OS: instructions + problem).
        self._user_turns = [
            normalize(m["content"]) for m in self.prompt.messages if m["role"] == "user"
        ]

    def seen(self, text: str) -> None:
        """Register an input kept by an earlier run (resume)."""
        self.kept_norm.add(normalize(text))
        self.kept_tokens.append(tokens(text))

    def copy_verdict(self, text: str, *, in_turns: bool = True) -> str | None:
        """Whether ``text`` is "empty" or one of the "demo_copies", else None.

        ``in_turns``: a text found inside a user turn of the prompt is a copy too (the gate asks
        this after its echo check, so that instructions copied from a turn count as echoes).
        """
        norm = normalize(text)
        toks = tokens(text)
        if not norm or not toks:
            return "empty"
        if norm in self._demo_norm or any(
            jaccard(toks, d) >= self.threshold for d in self._demo_tokens
        ):
            return "demo_copies"
        if in_turns and self.inside_a_turn(text):
            return "demo_copies"
        return None

    def inside_a_turn(self, text: str) -> bool:
        norm = normalize(text)
        return len(norm) >= 12 and any(norm in turn for turn in self._user_turns)

    def duplicate_verdict(self, text: str) -> str | None:
        """Whether ``text`` repeats an input seen before: "exact_duplicates", "near_duplicates"."""
        if normalize(text) in self.kept_norm:
            return "exact_duplicates"
        toks = tokens(text)
        if any(jaccard(toks, k) >= self.threshold for k in self.kept_tokens):
            return "near_duplicates"
        return None

    def verdict(self, text: str) -> str | None:
        """None to keep ``text``, else the counter it falls under."""
        return self.copy_verdict(text) or self.duplicate_verdict(text)

    def offer(self, text: str) -> bool:
        reason = self.verdict(text)
        if reason is not None:
            self.counts[reason] += 1
            return False
        self.seen(text)
        return True


class InputGate:
    """The quality gate: every item is kept or dropped for one counted reason (``GATE_REASONS``).

    The limits are set from the exemplars (the prompt's demonstration inputs and seeds), not fixed,
    so a prompt whose real inputs are one word or a page of HTML is judged by its own measure:

    - ``too_short``: fewer words (2+ letters, outside markup tags) than a third of the shortest
      exemplar's (at least 2, at most the shortest's own count), or a heading (a one-line label
      ending in ":", a markdown "# ..." line): the numbers, bare labels, noun phrases and tag
      fragments a generator writes between its real items;
    - ``too_long``: over ``max(max_chars, 2 x the longest exemplar)`` characters, or on more lines
      than any exemplar (one-line inputs followed by comment lines or a pasted log);
    - ``echo``: 80% of its word trigrams (or all of a shorter one) copied from the prompt's text
      outside its demonstration inputs (those are ``demo_copies``), or the template's ``{input}``;
    - ``demo_copies``, ``exact_duplicates``, ``near_duplicates``: ``InputFilter``.

    ``demos`` replaces the prompt's demonstration inputs (the slots of framed inputs: the gate
    then judges the part of an input that varies, see ``genpi.synth.frames``).
    """

    def __init__(
        self,
        prompt: Prompt,
        *,
        threshold: float = 0.8,
        max_chars: int = 1500,
        exemplars: list[str] | None = None,
        echo_share: float = 0.8,
        demos: list[str] | None = None,
    ) -> None:
        self.prompt = prompt
        demos = demonstration_inputs(prompt) if demos is None else demos
        self.filter = InputFilter(prompt, threshold=threshold, demos=demos)
        examples = [e for e in [*demos, *(exemplars or [])] if e.strip()]
        # A third of the shortest real input: "Virus scanner." is not a task where real inputs
        # are ten-word questions, but "list users" is where they are two words long.
        shortest = min((len(_words(e)) for e in examples), default=2)
        self.min_words = min(shortest, max(2, -(-shortest // 3)))
        self.max_chars = max([max_chars, *(2 * len(e) for e in examples)])
        self.max_lines = max((len(e.strip().splitlines()) for e in examples), default=None)
        self.echo_share = echo_share
        # The prompt's text without its demonstration inputs, in segments that n-grams never cross.
        segments = [m["content"] for m in prompt.messages]
        segments += prompt.input_template.split(INPUT_SLOT)
        for demo in demos:
            segments = [part for s in segments for part in s.split(demo)]
        self._echo_grams: set[tuple[str, ...]] = set()
        self._echo_text = []
        for segment in segments:
            toks = _token_list(segment)
            self._echo_grams |= _trigrams(toks)
            self._echo_text.append(" " + " ".join(toks) + " ")
        self.counts = {reason: 0 for reason in GATE_REASONS}

    def seen(self, text: str) -> None:
        """Register an input that later items must not repeat (kept, or offered to the teacher)."""
        self.filter.seen(text)

    def shape_verdict(self, text: str) -> str | None:
        if not normalize(text) or not tokens(text):
            return "empty"
        words = _words(text)
        if len(words) < self.min_words:
            return "too_short"
        one_line = "\n" not in text.strip()
        if one_line and (
            (text.rstrip().endswith(":") and len(words) <= 4) or re.match(r"#{1,6}\s", text)
        ):
            return "too_short"  # a heading or a label, not a task
        if len(text) > self.max_chars:
            return "too_long"
        if self.max_lines is not None and len(text.strip().splitlines()) > self.max_lines:
            return "too_long"
        return None

    def echo(self, text: str) -> bool:
        if INPUT_SLOT in text:
            return True
        toks = _token_list(text)
        grams = _trigrams(toks)
        if grams:
            copied = sum(g in self._echo_grams for g in grams)
            return copied >= self.echo_share * len(grams)
        joined = " " + " ".join(toks) + " "
        return any(joined in segment for segment in self._echo_text)

    def verdict(self, text: str) -> str | None:
        """None to keep ``text``, else the reason (one of ``GATE_REASONS``) it is dropped for."""
        reason = self.shape_verdict(text) or self.filter.copy_verdict(text, in_turns=False)
        if reason is None and self.echo(text):
            reason = "echo"
        if reason is None and self.filter.inside_a_turn(text):
            reason = "demo_copies"  # a copy of an environment turn, say
        return reason or self.filter.duplicate_verdict(text)

    def offer(self, text: str) -> str | None:
        """The verdict, counted; a kept item is registered so that its duplicates are dropped."""
        reason = self.verdict(text)
        if reason is None:
            self.seen(text)
        else:
            self.counts[reason] += 1
        return reason


# -- the generator's instruction ---------------------------------------------------------------
def read_seed_inputs(path: str | Path) -> list[str]:
    """Seed inputs: one per line, or JSONL with a string or an {"input": ...} object per line."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GenpiError(
            f"seed inputs file {str(path)!r} cannot be read ({exc}): check the path"
        ) from None
    seeds = []
    for line in raw.splitlines():
        line = line.strip()
        if not line:
            continue
        if path.suffix.lower() == ".jsonl" or line.startswith(("{", '"')):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                value = line
            if isinstance(value, dict):
                value = value.get("input", "")
            line = str(value).strip()
        if line:
            seeds.append(line)
    if not seeds:
        raise GenpiError(f"seed inputs file {str(path)!r} holds no inputs: put one input per line")
    return seeds


def multiline(exemplars: list[str]) -> bool:
    """Whether inputs like these need the ``<input>`` tags (a numbered item ends at a blank line)."""
    return any("\n\n" in e.strip() or "\n" in e.strip() and len(e) > 300 for e in exemplars)


def input_request(
    prompt: Prompt,
    k: int,
    demos: list[str],
    prefill: str = "",
    *,
    focus: str | None = None,
) -> list[dict[str, str]]:
    """The generator's request for ``k`` new inputs to the task the prompt sets up.

    ``demos`` are shown in their exact shape (between ``<input>`` tags when they span lines, and
    then the answer is asked for in tags too); ``focus``, a sentence of the prompt's instructions,
    steers this request's list towards one part of the task. With ``prefill``, the request ends
    with an assistant message the generator continues.
    """
    tagged = multiline(demos)
    # The task is stated before and after the prompt: small generators lose it in a long prompt.
    lines = [
        f"Write {k} new user inputs for the AI assistant set up by the prompt below, as a "
        "numbered list.",
        "",
        "The prompt sets up the assistant for one task. After the prompt, a user sends an "
        f"input; it takes the place of {INPUT_SLOT} in the last USER message.",
        "",
        "<prompt>",
        prompt.text,
        "</prompt>",
        "",
    ]
    if demos and tagged:
        lines += [
            f"Examples of user inputs for this task, each between {OPEN_TAG} and {CLOSE_TAG}:"
        ]
        for d in demos:
            lines += [OPEN_TAG, d, CLOSE_TAG]
        lines += [""]
    elif demos:
        lines += ["Examples of user inputs for this task:"]
        lines += [f"- {d}" for d in demos]
        lines += [""]
    if focus:
        lines += [
            "For variety, let this list lean towards inputs where this part of the prompt "
            f'matters: "{focus}"',
            "",
        ]
    shape = (
        " Each input must have the same form as the examples: the same kind of content, "
        "layout and length."
        if demos
        else ""
    )
    if tagged:
        layout = (
            f"Write each input in full between {OPEN_TAG} and {CLOSE_TAG}, numbered from 1 to {k} "
            f"(1. {OPEN_TAG} ... {CLOSE_TAG}), and nothing else."
        )
    else:
        layout = (
            f"Write only the input itself (not the surrounding template, no answers), as a "
            f"numbered list from 1 to {k}, one item per number, and nothing else."
        )
    lines += [
        f"Write {k} new user inputs for this task. Make them realistic, specific and different from "
        "each other and from the examples in the prompt; each one must be solvable as the prompt "
        f"describes.{shape} {layout}"
    ]
    request = [{"role": "user", "content": "\n".join(lines)}]
    if prefill:
        request.append({"role": "assistant", "content": request_prefill(prefill, demos)})
    return request


def request_prefill(prefill: str, demos: list[str]) -> str:
    """The prefill ``input_request`` ends with for these exemplars (what the answer continues)."""
    if prefill and multiline(demos) and OPEN_TAG not in prefill:
        return f"{prefill} {OPEN_TAG}\n"
    return prefill


@dataclass(frozen=True)
class InputRequest:
    """One request for inputs: the conversation, the text its answer is read after (``lead``),
    and the last item number asked for."""

    conversation: list[dict[str, str]]
    lead: str
    last_number: int


def continuation_request(k: int, exemplars: list[str], prefill: bool = True) -> InputRequest:
    """The "continue" style: a numbered list of ``exemplars`` that the generator continues with
    ``k`` new items, numbered after them (in ``<input>`` tags when the exemplars span lines).

    With ``prefill`` the list is the start of the generator's own answer (it continues after
    the next number); without it (an endpoint that cannot continue a message), the list is shown
    in the request and the answer is read whole.
    """
    tagged = multiline(exemplars)
    m = len(exemplars)
    if tagged:
        listing = "".join(
            f"{i}. {OPEN_TAG}\n{e}\n{CLOSE_TAG}\n" for i, e in enumerate(exemplars, 1)
        )
        opener = f"{m + 1}. {OPEN_TAG}\n"
        shape = f", each between {OPEN_TAG} and {CLOSE_TAG}"
    else:
        listing = "".join(f"{i}. {e}\n" for i, e in enumerate(exemplars, 1))
        opener = f"{m + 1}."
        shape = ""
    ask = (
        f"Write a numbered list of {k} new user inputs for this task{shape}, like the examples "
        "and different from them and from each other: realistic, specific, each a whole input."
    )
    if prefill:
        conversation = [
            {"role": "user", "content": ask},
            {"role": "assistant", "content": listing + opener},
        ]
        return InputRequest(conversation, opener, m + k)
    shown = f"{ask}\n\nExamples:\n{listing}\nNumber the new inputs from {m + 1} to {m + k}."
    return InputRequest([{"role": "user", "content": shown}], "", m + k)


def items_per_request(config: SynthConfig, exemplars: list[str]) -> int:
    """``num_gen_once``, or fewer when inputs as long as the exemplars would not fit the
    generator's ``input_max_new_tokens`` (a list cut off by the cap loses its last items)."""
    if not exemplars:
        return config.num_gen_once
    mean_chars = sum(len(e) for e in exemplars) / len(exemplars)
    tokens_per_item = mean_chars / 3.5 + 10  # ~3.5 characters a token, plus the numbering
    fits = int(0.9 * config.input_max_new_tokens // tokens_per_item)
    return max(1, min(config.num_gen_once, fits))


def continued(prefill: str, text: str) -> str:
    """The whole answer: the prefill (its last item's number, for a list of exemplars), then
    what the generator wrote after it."""
    lines = text.splitlines()
    if not prefill or any((m := _NUMBERED.match(line)) and m.group(1) == "1" for line in lines):
        return text  # an endpoint that ignored the prefill and wrote the list from item 1
    return prefill + ("" if text[:1].isspace() else " ") + text


def read_items(prefill: str, text: str, k: int) -> list[str]:
    """The items of a generator's answer to a request for ``k`` inputs.

    After a prefill, an answer that never reaches a second item is chatter (a refusal, a comment
    on the prompt) that the prefill's number made look like an item, so it counts as no list.
    A model that wrote one real input and stopped loses it: a lost item costs a little more
    generation, chatter kept as an input costs training on it.
    """
    items = parse_list(continued(prefill, text))
    if prefill and k >= 2 and len(items) < 2:
        return []
    return items


# -- the stage's log ---------------------------------------------------------------------------
class InputLog:
    """``inputs.log.jsonl``: one line per batch of stage 1, the source of the stage's counts.

    A line holds the batch's counters, the records it kept and the items it dropped (with their
    reasons, for the user to read). It is written, durably, *before* the batch's records go to
    ``inputs.jsonl``; on opening, records a line holds that ``inputs.jsonl`` lacks (a process
    killed between the two writes) are appended. So the counts are always those of the records
    on disk: a batch is counted once, with its records, or not at all.
    """

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self.path = run.path / INPUTS_LOG
        self.lines = read_jsonl(self.path)
        existing = run.read("inputs")
        if not self.lines and existing:
            # A run from before the log: what the manifest says of it, as the first line.
            legacy = {k: v for k, v in run.stage_stats("inputs").items() if k not in _RUN_KEYS}
            self.append({"batch": 0, "source": "earlier", "stats": legacy})
        have = {r["id"] for r in existing}
        missing = [
            rec for line in self.lines for rec in line.get("kept", []) if rec["id"] not in have
        ]
        if missing:
            with run.writer("inputs") as writer:
                writer.write(missing)
        self.repaired = len(missing)

    @property
    def next_batch(self) -> int:
        return 1 + max((int(line.get("batch", 0)) for line in self.lines), default=0)

    def append(self, line: dict[str, Any]) -> None:
        with StageWriter(self.path) as writer:
            writer.write([line])
        self.lines.append(line)

    def totals(self) -> dict[str, Any]:
        total: dict[str, Any] = {}
        for line in self.lines:
            total = add_stats(total, line.get("stats") or {})
        return total

    def dropped(self, *reasons: str) -> list[str]:
        return [text for line in self.lines for r, text in line.get("dropped", []) if r in reasons]


def _delta(now: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """What a guard's counters gained since ``before`` (other values as they are now)."""
    out = {}
    for key, value in now.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = round(value - before.get(key, 0), 3)
        elif value is not None:
            out[key] = value
    return out


def exemplar_pool(prompt: Prompt, seed_inputs: list[str] | None) -> tuple[list[str], list[str]]:
    """The prompt's demonstration inputs and the seed inputs (duplicates of the former left out)."""
    demos = demonstration_inputs(prompt)
    known = {normalize(d) for d in demos}
    seeds = [s for s in seed_inputs or [] if normalize(s) not in known]
    return demos, seeds


def request_style(config: SynthConfig, demos: list[str], seeds: list[str]) -> str:
    """The style the requests are made in: ``config.input_style``, except that "continue" has
    nothing to continue without an exemplar and falls back to "describe"."""
    if config.input_style == "continue" and not (demos or seeds):
        return "describe"
    return config.input_style


def teacher_mode(run: RunDir, config: SynthConfig, model: Backend | None) -> str:
    """Whether the teacher's check runs: "on", "off", or why it is skipped."""
    if not config.teacher_check:
        return "off"
    if not run.prompt.action_pattern:
        return "skipped: the prompt has no action_pattern"
    if model is None:
        return "skipped: no target model given"
    return "on"


def first_agent_turn(text: str, end_token: str) -> str:
    """An agent answer as stage 2 keeps it: cut at the termination token, stripped."""
    from genpi.synth.conversations import find_end_token

    cut = find_end_token(text, end_token)
    return (text[:cut] if cut >= 0 else text).strip()


# -- the stage ---------------------------------------------------------------------------------
def import_inputs(run: RunDir, texts: list[str], config: SynthConfig) -> dict[str, int]:
    """Add given inputs (``--inputs-file``) to the run, through the gate, up to ``n``.

    The user vouches for them, so the teacher's check is not applied.
    """
    log = InputLog(run)
    existing = run.read("inputs")
    gate = InputGate(
        run.prompt,
        threshold=config.near_duplicate_jaccard,
        max_chars=config.max_input_chars,
        exemplars=texts,
    )
    for rec in existing:
        gate.seen(rec["input"])
    next_index = _next_index(existing)
    records, dropped = [], []
    for text in texts:
        if len(existing) + len(records) >= config.n:
            break
        text = text.strip()
        reason = gate.offer(text)
        if reason is not None:
            dropped.append([reason, text[:300]])
            continue
        record_id = f"x{next_index:05d}"
        next_index += 1
        split = split_of(record_id, config.heldout_fraction)
        records.append(run.record(record_id, {"source": "given"}, input=text, split=split))
    counts = {"given": len(texts), "given_kept": len(records), **gate.counts}
    # A rerun of the same file adds nothing: it is logged only the first time or when it adds.
    if records or not any(line.get("source") == "given" for line in log.lines):
        stats = {"given_offered": len(texts), "given_kept": len(records)}
        stats.update({f"given_{r}": c for r, c in gate.counts.items() if c})
        log.append(
            {
                "batch": log.next_batch,
                "source": "given",
                "stats": stats,
                "kept": records,
                "dropped": dropped,
            }
        )
    with run.writer("inputs") as writer:
        writer.write(records)
    return counts


def _next_index(existing: list[dict[str, Any]]) -> int:
    numbers = [int(r["id"][1:]) for r in existing if r["id"][:1] == "x" and r["id"][1:].isdigit()]
    return 1 + max(numbers, default=-1)


def run_inputs(
    run: RunDir,
    generator: Backend,
    config: SynthConfig,
    *,
    seed_inputs: list[str] | None = None,
    model: Backend | None = None,
) -> dict[str, Any]:
    """Generate pseudo inputs until ``config.n`` are kept (resuming what the run dir holds).

    ``model`` is the target model, for the teacher's check (without it the check is skipped, and
    the stage's statistics say so).
    """
    prompt = run.prompt
    log = InputLog(run)
    existing = run.read("inputs")
    demos, seeds = exemplar_pool(prompt, seed_inputs)
    style = request_style(config, demos, seeds)
    # Structured inputs (a page with a goal in it) are asked for by their varying part only,
    # which is what the generator sees, the gate judges and the log records; the input is that
    # part put back into the exemplars' frame.
    frame = input_frame([*demos, *seeds]) if style == "continue" else None
    if frame is not None:
        demos = [frame.slot_of(d) or d for d in demos]
        seeds = [frame.slot_of(s) or s for s in seeds]
    gate = InputGate(
        prompt,
        threshold=config.near_duplicate_jaccard,
        max_chars=config.max_input_chars,
        exemplars=seeds,
        demos=demos,
    )
    # Inputs kept so far (given ones too), shown as exemplars in the "continue" style.
    kept_inputs = []
    for rec in existing:
        slot = frame.slot_of(rec["input"]) if frame else rec["input"]
        gate.seen(slot or rec["input"])
        if slot:
            kept_inputs.append(slot)
    # Items the teacher turned down (or that were surplus) are not offered to it again.
    for text in log.dropped("teacher_rejected", "teacher_copied", "surplus"):
        gate.seen(text)
    mode = teacher_mode(run, config, model)
    aspects = instruction_aspects(prompt)
    replay = DemonstrationReplay.of(prompt)
    k = items_per_request(config, [*demos, *seeds])

    def as_input(item: str) -> str:
        return frame.fill(item) if frame else item

    next_index = _next_index(existing)
    kept = len(existing)
    on_disk = len(existing)  # records in inputs.jsonl (kept also counts those not yet written)
    guard = GuardedBackend(
        generator, "inputs", max_consecutive_failures=config.max_consecutive_failures
    )
    teacher = (
        GuardedBackend(model, "inputs", max_consecutive_failures=config.max_consecutive_failures)
        if mode == "on" and model is not None
        else None
    )
    # The agent's first turn, as stage 2 would generate it (greedy, the agent's token cap).
    teacher_params = SamplingParams(max_new_tokens=config.agent_max_new_tokens, temperature=0.0)
    limit = config.input_request_limit()
    requests_before = int(log.totals().get("requests", 0))
    requests = 0
    rng = random.Random(config.seed + requests_before)
    bar = progress(config.n, "inputs", enabled=config.progress)
    bar.update(min(kept, config.n))

    def run_stats() -> dict[str, Any]:
        total = log.totals()
        total.update(
            target=config.n,
            total_kept=on_disk,
            teacher_check=mode,
            items_per_request=k,
            input_style=style,
            # The frame itself, so that the report reads goals with the stage's own frame.
            input_frame=[frame.head, frame.tail] if frame else None,
        )
        total["exhausted"] = total["total_kept"] < config.n
        return total

    def backend_stats(
        guard_before: dict[str, Any], teacher_before: dict[str, Any]
    ) -> dict[str, Any]:
        out = _delta(guard.stats(), guard_before)
        if teacher is not None:
            for key, value in _delta(teacher.stats(), teacher_before).items():
                out[f"teacher_{key}"] = value
        return out

    in_flight = 0  # requests of the batch under way, not yet in the log
    guard_before: dict[str, Any] = {}
    teacher_before: dict[str, Any] = {}
    try:
        with run.writer("inputs") as writer:
            while kept < config.n and requests < limit:
                guard_before = guard.stats()
                teacher_before = teacher.stats() if teacher else {}
                wanted = -(-(config.n - kept) // k)
                width = max(1, min(config.batch_size, wanted, limit - requests))
                # A different subset of exemplars (and focus) for every request; in one batch
                # they are equally many, so that every list ends at the same number.
                from_kept = min(config.max_generated_exemplars, len(kept_inputs))
                batch = []
                for _ in range(width):
                    shown = rng.sample(demos, min(config.max_seed_demos, len(demos)))
                    shown += rng.sample(seeds, min(config.max_seed_demos, len(seeds)))
                    if style == "continue":
                        shown += rng.sample(kept_inputs, from_kept)
                        rng.shuffle(shown)
                        batch.append(continuation_request(k, shown, bool(config.input_prefill)))
                        continue
                    focus = rng.choice(aspects) if aspects else None
                    conversation = input_request(
                        prompt, k, shown, config.input_prefill, focus=focus
                    )
                    lead = request_prefill(config.input_prefill, shown)
                    batch.append(InputRequest(conversation, lead, k))
                after = batch[0].last_number + 1
                params = SamplingParams(
                    max_new_tokens=config.input_max_new_tokens,
                    temperature=config.input_temperature,
                    top_p=config.input_top_p,
                    seed=config.seed + requests_before + requests,
                    # A model that runs on past the list it was asked for stops at the next number.
                    stop=(f"\n{after}.", f"\n{after})"),
                )
                requests += width
                in_flight = width
                new: dict[str, Any] = {"requests": width, "responses": 0, "no_list": 0}
                counters = (
                    "candidates",
                    "kept",
                    *DROP_REASONS,
                    "teacher_checked",
                    "teacher_accepted",
                )
                new.update({key: 0 for key in counters})
                dropped: list[list[str]] = []
                records: list[dict[str, Any]] = []
                generations = guard.generate([r.conversation for r in batch], params)
                settings = {
                    "generator": getattr(generator, "name", "?"),
                    "params": params.to_dict(),
                }
                passed: list[str] = []
                for request, gen in zip(batch, generations or [], strict=False):
                    new["responses"] += 1
                    items = read_items(request.lead, gen.text, k)
                    if not items:
                        new["no_list"] += 1
                        new["last_answer_without_list"] = gen.text[:300]  # for the user to judge
                    if items and gen.finish_reason == "length":
                        new["candidates"] += 1
                        new["cut_off"] += 1
                        dropped.append(["cut_off", items.pop()[:300]])
                    for item in items:
                        new["candidates"] += 1
                        reason = gate.offer(item)
                        if reason is None:
                            passed.append(item)
                        else:
                            new[reason] += 1
                            dropped.append([reason, item[:300]])
                # The teacher's check, in chunks, until n are kept; what is left is surplus.
                while passed and kept < config.n:
                    chunk = passed[: config.batch_size] if teacher else passed[:1]
                    passed = passed[len(chunk) :]
                    answers: list[str | None] = [None] * len(chunk)
                    if teacher is not None:
                        gens = teacher.generate(
                            [prompt.teacher_messages(as_input(x)) for x in chunk], teacher_params
                        )
                        if gens is None:
                            new["teacher_unchecked"] += len(chunk)
                            dropped += [["teacher_unchecked", x[:300]] for x in chunk]
                            continue
                        answers = [first_agent_turn(g.text, config.end_token) for g in gens]
                        new["teacher_checked"] += len(chunk)
                    for item, answer in zip(chunk, answers, strict=True):
                        if teacher is not None:
                            action = prompt.read_action(answer or "")
                            verdict = None
                            if action is None:
                                verdict = "teacher_rejected"
                            elif replay.replays(action, as_input(item)):
                                verdict = "teacher_copied"
                            if verdict is not None:
                                new[verdict] += 1
                                dropped.append([verdict, item[:300]])
                                continue
                            new["teacher_accepted"] += 1
                        if kept >= config.n:
                            new["surplus"] += 1
                            dropped.append(["surplus", item[:300]])
                            continue
                        record_id = f"x{next_index:05d}"
                        next_index += 1
                        kept += 1
                        new["kept"] += 1
                        kept_inputs.append(item)
                        fields: dict[str, Any] = {
                            "input": as_input(item),
                            "split": split_of(record_id, config.heldout_fraction),
                        }
                        record_settings = settings
                        if answer is not None:
                            # Stage 2 starts the role-play from this answer instead of a new one.
                            fields["first_agent_turn"] = answer
                            record_settings = {
                                **settings,
                                "teacher": getattr(model, "name", "?"),
                                "teacher_params": teacher_params.to_dict(),
                            }
                        records.append(run.record(record_id, record_settings, **fields))
                new["surplus"] += len(passed)
                dropped += [["surplus", x[:300]] for x in passed]
                new.update(backend_stats(guard_before, teacher_before))
                # The log line first, then the records: see InputLog.
                log.append(
                    {
                        "batch": log.next_batch,
                        "source": "generated",
                        "stats": new,
                        "kept": records,
                        "dropped": dropped,
                    }
                )
                in_flight = 0
                on_disk += writer.write(records)
                bar.update(len(records))
                run.update_manifest("inputs", run_stats())
    except StageAborted:
        # The aborted batch kept nothing; its requests and failed calls are still counted.
        if in_flight:
            stats = {"requests": in_flight, "aborted_batches": 1}
            stats.update(backend_stats(guard_before, teacher_before))
            log.append({"batch": log.next_batch, "source": "generated", "stats": stats})
        raise
    finally:
        bar.close()
        total = run_stats()
        run.update_manifest("inputs", total)
    return total
