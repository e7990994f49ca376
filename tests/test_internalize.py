"""``genpi internalize --preset quick`` end to end on the embedded model, with tiny counts."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_internalize_quick_produces_adapter_eval_and_table(tmp_path, example_prompt_path):
    inputs = tmp_path / "inputs.txt"
    inputs.write_text(
        "how many files are in /etc?\nwhat is the kernel version?\nwho am I?\nhow big is /tmp?\n"
    )
    eval_inputs = tmp_path / "eval.txt"
    eval_inputs.write_text("how many lines are in /etc/hosts?\nwhat is my user id?\n")
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "genpi",
        "internalize",
        str(example_prompt_path),
        "--out",
        str(out),
        "--preset",
        "quick",
        "--inputs-file",
        str(inputs),
        "--eval-inputs",
        str(eval_inputs),
        "--n",
        "4",
        "--max-turns",
        "1",
        "--max-new-tokens",
        "12",
        "--max-steps",
        "1",
        "--methods",
        "genpi",
        "--compression",
        "0.5",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stderr[-3000:]
    adapter = out / "adapters" / "genpi"
    assert (adapter / "adapter_model.safetensors").exists()
    assert json.loads((adapter / "genpi_adapter.json").read_text())["method"] == "genpi"
    summary = json.loads((out / "eval" / "eval.json").read_text())
    assert summary["n_items"] == 2
    names = [s["name"] for s in summary["systems"]]
    assert names[:2] == ["upper_bound", "base"] and "genpi" in names and "compressed-0.5" in names
    table = (out / "compare.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| genpi")]
    assert rows and "| |" not in rows[0] and " - |" not in rows[0]  # every column filled
    assert "upper_bound" in result.stdout and "done in" in result.stdout
    assert "Estimated wall time on this machine" in result.stdout  # the bill came first
    assert result.stdout.index("Estimated wall time") < result.stdout.index("2/4 training")
    # a second run resumes everything and trains nothing again
    written = {
        p: p.stat().st_mtime_ns
        for p in [adapter / "adapter_model.safetensors", *out.glob("*.jsonl")]
    }
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in written} == written
    assert "already trained with this config" in again.stdout + again.stderr
    assert "Estimated wall time" not in again.stdout  # nothing heavy left: no probe


def test_estimate_only_prints_the_bill_and_writes_nothing(tmp_path, tiny_model_dir):
    from pathlib import Path

    prompt = Path(__file__).resolve().parents[1] / "examples" / "shell_agent.json"
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "genpi", "internalize", str(prompt), "--out", str(out)]
    cmd += ["--model", str(tiny_model_dir), "--preset", "paper", "--estimate-only"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    bill = result.stdout
    for stage in ("synthesis: role-play", "training: genpi", "training: kld", "evaluation"):
        assert stage in bill
    assert "total" in bill
    assert not out.exists()
