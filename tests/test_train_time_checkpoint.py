"""Training checkpoints by elapsed time too, so a killed run with slow steps loses at most that.

`genpi train` runs in a subprocess with --save-every-minutes 0.02 (1.2 s) and --save-steps past
the last step, so every checkpoint is a time-based one. Steps are slowed by a callback that
sleeps (a slow CPU step, without a slow machine). The run is SIGKILLed right after a checkpoint
appears, rerun with the same command, and must resume from that checkpoint and train exactly the
steps an uninterrupted run trains, with the same data order and random state.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import genpi
from genpi.prompt import load_prompt
from test_train_rundir import make_run_dir

MAX_STEPS = 12  # two epochs of the six examples
SLEEP = 0.2  # seconds added to every step: at most 6 steps between two saves 1.2 s apart
RUNNER = """
import functools, sys, time
from transformers import TrainerCallback
import genpi.train.trainer as trainer

class SlowStep(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        time.sleep(float(sys.argv[1]))

trainer.train = functools.partial(trainer.train, callbacks=[SlowStep()])
from genpi.cli import main
sys.exit(main(sys.argv[2:]))
"""


def train_args(run: Path, model: Path, out: Path, minutes: str = "0.02") -> list[str]:
    return [
        "train",
        str(run),
        "--method",
        "sft",
        "--model",
        str(model),
        "--out",
        str(out),
        "--preset",
        "quick",
        "--max-steps",
        str(MAX_STEPS),
        "--batch",
        "1",
        "--effective-batch",
        "1",
        "--save-steps",
        "1000",  # never by steps: every checkpoint below is a time-based one
        "--save-every-minutes",
        minutes,
        "--dtype",
        "fp32",
    ]


def complete_checkpoints(folder: Path) -> list[int]:
    """Steps of the checkpoints whose trainer state is written (the Trainer writes it last)."""
    if not folder.is_dir():
        return []
    steps = []
    for path in folder.iterdir():
        match = re.fullmatch(r"checkpoint-(\d+)", path.name)
        if match and (path / "trainer_state.json").exists():
            try:
                json.loads((path / "trainer_state.json").read_text())
            except ValueError:
                continue
            steps.append(int(match.group(1)))
    return sorted(steps)


def losses(out: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (out / "loss.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_a_killed_run_resumes_from_its_last_time_based_checkpoint(
    tmp_path, tiny_model_dir, example_prompt_path
):
    run = make_run_dir(tmp_path / "run", load_prompt(example_prompt_path), n=6)
    out = tmp_path / "adapter"
    command = [sys.executable, "-c", RUNNER, str(SLEEP), *train_args(run, tiny_model_dir, out)]
    # The subprocess runs the genpi this test imported, not whichever one the venv installed.
    src = str(Path(genpi.__file__).resolve().parents[1])
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": src}

    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 120
        try:
            while not complete_checkpoints(out / "checkpoints"):
                assert first.poll() is None, (tmp_path / "first.log").read_text()
                assert time.monotonic() < deadline, "no time-based checkpoint within 120 s"
                time.sleep(0.05)
        finally:
            first.send_signal(signal.SIGKILL)  # between two saves: the next is >= 1.2 s away
            first.wait()
    assert first.returncode == -signal.SIGKILL
    saved = complete_checkpoints(out / "checkpoints")[-1]
    assert 0 < saved < MAX_STEPS
    assert not (out / "adapter_model.safetensors").exists()

    second = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"checkpoint-{saved} (step {saved})" in second.stdout, second.stdout
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["global_steps"] == MAX_STEPS
    assert summary["steps_this_run"] == MAX_STEPS - saved
    resumed = losses(out)
    assert sorted(resumed) == list(range(1, MAX_STEPS + 1))  # each step logged once

    # The same run uninterrupted: the resumed steps saw the same batches and random state.
    from genpi.train.cli import add_arguments, config_from_args
    from genpi.train.trainer import train

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    # (checkpoints change nothing the run computes, so the reference saves none)
    args = parser.parse_args(train_args(run, tiny_model_dir, tmp_path / "reference", "0")[1:])
    reference_out = train(
        run, "sft", config_from_args(args), model_ref=args.model, out_dir=args.out, echo=print
    )
    reference = losses(reference_out)
    for step in range(saved + 1, MAX_STEPS + 1):
        assert resumed[step] == pytest.approx(reference[step], rel=1e-4), step
