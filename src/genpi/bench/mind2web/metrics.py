"""Mind2Web's step-level metrics, as pure functions.

Per step (Mind2Web, and AgentBench's ``Mind2Web.metric``):

- element accuracy: 1 when the predicted element is one of the step's positive candidates;
- operation F1: F1 between the sets of whitespace-separated tokens of the predicted ``"OP value"``
  and the gold one (case-sensitive; a word repeated counts once; a CLICK has no value), 1 when
  both are empty, 0 when one is;
- step success: element correct and operation F1 = 1.

A step with no prediction (the ranking kept no positive candidate, or the agent chose none)
scores 0 on all three. Over a run: the mean over steps (``micro``: what AgentBench reports), the
mean over tasks of each task's mean (``macro``: what Mind2Web reports), and task success (the
share of tasks whose every step succeeded). Rates are fractions (0 to 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

OPERATIONS = ("CLICK", "SELECT", "TYPE")


def gold_action(operation: str, value: str) -> str:
    """The gold ``"OP value"`` as AgentBench reads it back from its target text: the operation
    (empty if not one of CLICK/SELECT/TYPE), then the value's first line unless it is a CLICK."""
    op = operation if operation in OPERATIONS else ""
    text = "" if operation == "CLICK" else value.split("\n", 1)[0].strip()
    return f"{op} {text}".strip()


def operation_f1(predicted: str, gold: str) -> float:
    pred, label = set(predicted.split()), set(gold.split())
    if not pred and not label:
        return 1.0
    if not pred or not label:
        return 0.0
    hits = len(pred & label)
    if hits == 0:
        return 0.0
    precision, recall = hits / len(pred), hits / len(label)
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class StepScore:
    task: str  # annotation_id
    element: bool
    f1: float

    @property
    def success(self) -> bool:
        return self.element and self.f1 >= 1.0


def score_step(
    task: str,
    predicted: tuple[str, str] | None,
    positives: Sequence[str],
    gold: str,
) -> StepScore:
    """``predicted``: (backend_node_id, "OP value") or None; ``positives``: the step's positive
    candidates' ids; ``gold``: :func:`gold_action`."""
    if predicted is None or not positives:
        return StepScore(task, False, 0.0)
    element, action = predicted
    return StepScore(task, element in positives, operation_f1(action, gold))


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def aggregate(scores: Sequence[StepScore]) -> dict[str, Any]:
    """Micro (over steps) and macro (over tasks) means of the three metrics, and task success."""
    tasks: dict[str, list[StepScore]] = {}
    for score in scores:
        tasks.setdefault(score.task, []).append(score)

    def columns(group: Sequence[StepScore]) -> dict[str, float]:
        return {
            "element_acc": _mean([float(s.element) for s in group]),
            "op_f1": _mean([s.f1 for s in group]),
            "step_sr": _mean([float(s.success) for s in group]),
        }

    per_task = {task: columns(group) for task, group in tasks.items()}
    return {
        "steps": len(scores),
        "tasks": len(tasks),
        "micro": columns(scores),
        "macro": {
            key: _mean([row[key] for row in per_task.values()])
            for key in ("element_acc", "op_f1", "step_sr")
        },
        "task_sr": _mean([float(all(s.success for s in group)) for group in tasks.values()]),
        "per_task": per_task,
    }
