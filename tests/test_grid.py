"""``genpi grid`` end to end on the tiny model with tiny counts: one scripted synthesis, every
cell of every grid trained and evaluated, a cell forced to fail marked while the others fill,
then a re-run that trains nothing and adds the OS benchmark's success rates."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from pathlib import Path

import pytest

from genpi import grid
from genpi.grid_report import columns
from genpi.prompt import load_prompt

SHARED_OS = Path(__file__).resolve().parents[1].parent / "shared" / "agentbench" / "os_interaction"
# A cell that cannot train (a config the trainer refuses): it is marked, the rest go on.
BROKEN = grid.Table(
    "broken",
    "a cell forced to fail",
    (grid.Row("forced failure", grid.ADAPTER, grid.Cell("sft", (("max_length", 4),))),),
)


def _args(out: Path, model: Path, prompt: Path, eval_inputs: Path, *extra: str):
    parser = argparse.ArgumentParser()
    grid.add_arguments(parser)
    argv = [str(prompt), "--out", str(out), "--model", str(model), "--preset", "quick"]
    argv += ["--n", "6", "--max-turns", "2", "--max-new-tokens", "8", "--max-steps", "1"]
    argv += ["--heldout-fraction", "0", "--eval-inputs", str(eval_inputs)]
    argv += ["--compression", "0.5", "--no-estimate", *extra]
    return parser.parse_args(argv)


def _run(args, **kwargs):
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        report = grid.run(args, **kwargs)
    return report, text.getvalue()


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory, tiny_model_dir, example_prompt_path):
    from synth_scripted import ScriptedBackend

    root = tmp_path_factory.mktemp("grid")
    eval_inputs = root / "eval.txt"
    eval_inputs.write_text("how many lines are in /etc/hosts?\nwhat is my user id?\n")
    out = root / "run"
    args = _args(out, tiny_model_dir, example_prompt_path, eval_inputs, "--grid", "all")
    backend = ScriptedBackend()
    report, stdout = _run(args, tables=(*grid.GRIDS["all"], BROKEN), backends=(backend, backend))
    return out, eval_inputs, report, stdout


def test_every_cell_of_every_grid_fills_and_a_failing_cell_is_marked(grid_run):
    out, _, report, stdout = grid_run
    assert report["failures"].keys() == {"sft-max_length4"}
    assert report["failures"]["sft-max_length4"].startswith("training: ConfigError: --max-length")
    assert (out / "grid" / "errors" / "training-sft-max_length4.txt").exists()
    tables = {t["table"]: t for t in report["tables"]}
    assert list(tables) == ["table1", "ablations", "lambda", "broken"]  # one evaluation set
    for name in ("table1", "ablations", "lambda"):
        rows = tables[name]["rows"]
        upper = next((r for r in rows if r["kind"] == "upper_bound"), None)
        for row in rows:
            assert row["status"] == "ok", (name, row["label"], row["errors"])
            for column in columns(rows, tables[name]["summary"]):
                # every metric the teacher has a score in, every row has one too
                if upper is None or upper["scores"][column]["raw"] is not None:
                    assert row["scores"][column]["raw"] is not None, (name, row["label"], column)
    assert [r["label"] for r in tables["table1"]["rows"]][4] == "LLMLingua, rate 0.5"
    assert len(tables["lambda"]["rows"]) == 6 and len(tables["ablations"]["rows"]) == 7
    # every trained cell (18: Table 1's 8, 5 more ablations, 5 more λ) evaluated once
    evaluated = {s["name"] for s in tables["table1"]["summary"]["systems"]}
    assert len(evaluated) == 2 + 1 + 18 and "genpi-lam0.3" in evaluated
    broken = tables["broken"]["rows"][0]
    assert broken["status"] == "failed"
    markdown = (out / "grid-all.md").read_text()
    assert "| forced failure | 0 of 1 | failed |" in markdown
    assert "forced failure (sft-max_length4) failed: training: ConfigError" in markdown
    assert "| GenPI, λ = 0.3 | 1 | " in markdown and "failed" not in markdown.split("forced")[0]
    data = json.loads((out / "grid-all.json").read_text())
    assert [t["table"] for t in data["tables"]] == list(tables)
    assert data["settings"]["rates"] == [0.5] and data["settings"]["steps"] == "1 optimizer step"
    assert (out / "grid-all.png").stat().st_size > 0
    assert (out / "compare.md").exists()
    assert "FAILED sft-max_length4" in stdout


def test_a_rerun_trains_nothing_and_adds_the_benchmarks_success_rates(
    grid_run, tiny_model_dir, example_prompt_path
):
    from genpi.grid import bench_unavailable

    out, eval_inputs, _, _ = grid_run
    if not SHARED_OS.is_dir():
        pytest.skip(f"AgentBench OS data not found at {SHARED_OS}")
    weights = {p: p.stat().st_mtime_ns for p in (out / "adapters").glob("*/adapter_model.*")}
    assert len(weights) == 18
    args = _args(
        out,
        tiny_model_dir,
        example_prompt_path,
        eval_inputs,
        *("--grid", "table1", "--bench", "os", "--bench-data", str(SHARED_OS)),
        *("--bench-limit", "1", "--bench-max-new-tokens", "8"),
    )
    report, stdout = _run(args)  # a scripted synthesis is finished: nothing is generated
    assert {p: p.stat().st_mtime_ns for p in weights} == weights
    assert stdout.count("is already trained with this config") == 8
    rows = report["tables"][0]["rows"]
    reason = bench_unavailable("os")
    if reason is not None:
        assert report["ceiling"] == {"skipped": reason}
        assert f"success not measured: {reason}" in (out / "grid-table1.md").read_text()
        return
    assert report["ceiling"]["total"] == 1  # the oracle: the harness's ceiling
    assert "Harness ceiling: the oracle agent passes" in (out / "grid-table1.md").read_text()
    for row in rows:  # every row, the LLMLingua one with its compressed prompt
        success = row["scores"]["success"]
        assert success["total"] == 1, (row["label"], success)
    # the compressed row was played with its own prompt, not the run's (its run.json says so)
    played = json.loads((out / "bench" / "os" / "compressed-0.5" / "run.json").read_text())
    given = load_prompt(out / "bench" / "prompts" / "compressed-0.5.json")
    assert played["prompt"] == given.fingerprint != load_prompt(out / "prompt.json").fingerprint
    assert played["agent"].endswith(f"(prompt {given.name})")
    result = json.loads((out / "bench" / "os" / "genpi" / "result.json").read_text())
    assert result["total"] == 1


def test_estimate_only_bills_every_cell_and_writes_nothing(tmp_path, tiny_model_dir):
    import subprocess
    import sys

    prompt = Path(__file__).resolve().parents[1] / "examples" / "shell_agent.json"
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "genpi", "grid", str(prompt), "--out", str(out)]
    cmd += ["--model", str(tiny_model_dir), "--preset", "quick", "--grid", "all"]
    cmd += ["--estimate-only"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    bill = result.stdout
    for line in ("training: soft-prompt", "training: seqkd-kld", "training: pg", "evaluation"):
        assert line in bill
    # genpi: Table 1's cell and the 5 other λ of the sweep, one run each
    assert "6 x 12 steps" in bill
    assert "2 x 12 steps" in bill  # prepend at 100% and 50%
    assert "23 systems" in bill  # upper bound, base, the paper's 3 LLMLingua rates, 18 cells
    assert not out.exists()


def test_a_benchmark_without_its_data_is_refused_before_any_work(tmp_path, example_prompt_path):
    from genpi.errors import GenpiError

    parser = argparse.ArgumentParser()
    grid.add_arguments(parser)
    args = parser.parse_args(
        [str(example_prompt_path), "--out", str(tmp_path / "run"), "--bench", "os"]
    )
    with pytest.raises(GenpiError, match="--bench os needs --bench-data DIR"):
        grid.run(args)
    assert not (tmp_path / "run").exists()
