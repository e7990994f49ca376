"""``genpi grid``'s definitions, ordering and normalisation on hand-made scores (exact values)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from genpi.errors import GenpiError
from genpi.grid import (
    ABLATIONS,
    GRIDS,
    LAMBDA,
    TABLE1,
    Cell,
    Failures,
    cell_seeds,
    cells_of,
    compressed_prompt_files,
    evaluate_isolating,
    named_cells,
    resolve,
    seeded_cells,
    success_stage,
)
from genpi.grid_report import (
    RowSpec,
    build_rows,
    columns,
    format_cell,
    render_table,
    success_cell,
)
from genpi.train.config import make_config

BASE = make_config("quick")  # lam 0.7, prepend_prob 1.0, as every preset


def test_a_cell_is_named_after_the_fields_it_changes():
    assert Cell("genpi", (("lam", 0.7),)).name(BASE) == "genpi"  # the preset's λ: Table 1's cell
    assert Cell("genpi", (("lam", 0.3),)).name(BASE) == "genpi-lam0.3"
    assert Cell("genpi", (("lam", 0.0),)).name(BASE) == "genpi-lam0"
    assert Cell("genpi", (("lam", 1.0),)).name(BASE) == "genpi-lam1"
    assert Cell("prepend", (("prepend_prob", 0.5),)).name(BASE) == "prepend-p0.5"
    assert Cell("prepend", (("prepend_prob", 1.0),)).name(BASE) == "prepend"
    other = make_config("quick", lam=0.5)
    assert Cell("genpi", (("lam", 0.7),)).name(other) == "genpi-lam0.7"


def test_every_grid_trains_each_cell_once_in_table_order():
    table1 = ["prepend", "prepend-p0.5", "soft-prompt", "kld", "seqkd", "seqkd-kld", "sft", "genpi"]
    assert list(cells_of(GRIDS["table1"], BASE)) == table1
    ablations = [
        "genpi",
        "genpi-no-reason",
        "genpi-no-prompt",
        "genpi-r-given-p",
        "genpi-p-given-r",
        "pg",
        "sft",
    ]
    assert list(cells_of(GRIDS["ablations"], BASE)) == ablations
    lam = ["genpi-lam0", "genpi-lam0.3", "genpi-lam0.5", "genpi", "genpi-lam0.9", "genpi-lam1"]
    assert list(cells_of(GRIDS["lambda"], BASE)) == lam
    # all: Table 1's cells, then the ablations' and the sweep's new ones (genpi, sft once)
    new_ablations = ablations[1:-1]
    new_lambdas = [n for n in lam if n != "genpi"]
    assert list(cells_of(GRIDS["all"], BASE)) == table1 + new_ablations + new_lambdas
    assert GRIDS["all"] == (TABLE1, ABLATIONS, LAMBDA)


def test_table1_rows_in_the_papers_order_with_a_row_per_rate_and_a_system_per_seed():
    specs = resolve(TABLE1, BASE, seeds=[0, 2], rates=[0.9, 0.3])
    assert [(s.label, s.kind, s.systems) for s in specs] == [
        ("upper bound (prompt given)", "upper_bound", ("upper_bound",)),
        ("base model (no prompt)", "base", ("base",)),
        ("prompt prepending, 100%", "adapter", ("prepend", "prepend-seed2")),
        ("prompt prepending, 50%", "adapter", ("prepend-p0.5", "prepend-p0.5-seed2")),
        ("LLMLingua, rate 0.9", "compressed", ("compressed-0.9",)),
        ("LLMLingua, rate 0.3", "compressed", ("compressed-0.3",)),
        ("soft prompt (prompt tuning)", "adapter", ("soft-prompt", "soft-prompt-seed2")),
        ("KLD", "adapter", ("kld", "kld-seed2")),
        ("SeqKD", "adapter", ("seqkd", "seqkd-seed2")),
        ("SeqKD+KLD", "adapter", ("seqkd-kld", "seqkd-kld-seed2")),
        ("only SFT", "adapter", ("sft", "sft-seed2")),
        ("GenPI", "adapter", ("genpi", "genpi-seed2")),
    ]
    assert specs[2].seeds == (0, 2) and specs[2].cell == "prepend"
    ablation = [s.label for s in resolve(ABLATIONS, BASE, [0], [])]
    assert ablation == [
        "GenPI",
        "Table 2: w/o reason",
        "Table 2: w/o prompt",
        "Table 3: P(r|p,x,y)",
        "Table 3: P(p|x,y,r)",
        "GenPI w/o L_SFT",
        "GenPI w/o L_PG",
    ]
    sweep = resolve(LAMBDA, BASE, [0], [])
    assert [s.label for s in sweep][3] == "GenPI, λ = 0.7" and sweep[3].systems == ("genpi",)


def test_every_seed_only_for_the_cells_named_the_others_with_the_first():
    """The issue's grid: 3 seeds for genpi, sft, kld, one for every other row."""
    seeded = {"genpi", "sft", "kld"}
    assert cell_seeds("genpi", [0, 1, 2], seeded) == [0, 1, 2]
    assert cell_seeds("seqkd", [0, 1, 2], seeded) == [0]
    assert cell_seeds("seqkd", [0, 1, 2], None) == [0, 1, 2]
    specs = {s.label: s for s in resolve(TABLE1, BASE, [0, 1, 2], [0.5], seeded)}
    assert specs["GenPI"].systems == ("genpi", "genpi-seed1", "genpi-seed2")
    assert specs["KLD"].seeds == (0, 1, 2)
    assert specs["SeqKD"].systems == ("seqkd",) and specs["SeqKD"].seeds == (0,)
    assert specs["prompt prepending, 50%"].systems == ("prepend-p0.5",)
    cells = cells_of(GRIDS["table1"], BASE)
    args = argparse.Namespace(all_seeds_for="genpi, sft,kld", grid="table1")
    assert seeded_cells(args, cells) == seeded
    assert seeded_cells(argparse.Namespace(all_seeds_for=None, grid="table1"), cells) is None
    with pytest.raises(GenpiError, match="genpi-lam0.3, not a cell of --grid table1"):
        seeded_cells(argparse.Namespace(all_seeds_for="genpi-lam0.3", grid="table1"), cells)


def test_bench_cells_runs_only_the_cells_named_beside_the_upper_bound_and_base(
    tmp_path, monkeypatch
):
    import genpi.grid as grid

    cells = cells_of(GRIDS["table1"], BASE)
    args = argparse.Namespace(bench_cells="genpi,kld", grid="table1", bench="os")
    assert named_cells(args, cells, "bench_cells") == {"genpi", "kld"}
    with pytest.raises(GenpiError, match="--bench-cells names pg, not a cell of --grid table1"):
        named_cells(argparse.Namespace(bench_cells="pg", grid="table1"), cells, "bench_cells")

    ran = {}

    def fake_bench(args, out, name, mode, model_ref):
        ran[name] = mode
        return {"pass": 1, "total": 2, "out": str(out / name)}

    monkeypatch.setattr(grid, "run_bench", fake_bench)
    adapters = {n: tmp_path / n for n in ("genpi", "genpi-seed1", "kld", "seqkd")}
    failures = Failures(tmp_path / "errors")
    left_out = ["seqkd"]
    compressed = {"compressed-0.5": tmp_path / "c.json"}
    success, ceiling = success_stage(
        args, tmp_path, "m", adapters, None, failures, left_out, compressed
    )
    assert list(ran) == [
        *("oracle", "upper_bound", "base"),
        *("genpi", "genpi-seed1", "kld", "compressed-0.5"),
    ]
    assert ran["compressed-0.5"] == ["--prompt", str(tmp_path / "c.json")]
    assert ran["kld"] == ["--adapter", str(tmp_path / "kld")] and ran["base"] == ["--no-prompt"]
    assert success["seqkd"] == {"skipped": "not run on the benchmark (--bench-cells)"}
    assert success["genpi-seed1"]["pass"] == 1 and ceiling["total"] == 2
    # a harness that cannot run here: its reason everywhere, the cells left out still say why
    success, _ = success_stage(args, tmp_path, "m", adapters, "no sandbox", failures, left_out)
    assert success["kld"] == {"skipped": "no sandbox"}
    assert success["seqkd"]["skipped"].startswith("not run")


def test_each_llmlingua_row_gets_its_cached_compressed_prompt_as_a_prompt_file(tmp_path):
    from genpi.evaluate.compression import cache_path, run_cache_dir
    from genpi.prompt import load_prompt

    prompt = load_prompt(Path(__file__).parents[1] / "examples" / "shell_agent.json")
    cached = cache_path(run_cache_dir(tmp_path), prompt, 0.5)
    cached.parent.mkdir(parents=True)
    cached.write_text(json.dumps({"rate": 0.5, "text": "Reply Thought: then Action: run[...]"}))
    files, missing = compressed_prompt_files(tmp_path, prompt, [0.5, 0.3])
    assert missing == {
        "compressed-0.3": {"skipped": "no compressed prompt (its evaluation did not compress)"}
    }
    given = load_prompt(files["compressed-0.5"])
    assert given.name == f"{prompt.name}-compressed-0.5"
    assert given.messages == (
        {"role": "system", "content": "Reply Thought: then Action: run[...]"},
    )
    assert (given.input_template, given.action_pattern) == (
        prompt.input_template,
        prompt.action_pattern,
    )


def _entry(name, kind, **scores):
    full = dict.fromkeys(("format", "action_type", "exact_action", "rouge_l", "chrf", "nll"))
    return {"name": name, "kind": kind, "scores": {**full, **scores}}


SUMMARY = {
    "set": "heldout",
    "n_items": 8,
    "reference": "the upper bound's greedy answers",
    "systems": [
        _entry("upper_bound", "upper_bound", format=0.5, rouge_l=1.0, nll=0.5),
        _entry("base", "base", format=0.0, rouge_l=0.25, nll=2.0),
        _entry("compressed-0.5", "compressed", format=0.125, rouge_l=0.5, nll=1.0),
        _entry("genpi", "adapter", format=0.25, rouge_l=0.5, nll=0.5),
        _entry("genpi-seed1", "adapter", format=0.5, rouge_l=0.75, nll=1.5),
        _entry("sft", "adapter", format=0.75, rouge_l=0.5, nll=1.0),
    ],
}
SPECS = [
    RowSpec("upper", "upper_bound", ("upper_bound",)),
    RowSpec("base", "base", ("base",)),
    RowSpec("LLMLingua 0.5", "compressed", ("compressed-0.5",)),
    RowSpec("GenPI", "adapter", ("genpi", "genpi-seed1"), "genpi", (0, 1)),
    RowSpec("SFT", "adapter", ("sft", "sft-seed1"), "sft", (0, 1)),
    RowSpec("KLD", "adapter", ("kld", "kld-seed1"), "kld", (0, 1)),
]
FAILURES = {
    "sft-seed1": "training: ConfigError: --max-length 4 is too small",
    "kld": "evaluation: RuntimeError: boom",
    "kld-seed1": "evaluation: RuntimeError: boom",
}


def test_rows_pool_seeds_and_normalise_to_the_upper_bound():
    rows = build_rows(SPECS, SUMMARY, FAILURES)
    assert [r["label"] for r in rows] == ["upper", "base", "LLMLingua 0.5", "GenPI", "SFT", "KLD"]
    assert [r["status"] for r in rows] == ["ok", "ok", "ok", "ok", "partial", "failed"]
    upper, base, lingua, genpi, sft, kld = rows
    assert upper["scores"]["format"] == {"raw": 0.5, "normalised": 1.0}
    assert upper["scores"]["nll"] == {"raw": 0.5, "normalised": 1.0}
    assert upper["scores"]["chrf"] == {"raw": None, "normalised": None}
    assert base["scores"]["nll"] == {"raw": 2.0, "normalised": 0.25}  # 0.5 / 2.0
    assert lingua["scores"]["format"] == {"raw": 0.125, "normalised": 0.25}
    # GenPI: two seeds; the mean of the raw scores normalised, and the seeds' normalised ends
    assert genpi["scores"]["format"] == {"raw": 0.375, "normalised": 0.75, "min": 0.5, "max": 1.0}
    assert genpi["scores"]["rouge_l"] == {
        "raw": 0.625,
        "normalised": 0.625,
        "min": 0.5,
        "max": 0.75,
    }
    nll = genpi["scores"]["nll"]  # lower is better: upper / system, ends swapped
    assert (nll["raw"], nll["normalised"], nll["max"]) == (1.0, 0.5, 1.0)
    assert nll["min"] == pytest.approx(1 / 3)
    # SFT: seed 1 failed in training, seed 0 counts alone (no spread)
    assert sft["evaluated"] == ["sft"] and sft["errors"] == {"sft-seed1": FAILURES["sft-seed1"]}
    assert sft["scores"]["format"] == {"raw": 0.75, "normalised": 1.5}
    assert kld["scores"]["format"] == {"raw": None, "normalised": None}
    assert columns(rows, SUMMARY) == ["format", "rouge_l", "nll"]  # none has the others
    # a table of failed rows still has the evaluation's columns
    failed = build_rows([SPECS[-1]], SUMMARY, FAILURES)
    assert columns(failed, SUMMARY) == ["format", "rouge_l", "nll"]
    assert (
        render_table("T", SUMMARY, failed).splitlines()[6]
        == "| KLD | 0 of 2 | failed | failed | failed |"
    )


def test_a_zero_upper_bound_gives_no_scale_but_keeps_the_raw_score():
    summary = {
        **SUMMARY,
        "systems": [_entry("upper_bound", "upper_bound", format=0.0), _entry("base", "base")],
    }
    base = build_rows([RowSpec("base", "base", ("base",))], summary)[0]
    assert base["scores"]["format"] == {"raw": None, "normalised": None}
    adapter = build_rows([RowSpec("x", "adapter", ("upper_bound",))], summary)[
        0
    ]  # the upper bound's own format, 0: raw kept, no normalised value
    assert adapter["scores"]["format"] == {"raw": 0.0, "normalised": None}
    assert format_cell(adapter["scores"]["format"], "format") == "– (0.00)"


def test_success_rates_normalised_by_the_upper_bounds():
    success = {
        "upper_bound": {"pass": 4, "total": 8},
        "base": {"pass": 0, "total": 8},
        "genpi": {"pass": 2, "total": 8},
        "genpi-seed1": {"pass": 4, "total": 8},
        "sft": {"error": "benchmark: SandboxError: no sandbox"},
    }
    rows = build_rows(SPECS, SUMMARY, FAILURES, success)
    by_label = {r["label"]: r["scores"]["success"] for r in rows}
    assert by_label["upper"] == {"raw": 0.5, "normalised": 1.0, "pass": 4, "total": 8}
    assert by_label["base"] == {"raw": 0.0, "normalised": 0.0, "pass": 0, "total": 8}
    assert by_label["GenPI"] == {
        "raw": 0.375,
        "normalised": 0.75,
        "min": 0.5,
        "max": 1.0,
        "pass": 6,
        "total": 16,
    }
    assert by_label["SFT"]["note"] == "benchmark: SandboxError: no sandbox"
    assert by_label["SFT"]["raw"] is None
    assert by_label["KLD"] == {"raw": None, "normalised": None, "note": "not run"}
    assert by_label["LLMLingua 0.5"] == {"raw": None, "normalised": None, "note": "not run"}
    assert columns(rows, SUMMARY)[-1] == "success"
    assert format_cell(by_label["GenPI"], "success") == "0.75 (6/16) [0.50, 1.00]"
    assert success_cell([{"pass": 0, "total": 8}], 0.0)["normalised"] is None  # no scale


def test_the_markdown_table_rows_and_failure_notes():
    success = {name: {"skipped": "no sandbox here"} for name in ("upper_bound", "base", "genpi")}
    rows = build_rows(SPECS, SUMMARY, FAILURES, success)
    text = render_table("Table 1", SUMMARY, rows)
    lines = text.splitlines()
    assert lines[0] == "### Table 1: heldout (8 inputs)"
    head = lines.index("| system | seeds | format | ROUGE-L | NLL | success |")
    assert lines[head + 2 : head + 8] == [
        "| upper | – | 1.00 (0.50) | 1.00 (1.00) | 1.00 (0.50) | – |",
        "| base | – | 0.00 (0.00) | 0.25 (0.25) | 0.25 (2.00) | – |",
        "| LLMLingua 0.5 | – | 0.25 (0.12) | 0.50 (0.50) | 0.50 (1.00) | – |",
        "| GenPI | 2 | 0.75 (0.38) [0.50, 1.00] | 0.62 (0.62) [0.50, 0.75] "
        "| 0.50 (1.00) [0.33, 1.00] | – |",
        "| SFT | 1 of 2 | 1.50 (0.75) | 0.50 (0.50) | 0.50 (1.00) | – |",
        "| KLD | 0 of 2 | failed | failed | failed | – |",
    ]
    notes = lines[lines.index("Notes:") + 2 :]
    assert notes == [
        "- SFT (sft-seed1) failed: training: ConfigError: --max-length 4 is too small",
        "- KLD (kld) failed: evaluation: RuntimeError: boom",
        "- KLD (kld-seed1) failed: evaluation: RuntimeError: boom",
        "- upper: success: no sandbox here",
        "- base: success: no sandbox here",
        "- LLMLingua 0.5: success: not run",
        "- GenPI: success: no sandbox here",
        "- SFT: success: not run",
        "- KLD: success: not run",
    ]


def test_one_reason_for_every_rows_success_is_said_once():
    success = {name: {"skipped": "no sandbox here"} for s in SPECS for name in s.systems}
    text = render_table("T", SUMMARY, build_rows(SPECS, SUMMARY, {}, success))
    assert text.count("no sandbox here") == 1
    assert "- success not measured: no sandbox here" in text


def test_evaluation_failures_are_isolated_to_their_cell(tmp_path):
    calls = []

    def run_eval(paths, rates):
        calls.append(([p.name for p in paths], list(rates)))
        if any(p.name == "bad" for p in paths):
            raise RuntimeError("cannot load bad")
        if 0.3 in rates:
            raise ValueError("llmlingua broke")
        return [{"set": "heldout", "paths": [p.name for p in paths], "rates": list(rates)}]

    failures = Failures(tmp_path / "errors")
    adapters = {"good": Path("good"), "bad": Path("bad"), "also": Path("also")}
    result = evaluate_isolating(run_eval, adapters, [0.9, 0.3], failures)
    assert calls == [
        (["good", "bad", "also"], [0.9, 0.3]),  # everything at once: fails
        ([], []),  # the teacher and base model alone
        ([], [0.9, 0.3]),  # LLMLingua: fails, its rows are marked
        (["good"], []),
        (["bad"], []),
        (["also"], []),
        (["good", "also"], []),  # the rest, in one run
    ]
    assert result == [{"set": "heldout", "paths": ["good", "also"], "rates": []}]
    assert failures.errors == {
        "compressed-0.9": "evaluation: ValueError: llmlingua broke",
        "compressed-0.3": "evaluation: ValueError: llmlingua broke",
        "bad": "evaluation: RuntimeError: cannot load bad",
    }
    assert "cannot load bad" in (tmp_path / "errors" / "evaluation-bad.txt").read_text()
    # nothing fails: one run, nothing marked
    calls.clear()
    clean = Failures(tmp_path / "clean")
    evaluate_isolating(run_eval, {"good": Path("good")}, [0.9], clean)
    assert calls == [(["good"], [0.9])] and clean.errors == {}


def test_a_teacher_that_cannot_be_evaluated_stops_the_grid(tmp_path):
    def run_eval(paths, rates):
        raise OSError("the model is gone")

    with pytest.raises(OSError, match="the model is gone"):
        evaluate_isolating(run_eval, {"a": Path("a")}, [], Failures(tmp_path))


def test_a_label_with_a_pipe_stays_in_its_markdown_cell():
    spec = RowSpec("P(r|p,x,y)", "adapter", ("genpi",), "genpi", (0,))
    text = render_table("T", SUMMARY, build_rows([spec], SUMMARY))
    row = [line for line in text.splitlines() if line.startswith("| P(")]
    assert row == ["| P(r\\|p,x,y) | 1 | 0.50 (0.25) | 0.50 (0.50) | 1.00 (0.50) |"]
