"""Exact values of the training losses on small hand-made tensors."""

from __future__ import annotations

import math

import pytest
import torch

from genpi.train.losses import IGNORE, joint_loss, kl_sum, nll_sum, per_token


def one_hot_logits(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor([rows], dtype=torch.float32)  # [1, T, V]


def test_nll_matches_a_hand_computed_value():
    # Vocabulary of 2; position t's logits predict the label at t+1.
    logits = one_hot_logits([[0.0, 0.0], [math.log(3.0), 0.0], [5.0, 5.0]])
    labels = torch.tensor([[IGNORE, 1, 0]])
    total, count = nll_sum(logits, labels)
    # label 1 from uniform logits: -log(1/2); label 0 from (log 3, 0): -log(3/4)
    expected = math.log(2.0) - math.log(0.75)
    assert count.item() == 2
    assert total.item() == pytest.approx(expected, rel=1e-6)
    assert per_token(total, count).item() == pytest.approx(expected / 2, rel=1e-6)


def test_nll_ignores_masked_positions_and_handles_no_targets():
    logits = torch.randn(1, 4, 5, requires_grad=True)
    total, count = nll_sum(logits, torch.full((1, 4), IGNORE))
    assert count.item() == 0 and total.item() == 0.0
    total.backward()  # an empty micro-batch still has a graph
    assert per_token(total, count).item() == 0.0


def test_accumulating_two_micro_batches_equals_one_big_batch():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 7)
    labels = torch.randint(0, 7, (2, 6))
    labels[0, 4:] = IGNORE  # the micro-batches hold different numbers of target tokens
    labels[1, :2] = IGNORE
    big_total, big_count = nll_sum(logits, labels)
    big = per_token(big_total, big_count)
    parts = [nll_sum(logits[i : i + 1], labels[i : i + 1]) for i in range(2)]
    all_tokens = sum(c for _, c in parts)
    accumulated = sum(per_token(t, all_tokens) for t, _ in parts)
    assert accumulated.item() == pytest.approx(big.item(), rel=1e-6)
    # Averaging the per-micro-batch means (the accumulation bug) would give another value.
    naive = sum(per_token(t, c) for t, c in parts) / 2
    assert naive.item() != pytest.approx(big.item(), rel=1e-3)


def test_kl_of_identical_distributions_is_zero_and_positive_otherwise():
    torch.manual_seed(0)
    logits = torch.randn(1, 5, 11)
    labels = torch.tensor([[IGNORE, 3, 4, IGNORE, 2]])
    total, count = kl_sum(logits, labels, logits.clone(), labels.clone())
    assert count.item() == 3 and total.item() == pytest.approx(0.0, abs=1e-6)
    other, _ = kl_sum(logits, labels, torch.randn(1, 5, 11), labels)
    assert other.item() > 0


def test_kl_matches_a_hand_computed_value_with_teacher_positions_shifted():
    # The teacher's input is longer (it has the prompt): its targets sit later in the sequence.
    student = torch.tensor([[[0.0, 0.0], [0.0, 0.0]]])  # uniform q
    teacher = torch.tensor([[[9.0, 9.0], [math.log(3.0), 0.0], [0.0, 0.0]]])  # p = (3/4, 1/4)
    s_labels = torch.tensor([[IGNORE, 1]])
    t_labels = torch.tensor([[IGNORE, IGNORE, 1]])
    total, count = kl_sum(student, s_labels, teacher, t_labels)
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert count.item() == 1
    assert total.item() == pytest.approx(expected, rel=1e-6)


def test_kl_refuses_different_targets():
    logits = torch.randn(1, 3, 4)
    with pytest.raises(ValueError, match="differ"):
        kl_sum(logits, torch.tensor([[IGNORE, 1, 2]]), logits, torch.tensor([[IGNORE, 1, 3]]))


def test_joint_loss_mixes_with_lambda():
    sft, pg = torch.tensor(2.0), torch.tensor(5.0)
    assert joint_loss(sft, pg, 1.0).item() == pytest.approx(2.0)
    assert joint_loss(sft, pg, 0.0).item() == pytest.approx(5.0)
    assert joint_loss(sft, pg, 0.7).item() == pytest.approx(0.7 * 2.0 + 0.3 * 5.0)


def test_datasets_ignore_label_is_the_losses_one():
    from genpi.train.datasets import IGNORE as DATASET_IGNORE

    assert DATASET_IGNORE == IGNORE
