"""``genpi compare`` on hand-made evaluation files: every column filled, ablation table, PNG."""

from __future__ import annotations

import json

import pytest

from genpi.evaluate.compare import compare
from genpi.evaluate.metrics import METRICS, normalise_scores


def _entry(name, kind, method, value, nll):
    scores = {m: value for m in METRICS}
    scores["nll"] = nll
    return {
        "name": name,
        "kind": kind,
        "method": method,
        "adapter": None,
        "rate": None,
        "scores": scores,
    }


def _summary(set_name, entries):
    upper = entries[0]["scores"]
    for e in entries:
        e["normalised"] = normalise_scores(e["scores"], upper)
    return {
        "set": set_name,
        "n_items": 26,
        "multi_turn": False,
        "reference": "the upper bound's greedy answers",
        "prompt": {"name": "agentbench-os", "fingerprint": "f"},
        "reader": "os",
        "model": {"ref": "smollm2-135m"},
        "settings": {},
        "compression": {
            "0.3": {"origin_tokens": 508, "compressed_tokens": 227, "compressor": "llmlingua"}
        },
        "systems": entries,
    }


def test_compare_writes_markdown_json_and_png(tmp_path):
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    main = _summary(
        "dev",
        [
            _entry("upper_bound", "upper_bound", None, 1.0, 0.5),
            _entry("base", "base", None, 0.0 + 0.1, 2.0),
            _entry("compressed-0.3", "compressed", None, 0.4, 1.0),
            _entry("genpi", "adapter", "genpi", 0.9, 0.6),
            _entry("sft", "adapter", "sft", 0.5, 0.8),
            _entry("no-reason", "adapter", "genpi-no-reason", 0.7, 0.7),
        ],
    )
    plain = _summary(
        "heldout",
        [
            _entry("upper_bound", "upper_bound", None, 0.8, 0.5),
            _entry("genpi", "adapter", "genpi", 0.4, 1.0),
        ],
    )
    (run / "eval" / "dev.json").write_text(json.dumps(main))
    (run / "eval" / "heldout.json").write_text(json.dumps(plain))
    (run / "eval" / "compressed").mkdir()  # other files in eval/ are ignored

    markdown = compare(run)
    assert markdown == (run / "compare.md").read_text()
    lines = markdown.splitlines()
    header = next(line for line in lines if line.startswith("| system"))
    for label in ("format", "action type", "exact action", "ROUGE-L", "chrF", "NLL"):
        assert label in header
    table = [line for line in lines if line.startswith("| ") and not line.startswith("| system")]
    assert all("–" not in line for line in table)  # every column filled
    genpi_row = next(line for line in lines if line.startswith("| genpi | genpi |"))
    assert "0.90 (0.90)" in genpi_row and "0.83 (0.60)" in genpi_row  # NLL: 0.5 / 0.6
    assert "heldout" in markdown and "0.50 (0.40)" in markdown  # normalised within its own set
    assert "Ablation (dev" in markdown and "Ablation (heldout" not in markdown
    assert "508→227" in markdown

    data = json.loads((run / "compare.json").read_text())
    dev = data["tables"][0]
    assert dev["set"] == "dev" and dev["ablation"] == ["genpi", "no-reason", "sft"]
    assert dev["systems"][3]["normalised"]["format"] == pytest.approx(0.9)
    assert (run / "compare.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_without_results_says_what_to_run(tmp_path):
    from genpi.cli import main

    assert main(["compare", str(tmp_path)]) == 2
