"""The LLMLingua baseline runs offline (no tiktoken download) on a local model, and caches."""

from __future__ import annotations

import pytest

from genpi.prompt import load_prompt


def test_compress_prompt_offline_with_cache(
    tmp_path, tiny_model_dir, example_prompt_path, monkeypatch
):
    pytest.importorskip(
        "llmlingua", reason="the compression baseline needs `pip install llmlingua==0.2.2`"
    )
    from genpi.evaluate import compression

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    prompt = load_prompt(example_prompt_path)
    out = compression.compress_prompt(
        prompt, [0.5], model_dir=str(tiny_model_dir), cache_dir=tmp_path
    )
    record = out[0.5]
    assert 0 < record["compressed_tokens"] < record["origin_tokens"]
    assert record["text"] and len(record["text"]) < len(compression.prompt_document(prompt))
    assert "original" in record["compressor"]
    assert len(list(tmp_path.glob("*-0.5.json"))) == 1

    def refuse(_model_dir):
        raise AssertionError("compressed again instead of reading the cache")

    monkeypatch.setattr(compression, "_offline_compressor", refuse)
    again = compression.compress_prompt(
        prompt, [0.5], model_dir=str(tiny_model_dir), cache_dir=tmp_path
    )
    assert again[0.5]["text"] == record["text"]
    with pytest.raises(compression.CompressionError, match="not in"):
        compression.compress_prompt(prompt, [1.5], model_dir=str(tiny_model_dir))
