"""The training losses, as pure functions of logits and labels (torch only).

Labels are aligned with ``input_ids`` (the Hugging Face convention): position t's label is the
token at t, predicted by the logits at t-1, and ``IGNORE`` marks positions with no loss. Each loss
returns a *sum* over target tokens and the *count* of target tokens, so that the caller can divide
by the total count of every micro-batch accumulated into one optimizer step: the mean then does
not depend on how the batch was split.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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
    if s_ids.shape != t_ids.shape or not torch.equal(s_ids, t_ids):
        raise ValueError(
            f"teacher and student target tokens differ ({t_ids.numel()} vs {s_ids.numel()} tokens)"
        )
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
