"""Metric functions on hand-made answers, exact values."""

from __future__ import annotations

import math

import pytest

from genpi.evaluate import metrics


def test_format_rate_counts_readable_answers():
    assert metrics.format_rate([("bash", "ls"), None, ("answer", "3"), None]) == 0.5
    assert metrics.format_rate([]) is None


def test_action_agreement_over_items_where_the_teacher_acted():
    teacher = [("bash", "ls -l"), ("answer", "3"), None, ("finish", "")]
    system = [("bash", "ls  -l"), ("answer", "4"), ("bash", "pwd"), None]
    # 3 items where the teacher acted; types agree on 2 (bash, answer), exact on 1 (bash, whitespace-normalised)
    assert metrics.action_type_agreement(system, teacher) == pytest.approx(2 / 3)
    assert metrics.exact_action_agreement(system, teacher) == pytest.approx(1 / 3)
    assert metrics.action_type_agreement([None], [None]) is None
    with pytest.raises(ValueError):
        metrics.action_type_agreement([None], [None, None])


def test_rouge_l_and_chrf_exact_values():
    assert metrics.rouge_l(["the cat sat"], ["the cat sat"]) == [1.0]
    # LCS("the cat", "the cat sat") = 2 tokens: P = 1, R = 2/3, F = 0.8
    assert metrics.rouge_l(["the cat"], ["the cat sat"]) == [pytest.approx(0.8)]
    assert metrics.rouge_l(["", "dog"], ["x", "cat"]) == [0.0, 0.0]
    assert metrics.chrf(["abc def"], ["abc def"]) == [pytest.approx(1.0)]
    assert metrics.chrf(["xyz"], ["abc"]) == [0.0]
    partial = metrics.chrf(["the cat"], ["the cat sat"])[0]
    assert 0 < partial < 1


def test_normalise_by_the_upper_bound():
    assert metrics.normalise(0.5, 0.8) == pytest.approx(0.625)
    assert metrics.normalise(None, 0.8) is None
    assert metrics.normalise(0.5, 0.0) is None
    # NLL: lower is better, so the ratio is upper / system
    assert metrics.normalise(2.0, 0.5, higher_is_better=False) == pytest.approx(0.25)
    scores = {"format": 0.5, "nll": 2.0, "chrf": None}
    upper = {"format": 1.0, "nll": 1.0, "chrf": 0.9}
    assert metrics.normalise_scores(scores, upper) == {"format": 0.5, "nll": 0.5, "chrf": None}


def test_token_nll_exact_value():
    import torch

    # Uniform logits over 4 tokens: each scored token costs log 4; -100 is not scored.
    logits = torch.zeros(3, 4)
    labels = torch.tensor([1, -100, 2])
    total, count = metrics.token_nll(logits, labels)
    assert count == 2
    assert total == pytest.approx(2 * math.log(4))
    # A confident right prediction costs ~0, a confident wrong one ~ the logit gap.
    logits = torch.tensor([[20.0, 0.0], [0.0, 20.0]])
    total, _ = metrics.token_nll(logits, torch.tensor([0, 0]))
    assert total == pytest.approx(20.0, abs=1e-4)
    assert metrics.token_nll(logits, torch.tensor([-100, -100])) == (0.0, 0)


def test_score_answers_puts_every_metric_together():
    refs = ["Act: bash", "Act: finish"]
    answers = ["Act: bash", "hello"]
    ref_actions = [("bash", ""), ("finish", "")]
    actions = [("bash", ""), None]
    scores = metrics.score_answers(answers, refs, actions, ref_actions, [1.0, 3.0])
    assert scores["format"] == 0.5
    assert scores["action_type"] == 0.5
    assert scores["exact_action"] == 0.5
    assert scores["rouge_l"] == pytest.approx(0.5)  # 1.0 and 0.0
    assert scores["nll"] == 2.0
    assert set(scores) == set(metrics.METRICS)
    no_reader = metrics.score_answers(answers, refs, None, None)
    assert no_reader["format"] is None and no_reader["nll"] is None


def test_teacher_forced_nll_scores_the_answer_with_its_end_of_turn(tokenizer):
    conv = [{"role": "user", "content": "hi"}]
    context, target = metrics.answer_token_ids(tokenizer, conv, "Hello there")
    assert tokenizer.decode(target).startswith("Hello there")
    assert target[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    text = tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
    assert context == tokenizer(text, add_special_tokens=False)["input_ids"]


def test_teacher_forced_nlls_run_the_shared_prompt_once(tiny_backend, prefix_runs):
    """The prompt's KV is computed once for all items; every NLL is what the item alone gets."""
    system = {"role": "system", "content": "You are a shell agent. Think, then act. " * 12}
    convs = [
        [system, {"role": "user", "content": u}]
        for u in ["hi", "count the files in /etc", "what is the kernel version?"]
    ]
    answers = ["Act: bash", "Think: ls.\n\nAct: bash\n\n```bash\nls /etc | wc -l\n```", ""]
    model, tok = tiny_backend.model, tiny_backend.tokenizer
    shared = metrics.teacher_forced_nlls(model, tok, convs, answers)
    assert len(prefix_runs) == 1 and prefix_runs[0] >= 64
    alone = [
        metrics.teacher_forced_nll(model, tok, c, a) for c, a in zip(convs, answers, strict=True)
    ]
    assert all(x is not None for x in alone) and len(set(alone)) == 3
    assert shared == pytest.approx(alone, rel=1e-5, abs=1e-5)
