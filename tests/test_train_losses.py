"""Exact values of the training losses on small hand-made tensors."""

from __future__ import annotations

import math

import pytest
import torch

from genpi.train.losses import (
    IGNORE,
    chunked_kl_sum,
    chunked_nll_sum,
    joint_loss,
    kl_sum,
    nll_sum,
    per_token,
    target_ids,
    target_positions,
)


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


def test_encoding_ignore_label_is_the_losses_one():
    from genpi.encoding import IGNORE as ENCODING_IGNORE

    assert ENCODING_IGNORE == IGNORE


# -- chunked losses from hidden states: the same values and gradients -------------------------
def _projection_case(seed: int = 0, batch: int = 2, length: int = 9, dim: int = 6, vocab: int = 13):
    torch.manual_seed(seed)
    hidden = torch.randn(batch, length, dim)
    head = torch.nn.Linear(dim, vocab, bias=True)
    labels = torch.randint(0, vocab, (batch, length))
    labels[0, :3] = IGNORE  # context, then targets
    labels[1, 6:] = IGNORE  # right padding
    return hidden, head, labels


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 1000])
def test_chunked_nll_equals_nll_on_the_full_logits_with_gradients(chunk):
    hidden, head, labels = _projection_case()
    full_hidden = hidden.clone().requires_grad_(True)
    total, count = nll_sum(head(full_hidden), labels)
    total.backward()
    grads = (full_hidden.grad.clone(), head.weight.grad.clone(), head.bias.grad.clone())
    head.zero_grad()

    rows_hidden = hidden.clone().requires_grad_(True)
    rows = rows_hidden[target_positions(labels)]
    assert rows.shape[0] == count.item() == 11  # 6 + 5 targets, a chunk size dividing it or not
    chunked, chunked_count = chunked_nll_sum(rows, head, target_ids(labels), chunk_size=chunk)
    chunked.backward()
    assert chunked_count.item() == count.item()
    assert chunked.item() == pytest.approx(total.item(), rel=1e-6)
    for got, want in zip((rows_hidden.grad, head.weight.grad, head.bias.grad), grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_target_positions_are_shifted_by_one():
    labels = torch.tensor([[IGNORE, IGNORE, 7, 8, IGNORE]])
    # The output at t predicts the token at t + 1: outputs 1 and 2 score tokens 7 and 8.
    assert target_positions(labels).tolist() == [[False, True, True, False, False]]
    assert target_ids(labels).tolist() == [7, 8]


def test_chunked_losses_handle_no_targets():
    hidden = torch.randn(0, 4, requires_grad=True)
    head = torch.nn.Linear(4, 5)
    empty = torch.zeros(0, dtype=torch.long)
    total, count = chunked_nll_sum(hidden, head, empty)
    assert count.item() == 0 and total.item() == 0.0
    total.backward()
    kl, kl_count = chunked_kl_sum(hidden, head, torch.randn(0, 4), head, empty, empty)
    assert kl_count.item() == 0 and kl.item() == 0.0


def test_chunked_nll_keeps_no_vocabulary_sized_tensor_for_backward():
    # The point of chunking: backward recomputes each chunk's logits instead of saving them.
    hidden, head, labels = _projection_case(vocab=50, length=30)
    rows = hidden.requires_grad_(True)[target_positions(labels)]
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        total, _ = chunked_nll_sum(rows, head, target_ids(labels), chunk_size=4)
    total.backward()
    assert saved and max(saved) < 4 * 50  # no [chunk x vocabulary] tensor outlives its chunk


@pytest.mark.parametrize("chunk", [1, 2, 4, 1000])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_chunked_kl_equals_kl_on_the_full_logits_with_gradients(chunk, temperature):
    hidden, head, s_labels = _projection_case(seed=1)
    # The teacher reads 3 more tokens (the prompt) before the same targets.
    t_hidden = torch.randn(2, 12, 6)
    teacher_head = torch.nn.Linear(6, 13)
    t_labels = torch.full((2, 12), IGNORE)
    t_labels[:, 4:] = s_labels[:, 1:]  # (a sequence's first label is never predicted)
    full_hidden = hidden.clone().requires_grad_(True)
    with torch.no_grad():
        t_logits = teacher_head(t_hidden)
    total, count = kl_sum(head(full_hidden), s_labels, t_logits, t_labels, temperature)
    total.backward()
    grads = (full_hidden.grad.clone(), head.weight.grad.clone())
    head.zero_grad()

    rows_hidden = hidden.clone().requires_grad_(True)
    chunked, chunked_count = chunked_kl_sum(
        rows_hidden[target_positions(s_labels)],
        head,
        t_hidden[target_positions(t_labels)],
        teacher_head,
        target_ids(s_labels),
        target_ids(t_labels),
        temperature,
        chunk_size=chunk,
    )
    chunked.backward()
    assert chunked_count.item() == count.item() == 11
    assert chunked.item() == pytest.approx(total.item(), rel=1e-5)
    torch.testing.assert_close(rows_hidden.grad, grads[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(head.weight.grad, grads[1], rtol=1e-5, atol=1e-6)
    assert teacher_head.weight.grad is None  # the teacher takes no gradient


def test_chunked_kl_refuses_different_targets():
    head = torch.nn.Linear(3, 4)
    with pytest.raises(ValueError, match="differ"):
        chunked_kl_sum(
            torch.randn(2, 3),
            head,
            torch.randn(2, 3),
            head,
            torch.tensor([1, 2]),
            torch.tensor([1, 3]),
        )
