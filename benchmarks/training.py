"""Training speed and peak memory of `sft` and `genpi` on the embedded model, side by side.

Builds a small run directory (the AgentBench OS prompt when ../shared is there, else the project's
shell-agent demo prompt), trains each method for a few optimizer steps in its own process (so
peak memory is per method) and prints tokens/s, s/step, peak memory, and how many more tokens
per step genpi's PG half costs over sft.

Wall-clock figures depend on what else runs on the host; CPU seconds (all threads of the
training process) are printed beside them.

Run as: python benchmarks/training.py [--steps 3] [--batch 2] [--examples 8] [--dtype auto]
        python benchmarks/training.py --compare-paths [--gradient-checkpointing]

``--compare-paths`` trains each method (default genpi,kld) twice, each run in its own process
with the same seed and data order (--no-group-by-length): the losses from hidden states
projected in chunks (genpi.train.hidden) and the old full-logits path (GENPI_FULL_LOGITS=1). It
prints s/step, peak RSS and the first step losses of both, and their largest difference.
``--gradient-checkpointing`` adds a third run: the hidden-state path with the decoder layers'
activations recomputed in backward (``TrainConfig.gradient_checkpointing``), memory for time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OS_PROMPT = ROOT.parent / "shared" / "agentbench" / "prompts" / "os.json"
DEMO_PROMPT = ROOT / "examples" / "shell_agent.json"

TASKS = [
    ("how many users have a login shell of /bin/bash?", "grep -c '/bin/bash$' /etc/passwd", "2"),
    ("what is the total size of the files in /tmp?", "du -sh /tmp", "4.0K\t/tmp"),
    ("how many directories are there directly under /usr?", "ls -d /usr/*/ | wc -l", "9"),
    ("print the kernel version of this machine.", "uname -r", "6.1.0-18-amd64"),
]


def make_run_dir(path: Path, prompt_path: Path, n: int) -> Path:
    """A run directory in synthesis's layout, with agent-like conversations of three turns."""
    from genpi.prompt import load_prompt

    prompt = load_prompt(prompt_path)
    path.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[dict]] = {"inputs": [], "conversations": [], "outputs": [], "reasons": []}
    for i in range(n):
        task, command, answer = TASKS[i % len(TASKS)]
        rid = f"b{i:04d}"
        act = f"Think: I need to run a command to find out.\n\nAct: bash\n\n```bash\n{command}\n```"
        turns = [
            {"role": "assistant", "content": act},
            {"role": "user", "content": f"The output of the OS:\n\n{answer}"},
            {
                "role": "assistant",
                "content": f"Think: the output answers the task.\n\nAct: answer({answer})",
            },
        ]
        rows["inputs"].append({"id": rid, "input": task, "split": "train"})
        rows["conversations"].append({"id": rid, "input": task, "turns": turns})
        rows["outputs"].append(
            {
                "id": rid,
                "input": task,
                "teacher_output": act,
                "student_output": f"You can find this out by running `{command}` "
                "in a terminal; it prints the answer directly.",
            }
        )
        rows["reasons"].append(
            {
                "id": rid,
                "reason": "The prompt makes the assistant act in the "
                "shell with a Think/Act format instead of explaining what to type.",
            }
        )
    for name, records in rows.items():
        (path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    prompt.save(path / "prompt.json")
    (path / "manifest.json").write_text(json.dumps({"prompt_fingerprint": prompt.fingerprint}))
    return path


def run_one(
    run_dir: str,
    method: str,
    steps: int,
    batch: int,
    dtype: str,
    out: str,
    group: bool = True,
    model: str = "smollm2-135m",
    checkpointing: bool = False,
) -> None:
    from genpi.data import read_jsonl
    from genpi.train import make_config, train

    config = make_config(
        "quick",
        max_steps=steps,
        per_device_batch=batch,
        effective_batch=batch,
        dtype=dtype,
        save_steps=10_000,
        save_every_minutes=0,
        learning_rate=1e-4,
        group_by_length=group,
        gradient_checkpointing=checkpointing,
    )
    adapter = train(run_dir, method, config, model_ref=model, out_dir=out, echo=lambda _: None)
    summary = json.loads((adapter / "train_summary.json").read_text())
    summary["losses"] = [row["loss"] for row in read_jsonl(adapter / "loss.jsonl") if "loss" in row]
    print(json.dumps(summary))


def spawn(run_dir: Path, method: str, args: argparse.Namespace, out: Path, **extra: str) -> dict:
    """One training run in its own process (so peak memory is its own); its summary."""
    cmd = [sys.executable, __file__, "--one", str(run_dir), method, "--steps", str(args.steps)]
    cmd += ["--batch", str(args.batch), "--dtype", args.dtype, "--out", str(out)]
    cmd += ["--model", args.model]
    if not extra.get("group", True):
        cmd.append("--no-group")
    if extra.get("checkpointing"):
        cmd.append("--gradient-checkpointing")
    env = {**os.environ, **extra.get("env", {})}
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        raise SystemExit(1)
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare_paths(run_dir: Path, prompt_name: str, args: argparse.Namespace, tmp: Path) -> int:
    """Each method on the hidden-state path and on the full-logits path, same seed and order."""
    from genpi.train.hidden import FULL_LOGITS_ENV

    print(
        f"prompt: {prompt_name}; {args.steps} steps of {args.batch} sequences; dtype {args.dtype}; "
        "random batches (no length grouping) so both paths see the same data"
    )
    print(
        f"{'method':8} {'path':12} {'s/step':>8} {'CPU s/step':>10} {'peak MB':>8}  "
        "losses of the first steps"
    )
    for method in args.methods.split(","):
        results = {}
        paths = [("full-logits", "1", False), ("hidden", "0", False)]
        if args.gradient_checkpointing:
            paths.append(("hidden+ckpt", "0", True))
        for path, forced, checkpointing in paths:
            r = spawn(
                run_dir,
                method,
                args,
                tmp / f"{method}-{path}",
                group=False,
                checkpointing=checkpointing,
                env={FULL_LOGITS_ENV: forced},
            )
            results[path] = r
            steps = r["steps_this_run"]
            losses = ", ".join(f"{x:.6f}" for x in r["losses"][:5])
            label = r["loss_path"] + "+ckpt" * checkpointing  # the path the run reports it took
            print(
                f"{method:8} {label:12} {r['seconds_per_step']:8.2f} "
                f"{r['cpu_seconds'] / steps:10.2f} {r['peak_memory_mb']:8.0f}  [{losses}]"
            )
        old, new = results["full-logits"], results["hidden"]
        diff = max(
            (abs(a - b) for a, b in zip(old["losses"][:5], new["losses"][:5], strict=False)),
            default=float("nan"),
        )
        print(
            f"{method:8} hidden vs full-logits: {old['seconds_per_step'] / new['seconds_per_step']:.2f}x "
            f"faster (wall), {old['cpu_seconds'] / max(new['cpu_seconds'], 1e-9):.2f}x less CPU, "
            f"peak memory {new['peak_memory_mb'] / old['peak_memory_mb']:.2f}x, "
            f"max |loss difference| {diff:.2e}; teacher prefix cached: "
            f"{new.get('teacher_prefix_tokens', 0)} tokens"
        )
        if "hidden+ckpt" in results:
            ckpt = results["hidden+ckpt"]
            print(
                f"{method:8} hidden+ckpt vs full-logits: "
                f"{old['seconds_per_step'] / ckpt['seconds_per_step']:.2f}x faster (wall), "
                f"peak memory {ckpt['peak_memory_mb'] / old['peak_memory_mb']:.2f}x"
            )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="default 3 (compare: 5)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--examples", type=int, default=8)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--methods", default=None, help="default sft,genpi (compare: genpi,kld)")
    parser.add_argument(
        "--compare-paths",
        action="store_true",
        help="hidden-state vs full-logits loss path, side by side (default 5 steps)",
    )
    parser.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="compare: also the hidden-state path with the decoder's activations recomputed",
    )
    parser.add_argument("--no-group", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="smollm2-135m", help="base model (default: embedded)")
    parser.add_argument("--one", nargs=2, metavar=("RUN_DIR", "METHOD"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps is None:
        args.steps = 5 if args.compare_paths else 3
    if args.methods is None:
        args.methods = "genpi,kld" if args.compare_paths else "sft,genpi"
    if args.one:
        run_one(
            args.one[0],
            args.one[1],
            args.steps,
            args.batch,
            args.dtype,
            args.out,
            group=not args.no_group,
            model=args.model,
            checkpointing=args.gradient_checkpointing,
        )
        return 0
    prompt_path = OS_PROMPT if OS_PROMPT.exists() else DEMO_PROMPT
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = make_run_dir(Path(tmp) / "run", prompt_path, args.examples)
        if args.compare_paths:
            return compare_paths(run_dir, prompt_path.name, args, Path(tmp))
        results = {}
        for method in args.methods.split(","):
            results[method] = spawn(run_dir, method, args, Path(tmp) / method)
    print(
        f"prompt: {prompt_path.name}; {args.steps} steps of {args.batch} sequences; dtype {args.dtype}"
    )
    print(
        f"{'method':8} {'s/step':>8} {'tokens/s':>9} {'CPU s/step':>10} {'tokens/CPU-s':>12} "
        f"{'tokens/step':>12} {'peak MB':>8}  tokens by stream"
    )
    for method, r in results.items():
        steps = r["steps_this_run"]
        per_step = sum(r["tokens_by_stream"].values()) / steps
        print(
            f"{method:8} {r['seconds_per_step']:8.2f} {r['tokens_per_second']:9.0f} "
            f"{r['cpu_seconds'] / steps:10.2f} {r['tokens_per_cpu_second']:12.0f} {per_step:12.0f} "
            f"{r['peak_memory_mb']:8.0f}  {r['tokens_by_stream']} ({r['dtype']}, {r['device']}, "
            f"{r['threads']} threads)"
        )
    if {"sft", "genpi"} <= results.keys():
        sft, genpi = results["sft"], results["genpi"]
        token_ratio = sum(genpi["tokens_by_stream"].values()) / sum(
            sft["tokens_by_stream"].values()
        )
        time_ratio = genpi["seconds_per_step"] / sft["seconds_per_step"]
        print(
            f"genpi / sft: {token_ratio:.2f}x tokens per step (the PG half), "
            f"{time_ratio:.2f}x seconds per step"
        )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    sys.exit(main())
