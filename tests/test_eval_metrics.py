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


def test_nll_exact_value_with_labels_aligned_to_the_inputs():
    """Eval's NLL is the training loss: labels aligned with the inputs, the logits at t-1 score
    the label at t."""
    import torch

    from genpi.train.losses import nll_sum

    # Uniform logits over 4 tokens: each scored token costs log 4; -100 is not scored.
    logits = torch.zeros(1, 4, 4)
    labels = torch.tensor([[-100, 1, -100, 2]])
    total, count = nll_sum(logits, labels)
    assert count == 2
    assert float(total) == pytest.approx(2 * math.log(4))
    # A confident right prediction costs ~0, a confident wrong one ~ the logit gap.
    logits = torch.tensor([[[20.0, 0.0], [0.0, 20.0], [0.0, 0.0]]])
    total, _ = nll_sum(logits, torch.tensor([[-100, 0, 0]]))
    assert float(total) == pytest.approx(20.0, abs=1e-4)
    total, count = nll_sum(logits, torch.tensor([[-100, -100, -100]]))
    assert (float(total), int(count)) == (0.0, 0)


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
    from genpi.encoding import IGNORE, encode_reply, first_target

    conv = [{"role": "user", "content": "hi"}]
    sample = encode_reply(tokenizer, conv, "Hello there")
    target = [t for t in sample.labels if t != IGNORE]
    assert tokenizer.decode(target).startswith("Hello there")
    assert target[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    text = tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
    context = sample.input_ids[: first_target(sample)]
    assert context == tokenizer(text, add_special_tokens=False)["input_ids"]


def test_eval_nll_is_the_training_loss_on_the_training_encoding(tiny_backend):
    """The answer scored by eval is the training target: the same tokens as a training sample
    whose last assistant turn is the answer (earlier assistant turns are context), the same loss."""
    import torch

    from genpi.encoding import TARGET_KEY, encode_conversation
    from genpi.train.losses import nll_sum

    model, tok = tiny_backend.model, tiny_backend.tokenizer
    conv = [
        {"role": "system", "content": "You are a shell agent."},
        {"role": "user", "content": "count the files"},
        {"role": "assistant", "content": "Act: bash\n\n```bash\nls | wc -l\n```"},
        {"role": "user", "content": "12"},
    ]
    answer = "Act: answer(12)"
    training = [{**m, TARGET_KEY: False} if m["role"] == "assistant" else m for m in conv] + [
        {"role": "assistant", "content": answer}
    ]
    sample = encode_conversation(tok, training)
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([sample.input_ids])).logits
        total, count = nll_sum(logits, torch.tensor([sample.labels]))
    expected = float(total) / int(count)
    assert metrics.teacher_forced_nll(model, tok, conv, answer) == pytest.approx(expected, rel=1e-6)
    # Truncated to fewer tokens, the answer is still scored whole; the context loses its start.
    short = metrics.teacher_forced_nll(model, tok, conv, answer, max_length=int(count) + 4)
    assert short is not None and short != pytest.approx(expected, rel=1e-9)


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
