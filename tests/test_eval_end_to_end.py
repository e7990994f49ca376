"""``genpi eval`` and ``genpi compare`` end to end on the tiny model, and on the embedded model."""

from __future__ import annotations

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file

from genpi.cli import main as genpi_main
from genpi.evaluate.compare import compare
from genpi.evaluate.inputs import read_inputs
from genpi.evaluate.run import evaluate
from genpi.prompt import load_prompt


def _run_dir(tmp_path, example_prompt_path, tiny_adapter_dir):
    """A hand-made run directory: prompt, two held-out role-played conversations, one training
    example, and two adapters (copies of the tiny adapter, one a different method)."""
    run = tmp_path / "run"
    run.mkdir()
    load_prompt(example_prompt_path).save(run / "prompt.json")
    inputs = [
        {"id": "a", "input": "how many users are there?", "split": "heldout"},
        {"id": "b", "input": "what is the largest file in /tmp?", "split": "heldout"},
        {"id": "c", "input": "count the lines of /etc/hosts", "split": "train"},
    ]
    turns = [
        {
            "role": "assistant",
            "content": "Thought: I will count them.\nAction: run[wc -l < /etc/passwd]",
        },
        {"role": "user", "content": "Output:\n27"},
        {"role": "assistant", "content": "Thought: I can answer.\nAction: done[27]"},
    ]
    (run / "inputs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in inputs))
    (run / "conversations.jsonl").write_text(
        "".join(
            json.dumps({"id": r["id"], "input": r["input"], "turns": turns}) + "\n" for r in inputs
        )
    )
    for method in ("genpi", "sft"):
        dest = run / "adapters" / method
        shutil.copytree(tiny_adapter_dir, dest)
        info = json.loads((dest / "genpi_adapter.json").read_text())
        info["method"] = method
        (dest / "genpi_adapter.json").write_text(json.dumps(info))
    # The sft copy differs from the genpi one.
    path = run / "adapters" / "sft" / "adapter_model.safetensors"
    save_file({k: v * 3 for k, v in load_file(path).items()}, path)
    return run


def test_eval_end_to_end_on_the_tiny_model(
    tmp_path, tiny_model_dir, tiny_adapter_dir, example_prompt_path, monkeypatch
):
    run = _run_dir(tmp_path, example_prompt_path, tiny_adapter_dir)
    summaries = evaluate(
        run,
        model=str(tiny_model_dir),
        multi_turn=True,
        max_new_tokens=6,
        dtype="fp32",
        batch_size=4,
        progress=False,
    )
    assert [s["set"] for s in summaries] == ["heldout", "heldout-multiturn"]
    single, multi = summaries
    assert single["n_items"] == 2  # the train example is never evaluated
    assert multi["n_items"] == 4  # 2 agent turns in each of 2 held-out conversations
    for summary in summaries:
        assert [e["name"] for e in summary["systems"]] == ["upper_bound", "base", "genpi", "sft"]
        assert summary["reader"] == "generic"
        for entry in summary["systems"]:
            assert set(entry["scores"]) == {
                "format",
                "action_type",
                "exact_action",
                "rouge_l",
                "chrf",
                "nll",
            }
            assert entry["scores"]["nll"] > 0
            assert 0 <= entry["scores"]["format"] <= 1
        assert (run / "eval" / f"{summary['set']}.json").exists()
    upper = single["systems"][0]
    assert all(v in (None, pytest.approx(1.0)) for v in upper["normalised"].values())
    base = single["systems"][1]
    assert base["normalised"]["chrf"] == pytest.approx(
        base["scores"]["chrf"] / upper["scores"]["chrf"]
    )
    assert base["normalised"]["nll"] == pytest.approx(
        upper["scores"]["nll"] / base["scores"]["nll"]
    )
    assert single["systems"][2]["method"] == "genpi" and single["systems"][3]["method"] == "sft"
    # The multi-turn set is scored against the recorded teacher turns; the teacher acted in each.
    assert multi["systems"][0]["scores"]["action_type"] is not None

    rows = [
        json.loads(line)
        for line in (run / "eval" / "heldout.answers.jsonl").read_text().splitlines()
    ]
    assert len(rows) == 2 * 4
    answers = {r["system"]: r["answer"] for r in rows if r["id"] == "a"}
    assert answers["base"] != answers["sft"]  # the adapter is switched on
    nlls = {e["name"]: e["scores"]["nll"] for e in single["systems"]}
    assert len({nlls["base"], nlls["genpi"], nlls["sft"]}) == 3

    # A rerun reuses every system's cached answers instead of generating again.
    from genpi.llm.local import LocalBackend

    def refuse(*_a, **_k):
        raise AssertionError("generated again instead of resuming")

    monkeypatch.setattr(LocalBackend, "generate", refuse)
    again = evaluate(
        run,
        model=str(tiny_model_dir),
        multi_turn=True,
        max_new_tokens=6,
        dtype="fp32",
        progress=False,
    )
    assert again[0]["systems"][1]["scores"] == single["systems"][1]["scores"]

    markdown = compare(run)
    assert "| genpi | genpi |" in markdown and "heldout-multiturn" in markdown
    assert (run / "compare.png").read_bytes()[:4] == b"\x89PNG"


def test_eval_records_seeds_and_compare_pools_them(
    tmp_path, tiny_model_dir, tiny_adapter_dir, example_prompt_path
):
    """Two seeds of genpi (adapters/genpi, adapters/genpi-seed1) are one row; sft stays its own."""
    run = _run_dir(tmp_path, example_prompt_path, tiny_adapter_dir)
    seeded = run / "adapters" / "genpi-seed1"
    shutil.copytree(run / "adapters" / "genpi", seeded)
    info = json.loads((seeded / "genpi_adapter.json").read_text())
    info["config"] = {**info["config"], "seed": 1}
    (seeded / "genpi_adapter.json").write_text(json.dumps(info))
    path = seeded / "adapter_model.safetensors"
    save_file({k: v * 2 for k, v in load_file(path).items()}, path)

    (summary,) = evaluate(
        run, model=str(tiny_model_dir), max_new_tokens=4, dtype="fp32", progress=False
    )
    entries = {e["name"]: e for e in summary["systems"]}
    assert entries["genpi"]["seed"] is None and entries["genpi-seed1"]["seed"] == 1
    assert entries["genpi"]["setting"] == entries["genpi-seed1"]["setting"]
    assert entries["sft"]["setting"] != entries["genpi"]["setting"]
    assert entries["base"]["seed"] is None and entries["base"]["setting"] is None

    markdown = compare(run, png=False)
    table = json.loads((run / "compare.json").read_text())["tables"][0]
    assert [r["name"] for r in table["rows"]] == ["upper_bound", "base", "genpi", "sft"]
    genpi = table["rows"][2]
    assert genpi["systems"] == ["genpi", "genpi-seed1"]
    nlls = [entries[n]["scores"]["nll"] for n in genpi["systems"]]
    assert genpi["scores"]["nll"] == pytest.approx(sum(nlls) / 2)
    assert genpi["spread"]["nll"] == {
        "mean": genpi["scores"]["nll"],
        "min": min(nlls),
        "max": max(nlls),
    }
    lo, hi = genpi["interval"]["nll"]
    assert lo <= min(nlls) and hi >= max(nlls)  # the seeds' range joined with the bootstrap's
    assert table["bootstrap"]["resamples"] == 1000  # eval's answers file was resampled
    assert "| genpi | genpi, 2 seeds |" in markdown and "| genpi-seed1 | genpi |" in markdown


def test_eval_cli_with_an_inputs_file(tmp_path, tiny_model_dir, example_prompt_path, capsys):
    run = tmp_path / "run"
    inputs = tmp_path / "tasks.txt"
    inputs.write_text("list the files in /tmp\n\nshow the date\n")
    code = genpi_main(
        [
            "eval",
            str(run),
            "--prompt",
            str(example_prompt_path),
            "--model",
            str(tiny_model_dir),
            "--inputs",
            str(inputs),
            "--adapters",
            "none",
            "--max-new-tokens",
            "4",
            "--dtype",
            "fp32",
        ]
    )
    assert code == 0
    summary = json.loads((run / "eval" / "tasks.json").read_text())
    assert summary["n_items"] == 2 and [e["name"] for e in summary["systems"]] == [
        "upper_bound",
        "base",
    ]
    assert "upper_bound" in capsys.readouterr().out


def test_eval_errors_name_the_fix(tmp_path, example_prompt_path, capsys):
    code = genpi_main(["eval", str(tmp_path / "empty"), "--prompt", str(example_prompt_path)])
    assert code == 2
    assert "no held-out examples" in capsys.readouterr().err
    code = genpi_main(["eval", str(tmp_path / "empty")])
    assert code == 2
    assert "--prompt" in capsys.readouterr().err


def test_read_inputs_formats(tmp_path, agentbench_dir):
    dev = read_inputs(agentbench_dir / "os_interaction" / "data" / "dev.json")
    assert len(dev) == 26 and dev[0].id == "dev-0" and "interval" in dev[0].input
    jsonl = tmp_path / "x.jsonl"
    jsonl.write_text('{"input": "a"}\n{"description": "b"}\n"c"\n')
    assert [it.input for it in read_inputs(jsonl)] == ["a", "b", "c"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"other": 1}\n')
    from genpi.errors import GenpiError

    with pytest.raises(GenpiError, match="has no input"):
        read_inputs(bad)


@pytest.mark.integration
def test_os_prompt_teacher_acts_and_the_base_differs(tmp_path, os_prompt_path, agentbench_dir):
    """On 3 OS dev problems the embedded model with AgentBench's prompt answers in its action
    format at least once, and without the prompt it answers differently."""
    (summary,) = evaluate(
        tmp_path / "run",
        prompt=os_prompt_path,
        model="smollm2-135m",
        inputs=agentbench_dir / "os_interaction" / "data" / "dev.json",
        limit=3,
        adapters=[],
        max_new_tokens=48,
        dtype="fp32",
        progress=False,
    )
    upper, base = summary["systems"]
    assert summary["reader"] == "os"
    assert upper["scores"]["format"] > 0
    assert base["scores"]["format"] < upper["scores"]["format"] or base["scores"]["rouge_l"] < 1


def test_a_later_eval_of_fewer_systems_keeps_the_earlier_ones_that_still_hold(
    tmp_path, tiny_model_dir, tiny_adapter_dir, example_prompt_path
):
    """A resumed `genpi internalize --methods sft` evaluates sft only: the set's table must
    still hold genpi, scored earlier on the same items, unless genpi's weights changed since."""
    run = _run_dir(tmp_path, example_prompt_path, tiny_adapter_dir)
    kw = {"model": str(tiny_model_dir), "max_new_tokens": 4, "dtype": "fp32", "progress": False}
    (both,) = evaluate(run, **kw)
    (later,) = evaluate(run, adapters=[run / "adapters" / "sft"], **kw)
    names = [e["name"] for e in later["systems"]]
    assert names == ["upper_bound", "base", "sft", "genpi"]
    # As written to eval/heldout.json (tuples are lists there): the same entries, scores and all.
    earlier = {e["name"]: e for e in json.loads(json.dumps(both))["systems"]}
    assert json.loads(json.dumps(later["systems"])) == [earlier[n] for n in names]
    rows = (run / "eval" / "heldout.answers.jsonl").read_text().splitlines()
    assert sorted(json.loads(r)["system"] for r in rows) == sorted(names * 2)
    assert "| genpi | genpi |" in compare(run, png=False)

    # Other settings are another basis: nothing earlier is carried into that table.
    (capped,) = evaluate(run, adapters=[run / "adapters" / "sft"], **{**kw, "max_new_tokens": 3})
    assert [e["name"] for e in capped["systems"]] == ["upper_bound", "base", "sft"]
    evaluate(run, **kw)  # genpi back in, at 4 tokens
    # genpi retrained since it was scored: its old scores are not carried.
    path = run / "adapters" / "genpi" / "adapter_model.safetensors"
    save_file({k: v * 2 for k, v in load_file(path).items()}, path)
    (after,) = evaluate(run, adapters=[run / "adapters" / "sft"], **kw)
    assert [e["name"] for e in after["systems"]] == ["upper_bound", "base", "sft"]
    # An adapter deleted since is not carried either.
    evaluate(run, **kw)
    shutil.rmtree(run / "adapters" / "genpi")
    (gone,) = evaluate(run, adapters=[run / "adapters" / "sft"], **kw)
    assert [e["name"] for e in gone["systems"]] == ["upper_bound", "base", "sft"]
