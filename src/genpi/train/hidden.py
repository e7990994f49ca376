"""Final hidden states at the scored positions, for losses that project them in chunks.

A training step used to take ``model(...).logits``: [batch x length x vocabulary] logits for
every position, in fp32 for the loss, kept for backward. The losses only score the labelled
positions, so the trainer instead takes the final hidden states (after the last norm), keeps the
rows of the labelled positions and lets ``losses.chunked_*`` project them through the output
layer a chunk at a time.

That is only the same computation when the model's logits are exactly ``output_layer(final
hidden state)``: no logit scaling or soft-capping after it (Gemma 2, Cohere, Granite have some), an
output layer that is a plain ``nn.Linear`` (not LoRA-wrapped, not quantized), and no positions
prepended by PEFT prompt tuning. ``split_model`` checks the structure and then compares both ways
on a few tokens; anything else keeps the full-logits path (``FULL_LOGITS_ENV=1`` forces it, for
comparisons).

The KL teacher (frozen weights) reads the same prompt prefix in every item: ``SharedPrefix`` runs
it once for the whole run and reuses its KV cache for every micro-batch.
"""

from __future__ import annotations

import copy
import inspect
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from genpi.train.losses import IGNORE

log = logging.getLogger(__name__)

FULL_LOGITS_ENV = "GENPI_FULL_LOGITS"  # "1": the full-logits path, whatever the model
PROBE_TOKENS = 16
MIN_SHARED_PREFIX = 8  # shorter shared prefixes are not worth a cache copy per micro-batch


def full_logits_forced() -> bool:
    return os.environ.get(FULL_LOGITS_ENV, "") not in ("", "0")


def causal_lm(model: Any) -> Any:
    """The transformers causal LM under a PEFT wrapper (LoRA layers injected), else ``model``."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


@dataclass
class Split:
    """How to get a model's final hidden states and project them."""

    lm: Any  # the causal LM (LoRA layers injected, if any)
    backbone: Any  # lm's decoder without the output layer: returns ``last_hidden_state``
    head: Any  # the output layer, an nn.Linear


def split_model(model: Any, *, prompt_tuning: bool = False) -> tuple[Split | None, str]:
    """(the split of ``model`` into backbone and output layer, "") when the logits are exactly the
    output layer applied to the final hidden states, else (None, the reason)."""
    if full_logits_forced():
        return None, f"{FULL_LOGITS_ENV} is set"
    if prompt_tuning:
        # PEFT prepends virtual-token positions the backbone alone would not see.
        return None, "prompt tuning prepends virtual tokens"
    lm = causal_lm(model)
    head = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
    # Exact type: LoRA and bitsandbytes layers are other classes (Linear4bit subclasses Linear).
    if type(head) is not torch.nn.Linear:
        return None, f"the output layer is a {type(head).__name__}, not a plain Linear"
    backbone = getattr(lm, getattr(lm, "base_model_prefix", ""), None)
    if not isinstance(backbone, torch.nn.Module) or backbone is lm:
        return None, "the model has no separate decoder module"
    if "logits_to_keep" not in inspect.signature(lm.forward).parameters:
        return None, "the model's forward takes no logits_to_keep"
    return Split(lm=lm, backbone=backbone, head=head), ""


def student_hidden(model: Any, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Final hidden states [B, T, H] through the (possibly wrapped) model's own forward, so
    wrappers (PEFT, DDP) see the call; ``logits_to_keep=1`` leaves one position to project."""
    out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, logits_to_keep=1)
    return out.hidden_states[-1]


def probe(model: Any, split: Split, ids: torch.Tensor) -> str:
    """ "" when both ways to the hidden states, projected, give the model's logits on ``ids``
    [1, t]; else why not. Runs in eval mode (no dropout) without gradients."""
    lm = split.lm
    was_training = lm.training
    lm.eval()
    try:
        with torch.no_grad():
            logits = model(input_ids=ids).logits.float()
            via_forward = split.head(student_hidden(model, ids, torch.ones_like(ids))).float()
            via_backbone = split.head(split.backbone(input_ids=ids).last_hidden_state).float()
    except Exception as exc:  # any failure means: use the full-logits path
        return f"hidden states unavailable ({type(exc).__name__}: {exc})"
    finally:
        lm.train(was_training)
    for name, got in (("output_hidden_states", via_forward), ("backbone", via_backbone)):
        if got.shape != logits.shape or not torch.allclose(got, logits, rtol=1e-3, atol=1e-3):
            return f"the output layer on the final hidden states ({name}) is not the logits"
    return ""


def gather_targets(hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Rows [N, H] of the positions whose output is scored (t where label t + 1 is a target)."""
    from genpi.train.losses import target_positions

    return hidden[target_positions(labels)]


# -- the teacher's shared prefix -----------------------------------------------------------
def shared_prefix(sequences: Sequence[tuple[Sequence[int], Sequence[int]]]) -> list[int]:
    """The longest token prefix common to every (input_ids, labels) pair that ends before the
    first scored position of each (so every scored hidden state is computed after it)."""
    if not sequences:
        return []
    first_ids = list(sequences[0][0])
    limit = len(first_ids)
    for ids, labels in sequences:
        scored = [t for t in range(len(ids) - 1) if labels[t + 1] != IGNORE]
        limit = min(limit, scored[0] if scored else len(ids) - 1, len(ids) - 1)
        n = 0
        while n < limit and ids[n] == first_ids[n]:
            n += 1
        limit = n
    return first_ids[: max(limit, 0)]


class SharedPrefix:
    """The frozen teacher's KV cache of a token prefix, computed once, copied per micro-batch.

    Valid only while the weights behind it do not change: the trainer uses it for a teacher whose
    parameters (the base model with the adapter disabled, or a frozen copy) take no gradient.
    """

    def __init__(self, tokens: Sequence[int]) -> None:
        self.tokens = list(tokens)
        self._ids: torch.Tensor | None = None
        self._cache: Any = None

    def __len__(self) -> int:
        return len(self.tokens)

    def matches(self, ids: torch.Tensor) -> bool:
        p = len(self.tokens)
        if ids.shape[1] <= p:
            return False
        if self._ids is None or self._ids.device != ids.device:
            self._ids = torch.tensor(self.tokens, device=ids.device)
        return bool((ids[:, :p] == self._ids).all())

    def hidden(self, backbone: Any, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Final hidden states [B, T - P, H] of the positions after the prefix (P tokens), the
        prefix read from the cache: equal to the last T - P positions of a full forward."""
        p = len(self.tokens)
        if self._cache is None:
            prefix = torch.tensor([self.tokens], device=ids.device)
            self._cache = backbone(input_ids=prefix, use_cache=True).cache
        cache = copy.deepcopy(self._cache)  # the forward appends the suffix's keys in place
        cache.batch_repeat_interleave(ids.shape[0])
        positions = torch.arange(p, ids.shape[1], device=ids.device).expand(ids.shape[0], -1)
        out = backbone(
            input_ids=ids[:, p:],
            attention_mask=mask,  # [B, P + suffix]: the prefix is real tokens in every row
            position_ids=positions,
            cache=cache,
            use_cache=True,
        )
        return out.last_hidden_state


def is_frozen(lm: Any) -> bool:
    """Whether the weights the teacher runs with (LoRA layers aside: they are disabled for
    the teacher) take no gradient, so a cached prefix stays valid for the whole run."""
    return not any(p.requires_grad for n, p in lm.named_parameters() if "lora_" not in n)
