"""Shared fixtures: a tiny random model built from a config, the embedded model, shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
AGENTBENCH = SHARED / "agentbench"


@pytest.fixture(scope="session")
def agentbench_dir() -> Path:
    if not AGENTBENCH.is_dir():
        pytest.skip(f"AgentBench data not found at {AGENTBENCH} (../shared beside the checkout)")
    return AGENTBENCH


@pytest.fixture(scope="session")
def sandbox_rootfs() -> Path:
    """The namespace sandbox's root filesystem (built once), else a skip with the reason; a
    failure instead where GENPI_REQUIRE_SANDBOX=1 (.ci/run sets it), so CI cannot skip silently."""
    from genpi.bench.os.sandbox import ready_rootfs

    path, reason = ready_rootfs()
    if path is None:
        if os.environ.get("GENPI_REQUIRE_SANDBOX") == "1":
            pytest.fail(f"namespace sandbox required (GENPI_REQUIRE_SANDBOX=1) but: {reason}")
        pytest.skip(f"namespace sandbox unavailable here: {reason}")
    return path


@pytest.fixture(scope="session")
def os_prompt_path(agentbench_dir: Path) -> Path:
    return agentbench_dir / "prompts" / "os.json"


@pytest.fixture(scope="session")
def example_prompt_path() -> Path:
    return Path(__file__).resolve().parents[1] / "examples" / "shell_agent.json"


@pytest.fixture(scope="session")
def tokenizer():
    """The embedded model's tokenizer (converted once into the genpi cache)."""
    from genpi.models import load_tokenizer

    return load_tokenizer("smollm2-135m")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> Path:
    """A 2-layer random Llama with the embedded tokenizer, saved as a local model directory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        # wider than the default 0.02, so greedy replies vary instead of repeating one token
        initializer_range=0.1,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_backend(tiny_model_dir):
    from genpi.llm.local import LocalBackend

    return LocalBackend.from_ref(str(tiny_model_dir), dtype="fp32")


@pytest.fixture(scope="session")
def embedded_backend():
    from genpi.llm.local import LocalBackend

    return LocalBackend.from_ref("smollm2-135m")


@pytest.fixture(scope="session")
def tiny_adapter_dir(tmp_path_factory, tiny_model_dir, example_prompt_path) -> Path:
    """A LoRA adapter for the tiny model (rank 4) with random (non-zero) weights and genpi's
    metadata."""
    from genpi.adapter import make_random_adapter
    from genpi.prompt import load_prompt

    out = tmp_path_factory.mktemp("tiny-adapter")
    return make_random_adapter(
        str(tiny_model_dir), load_prompt(example_prompt_path), out, seed=1, rank=4
    )


@pytest.fixture
def prefix_runs(monkeypatch):
    """How many shared prefixes were computed (proof the shared path ran, not the fallback)."""
    from genpi.llm.local import SharedPrefix

    calls: list[int] = []
    original = SharedPrefix.compute.__func__

    def counted(cls, model, tokens):
        calls.append(len(tokens))
        return original(cls, model, tokens)

    monkeypatch.setattr(SharedPrefix, "compute", classmethod(counted))
    return calls
