"""FLOPs of a decoder forward pass: counted on the real pass, and the analytic formula.

Counted: ``torch.utils.flop_counter.FlopCounterMode`` over the forward pass. With
``attn_implementation="eager"`` attention is two batched matmuls (QK^T and AV), so the counter
sees them; it counts every matmul as 2*M*N*K FLOPs (one multiply and one add per MAC), so
MACs = FLOPs / 2 exactly.

Analytic (Llama-family decoder: q/k/v/o projections, gated MLP, grouped-query attention), for a
forward pass of ``n`` new tokens over ``p`` cached tokens, keeping ``rows`` logit rows:

    linear    = n * L * 2 * (d*H*dh + 2*d*Hkv*dh + H*dh*d + 3*d*f)
    lora      = n * sum over adapted linears of 2 * r * (in + out)       (A: in->r, B: r->out)
    attention = L * 4 * H * dh * n * (p + n)     (QK^T and AV; eager attention computes the full
                                                  n x (p+n) rectangle, the mask is applied after,
                                                  and repeats the Hkv heads to H)
    lm_head   = rows * 2 * d * V

with L layers, d hidden size, f MLP size, H query heads, Hkv key/value heads, dh head size and
V vocabulary. Not counted (by either): embedding lookup, RMSNorm, rotary embedding, SiLU and the
gate product, softmax, masking, residual adds, LoRA's scaling, biases; these are elementwise and
together well under 1% of the matmuls for any model worth profiling.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a decoder's config that its cost depends on."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int

    @classmethod
    def from_config(cls, config: Any) -> ModelShape:
        config = getattr(config, "text_config", None) or config
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return cls(
            layers=config.num_hidden_layers,
            hidden=config.hidden_size,
            intermediate=config.intermediate_size,
            heads=heads,
            kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=head_dim,
            vocab=config.vocab_size,
        )

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    # -- analytic FLOPs ----------------------------------------------------------------------
    @property
    def linear_flops_per_token(self) -> int:
        d, f, dh = self.hidden, self.intermediate, self.head_dim
        q_o = 2 * d * self.heads * dh
        k_v = 2 * d * self.kv_heads * dh
        return self.layers * 2 * (q_o + k_v + 3 * d * f)

    def attention_flops(self, new_tokens: int, past_tokens: int) -> int:
        return (
            self.layers * 4 * self.heads * self.head_dim * new_tokens * (past_tokens + new_tokens)
        )

    def lm_head_flops(self, rows: int) -> int:
        return rows * 2 * self.hidden * self.vocab

    def forward_flops(
        self, new_tokens: int, past_tokens: int = 0, *, logit_rows: int = 1, lora_per_token: int = 0
    ) -> int:
        """Analytic FLOPs of one forward pass (see the module docstring)."""
        return (
            new_tokens * (self.linear_flops_per_token + lora_per_token)
            + self.attention_flops(new_tokens, past_tokens)
            + self.lm_head_flops(logit_rows)
        )

    def kv_bytes(self, tokens: int, bytes_per_value: int) -> int:
        """KV-cache bytes for ``tokens`` cached positions (keys and values, every layer)."""
        return 2 * self.layers * self.kv_heads * self.head_dim * tokens * bytes_per_value


def lora_flops_per_token(model: Any) -> int:
    """Per-token FLOPs of the active LoRA matmuls of an unmerged PEFT model: sum of 2*r*(in+out).

    Read from the adapted layers' shapes (in, out, r), which the adapter config determines.
    0 for a model without LoRA layers (or one merged with ``merge_and_unload``).
    """
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # peft absent: no LoRA layers possible
        return 0
    total = 0
    for module in model.modules():
        if isinstance(module, LoraLayer) and not getattr(module, "merged", False):
            for name in module.active_adapters:
                if name in module.r and name in module.lora_A:
                    total += 2 * module.r[name] * (module.in_features + module.out_features)
    return total


@contextmanager
def counting_flops() -> Iterator[Any]:
    """Count the FLOPs of the torch ops run inside; read ``.get_total_flops()`` afterwards."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        yield counter


def set_attention(model: Any, implementation: str) -> None:
    """Switch a (possibly PEFT-wrapped) transformers model to another attention kernel."""
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    target.set_attn_implementation(implementation)
