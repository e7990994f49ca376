"""Scores of a system's answers against the teacher's, as pure functions.

- format: share of answers from which the reader reads an action;
- action-type / exact-action agreement: share of items, among those where the teacher's answer
  holds an action, where the system's action has the same type / the same type and argument
  (whitespace-normalised);
- ROUGE-L (F-measure, rouge-score's tokenizer) and chrF (sacrebleu, 0..1) to the teacher's answer,
  averaged over items;
- teacher-forced NLL: mean negative log-likelihood per token of the teacher's answer (with the
  chat template's end-of-turn token) given the system's view of the conversation: the training
  loss on the training encoding (``genpi.encoding``, ``genpi.train.losses.nll_sum``); a soft
  prompt's virtual tokens are in front of the context, their positions dropped from the logits
  (``genpi.adapter.token_logits``, as in training);
- normalised score: score / the upper bound's score (the paper's Table 1); for NLL, where lower
  is better, upper_nll / nll, so 1.0 means "as likely as under the teacher" for every metric.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from genpi.encoding import IGNORE, Sample, encode_reply, first_target
from genpi.evaluate.readers import Action

if TYPE_CHECKING:
    from genpi.llm.local import SharedPrefix

HIGHER_IS_BETTER = {
    "format": True,
    "action_type": True,
    "exact_action": True,
    "rouge_l": True,
    "chrf": True,
    "nll": False,
}
METRICS = tuple(HIGHER_IS_BETTER)
# How a table or a figure heads each metric.
METRIC_LABELS = {
    "format": "format",
    "action_type": "action type",
    "exact_action": "exact action",
    "rouge_l": "ROUGE-L",
    "chrf": "chrF",
    "nll": "NLL",
}


def format_rate(actions: Sequence[Action | None]) -> float | None:
    if not actions:
        return None
    return sum(a is not None for a in actions) / len(actions)


def _norm(text: str) -> str:
    return " ".join(text.split())


def _agreement(
    actions: Sequence[Action | None], teacher: Sequence[Action | None], *, exact: bool
) -> float | None:
    if len(actions) != len(teacher):
        raise ValueError(f"{len(actions)} answers but {len(teacher)} teacher answers")
    pairs = [(a, t) for a, t in zip(actions, teacher, strict=True) if t is not None]
    if not pairs:
        return None  # the teacher never acted: agreement is undefined, not 0
    same = 0
    for a, t in pairs:
        if a is None or a[0] != t[0]:
            continue
        if exact and _norm(a[1]) != _norm(t[1]):
            continue
        same += 1
    return same / len(pairs)


def action_type_agreement(
    actions: Sequence[Action | None], teacher: Sequence[Action | None]
) -> float | None:
    return _agreement(actions, teacher, exact=False)


def exact_action_agreement(
    actions: Sequence[Action | None], teacher: Sequence[Action | None]
) -> float | None:
    return _agreement(actions, teacher, exact=True)


def rouge_l(answers: Sequence[str], references: Sequence[str]) -> list[float]:
    """ROUGE-L F-measure of each answer against its reference (0 when either is empty)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    return [
        scorer.score(ref, ans)["rougeL"].fmeasure if ans.strip() and ref.strip() else 0.0
        for ans, ref in zip(answers, references, strict=True)
    ]


def chrf(answers: Sequence[str], references: Sequence[str]) -> list[float]:
    """sacrebleu's sentence chrF of each answer against its reference, scaled to 0..1."""
    from sacrebleu.metrics import CHRF

    metric = CHRF()
    return [
        metric.sentence_score(ans, [ref]).score / 100 if ans.strip() and ref.strip() else 0.0
        for ans, ref in zip(answers, references, strict=True)
    ]


def mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return sum(kept) / len(kept) if kept else None


def normalise(
    score: float | None, upper: float | None, *, higher_is_better: bool = True
) -> float | None:
    """score relative to the upper bound: score/upper (or upper/score when lower is better)."""
    if score is None or upper is None:
        return None
    if higher_is_better:
        return score / upper if upper > 0 else None
    return upper / score if score > 0 else None


def normalise_scores(
    scores: dict[str, float | None], upper: dict[str, float | None]
) -> dict[str, float | None]:
    return {
        k: normalise(v, upper.get(k), higher_is_better=HIGHER_IS_BETTER.get(k, True))
        for k, v in scores.items()
    }


# -- teacher-forced NLL -------------------------------------------------------------------------


def teacher_forced_nll(
    model: Any,
    tokenizer: Any,
    conversation: list[dict[str, str]],
    answer: str,
    *,
    max_length: int | None = None,
) -> float | None:
    """Mean NLL per token of ``answer`` as the assistant's reply to ``conversation``: the
    training loss (``genpi.train.losses.nll_sum``) on the training encoding
    (``genpi.encoding.encode_reply``), so eval's NLL is the training NLL on the same tokens.
    """
    return _sample_nll(model, encode_reply(tokenizer, conversation, answer), max_length, None)


def _sample_nll(
    model: Any, sample: Sample, max_length: int | None, prefix: SharedPrefix | None
) -> float | None:
    """NLL of one sample; ``prefix``: the KV cache of tokens it starts with (the prompt, shared
    by every item of a system), so only the rest is run."""
    import torch

    from genpi.adapter import token_logits
    from genpi.train.losses import nll_sum

    # Tokens after the answer (the template's newline after its end-of-turn token) predict
    # nothing scored: leave them out, so that ``max_length`` counts up to the answer's end.
    end = max((i + 1 for i, t in enumerate(sample.labels) if t != IGNORE), default=0)
    ids, labels = sample.input_ids[:end], sample.labels[:end]
    if max_length is not None and len(ids) > max_length:
        # Keep the answer; the context loses its start.
        ids, labels = ids[-max_length:], labels[-max_length:]
    first = first_target(Sample(ids, labels))
    if first >= len(ids):
        return None
    device = next(model.parameters()).device
    # The prefix must end before the position whose logits predict the first target.
    start = 0
    if (
        prefix is not None
        and len(prefix.tokens) < first
        and ids[: len(prefix.tokens)] == prefix.tokens
    ):
        start = len(prefix.tokens)
    with torch.inference_mode():
        if start:
            positions = torch.arange(start, len(ids), device=device)[None]
            logits = model(
                input_ids=torch.tensor([ids[start:]], device=device),
                position_ids=positions,
                cache=prefix.cache_for(1),
            ).logits
        else:
            logits = model(input_ids=torch.tensor([ids], device=device)).logits
        logits = token_logits(logits, len(ids) - start)
        # Labels are aligned with the tokens run: the label at ``start`` is context (start < first).
        total, count = nll_sum(logits, torch.tensor([labels[start:]], device=device))
    return float(total) / int(count) if int(count) else None


def teacher_forced_nlls(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[list[dict[str, str]]],
    answers: Sequence[str],
) -> list[float | None]:
    """``teacher_forced_nll`` of every item, the contexts' shared prefix (the prompt) run once."""
    from genpi.adapter import soft_prompt
    from genpi.llm.local import SHARED_PREFIX_MIN_TOKENS, SharedPrefix, shared_prefix_length

    samples = [encode_reply(tokenizer, c, a) for c, a in zip(conversations, answers, strict=True)]
    prefix = None
    # A soft prompt's forward puts its virtual tokens before whatever it is given, a cached
    # prefix's continuation included: no prefix then (its contexts hold no prompt to share).
    if len(samples) > 1 and soft_prompt(model) is None:
        contexts = [s.input_ids[: first_target(s)] for s in samples]
        length = shared_prefix_length(contexts)
        if length >= SHARED_PREFIX_MIN_TOKENS:
            prefix = SharedPrefix.compute(model, contexts[0][:length])
    return [_sample_nll(model, s, None, prefix) for s in samples]


def score_answers(
    answers: Sequence[str],
    references: Sequence[str],
    actions: Sequence[Action | None] | None,
    reference_actions: Sequence[Action | None] | None,
    nlls: Sequence[float | None] | None = None,
) -> dict[str, float | None]:
    """Every metric of one system over one set of items (None where it does not apply)."""
    scores: dict[str, float | None] = dict.fromkeys(METRICS)
    if actions is not None and reference_actions is not None:
        scores["format"] = format_rate(actions)
        scores["action_type"] = action_type_agreement(actions, reference_actions)
        scores["exact_action"] = exact_action_agreement(actions, reference_actions)
    if answers:
        scores["rouge_l"] = mean(rouge_l(answers, references))
        scores["chrf"] = mean(chrf(answers, references))
    if nlls is not None:
        scores["nll"] = mean(nlls)
    return scores
