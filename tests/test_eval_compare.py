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


# -- seeds and noise -----------------------------------------------------------------------------


def _seeded(name, method, seed, value, nll, setting="s-genpi"):
    entry = _entry(name, "adapter", method, value, nll)
    entry.update(seed=seed, setting=setting)
    return entry


def _seed_run(tmp_path, sft_values=(0.5,), sft_nlls=(1.5,)):
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    entries = [
        _entry("upper_bound", "upper_bound", None, 1.0, 0.5),
        _entry("base", "base", None, 0.0, 2.5),
        _seeded("genpi", "genpi", 0, 0.5, 1.0),
        _seeded("genpi-seed1", "genpi", 1, 0.75, 1.5),
        _seeded("genpi-seed2", "genpi", 2, 1.0, 1.25),
    ]
    for seed, (value, nll) in enumerate(zip(sft_values, sft_nlls, strict=True)):
        name = "sft" if seed == 0 else f"sft-seed{seed}"
        entries.append(_seeded(name, "sft", seed, value, nll, setting="s-sft"))
    (run / "eval" / "dev.json").write_text(json.dumps(_summary("dev", entries)))
    return run


def test_compare_pools_seeds_into_mean_and_min_max(tmp_path):
    run = _seed_run(tmp_path, sft_values=(0.25, 0.375), sft_nlls=(2.0, 1.5))
    markdown = compare(run, png=False)
    data = json.loads((run / "compare.json").read_text())["tables"][0]
    rows = {r["name"]: r for r in data["rows"]}
    assert list(rows) == ["upper_bound", "base", "genpi", "sft"]
    genpi = rows["genpi"]
    assert genpi["systems"] == ["genpi", "genpi-seed1", "genpi-seed2"]
    assert genpi["seeds"] == [0, 1, 2]
    assert genpi["scores"]["format"] == 0.75
    assert genpi["spread"]["format"] == {"mean": 0.75, "min": 0.5, "max": 1.0}
    assert genpi["interval"]["format"] == [0.5, 1.0]  # no answers file: the seeds alone
    assert genpi["scores"]["nll"] == 1.25
    assert genpi["normalised"]["nll"] == 0.4  # the upper bound's 0.5 / the mean NLL 1.25
    # gap closed: (2.5 - NLL) / (2.5 - 0.5) per seed: 0.75, 0.5, 0.625
    assert genpi["spread"]["gap_closed"] == {"mean": 0.625, "min": 0.5, "max": 0.75}
    assert rows["upper_bound"]["scores"]["gap_closed"] == 1.0
    assert rows["base"]["scores"]["gap_closed"] == 0.0
    assert rows["sft"]["spread"]["format"] == {"mean": 0.3125, "min": 0.25, "max": 0.375}
    # genpi [0.5, 1.0] and sft [0.25, 0.375] are apart on format; NLL [1.0, 1.5] vs [1.5, 2.0]
    # touch: within noise.
    pair = next(p for p in data["within_noise"] if {p["a"], p["b"]} == {"genpi", "sft"})
    assert pair["within_noise"]["format"] is False
    assert pair["within_noise"]["nll"] is True
    assert rows["sft"]["within_noise_of_best"]["nll"] is True
    assert rows["sft"]["within_noise_of_best"]["format"] is False
    assert rows["genpi"]["within_noise_of_best"]["format"] is None  # the best itself
    assert data["bootstrap"]["resamples"] == 0  # no answers to resample
    assert [r["name"] for r in data["seed_rows"]] == [
        "genpi",
        "genpi-seed1",
        "genpi-seed2",
        "sft",
        "sft-seed1",
    ]

    genpi_row = next(line for line in markdown.splitlines() if line.startswith("| genpi |"))
    assert genpi_row.startswith("| genpi | genpi, 3 seeds | 0.75 (0.75) [0.50, 1.00] |")
    assert "0.62 [0.50, 0.75]" in genpi_row  # gap closed
    sft_row = next(line for line in markdown.splitlines() if line.startswith("| sft |"))
    assert "0.31 (0.31) [0.25, 0.38] |" in sft_row  # format: apart, no mark
    assert "0.29 (1.75) [1.50, 2.00] ≈ |" in sft_row  # NLL: within noise of genpi's
    assert "- genpi vs sft: within noise on NLL, gap closed; apart on format" in markdown
    assert "Per seed (dev):" in markdown and "| genpi-seed1 | genpi |" in markdown


def test_compare_keeps_adapters_of_other_settings_apart(tmp_path):
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    entries = [
        _entry("upper_bound", "upper_bound", None, 1.0, 0.5),
        _seeded("genpi", "genpi", 0, 0.5, 1.0, setting="lr-1e-4"),
        _seeded("genpi-lr3", "genpi", 0, 0.75, 1.0, setting="lr-1e-3"),
        _entry("old", "adapter", "genpi", 0.25, 1.0),  # results from before seeds: no setting
    ]
    (run / "eval" / "dev.json").write_text(json.dumps(_summary("dev", entries)))
    compare(run, png=False)
    data = json.loads((run / "compare.json").read_text())["tables"][0]
    assert [r["name"] for r in data["rows"]] == ["upper_bound", "genpi", "genpi-lr3", "old"]
    assert all(len(r["systems"]) == 1 and not r["spread"] for r in data["rows"])
    assert data["seed_rows"] == []
    assert "gap_closed" not in data["columns"]  # no base model: nothing to close
    # One seed and no answers: no interval, so noise is unknown rather than "apart".
    assert {p["within_noise"]["format"] for p in data["within_noise"]} == {None}


def _answers(run, set_name, systems, n):
    """Per-item rows: each (name, every, nll) system answers item i in format unless i % every
    == 0, and its NLL is nll plus (i % 3) / 4."""
    rows = []
    for name, every, nll in systems:
        for i in range(n):
            acted = i % every != 0
            rows.append(
                {
                    "set": set_name,
                    "system": name,
                    "id": f"{set_name}-{i}",
                    "action": ["bash", "ls"] if acted else None,
                    "reference_action": ["bash", "ls"],
                    "rouge_l": 1.0 if acted else 0.0,
                    "chrf": 1.0 if acted else 0.0,
                    "nll": nll + (i % 3) * 0.25,
                }
            )
    (run / "eval" / f"{set_name}.answers.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows)
    )


def test_compare_bootstrap_over_inputs_is_fixed_and_brackets_the_score(tmp_path):
    from genpi.evaluate.metrics import mean

    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    n = 20
    specs = [("upper_bound", 10**6, 0.5), ("base", 1, 2.5), ("genpi", 2, 1.0), ("sft", 4, 1.5)]
    entries = []
    for name, every, nll in specs:
        kind = name if name in ("upper_bound", "base") else "adapter"
        share = sum(i % every != 0 for i in range(n)) / n
        entry = _entry(name, kind, None if kind != "adapter" else name, share, 0.0)
        entry["scores"]["nll"] = mean([nll + (i % 3) * 0.25 for i in range(n)])
        if kind == "adapter":
            entry.update(seed=0, setting=name)
        entries.append(entry)
    summary = _summary("dev", entries)
    summary["n_items"] = n
    (run / "eval" / "dev.json").write_text(json.dumps(summary))
    _answers(run, "dev", specs, n)

    compare(run, png=False)
    first = (run / "compare.json").read_text()
    compare(run, png=False)
    assert (run / "compare.json").read_text() == first  # a fixed bootstrap seed
    data = json.loads(first)["tables"][0]
    assert data["bootstrap"] == {
        "resamples": 1000,
        "confidence": 0.95,
        "seed": 0,
        "unit": "input",
    }
    rows = {r["name"]: r for r in data["rows"]}
    genpi, sft = rows["genpi"], rows["sft"]
    assert genpi["scores"]["format"] == 0.5 and sft["scores"]["format"] == 0.75
    for row in (genpi, sft):
        for column in ("format", "rouge_l", "nll"):
            lo, hi = row["bootstrap"][column]
            assert lo < row["scores"][column] < hi
            assert row["interval"][column] == row["bootstrap"][column]  # one seed each
    # Paired resamples: every system's NLL differs from the base's and the teacher's by the same
    # amount on every item, so the gap closed is the same on every resample.
    assert genpi["bootstrap"]["gap_closed"] == pytest.approx([0.75, 0.75])
    assert sft["bootstrap"]["gap_closed"] == pytest.approx([0.5, 0.5])
    # The base model never answers in format: every resample agrees.
    assert rows["base"]["bootstrap"]["format"] == [0.0, 0.0]
    assert rows["base"]["bootstrap"]["gap_closed"] == [0.0, 0.0]

    compare(run, png=False, resamples=0)
    data = json.loads((run / "compare.json").read_text())["tables"][0]
    assert data["bootstrap"]["resamples"] == 0
    assert all(not r["bootstrap"] and not r["interval"] for r in data["rows"])


def test_pooled_bootstrap_resamples_the_mean_over_seeds(tmp_path):
    import numpy as np

    from genpi.evaluate import spread

    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    n = 12
    specs = [("upper_bound", 10**6, 0.5), ("genpi", 2, 1.0), ("genpi-seed1", 3, 1.5)]
    entries = [_entry("upper_bound", "upper_bound", None, 1.0, 0.5)]
    for seed, (name, every, _) in enumerate(specs[1:]):
        share = sum(i % every != 0 for i in range(n)) / n
        entries.append(_seeded(name, "genpi", seed, share, 1.0))
    summary = _summary("dev", entries)
    summary["n_items"] = n
    (run / "eval" / "dev.json").write_text(json.dumps(summary))
    _answers(run, "dev", specs, n)

    compare(run, png=False)
    row = json.loads((run / "compare.json").read_text())["tables"][0]["rows"][1]
    assert row["systems"] == ["genpi", "genpi-seed1"]
    indices = spread.bootstrap_indices(n, 1000)
    per_seed = [
        spread.resampled_ratio([float(i % every != 0) for i in range(n)], [1.0] * n, indices)
        for every in (2, 3)
    ]
    expected = spread.percentile_interval(np.mean(per_seed, axis=0), 0.95)
    assert row["bootstrap"]["format"] == list(expected)
    assert row["interval"]["format"] == list(spread.hull(expected, (0.5, 8 / 12)))
