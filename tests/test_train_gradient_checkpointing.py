"""`gradient_checkpointing`: the decoder's activations are recomputed in backward (each layer runs
twice per micro-step) and the losses do not change, on the hidden-state path of a LoRA run."""

from __future__ import annotations

import json

import pytest


def test_checkpointing_recomputes_each_layer_and_keeps_the_losses(tmp_path, tiny_model_dir):
    # The spy sits on a layer's MLP, inside the checkpointed layer: transformers wraps the decoder
    # layer's own forward for checkpointing, and patching that would switch the wrapping off.
    from transformers.models.llama.modeling_llama import LlamaMLP

    from genpi.train.trainer import train
    from test_train_methods import PROMPT, tiny_config
    from test_train_rundir import make_run_dir

    run = make_run_dir(tmp_path / "run", PROMPT, n=4)
    original = LlamaMLP.forward
    runs = {}
    for checkpointing in (False, True):
        calls = 0

        def counted(self, *args, **kwargs):
            nonlocal calls
            if self.training:  # training passes only, not the setup's probe
                calls += 1
            return original(self, *args, **kwargs)

        LlamaMLP.forward = counted
        try:
            config = tiny_config(max_steps=2, gradient_checkpointing=checkpointing)
            out = train(
                run,
                "genpi",
                config,
                model_ref=str(tiny_model_dir),
                out_dir=tmp_path / f"ckpt-{checkpointing}",
                echo=lambda _: None,
            )
        finally:
            LlamaMLP.forward = original
        losses = [
            json.loads(line)["loss"]
            for line in (out / "loss.jsonl").read_text().splitlines()
            if "loss" in json.loads(line)
        ]
        runs[checkpointing] = (calls, losses)
    (plain_calls, plain_losses), (ckpt_calls, ckpt_losses) = runs[False], runs[True]
    assert plain_calls > 0 and ckpt_calls == 2 * plain_calls
    assert len(ckpt_losses) == len(plain_losses) == 2
    assert ckpt_losses == pytest.approx(plain_losses, rel=1e-5)
