"""The fixed frame around the part of a structured input that changes from task to task.

Some prompts take a whole page as input: AgentBench's WebShop observation is
``Observation:\\n"WebShop [SEP] Instruction: [SEP] <goal> [SEP] Search"\\n\\nAvailable Actions:...``,
and only ``<goal>`` differs between tasks. A small generator asked to continue a list of such
pages writes broken pages; asked to continue a list of goals, it writes goals. So stage 1 asks
for the varying part (the *slot*) and puts each new slot back into the frame.

The frame is found from the exemplars alone:

- two or more exemplars: their longest common beginning and end, less the words they happen to
  share next to the slot ("i need ..."); the part between is the slot when it is one line in
  every exemplar (otherwise they share no frame: each is a different page);
- one exemplar: its longest run of prose on one line (words separated by single spaces, between
  the page's delimiters: quotes, brackets, ``[SEP]``-style markers, ``:`` labels), when that run
  has at least ``MIN_SLOT_WORDS`` words, and when the rest does not repeat a word of it. A page
  without such a run has no frame. The repeat test is what tells a page from a structured task:
  in "which rivers flow through both Austria and Hungary?\nEntities: [Austria, Hungary]" the
  entity line names what the question names, so it varies with the question and cannot stay
  fixed (kept as frame, every new question got Austria and Hungary as its entities); WebShop's
  page repeats nothing of its goal.

Inputs of one line, and inputs without a frame, are continued whole.

Limit: with one exemplar, a second part that varies between tasks without repeating the slot's
words is taken as frame and stays as the exemplar has it. Two or more ``--seed-inputs`` in the
same shape make the frame what they all share, and then an input whose parts differ on several
lines has no frame and is continued whole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MIN_SLOT_WORDS = 5
# Words whose repeat outside the slot says the rest varies with it: four letters or more (names,
# nouns), not the short words any two texts share ("and", "the", "of").
_NAME_WORD = re.compile(r"[^\W\d_][\w'-]{3,}")
# Prose: words (letters, digits and the punctuation of a sentence) separated by single spaces.
_WORD = r"[\w$£€%'.,;!?&/+()-]+"
_PROSE = re.compile(rf"{_WORD}(?: {_WORD})*")
_PROSE_AT_END = re.compile(rf"{_WORD}(?: {_WORD})* ?$")
_PROSE_AT_START = re.compile(rf" ?{_WORD}(?: {_WORD})*")


@dataclass(frozen=True)
class Frame:
    head: str
    tail: str

    def fill(self, slot: str) -> str:
        return f"{self.head}{slot}{self.tail}"

    def slot_of(self, text: str) -> str | None:
        """The slot of an input written in this frame, else None."""
        if (
            len(text) > len(self.head) + len(self.tail)
            and text.startswith(self.head)
            and text.endswith(self.tail)
        ):
            slot = text[len(self.head) : len(text) - len(self.tail)]
            return slot if slot.strip() and "\n" not in slot else None
        return None


def input_frame(exemplars: list[str]) -> Frame | None:
    """The frame the exemplars share (see the module docstring), or None."""
    texts = [e.strip() for e in exemplars if e.strip()]
    if not texts or not any("\n" in t for t in texts):
        return None
    if len(texts) == 1:
        return _frame_of_one(texts[0])
    # Words every exemplar happens to share next to its slot ("i need ...") belong to the slot:
    # the slot is the whole run of prose the exemplars differ in.
    head = _common_prefix(texts)
    if match := _PROSE_AT_END.search(head):
        head = head[: match.start()]
    rest = [t[len(head) :] for t in texts]
    tail = _common_prefix([r[::-1] for r in rest])[::-1]
    if match := _PROSE_AT_START.match(tail):
        tail = tail[match.end() :]
    slots = [r[: len(r) - len(tail)] for r in rest]
    if any(not s.strip() or "\n" in s for s in slots):
        return None
    return Frame(head, tail)


def _frame_of_one(text: str) -> Frame | None:
    best: re.Match[str] | None = None
    for match in _PROSE.finditer(text):
        if best is None or len(match.group().split()) > len(best.group().split()):
            best = match
    if best is None or len(best.group().split()) < MIN_SLOT_WORDS:
        return None
    head, tail = text[: best.start()], text[best.end() :]
    if _words(best.group()) & _words(head + tail):
        return None  # the rest repeats the slot's words: it changes with it
    return Frame(head, tail)


def _words(text: str) -> set[str]:
    return {w.lower() for w in _NAME_WORD.findall(text)}


def _common_prefix(texts: list[str]) -> str:
    first, last = min(texts), max(texts)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:n]
