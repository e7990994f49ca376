"""One parser for backend references: the kind, the model, the name a run directory records."""

from __future__ import annotations

import pytest

from genpi.llm.refs import parse_backend_ref


@pytest.mark.parametrize(
    ("ref", "kind", "model", "name"),
    [
        (None, "local", None, "smollm2-135m"),
        ("smollm2-135m", "local", "smollm2-135m", "smollm2-135m"),
        ("/models/q.gguf", "local", "/models/q.gguf", "/models/q.gguf"),
        ("vllm:Qwen/Qwen2.5-7B", "vllm", "Qwen/Qwen2.5-7B", "vllm:Qwen/Qwen2.5-7B"),
        ("http://127.0.0.1:8000/v1/#m", "http", "m", "m@http://127.0.0.1:8000/v1"),
        ("https://api.example/v1#gpt", "https", "gpt", "gpt@https://api.example/v1"),
    ],
)
def test_a_reference_names_its_kind_model_and_recorded_name(ref, kind, model, name):
    parsed = parse_backend_ref(ref)
    assert parsed.kind == kind.replace("https", "http")
    assert parsed.model == model
    assert parsed.name == name
    assert parsed.remote == (kind.startswith("http"))


def test_a_remote_model_is_not_loadable_here():
    with pytest.raises(ValueError, match="remote"):
        _ = parse_backend_ref("http://h/v1#m").local_model
    assert parse_backend_ref("vllm:x").local_model == "x"
