"""AgentBench's Web Browsing task (Mind2Web, multiple choice): the rounds, the environment, the
scoring.

Each action step is one problem, evaluated on its own with the gold history (as Mind2Web and
AgentBench do). Its candidates ranked under ``top_k`` (positives and negatives, shuffled once per
step: ``data.py``) are asked in rounds of 5, as AgentBench's ``Mind2Web.start_sample``:

- a round shows the page pruned around its 5 candidates, the task, the previous actions and the
  options ``A. None of the above``, then ``B.``, ``C.``, ... (the candidates in page order);
- each round is a fresh conversation (the prompt, then this round's page only);
- a reply naming an option (``Answer: B`` ...) puts that candidate back at the end of the queue
  and makes (it, the reply's ``"OP value"``) the prediction; ``A``, an unreadable reply or a
  letter past the options puts nothing back;
- rounds go on while more than one candidate is queued. The step ends ``completed`` with the last
  prediction, or ``invalid_action`` when no option was ever named or the queue ran empty.

Steps asked nothing and scored 0 (as AgentBench): no positive candidate ranked under ``top_k``
(status ``gold_not_ranked``), or a single candidate in all (``one_candidate``: AgentBench's loop
needs two).

The input of a round, the last user turn after AgentBench's Mind2Web prompt
(``prompts/mind2web.json``), is ``'''\\n<page>\\n'''\\n\\n`` followed by :func:`round_question`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from genpi.bench import core
from genpi.bench.core import Agent, Outcome, Step
from genpi.bench.mind2web import dom
from genpi.bench.mind2web.data import Mind2WebStep
from genpi.bench.mind2web.metrics import StepScore, aggregate, gold_action, score_step
from genpi.bench.mind2web.reader import read_choice

GROUP = 5  # candidates per round (AgentBench's num_candidates)
LETTERS = "BCDEF"  # the options after A


@dataclass(frozen=True)
class Round:
    """What the agent sees of one round: ``description`` (its input) and, for the oracle,
    ``choices`` (the options' backend_node_ids, B first) and the ``step``."""

    id: str
    description: str
    choices: tuple[str, ...]
    step: Mind2WebStep


def round_question(step: Mind2WebStep, options: Sequence[str]) -> str:
    """The text after the page: task, previous actions, the options (AgentBench's wording)."""
    previous = "".join(f"{a}\n" for a in step.previous) or "None\n"
    lines = [
        "Based on the HTML webpage above, try to complete the following task:\n",
        f"Task: {step.task}\n",
        "Previous actions:\n",
        previous,
        "What should be the next action? Please select from the following choices "
        "(If the correct action is not in the page above, please select A. "
        "'None of the above'):\n\n",
        "A. None of the above\n",
    ]
    lines += [f"{letter}. {text}\n" for letter, text in zip(LETTERS, options, strict=False)]
    return "".join(lines)


def make_round(step: Mind2WebStep, page: Any, group: Sequence[str]) -> Round:
    shown = dom.view(page, group)
    question = round_question(step, [text for _, text in shown.choices])
    return Round(
        id=step.id,
        description=f"'''\n{shown.html}\n'''\n\n{question}",
        choices=tuple(node_id for node_id, _ in shown.choices),
        step=step,
    )


class Mind2WebEnvironment:
    """One step's rounds: ``reset`` opens the first, ``step`` reads a reply and opens the next,
    ``judge`` scores the prediction."""

    startup_seconds = 0.0

    def __init__(self) -> None:
        self.queue: list[str] = []
        self.round: Round | None = None
        self.prediction: tuple[str, str] | None = None
        self.page: Any = None

    def _next_round(self, step: Mind2WebStep, log: list[dict[str, Any]]) -> Round:
        group, self.queue = self.queue[:GROUP], self.queue[GROUP:]
        self.round = make_round(step, self.page, group)
        log.append({"event": "round", "candidates": group, "choices": list(self.round.choices)})
        return self.round

    def reset(self, problem: Mind2WebStep, log: list[dict[str, Any]]) -> Step | None:
        if not problem.positives:
            return Step(status="gold_not_ranked")
        if len(problem.pool) < 2:
            return Step(status="one_candidate")
        self.queue = list(problem.pool)
        self.page = dom.parse(problem.cleaned_html)
        return Step(restart=self._next_round(problem, log))

    def step(self, problem: Mind2WebStep, reply: str, log: list[dict[str, Any]]) -> Step:
        assert self.round is not None  # reset opened a round
        choice = read_choice(reply)
        letter = choice.letter or "A"
        at = LETTERS.find(letter)
        chosen = self.round.choices[at] if 0 <= at < len(self.round.choices) else None
        if chosen is not None:
            self.queue.append(chosen)
            self.prediction = (chosen, choice.action)
        log.append({"event": "choice", "letter": choice.letter, "element": chosen,
                    "action": choice.action})  # fmt: skip
        if len(self.queue) > 1:
            return Step(restart=self._next_round(problem, log))
        if self.prediction is None or not self.queue:
            return Step(status="invalid_action")
        element, action = self.prediction
        return Step(status="completed", answer=f"{element}: {action}")

    def judge(self, problem: Mind2WebStep, answer: str | None) -> tuple[bool, list[dict[str, Any]]]:
        score = step_score(problem, self.prediction)
        trail = {
            "element": self.prediction[0] if self.prediction else None,
            "action": self.prediction[1] if self.prediction else None,
            "positives": list(problem.positives),
            "gold_action": gold_action(problem.operation, problem.value),
            "element_correct": score.element,
            "op_f1": score.f1,
        }
        return score.success, [trail]

    def close(self) -> None:
        self.page = None


def step_score(step: Mind2WebStep, prediction: tuple[str, str] | None) -> StepScore:
    gold = gold_action(step.operation, step.value)
    return score_step(step.task_id, prediction, step.positives, gold)


def outcome_score(step: Mind2WebStep, outcome: Outcome) -> StepScore:
    """A finished step's score from its outcome (judged steps carry it in their checks)."""
    if outcome.status != "completed" or not outcome.checks:
        return StepScore(step.task_id, False, 0.0)
    trail = outcome.checks[0]
    return StepScore(step.task_id, bool(trail["element_correct"]), float(trail["op_f1"]))


def report(steps: Sequence[Mind2WebStep], outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """Mind2Web's metrics over the outcomes (``metrics.aggregate``), for ``result.json``."""
    by_id = {s.id: s for s in steps}
    return {"mind2web": aggregate([outcome_score(by_id[o.id], o) for o in outcomes])}


def max_rounds(steps: Sequence[Mind2WebStep]) -> int:
    """Enough rounds for any step: each round of two or more candidates removes at least one."""
    return max((len(s.pool) for s in steps), default=1)


def evaluate(
    steps: list[Mind2WebStep], agent: Agent, *, rounds: int | None = None, **options: Any
) -> dict[str, Any]:
    """:func:`genpi.bench.core.evaluate` over the steps, with Mind2Web's metrics in the summary;
    ``rounds``: the round limit (default :func:`max_rounds` of ``steps``)."""
    return core.evaluate(
        steps,
        agent,
        Mind2WebEnvironment,
        max_rounds=rounds if rounds is not None else max_rounds(steps),
        report=lambda outcomes: report(steps, outcomes),
        **options,
    )
