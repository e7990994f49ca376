"""A hand-made run directory in synthesis's layout (genpi.data's docstring), for training tests."""

from __future__ import annotations

import json
from pathlib import Path

from genpi.data import load_examples
from genpi.prompt import Prompt

TASKS = [
    ("how many users have a login shell of /bin/bash?", "grep -c /bin/bash$ /etc/passwd", "2"),
    ("what is the total size of the files in /tmp?", "du -sh /tmp", "4.0K"),
    ("how many directories are there directly under /usr?", "ls -d /usr/*/ | wc -l", "9"),
    ("print the kernel version of this machine.", "uname -r", "6.1.0"),
    ("how many lines does /etc/hosts have?", "wc -l < /etc/hosts", "7"),
    ("which user owns /var/log?", "stat -c %U /var/log", "root"),
]


def make_run_dir(path: Path, prompt: Prompt, n: int = 6, *, reasons: bool = True) -> Path:
    """Write ``n`` examples (cycling TASKS) with conversations, outputs, reasons and a manifest."""
    path.mkdir(parents=True, exist_ok=True)
    inputs, conversations, outputs, reason_rows = [], [], [], []
    for i in range(n):
        task, command, answer = TASKS[i % len(TASKS)]
        rid = f"x{i:03d}"
        first = f"Thought: I will run {command.split()[0]}.\nAction: run[{command}]"
        turns = [
            {"role": "assistant", "content": first},
            {"role": "user", "content": f"Output:\n{answer}"},
            {
                "role": "assistant",
                "content": f"Thought: I have the answer.\nAction: done[{answer}]",
            },
        ]
        inputs.append({"id": rid, "input": task, "split": "train"})
        conversations.append({"id": rid, "input": task, "turns": turns, "end_reason": "done"})
        outputs.append(
            {
                "id": rid,
                "input": task,
                "student_output": f"Sure! To find this out you can open a terminal and type {command}.",
                "teacher_output": first,
            }
        )
        reason_rows.append(
            {
                "id": rid,
                "reason": "The prompt asks for a Thought line and one Action per reply, so the answer "
                "becomes a command to run instead of advice.",
            }
        )
    # One held-out example that training must not see.
    inputs.append({"id": "held", "input": "print the hostname.", "split": "heldout"})
    conversations.append(
        {
            "id": "held",
            "input": "print the hostname.",
            "turns": [{"role": "assistant", "content": "Action: run[hostname]"}],
        }
    )
    files = {"inputs": inputs, "conversations": conversations, "outputs": outputs}
    if reasons:
        files["reasons"] = reason_rows
    for name, rows in files.items():
        (path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    prompt.save(path / "prompt.json")
    manifest = {
        "prompt_name": prompt.name,
        "prompt_fingerprint": prompt.fingerprint,
        "models": {"model": "smollm2-135m", "generator": "smollm2-135m"},
    }
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


def test_hand_made_run_dir_loads_through_genpi_data(tmp_path, example_prompt_path):
    from genpi.prompt import load_prompt

    run = make_run_dir(tmp_path / "run", load_prompt(example_prompt_path), n=4)
    train = load_examples(run, split="train")
    assert [e.id for e in train] == ["x000", "x001", "x002", "x003"]
    assert all(e.reason and e.teacher_output and e.student_output for e in train)
    assert [e.id for e in load_examples(run, split="heldout")] == ["held"]


def test_every_reader_refuses_a_broken_manifest_with_the_fix(tmp_path, example_prompt_path):
    """Training read manifest.json by hand and crashed with a JSON traceback; the one read side
    (genpi.data.read_manifest) answers every verb with the file and what to do."""
    import pytest

    from genpi.data import RunDirError
    from genpi.evaluate.inputs import refuse_another_prompt
    from genpi.prompt import load_prompt
    from genpi.train.trainer import read_run

    prompt = load_prompt(example_prompt_path)
    prompt.save(tmp_path / "prompt.json")
    (tmp_path / "manifest.json").write_text('{"prompt_fingerprint": ')
    with pytest.raises(RunDirError, match="manifest.json' is not valid JSON: fix or restore it"):
        read_run(tmp_path)
    with pytest.raises(RunDirError, match="evaluate into another run directory"):
        refuse_another_prompt(tmp_path, prompt)
