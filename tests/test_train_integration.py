"""A few optimizer steps of `genpi` on the embedded SmolLM2-135M model from a small run directory."""

from __future__ import annotations

import json

import pytest

from genpi.adapter import check_adapter
from genpi.models import resolve_model
from genpi.prompt import load_prompt
from genpi.train.config import make_config
from genpi.train.trainer import train
from test_train_rundir import make_run_dir

pytestmark = pytest.mark.integration


def test_genpi_on_the_embedded_model(tmp_path, example_prompt_path):
    prompt = load_prompt(example_prompt_path)
    run = make_run_dir(tmp_path / "run", prompt, n=2)
    # Two full-batch steps on the same two examples: the second sees what the first learned.
    config = make_config(
        "quick",
        max_steps=2,
        per_device_batch=1,
        effective_batch=2,
        learning_rate=1e-3,
        lora_dropout=0.0,
        save_steps=100,
    )
    out = train(run, "genpi", config, echo=lambda _: None)  # model from the run's manifest
    assert out == run / "adapters" / "genpi"
    rows = [json.loads(line) for line in (out / "loss.jsonl").read_text().splitlines()]
    assert rows[-1]["loss"] < rows[0]["loss"]
    report = json.loads((out / "data_report.json").read_text())
    # The default max length fits the longest PG target (the whole prompt): nothing dropped.
    assert report["dropped_overlong"] == 0
    assert report["max_length"] == report["streams"]["pg"]["longest"] > 500
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    resolved = resolve_model("smollm2-135m")
    info = check_adapter(
        out,
        base_model="smollm2-135m",
        base_weights_sha256=resolved.provenance["weights_sha256"],
        prompt=prompt,
    )
    assert info.config["grad_accum"] == 2
