"""A checkpoint never asks the Hub anything: PEFT's "auto" embedding check looks the base's
config.json up online when ``base_model_name_or_path`` is a hub id, which genpi sets for vLLM."""

from __future__ import annotations

import peft.utils.save_and_load as peft_save
import pytest


def _peft_model(tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    from genpi.models import load_model

    model, _ = load_model(str(tiny_model_dir), dtype="fp32", device="cpu")
    lora = LoraConfig(r=2, lora_alpha=4, target_modules="all-linear")
    peft_model = get_peft_model(model, lora)
    peft_model.peft_config["default"].base_model_name_or_path = "example-org/not-a-local-dir"
    return peft_model


def test_checkpoints_skip_the_hub_lookup(tiny_model_dir, tmp_path, monkeypatch):
    from genpi.train.hf_trainer import adapter_only_saves

    def no_network(*args, **kwargs):
        raise AssertionError("the Hub was asked for a file")

    monkeypatch.setattr(peft_save, "check_file_exists_on_hf_hub", no_network)
    model = _peft_model(tiny_model_dir)
    with pytest.raises(AssertionError, match="the Hub was asked"):
        model.save_pretrained(tmp_path / "plain")  # PEFT's default: what the Trainer called
    with adapter_only_saves(model):
        model.save_pretrained(tmp_path / "checkpoint")
    assert (tmp_path / "checkpoint" / "adapter_model.safetensors").is_file()
    assert "save_pretrained" not in vars(model)  # the class's method again afterwards
