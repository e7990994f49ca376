"""The training losses, as pure functions of logits and labels (torch only).

Labels are aligned with ``input_ids`` (the Hugging Face convention): position t's label is the
token at t, predicted by the logits at t-1, and ``IGNORE`` marks positions with no loss. Each loss
returns a *sum* over target tokens and the *count* of target tokens, so that the caller can divide
by the total count of every micro-batch accumulated into one optimizer step: the mean then does
not depend on how the batch was split.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
import torch.utils.checkpoint

IGNORE = -100


def _targets(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits of the target positions [N, V] in fp32, their target ids [N]), in sequence order."""
    shifted_logits, shifted_labels = logits[:, :-1, :], labels[:, 1:]
    mask = shifted_labels != IGNORE
    # Select before the softmax: a full-vocabulary fp32 softmax over every position costs GBs.
    return shifted_logits[mask].float(), shifted_labels[mask]


def nll_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed token-level negative log-likelihood of the labelled tokens, and their count."""
    target_logits, target_ids = _targets(logits, labels)
    count = torch.tensor(target_ids.numel(), device=logits.device)
    if target_ids.numel() == 0:
        return logits.sum() * 0.0, count  # keeps the graph connected for an empty micro-batch
    return F.cross_entropy(target_logits, target_ids, reduction="sum"), count


def kl_sum(
    student_logits: torch.Tensor,
    student_labels: torch.Tensor,
    teacher_logits: torch.Tensor,
    teacher_labels: torch.Tensor,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed token-level KL(teacher || student) over the target positions, and their count.

    Teacher and student see different inputs (the teacher has the prompt), so each side's target
    positions are taken from its own labels; both must label the same tokens in the same order.
    The T^2 factor keeps gradient sizes comparable across temperatures (Hinton et al.).
    """
    s_logits, s_ids = _targets(student_logits, student_labels)
    t_logits, t_ids = _targets(teacher_logits, teacher_labels)
    _check_same_targets(s_ids, t_ids)
    count = torch.tensor(s_ids.numel(), device=student_logits.device)
    if s_ids.numel() == 0:
        return student_logits.sum() * 0.0, count
    log_p_teacher = F.log_softmax(t_logits / temperature, dim=-1)
    log_p_student = F.log_softmax(s_logits / temperature, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum()
    return kl * temperature**2, count


def per_token(total: torch.Tensor, count: torch.Tensor | int) -> torch.Tensor:
    """A summed loss divided by its token count (0 when there are no tokens)."""
    count = count if torch.is_tensor(count) else torch.tensor(count)
    return total / count.clamp_min(1).to(
        total.dtype if total.is_floating_point() else torch.float32
    )


def joint_loss(sft: torch.Tensor, pg: torch.Tensor, lam: float) -> torch.Tensor:
    """GenPI's objective: the per-token SFT and PG losses mixed by lambda."""
    loss = lam * sft + (1 - lam) * pg
    return loss


# -- the same losses from hidden states, one chunk of positions at a time -----------------------
# A PG target is the whole prompt: its [tokens x vocabulary] fp32 logits (and their log-softmax
# and gradient) were most of a genpi step's memory. These functions take the final hidden states
# at the target positions only and project them through the output layer ``head`` a chunk of
# positions at a time; each chunk runs under activation checkpointing, so backward recomputes its
# logits instead of keeping them: at most one chunk's [chunk x vocabulary] tensors live at once.
# The values are those of ``nll_sum`` / ``kl_sum`` on the full logits (same fp32 upcast, same
# order of positions), up to float summation order.

Head = Callable[[torch.Tensor], torch.Tensor]
DEFAULT_CHUNK = 256  # positions per chunk: 256 x 49k vocabulary x 4 bytes = 50 MB per tensor


def target_positions(labels: torch.Tensor) -> torch.Tensor:
    """Mask [B, T] of the positions whose output is scored: t where ``labels[:, t + 1]`` is a
    target (the output at t predicts the token at t + 1). ``hidden[mask]`` lists them in the
    order ``nll_sum`` does."""
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != IGNORE
    return mask


def target_ids(labels: torch.Tensor) -> torch.Tensor:
    """The target token ids [N], in the order of ``target_positions``."""
    shifted = labels[:, 1:]
    return shifted[shifted != IGNORE]


def _check_same_targets(student_ids: torch.Tensor, teacher_ids: torch.Tensor) -> None:
    if student_ids.shape != teacher_ids.shape or not torch.equal(student_ids, teacher_ids):
        raise ValueError(
            f"teacher and student target tokens differ ({teacher_ids.numel()} vs "
            f"{student_ids.numel()} tokens)"
        )


def _chunked(fn: Callable[..., torch.Tensor], n: int, chunk_size: int, *tensors: torch.Tensor):
    """Sum of ``fn`` over consecutive chunks of the first dimension of ``tensors``."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    # Checkpointing only pays when there is a backward pass to feed.
    recompute = torch.is_grad_enabled()
    total = None
    for start in range(0, n, chunk_size):
        parts = [t[start : start + chunk_size] for t in tensors]
        if recompute:
            value = torch.utils.checkpoint.checkpoint(fn, *parts, use_reentrant=False)
        else:
            value = fn(*parts)
        total = value if total is None else total + value
    return total


def chunked_nll_sum(
    hidden: torch.Tensor,
    head: Head,
    targets: torch.Tensor,
    chunk_size: int = DEFAULT_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``nll_sum`` from the hidden states [N, H] of the target positions and their target ids
    [N]: summed NLL and the count N."""
    count = torch.tensor(targets.numel(), device=hidden.device)
    if targets.numel() == 0:
        return hidden.sum() * 0.0, count  # keeps the graph connected for an empty micro-batch

    def chunk(h: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(head(h).float(), ids, reduction="sum")

    return _chunked(chunk, targets.numel(), chunk_size, hidden, targets), count


def chunked_kl_sum(
    student_hidden: torch.Tensor,
    student_head: Head,
    teacher_hidden: torch.Tensor,
    teacher_head: Head,
    student_targets: torch.Tensor,
    teacher_targets: torch.Tensor,
    temperature: float = 1.0,
    chunk_size: int = DEFAULT_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``kl_sum`` from each side's hidden states at its target positions ([N, H] each): summed
    KL(teacher || student) and N. The teacher side gets no gradient (its projection runs under
    no_grad; backward recomputes it with the student's chunk rather than keep [N, V] of it)."""
    _check_same_targets(student_targets, teacher_targets)
    count = torch.tensor(student_targets.numel(), device=student_hidden.device)
    if student_targets.numel() == 0:
        return student_hidden.sum() * 0.0, count

    def chunk(s_h: torch.Tensor, t_h: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            log_p_teacher = F.log_softmax(teacher_head(t_h).float() / temperature, dim=-1)
        log_p_student = F.log_softmax(student_head(s_h).float() / temperature, dim=-1)
        return (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum()

    total = _chunked(
        chunk, student_targets.numel(), chunk_size, student_hidden, teacher_hidden.detach()
    )
    return total * temperature**2, count
